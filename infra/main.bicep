// Intune passcode reset: everything the Function App needs, deployable with `azd up` or
// `az deployment sub create`. Layout follows Azure-Samples/functions-quickstart-python-http-azd:
// this file creates the resource group and wires the modules under app/; every scanned resource
// is a plain `resource` (no registry modules) so checkov can see it. See docs/deploy.md.
targetScope = 'subscription'

// ---------------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds the unique suffix of every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource. It must offer the Flex Consumption plan (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the person or pipeline running the deployment. When set, it may put and read queue messages (smoke test). Empty: no data-plane access for anyone but the app.')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
])
@description('Kind of principal in principalId.')
param principalType string = 'User'

@description('Optional name overrides; empty means the generated abbreviation + suffix.')
param resourceGroupName string = ''
param functionAppName string = ''
param functionPlanName string = ''
param storageAccountName string = ''
param identityName string = ''
param logAnalyticsName string = ''
param applicationInsightsName string = ''

// ---------------------------------------------------------------------------------------------
// Scale (Flex Consumption, FC1)
// ---------------------------------------------------------------------------------------------

// Flex Consumption accepts 40 as the lowest maximumInstanceCount in most regions (the platform's
// stack data, lowestMaximumInstanceCount; lower values were a preview in a few regions), so a
// smaller default fails `azd up` there. The limit applies per function group (each queue trigger,
// and all HTTP functions together), and HTTP bursts are not strictly capped by it. Scale-out does
// not buy Graph throughput: Intune allows 200 actions and 2,000 requests per 20 s per app and
// tenant, which the app keeps itself (graphBudgetInstances below, docs/deploy.md).
@minValue(1)
@maxValue(1000)
@description('Flex Consumption maximum instance count per function group. 40 is the lowest value Flex Consumption accepts in most regions; lower values work only where the region allows them. Not tied to the Graph budget (graphBudgetInstances).')
param maximumInstanceCount int = 40

// 2,048 MB is the platform default. The worker needs ~70 MB at run time, but instance size also
// sets CPU: the larger size keeps the cold import of msgraph-sdk (~1-2.5 s) short. 512 MB is the
// cheaper choice for a low-volume tenant.
@allowed([
  512
  2048
  4096
])
@description('Flex Consumption instance memory (MB).')
param instanceMemoryMB int = 2048

// ---------------------------------------------------------------------------------------------
// App settings (docs/contract.md#settings); defaults are the contract's
// ---------------------------------------------------------------------------------------------

@minLength(3)
@maxLength(56)
@description('RESET_REQUESTS_QUEUE: request queue; its poison queue is <name>-poison.')
param resetRequestsQueueName string = 'passcode-reset-requests'

@minLength(3)
@maxLength(46)
@description('RESET_RESULTS_QUEUE: outcome events (CloudEvents); the Event Grid outbox is <name>-eventgrid (and -eventgrid-poison).')
param resetResultsQueueName string = 'passcode-reset-results'

@minLength(3)
@maxLength(56)
@description('RESET_FOLLOWUPS_QUEUE: delayed confirmation checks; its poison queue is <name>-poison.')
param resetFollowupsQueueName string = 'passcode-reset-followups'

@minLength(3)
@maxLength(56)
@description('RESET_BATCHES_QUEUE: batch intake and the steps of every batch; its poison queue is <name>-poison.')
param resetBatchesQueueName string = 'passcode-reset-batches'

@minLength(3)
@maxLength(63)
@description('RESET_LEDGER_TABLE: request ledger (idempotency, status).')
param resetLedgerTableName string = 'PasscodeResets'

@description('GRAPH_BASE_URL: Graph root; the app appends /v1.0 or /beta.')
param graphBaseUrl string = 'https://graph.microsoft.com'

@minValue(0)
@maxValue(604800)
@description('CONFIRM_FIRST_CHECK_SECONDS: delay before the first confirmation check.')
param confirmFirstCheckSeconds int = 60

@minValue(1)
@maxValue(604800)
@description('CONFIRM_TIMEOUT_SECONDS: give up confirming after this long (timed_out).')
param confirmTimeoutSeconds int = 86400

@minValue(0)
@maxValue(2592000)
@description('RESET_COOLDOWN_SECONDS: a second reset of the same device inside this window is rejected.')
param resetCooldownSeconds int = 900

@minValue(60)
@maxValue(604800)
@description('REQUEST_DEADLINE_SECONDS: read by shared/settings.py (not in the contract\'s table before v2).')
param requestDeadlineSeconds int = 3600

@description('ALLOW_PASSCODE_REVEAL: enables GET /api/resets/{id}/passcode.')
param allowPasscodeReveal bool = false

// Intune's Graph budget per app and tenant (docs/contract.md#graph-traffic-and-permissions). The app keeps it itself, one
// budget for all instances together, leased in blocks from an entity of the ledger table
// (docs/decisions/0013-shared-graph-budget.md); not derived from maximumInstanceCount. Lower the budgets when other apps of the tenant also call
// Intune: the tenant-wide limit is 400 POST / 4,000 requests per 20 s.
@minValue(1)
@description('GRAPH_POST_BUDGET: Graph POST (action) calls allowed per window, for all instances together.')
param graphPostBudget int = 200

@minValue(1)
@description('GRAPH_REQUEST_BUDGET: Graph calls of any kind allowed per window, for all instances together.')
param graphRequestBudget int = 2000

@minValue(1)
@maxValue(3600)
@description('GRAPH_BUDGET_WINDOW_SECONDS: the window of both Graph budgets.')
param graphBudgetWindowSeconds int = 20

// Only the fallback share: an instance that cannot reach the shared budget in storage keeps 1/N of
// it meanwhile (never the whole budget); Graph's 429s, honoured by every instance, are the backstop.
@minValue(1)
@maxValue(200)
@description('GRAPH_BUDGET_INSTANCES: fallback share; an instance that cannot reach the shared Graph budget in storage keeps 1/N of both budgets meanwhile. Independent of maximumInstanceCount.')
param graphBudgetInstances int = 4

// ---------------------------------------------------------------------------------------------
// Microsoft Graph (Entra ID) and App Service Authentication
// ---------------------------------------------------------------------------------------------

@description('Protect the HTTP API with App Service Authentication (Entra ID) on top of function keys, and require the PasscodeReset.* app roles (AUTH_REQUIRE_ROLES=true).')
param authEnabled bool = false

@description('Client id of an existing app registration exposing the PasscodeReset.* app roles. Empty with authEnabled: the template creates one through the Graph extension.')
param authClientId string = ''

// ---------------------------------------------------------------------------------------------
// Event Grid (docs/contract.md#event-grid-delivery, docs/integrations.md)
// ---------------------------------------------------------------------------------------------

@description('Create an Event Grid custom topic (CloudEvents 1.0, Entra ID only) and deliver every outcome event to it as well (EVENTGRID_TOPIC_ENDPOINT).')
param eventGridEnabled bool = false

@secure()
@description('With eventGridEnabled: webhook of an optional event subscription (e.g. ServiceNow behind API Management, docs/integrations.md), with retries and dead-lettering. Empty: no subscription.')
param eventGridWebhookUrl string = ''

@minValue(1)
@maxValue(86400)
@description('EVENTGRID_RETRY_SECONDS: an event the topic refused maxDequeueCount times is tried again after this long.')
param eventGridRetrySeconds int = 300

// ---------------------------------------------------------------------------------------------
// Approvals, guardrails and requesters (docs/contract.md#approvals-guardrails-and-requesters)
// ---------------------------------------------------------------------------------------------

@description('APPROVAL_REQUIRED: comma list of rules that hold a request for approval (platform rows, removePasscode, resetPasscode, remoteLock, batch, *). Empty: none.')
param approvalRequired string = ''

@minValue(1)
@maxValue(604799)
@description('APPROVAL_TIMEOUT_SECONDS: an unanswered approval ends rejected / approval_expired.')
param approvalTimeoutSeconds int = 86400

@minValue(0)
@description('GUARDRAIL_MAX_ACTIONS_PER_HOUR: action calls in any rolling hour, all instances; beyond it requests wait for approval. 0 = off.')
param guardrailMaxActionsPerHour int = 100

@minValue(0)
@description('GUARDRAIL_MAX_PER_REQUESTER_PER_HOUR: the same per requestedBy. 0 = off.')
param guardrailMaxPerRequesterPerHour int = 0

@description('ALLOWED_REQUESTERS: comma list of UPNs and @domain suffixes allowed as requestedBy. Empty: anyone.')
param allowedRequesters string = ''

// ---------------------------------------------------------------------------------------------
// Alerts
// ---------------------------------------------------------------------------------------------

@description('Create the log alert rules (poison queue, final-failure rate, Graph throttling).')
param alertsEnabled bool = true

@description('E-mail address for alert notifications. Empty: alerts fire in Azure Monitor without notifications.')
param alertEmailAddress string = ''

@minValue(1)
@maxValue(100)
@description('Alert when more than this percentage of final outcomes in an hour are failed or timed_out.')
param failureRateThresholdPercent int = 20

@minValue(1)
@description('Minimum final outcomes in the hour before the failure-rate alert may fire.')
param failureRateMinimumOutcomes int = 5

@minValue(1)
@description('Alert when Graph answers 429 more often than this within 15 minutes.')
param graphThrottlingThreshold int = 10

// ---------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var appName = !empty(functionAppName) ? functionAppName : '${abbrs.webSitesFunctions}passcode-reset-${resourceToken}'
var deploymentContainerName = 'app-package-${take(toLower(uniqueString(appName, resourceToken)), 7)}'
var createAuthApplication = authEnabled && empty(authClientId)

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: !empty(identityName) ? identityName : '${abbrs.managedIdentityUserAssignedIdentities}passcode-reset-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: !empty(storageAccountName) ? storageAccountName : '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    requestsQueueName: resetRequestsQueueName
    resultsQueueName: resetResultsQueueName
    followupsQueueName: resetFollowupsQueueName
    batchesQueueName: resetBatchesQueueName
    ledgerTableName: resetLedgerTableName
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: !empty(logAnalyticsName) ? logAnalyticsName : '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: !empty(applicationInsightsName) ? applicationInsightsName : '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    managedIdentityPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
  }
}

// Tenant-level: the app registration that Easy Auth validates tokens for, when the template creates
// it. Its own file because it needs `extension microsoftGraphV1`. The managed identity's Graph
// application permissions are not granted here but by the postprovision hook
// (infra/hooks/postprovision.sh, docs/deploy.md): a Bicep grant to an identity created in the same
// deployment fails the first time (msgraph-bicep-types issue 193) and needs a Privileged Role
// Administrator.
module graph 'app/graph.bicep' = if (createAuthApplication) {
  name: 'graph'
  scope: rg
  params: {
    createApiApplication: createAuthApplication
    apiApplicationUniqueName: 'intune-passcode-reset-api-${resourceToken}'
    apiApplicationDisplayName: 'Intune passcode reset API (${environmentName})'
  }
}

module eventGrid 'app/eventgrid.bicep' = if (eventGridEnabled) {
  name: 'eventgrid'
  scope: rg
  params: {
    name: '${abbrs.eventGridDomainsTopics}passcode-reset-${resourceToken}'
    location: location
    tags: tags
    publisherPrincipalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    webhookUrl: eventGridWebhookUrl
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: appName
    planName: !empty(functionPlanName) ? functionPlanName : '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    resetRequestsQueueName: resetRequestsQueueName
    resetResultsQueueName: resetResultsQueueName
    resetFollowupsQueueName: resetFollowupsQueueName
    resetBatchesQueueName: resetBatchesQueueName
    resetLedgerTableName: resetLedgerTableName
    graphBaseUrl: graphBaseUrl
    confirmFirstCheckSeconds: confirmFirstCheckSeconds
    confirmTimeoutSeconds: confirmTimeoutSeconds
    resetCooldownSeconds: resetCooldownSeconds
    requestDeadlineSeconds: requestDeadlineSeconds
    allowPasscodeReveal: allowPasscodeReveal
    graphPostBudget: graphPostBudget
    graphRequestBudget: graphRequestBudget
    graphBudgetWindowSeconds: graphBudgetWindowSeconds
    graphBudgetInstances: graphBudgetInstances
    eventGridTopicEndpoint: eventGridEnabled ? eventGrid.outputs.endpoint : ''
    eventGridRetrySeconds: eventGridRetrySeconds
    approvalRequired: approvalRequired
    approvalTimeoutSeconds: approvalTimeoutSeconds
    guardrailMaxActionsPerHour: guardrailMaxActionsPerHour
    guardrailMaxPerRequesterPerHour: guardrailMaxPerRequesterPerHour
    allowedRequesters: allowedRequesters
    authEnabled: authEnabled
    authClientId: createAuthApplication ? graph.outputs.apiApplicationClientId : authClientId
  }
  dependsOn: [
    rbac
  ]
}

module alerts 'app/alerts.bicep' = if (alertsEnabled) {
  name: 'alerts'
  scope: rg
  params: {
    namePrefix: '${abbrs.insightsScheduledQueryRules}passcode-reset-${resourceToken}'
    actionGroupName: '${abbrs.insightsActionGroups}passcode-reset-${resourceToken}'
    location: location
    tags: tags
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    alertEmailAddress: alertEmailAddress
    failureRateThresholdPercent: failureRateThresholdPercent
    failureRateMinimumOutcomes: failureRateMinimumOutcomes
    graphThrottlingThreshold: graphThrottlingThreshold
  }
}

// Outputs: azd stores them in .azure/<env>/.env, where main.parameters.json also reads its inputs,
// so no output may be named like an input variable (tests/infra/test_azd.py): an output
// AUTH_CLIENT_ID would feed the created app's id back as authClientId and turn creation off.
// docs/deploy.md and infra/hooks use them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output SERVICE_API_NAME string = api.outputs.name
output AZURE_FUNCTION_NAME string = api.outputs.name
output AZURE_FUNCTION_URL string = api.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output AZURE_MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output RESET_REQUESTS_QUEUE string = resetRequestsQueueName
output RESET_RESULTS_QUEUE string = resetResultsQueueName
output AUTH_APPLICATION_CLIENT_ID string = createAuthApplication ? graph.outputs.apiApplicationClientId : authClientId
