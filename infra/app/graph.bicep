// Microsoft Graph (Entra ID) resources, deployed through the Microsoft Graph Bicep extension
// (infra/bicepconfig.json). Kept in its own file because `extension` is syntax checkov's Bicep
// parser cannot read: tests parse this file with pycep-parser 0.7.1 and infra/.checkov.yaml
// excludes it from the scan (docs/decisions/0002-infra-choices.md).
//
// 1. Application permissions for the app's managed identity (SPEC section 8):
//    DeviceManagementManagedDevices.Read.All and ...PrivilegedOperations.All on Microsoft Graph.
//    Deploying them needs Privileged Role Administrator (or Global Administrator); see
//    docs/deploy.md for the manual alternative.
// 2. Optionally, the app registration Easy Auth validates tokens for, with the app roles of
//    SPEC section 7. Needs Application Administrator / Cloud Application Administrator (or the
//    default "users can register applications" setting).
extension microsoftGraphV1

@description('Object id of the managed identity\'s service principal.')
param managedIdentityPrincipalId string

@description('Assign the two Graph application permissions to the managed identity.')
param grantAppRoles bool = true

@description('Create the API app registration (app roles PasscodeReset.*) for Easy Auth.')
param createApiApplication bool = false

@description('Stable key of the app registration (Graph Bicep uniqueName).')
param apiApplicationUniqueName string

param apiApplicationDisplayName string

var microsoftGraphAppId = '00000003-0000-0000-c000-000000000000'

resource microsoftGraph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: microsoftGraphAppId
}

// App role ids differ by name only in the Graph service principal's appRoles; look them up
// rather than hard-coding GUIDs.
resource managedDevicesRead 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (grantAppRoles) {
  appRoleId: filter(microsoftGraph.appRoles, role => role.value == 'DeviceManagementManagedDevices.Read.All')[0].id
  principalId: managedIdentityPrincipalId
  resourceId: microsoftGraph.id
}

resource managedDevicesPrivilegedOperations 'Microsoft.Graph/appRoleAssignedTo@v1.0' = if (grantAppRoles) {
  appRoleId: filter(microsoftGraph.appRoles, role => role.value == 'DeviceManagementManagedDevices.PrivilegedOperations.All')[0].id
  principalId: managedIdentityPrincipalId
  resourceId: microsoftGraph.id
}

var apiAppRoles = [
  {
    value: 'PasscodeReset.Submit'
    displayName: 'Submit passcode resets'
    description: 'Submit passcode reset requests (POST /api/resets).'
  }
  {
    value: 'PasscodeReset.Read'
    displayName: 'Read passcode reset status'
    description: 'Read the status and outcome of passcode reset requests (GET /api/resets/{requestId}).'
  }
  {
    value: 'PasscodeReset.RevealPasscode'
    displayName: 'Reveal new passcodes'
    description: 'Read the new passcode Intune generated for a device (GET /api/resets/{requestId}/passcode).'
  }
]

resource apiApplication 'Microsoft.Graph/applications@v1.0' = if (createApiApplication) {
  uniqueName: apiApplicationUniqueName
  displayName: apiApplicationDisplayName
  signInAudience: 'AzureADMyOrg'
  api: {
    // v2 tokens: issuer login.microsoftonline.com/<tenant>/v2.0 and audience = client id, as
    // authsettingsV2 in api.bicep expects.
    requestedAccessTokenVersion: 2
  }
  appRoles: [for role in apiAppRoles: {
    id: guid(apiApplicationUniqueName, role.value)
    allowedMemberTypes: [
      'User'
      'Application'
    ]
    value: role.value
    displayName: role.displayName
    description: role.description
    isEnabled: true
  }]
}

// Only principals assigned one of the roles can get a token for the API.
resource apiServicePrincipal 'Microsoft.Graph/servicePrincipals@v1.0' = if (createApiApplication) {
  appId: apiApplication.appId
  appRoleAssignmentRequired: true
}

output apiApplicationClientId string = createApiApplication ? apiApplication.appId : ''
output apiServicePrincipalId string = createApiApplication ? apiServicePrincipal.id : ''
