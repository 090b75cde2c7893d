// Storage for the Functions host (AzureWebJobsStorage), the deployment package, the request,
// results and follow-up queues (with the poison queues the host moves failing messages to) and
// the request ledger table. Entra ID only: shared-key access is off, so no connection string
// with a key exists anywhere.
param name string
param location string
param tags object = {}
param deploymentContainerName string
param requestsQueueName string
param resultsQueueName string
param followupsQueueName string
param batchesQueueName string
param ledgerTableName string

// The host moves a message to `<queue>-poison` after maxDequeueCount (host.json) failures.
// Created up front so alert queries and operators find them before the first failure.
var queueNames = [
  requestsQueueName
  '${requestsQueueName}-poison'
  resultsQueueName
  // The Event Grid outbox (docs/contract.md#event-grid-delivery), named after the results queue; its
  // functions listen whether or not a topic is configured.
  '${resultsQueueName}-eventgrid'
  '${resultsQueueName}-eventgrid-poison'
  followupsQueueName
  '${followupsQueueName}-poison'
  // Batches (docs/contract.md#batches): upstream batches and each batch's steps.
  batchesQueueName
  '${batchesQueueName}-poison'
]

// Batch records and item lists (shared/adapters/batch_store.py); the name is fixed in the app.
var batchContainerName = 'passcode-reset-batches'

// Public endpoint with identity-only access: Flex Consumption without VNet integration reaches
// storage over its public endpoint; a private-network variant is out of scope (docs/deploy.md).
resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  //checkov:skip=CKV_AZURE_35:Flex Consumption without VNet integration reaches storage over the public endpoint; access is Entra-only (shared key disabled).
  //checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: public network access stays enabled without a VNet; there is no key to leak.
  //checkov:skip=CKV_AZURE_206:LRS is deliberate: queues and the ledger hold short-lived work; a regional outage is handled by redeploying.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    dnsEndpointType: 'Standard'
    minimumTlsVersion: 'TLS1_2'
    publicNetworkAccess: 'Enabled'
    supportsHttpsTrafficOnly: true
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

// Flex Consumption deploys the app package into this container with the managed identity.
resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource batchContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: batchContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: ledgerTableName
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
