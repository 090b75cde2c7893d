#!/bin/sh
# azd postprovision hook (azure.yaml): the Microsoft Graph application permissions of the app's
# user-assigned managed identity (docs/contract.md#graph-traffic-and-permissions), DeviceManagementManagedDevices.Read.All and
# DeviceManagementManagedDevices.PrivilegedOperations.All, GroupMember.Read.All and Device.Read.All.
#
# - GRANT_GRAPH_PERMISSIONS=true: grants the missing ones with Azure CLI (`az login` as a Privileged
#   Role Administrator or Global Administrator). A new identity can be unknown to Graph for a while
#   ("Not a valid reference update", msgraph-bicep-types issue 193), so a grant is retried for up to
#   GRAPH_GRANT_WAIT_SECONDS (600). Fails (and stops `azd up`) when it cannot grant.
# - otherwise (the default): says whether they are granted and, if not, prints the exact commands
#   for an admin. Never fails.
#
# Runs standalone too: AZURE_MANAGED_IDENTITY_PRINCIPAL_ID=<object id> sh infra/hooks/postprovision.sh
# Prints no token or secret: only object ids and role names.
set -u

GRAPH_APP_ID=00000003-0000-0000-c000-000000000000
GRAPH_URL=https://graph.microsoft.com/v1.0
# GroupMember.Read.All and Device.Read.All: group batches read transitive members and device members'
# deviceId (docs/decisions/0019-group-batches-and-permissions.md).
PERMISSIONS="DeviceManagementManagedDevices.Read.All DeviceManagementManagedDevices.PrivilegedOperations.All GroupMember.Read.All Device.Read.All"
MI=${AZURE_MANAGED_IDENTITY_PRINCIPAL_ID:-}
GRANT=$(printf '%s' "${GRANT_GRAPH_PERMISSIONS:-false}" | tr '[:upper:]' '[:lower:]')
WAIT_SECONDS=${GRAPH_GRANT_WAIT_SECONDS:-600}
RETRY_INTERVAL=${GRAPH_GRANT_RETRY_INTERVAL:-15}

say() { printf '%s\n' "$*"; }

print_grant_steps() {
  cat <<EOF

ACTION NEEDED: the Function App's managed identity ($MI) needs two Microsoft Graph
application permissions ($PERMISSIONS);
they are missing or could not be checked. Without them every reset request ends 'failed' (Graph 403).
A Privileged Role Administrator (or Global Administrator) grants them with Azure CLI:

  MI=$MI
  GRAPH=\$(az ad sp show --id $GRAPH_APP_ID --query id -o tsv)
  for PERMISSION in $PERMISSIONS; do
    ROLE=\$(az ad sp show --id $GRAPH_APP_ID --query "appRoles[?value=='\$PERMISSION'].id | [0]" -o tsv)
    az rest --method POST --uri "$GRAPH_URL/servicePrincipals/\$MI/appRoleAssignments" \\
      --headers Content-Type=application/json \\
      --body "{\\"principalId\\":\\"\$MI\\",\\"resourceId\\":\\"\$GRAPH\\",\\"appRoleId\\":\\"\$ROLE\\"}"
  done

or runs this hook:  GRANT_GRAPH_PERMISSIONS=true AZURE_MANAGED_IDENTITY_PRINCIPAL_ID=$MI sh infra/hooks/postprovision.sh
(Microsoft Graph PowerShell: see "Granting the Graph permissions by hand" in docs/deploy.md; the
Entra admin center has no page that assigns application permissions to a managed identity.)
Then restart the app: az functionapp restart -g "\$AZURE_RESOURCE_GROUP" -n "\$AZURE_FUNCTION_NAME"

EOF
}

if [ -z "$MI" ]; then
  say "postprovision: AZURE_MANAGED_IDENTITY_PRINCIPAL_ID is not set (an output of infra/main.bicep); nothing to check."
  [ "$GRANT" = true ] && exit 1
  exit 0
fi

az_ready() {
  command -v az >/dev/null 2>&1 && az account show >/dev/null 2>&1
}

if ! az_ready; then
  say "postprovision: Azure CLI is not installed or not logged in (az login); cannot check the Graph permissions."
  print_grant_steps
  [ "$GRANT" = true ] && exit 1
  exit 0
fi

graph_sp=$(az ad sp show --id "$GRAPH_APP_ID" --query id -o tsv 2>/dev/null) || graph_sp=""
granted=$(az rest --method GET --uri "$GRAPH_URL/servicePrincipals/$MI/appRoleAssignments" \
  --query "value[].appRoleId" -o tsv 2>/dev/null) || granted="?"

missing=""
for permission in $PERMISSIONS; do
  role=$(az ad sp show --id "$GRAPH_APP_ID" --query "appRoles[?value=='$permission'].id | [0]" -o tsv 2>/dev/null) || role=""
  if [ -z "$graph_sp" ] || [ -z "$role" ]; then
    say "postprovision: cannot read Microsoft Graph's service principal with this login."
    print_grant_steps
    [ "$GRANT" = true ] && exit 1
    exit 0
  fi
  case "$granted" in
    *"$role"*) say "postprovision: $permission is granted." ;;
    *) missing="$missing $permission=$role" ;;
  esac
done

[ -z "$missing" ] && exit 0

if [ "$GRANT" != true ]; then
  print_grant_steps
  exit 0
fi

grant() {  # $1 permission name, $2 app role id
  deadline=$(( $(date +%s) + WAIT_SECONDS ))
  while :; do
    if output=$(az rest --method POST --uri "$GRAPH_URL/servicePrincipals/$MI/appRoleAssignments" \
      --headers Content-Type=application/json \
      --body "{\"principalId\":\"$MI\",\"resourceId\":\"$graph_sp\",\"appRoleId\":\"$2\"}" 2>&1); then
      say "postprovision: granted $1."
      return 0
    fi
    case "$output" in
      *"already exists"*) say "postprovision: $1 was already granted."; return 0 ;;
      *"Not a valid reference update"*|*"does not exist"*|*"ResourceNotFound"*) ;;
      *) say "postprovision: granting $1 failed: $output"; return 1 ;;
    esac
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "postprovision: Graph still does not know the identity after ${WAIT_SECONDS}s: $output"
      return 1
    fi
    say "postprovision: Graph does not know the new identity yet (replication, msgraph-bicep-types issue 193); retrying in ${RETRY_INTERVAL}s."
    sleep "$RETRY_INTERVAL"
  done
}

status=0
for entry in $missing; do
  grant "${entry%%=*}" "${entry#*=}" || status=1
done
if [ "$status" -ne 0 ]; then
  say "postprovision: needs Privileged Role Administrator or Global Administrator; rerun with 'azd hooks run postprovision'."
  print_grant_steps
  exit 1
fi
say "postprovision: tokens the identity already holds are cached up to 24 h; restart the app after a late grant."
exit 0
