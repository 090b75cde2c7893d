// The one identity the app uses for everything: storage (AzureWebJobsStorage__*), Application
// Insights ingestion (Entra auth), the deployment package, and Microsoft Graph (AZURE_CLIENT_ID).
// User-assigned, so its Graph permissions survive re-creating the Function App.
param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
