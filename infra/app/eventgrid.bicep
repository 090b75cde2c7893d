// Optional Event Grid custom topic for outcome events (docs/contract.md#event-grid-delivery,
// docs/integrations.md): CloudEvents 1.0 input, Entra ID only (no keys), the app's identity as
// EventGrid Data Sender; optionally one webhook subscription (ServiceNow or another ITSM tool)
// with a retry policy and dead-lettering to a blob container, written with the topic's own
// identity (the storage account has shared-key access off).
param name string
param location string
param tags object = {}

@description('Principal id of the Function App\'s user-assigned identity: it publishes to the topic.')
param publisherPrincipalId string

@description('Storage account that holds the dead-letter container.')
param storageAccountName string

@description('Webhook of the subscription (CloudEvents 1.0 delivery; the endpoint answers the OPTIONS validation handshake). Empty: no subscription.')
@secure()
param webhookUrl string = ''

@description('Blob container for events the subscription could not deliver.')
param deadLetterContainerName string = 'eventgrid-deadletter'

@minValue(1)
@maxValue(30)
@description('Delivery attempts per event before it is dead-lettered.')
param maxDeliveryAttempts int = 30

@minValue(1)
@maxValue(1440)
@description('Minutes an event is retried before it is dead-lettered.')
param eventTimeToLiveInMinutes int = 1440

// Built-in roles (the same id in every tenant).
var eventGridDataSender = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'd5a91429-5739-47e2-a06b-3470a27159e7')
var storageBlobDataContributor = subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'ba92f5b4-2d11-453d-a403-e96b0029c9fe')

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Publishing goes over the topic's public endpoint, like the app's storage traffic (Flex Consumption
// without VNet integration); only Entra tokens with the Data Sender role are accepted.
resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  //checkov:skip=CKV_AZURE_193:Flex Consumption without VNet integration publishes over the public endpoint; local auth is disabled, so only the app's identity (EventGrid Data Sender) can publish.
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    minimumTlsVersionAllowed: '1.2'
  }
}

resource dataSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, publisherPrincipalId, eventGridDataSender)
  scope: topic
  properties: {
    principalId: publisherPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: eventGridDataSender
  }
}

// The topic's identity writes dead-lettered events into the container.
resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, topic.id, storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: storageBlobDataContributor
  }
}

resource webhookSubscription 'Microsoft.EventGrid/topics/eventSubscriptions@2025-02-15' = if (!empty(webhookUrl)) {
  parent: topic
  name: 'itsm-webhook'
  properties: {
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: webhookUrl
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      subjectBeginsWith: ''
      enableAdvancedFilteringOnArrays: true
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainer.name
        }
      }
    }
  }
  dependsOn: [
    deadLetterWriter
  ]
}

output name string = topic.name
output endpoint string = topic.properties.endpoint
