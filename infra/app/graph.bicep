// Microsoft Graph (Entra ID) resources, deployed through the Microsoft Graph Bicep extension
// (infra/bicepconfig.json). Kept in its own file because `extension` is syntax checkov's Bicep
// parser cannot read: tests parse this file with pycep-parser 0.7.1 and infra/.checkov.yaml
// excludes it from the scan (docs/decisions/0002-infra-choices.md).
//
// The app registration Easy Auth validates tokens for, with the app roles of docs/contract.md#http-api
// (created only when authEnabled is set without an authClientId). Needs Application Administrator /
// Cloud Application Administrator (or the default "users can register applications" setting).
//
// The managed identity's Graph application permissions (docs/contract.md#graph-traffic-and-permissions) are not granted here: an
// app-role assignment to a user-assigned identity created in the same deployment fails the first
// time with "Not a valid reference update" (msgraph-bicep-types issue 193), and granting needs a
// Privileged Role Administrator. infra/hooks/postprovision.sh grants them (with retries) or prints
// the command for an admin (docs/deploy.md).
extension microsoftGraphV1

@description('Create the API app registration (app roles PasscodeReset.*) for Easy Auth.')
param createApiApplication bool = false

@description('Stable key of the app registration (Graph Bicep uniqueName).')
param apiApplicationUniqueName string

param apiApplicationDisplayName string

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
  {
    value: 'PasscodeReset.Approve'
    displayName: 'Approve passcode resets'
    description: 'Approve or deny passcode resets held for approval (POST /api/resets/{requestId}/approval, POST /api/batches/{batchId}/approval).'
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
