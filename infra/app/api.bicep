// The Function App: Flex Consumption (FC1, Linux), Python 3.11, deployed from a blob container
// with the user-assigned identity, every app setting the code reads, and optional App Service
// Authentication (Easy Auth) in front of the HTTP API.
param name string
param planName string
param location string
param tags object = {}

@description('Resource id of the user-assigned managed identity.')
param identityId string

@description('Client id of the user-assigned managed identity.')
param identityClientId string

param storageAccountName string
param deploymentContainerName string
param applicationInsightsName string

@minValue(1)
@maxValue(1000)
param maximumInstanceCount int

@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int

param resetRequestsQueueName string
param resetResultsQueueName string
param resetFollowupsQueueName string
param resetBatchesQueueName string
param resetLedgerTableName string
param graphBaseUrl string
param confirmFirstCheckSeconds int
param confirmTimeoutSeconds int
param resetCooldownSeconds int
param requestDeadlineSeconds int
param allowPasscodeReveal bool
param graphPostBudget int
param graphRequestBudget int
param graphBudgetWindowSeconds int

@minValue(1)
@maxValue(200)
@description('GRAPH_BUDGET_INSTANCES: fallback share, 1/N of the Graph budgets while the shared budget cannot be reached (not maximumInstanceCount).')
param graphBudgetInstances int

@description('EVENTGRID_TOPIC_ENDPOINT: the Event Grid topic of main.bicep (eventGridEnabled); empty: off.')
param eventGridTopicEndpoint string = ''

@minValue(1)
@maxValue(86400)
param eventGridRetrySeconds int = 300

// Approvals, guardrails and requesters (docs/contract.md#approvals-guardrails-and-requesters).
param approvalRequired string
param approvalTimeoutSeconds int
param guardrailMaxActionsPerHour int
param guardrailMaxPerRequesterPerHour int
param allowedRequesters string

@description('Turn on App Service Authentication (Entra ID) for the HTTP API.')
param authEnabled bool = false

@description('Client id (appId) of the app registration whose tokens Easy Auth accepts.')
param authClientId string = ''

@description('Token issuer Easy Auth trusts. The default (v2.0) needs the app registration to issue v2 tokens (api.requestedAccessTokenVersion = 2).')
param authOpenIdIssuer string = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'

// The project's Python version (pyproject.toml requires-python, CI runs 3.11).
var pythonVersion = '3.11'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Every setting the app reads (docs/contract.md#settings, shared/settings.py), in one place. GRAPH_TOKEN is
// deliberately absent: it is for the local Graph simulator only and the app refuses it for a
// non-loopback GRAPH_BASE_URL. tests/infra compares this list with the contract's settings table. All values
// are strings, as the app reads them from the environment.
var appSettings = [
  // Identity-based host storage: no connection string, no key.
  {
    name: 'AzureWebJobsStorage__credential'
    value: 'managedidentity'
  }
  {
    name: 'AzureWebJobsStorage__clientId'
    value: identityClientId
  }
  {
    name: 'AzureWebJobsStorage__blobServiceUri'
    value: storage.properties.primaryEndpoints.blob
  }
  {
    name: 'AzureWebJobsStorage__queueServiceUri'
    value: storage.properties.primaryEndpoints.queue
  }
  {
    name: 'AzureWebJobsStorage__tableServiceUri'
    value: storage.properties.primaryEndpoints.table
  }
  {
    name: 'RESET_REQUESTS_QUEUE'
    value: resetRequestsQueueName
  }
  {
    name: 'RESET_RESULTS_QUEUE'
    value: resetResultsQueueName
  }
  {
    name: 'RESET_FOLLOWUPS_QUEUE'
    value: resetFollowupsQueueName
  }
  {
    name: 'RESET_BATCHES_QUEUE'
    value: resetBatchesQueueName
  }
  {
    name: 'RESET_LEDGER_TABLE'
    value: resetLedgerTableName
  }
  {
    name: 'GRAPH_BASE_URL'
    value: graphBaseUrl
  }
  // DefaultAzureCredential picks the user-assigned identity by this client id.
  {
    name: 'AZURE_CLIENT_ID'
    value: identityClientId
  }
  {
    name: 'CONFIRM_FIRST_CHECK_SECONDS'
    value: string(confirmFirstCheckSeconds)
  }
  {
    name: 'CONFIRM_TIMEOUT_SECONDS'
    value: string(confirmTimeoutSeconds)
  }
  {
    name: 'RESET_COOLDOWN_SECONDS'
    value: string(resetCooldownSeconds)
  }
  {
    name: 'REQUEST_DEADLINE_SECONDS'
    value: string(requestDeadlineSeconds)
  }
  {
    name: 'ALLOW_PASSCODE_REVEAL'
    value: allowPasscodeReveal ? 'true' : 'false'
  }
  // Intune's Graph budget for all instances together, shared through the ledger table; each
  // instance keeps 1/graphBudgetInstances only while it cannot reach it
  // (docs/decisions/0013-shared-graph-budget.md). Deliberately not maximumInstanceCount.
  {
    name: 'GRAPH_POST_BUDGET'
    value: string(graphPostBudget)
  }
  {
    name: 'GRAPH_REQUEST_BUDGET'
    value: string(graphRequestBudget)
  }
  {
    name: 'GRAPH_BUDGET_WINDOW_SECONDS'
    value: string(graphBudgetWindowSeconds)
  }
  {
    name: 'GRAPH_BUDGET_INSTANCES'
    value: string(graphBudgetInstances)
  }
  // Event Grid delivery (docs/contract.md#event-grid-delivery): empty when the topic is off. The app
  // publishes with AZURE_CLIENT_ID's identity (EventGrid Data Sender); EVENTGRID_TOPIC_KEY is local only.
  {
    name: 'EVENTGRID_TOPIC_ENDPOINT'
    value: eventGridTopicEndpoint
  }
  {
    name: 'EVENTGRID_RETRY_SECONDS'
    value: string(eventGridRetrySeconds)
  }
  {
    name: 'APPROVAL_REQUIRED'
    value: approvalRequired
  }
  {
    name: 'APPROVAL_TIMEOUT_SECONDS'
    value: string(approvalTimeoutSeconds)
  }
  {
    name: 'GUARDRAIL_MAX_ACTIONS_PER_HOUR'
    value: string(guardrailMaxActionsPerHour)
  }
  {
    name: 'GUARDRAIL_MAX_PER_REQUESTER_PER_HOUR'
    value: string(guardrailMaxPerRequesterPerHour)
  }
  {
    name: 'ALLOWED_REQUESTERS'
    value: allowedRequesters
  }
  // Trust X-MS-CLIENT-PRINCIPAL and require the PasscodeReset.* roles only behind Easy Auth.
  {
    name: 'AUTH_REQUIRE_ROLES'
    value: authEnabled ? 'true' : 'false'
  }
  {
    name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
    value: applicationInsights.properties.ConnectionString
  }
  {
    name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
    value: 'ClientId=${identityClientId};Authorization=AAD'
  }
]

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  //checkov:skip=CKV_AZURE_225:Zone redundancy on Flex Consumption is regional and opt-in; a passcode reset can wait for a retry.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  //checkov:skip=CKV_AZURE_222:Power Automate and upstream systems call the API over the internet; function keys (and optional Easy Auth) guard it.
  //checkov:skip=CKV_AZURE_17:Callers authenticate with function keys or Entra tokens; Power Automate's HTTP action cannot present client certificates per flow.
  //checkov:skip=CKV_AZURE_212:Flex Consumption scales per event from zero; a fixed minimum instance count does not apply.
  //checkov:skip=CKV_AZURE_213:Platform health-check pings would keep a scale-to-zero app awake; /api/health serves the smoke test and monitoring.
  //checkov:skip=CKV_AZURE_78:Flex Consumption does not take siteConfig.ftpsState (ignored, or rejected with error 51021 in newer regions); FTP is off through basicPublishingCredentialsPolicies 'ftp' below.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': 'api'
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    // No ftpsState: Flex Consumption ignores it, or rejects it in newer regions (docs/deploy.md).
    siteConfig: {
      http20Enabled: true
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      remoteDebuggingEnabled: false
      appSettings: appSettings
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

// No FTP or basic-auth deployments: azd and `az functionapp deployment` use Entra tokens.
resource ftpPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmPublishing 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

// Optional Easy Auth for the HTTP API (docs/contract.md#http-api): bearer tokens for authClientId only,
// 401 for anything unauthenticated, health and the OpenAPI document stay open. The app then reads
// the caller's app roles from X-MS-CLIENT-PRINCIPAL (AUTH_REQUIRE_ROLES=true above). Always
// deployed, enabled by authEnabled, so turning the parameter off really turns Easy Auth off.
var entraIdProvider = {
  enabled: true
  registration: {
    clientId: authClientId
    openIdIssuer: authOpenIdIssuer
  }
  validation: {
    allowedAudiences: [
      authClientId
      'api://${authClientId}'
    ]
  }
}

resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  //checkov:skip=CKV_AZURE_13:False positive: checkov applies its site checks to this sites/config child; this resource is the Easy Auth switch itself (authEnabled).
  //checkov:skip=CKV_AZURE_63:False positive: site check applied to the authsettingsV2 document; HTTP logging is a site setting.
  //checkov:skip=CKV_AZURE_65:False positive: site check applied to the authsettingsV2 document.
  //checkov:skip=CKV_AZURE_66:False positive: site check applied to the authsettingsV2 document.
  //checkov:skip=CKV_AZURE_80:False positive: .NET Framework version does not apply to a Python app or to authsettingsV2.
  //checkov:skip=CKV_AZURE_88:False positive: Azure Files mounts do not apply to authsettingsV2 (Flex Consumption deploys from blob storage).
  //checkov:skip=CKV_AZURE_222:False positive: site check applied to the authsettingsV2 document; see functionApp.
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: authEnabled
    }
    globalValidation: {
      requireAuthentication: authEnabled
      unauthenticatedClientAction: 'Return401'
      excludedPaths: [
        '/api/health'
        '/api/openapi.json'
      ]
    }
    httpSettings: {
      requireHttps: true
    }
    identityProviders: authEnabled ? {
      azureActiveDirectory: entraIdProvider
    } : {}
    login: {
      tokenStore: {
        enabled: false
      }
    }
  }
}

output name string = functionApp.name
output uri string = 'https://${functionApp.properties.defaultHostName}'
