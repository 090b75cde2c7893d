"""The resources the templates declare, and how main.bicep wires them together."""

from __future__ import annotations

import json
import re

import pytest

from tests.infra import bicep

MAIN = "main.bicep"
API = "app/api.bicep"
STORAGE = "app/storage.bicep"
RBAC = "app/rbac.bicep"
MONITORING = "app/monitoring.bicep"
GRAPH = "app/graph.bicep"
ALERTS = "app/alerts.bicep"

# Built-in Azure role definitions (same id in every tenant).
ROLE_DEFINITIONS = {
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "storageQueueDataContributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "storageTableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "monitoringMetricsPublisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}
EXPECTED_QUEUES = {
    "passcode-reset-requests",
    "passcode-reset-requests-poison",
    "passcode-reset-results",
    "passcode-reset-results-eventgrid",
    "passcode-reset-results-eventgrid-poison",
    "passcode-reset-followups",
    "passcode-reset-followups-poison",
    "passcode-reset-batches",  # docs/contract.md#batches
    "passcode-reset-batches-poison",
}


def main_default_via(module_name: str, module_param: str) -> object:
    """Default of the main.bicep parameter passed straight into a module parameter."""
    passed = bicep.module(bicep.parse(MAIN), module_name)["params"][module_param]
    return bicep.param_default(bicep.parse(MAIN), passed)


# --- Function App ---------------------------------------------------------------------------


def test_plan_is_flex_consumption_fc1_on_linux() -> None:
    plan = bicep.resource(bicep.parse(API), "plan")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan["properties"]["reserved"] is True


def test_function_app_is_linux_on_that_plan() -> None:
    site = bicep.resource(bicep.parse(API), "functionApp")
    assert site["kind"] == "functionapp,linux"
    assert bicep.accessor_chain(site["properties"]["serverFarmId"]) == ["plan", "id"]


def test_runtime_is_python_3_11() -> None:
    template = bicep.parse(API)
    runtime = bicep.resource(template, "functionApp")["properties"]["functionAppConfig"]["runtime"]
    assert runtime["name"] == "python"
    assert runtime["version"] == "pythonVersion"
    assert bicep.variable(template, "pythonVersion") == "3.11"


def test_deployment_package_is_read_with_the_user_assigned_identity() -> None:
    deployment = bicep.resource(bicep.parse(API), "functionApp")["properties"]["functionAppConfig"]["deployment"]
    storage = deployment["storage"]
    assert storage["type"] == "blobContainer"
    assert storage["value"] == "${storage.properties.primaryEndpoints.blob}${deploymentContainerName}"
    assert storage["authentication"] == {
        "type": "UserAssignedIdentity",
        "userAssignedIdentityResourceId": "identityId",
    }


def test_scale_limit_defaults_to_the_lowest_value_flex_consumption_accepts_in_every_region() -> None:
    template = bicep.parse(API)
    scale = bicep.resource(template, "functionApp")["properties"]["functionAppConfig"]["scaleAndConcurrency"]
    assert scale == {"maximumInstanceCount": "maximumInstanceCount", "instanceMemoryMB": "instanceMemoryMB"}
    main = bicep.parse(MAIN)
    assert main_default_via("api", "maximumInstanceCount") == 40  # lowestMaximumInstanceCount in most regions
    assert bicep.decorator(main, "maximumInstanceCount", "min_value") == 1  # regions that allow less
    assert bicep.decorator(main, "maximumInstanceCount", "max_value") == 1000
    assert "40" in bicep.decorator(main, "maximumInstanceCount", "description")
    memory = main_default_via("api", "instanceMemoryMB")
    assert memory in bicep.decorator(main, "instanceMemoryMB", "allowed") == [512, 2048, 4096]


def test_graph_budget_share_is_its_own_parameter_and_not_the_scale_limit() -> None:
    template = bicep.parse(API)
    settings = {entry["name"]: entry["value"] for entry in bicep.variable(template, "appSettings")}
    share = bicep.function_call(settings["GRAPH_BUDGET_INSTANCES"], "string")
    assert share == {"value_to_convert": "graphBudgetInstances"}
    assert "maximumInstanceCount" not in list(bicep.walk(bicep.variable(template, "appSettings")))
    assert main_default_via("api", "graphBudgetInstances") == 4


def test_site_uses_only_the_user_assigned_identity() -> None:
    identity = bicep.resource(bicep.parse(API), "functionApp")["identity"]
    assert identity["type"] == "UserAssigned"
    assert [bicep.unquote(key) for key in identity["userAssignedIdentities"]] == ["${identityId}"]


def test_site_is_https_only_with_tls_1_2_and_no_ftp_or_basic_auth() -> None:
    template = bicep.parse(API)
    site = bicep.resource(template, "functionApp")["properties"]
    assert site["httpsOnly"] is True
    assert site["siteConfig"]["minTlsVersion"] == "1.2"
    # Flex Consumption does not take ftpsState (ignored, or error 51021 in newer regions): FTP is
    # turned off through the publishing-credentials policies instead.
    assert "ftpsState" not in site["siteConfig"]
    policies = bicep.resources_of_type(template, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")
    assert {body["name"]: body["properties"]["allow"] for body in policies.values()} == {"ftp": False, "scm": False}


def test_site_carries_the_azd_service_name_of_azure_yaml() -> None:
    tags = bicep.resource(bicep.parse(API), "functionApp")["tags"]
    added = bicep.function_call(tags, "union")["arg_2"]  # type: ignore[index]
    assert {bicep.unquote(key): value for key, value in added.items()} == {"azd-service-name": "api"}


# --- Easy Auth --------------------------------------------------------------------------------


def test_easy_auth_answers_401_and_leaves_health_and_openapi_open() -> None:
    template = bicep.parse(API)
    auth = bicep.resource(template, "authSettings")
    assert auth["name"] == "authsettingsV2"
    validation = auth["properties"]["globalValidation"]
    assert validation["unauthenticatedClientAction"] == "Return401"
    assert validation["requireAuthentication"] == "authEnabled"
    assert validation["excludedPaths"] == ["/api/health", "/api/openapi.json"]
    provider = bicep.variable(template, "entraIdProvider")
    assert provider["registration"]["clientId"] == "authClientId"
    assert provider["validation"]["allowedAudiences"] == ["authClientId", "api://${authClientId}"]
    assert bicep.param_default(template, "authOpenIdIssuer").endswith("${tenant().tenantId}/v2.0")


def test_easy_auth_is_off_by_default() -> None:
    assert main_default_via("api", "authEnabled") is False


# --- Storage ----------------------------------------------------------------------------------


def test_storage_has_no_shared_key_no_public_blobs_and_https_tls_1_2() -> None:
    properties = bicep.resource(bicep.parse(STORAGE), "storage")["properties"]
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    assert properties["supportsHttpsTrafficOnly"] is True
    assert properties["defaultToOAuthAuthentication"] is True


def test_request_results_followup_and_poison_queues_are_created() -> None:
    template = bicep.parse(STORAGE)

    def deployed_name(entry: str) -> str:
        if entry in template["parameters"]:
            return str(main_default_via("storage", entry))
        for reference in bicep.interpolated_names(entry):
            entry = entry.replace("${" + reference + "}", str(main_default_via("storage", reference)))
        return entry

    assert {deployed_name(entry) for entry in bicep.variable(template, "queueNames")} == EXPECTED_QUEUES
    loop = template["resources"]["queues"]["config"]
    assert loop["loop_type"]["detail"] == {"item_name": "queueName", "array_name": "queueNames"}


def test_ledger_table_is_created() -> None:
    table = bicep.resource(bicep.parse(STORAGE), "ledgerTable")
    assert table["name"] == "ledgerTableName"
    assert main_default_via("storage", "ledgerTableName") == "PasscodeResets"


def test_deployment_container_is_private() -> None:
    container = bicep.resource(bicep.parse(STORAGE), "deploymentContainer")
    assert container["properties"]["publicAccess"] == "None"


@pytest.mark.parametrize("path", [p.relative_to(bicep.INFRA).as_posix() for p in bicep.bicep_files()])
def test_no_template_reads_or_builds_a_storage_key(path: str) -> None:
    source = bicep.text(path)
    assert "listKeys" not in source
    assert "AccountKey=" not in source


# --- Role assignments -------------------------------------------------------------------------


@pytest.mark.parametrize("role", sorted(ROLE_DEFINITIONS))
def test_managed_identity_role_assignment(role: str) -> None:
    template = bicep.parse(RBAC)
    definition = bicep.function_call(bicep.variable(template, "roleDefinitionIds")[role], "subscription_resource_id")
    assert definition is not None
    assert definition["resource_type"] == "Microsoft.Authorization/roleDefinitions"
    assert definition["resource_name_1"] == ROLE_DEFINITIONS[role]

    matches = {
        name: body
        for name, body in bicep.resources_of_type(template, "Microsoft.Authorization/roleAssignments").items()
        if bicep.accessor_chain(body["properties"]["roleDefinitionId"]) == ["roleDefinitionIds", role]
        and body["properties"]["principalId"] == "managedIdentityPrincipalId"
    }
    assert len(matches) == 1, f"expected one assignment of {role} to the managed identity, got {list(matches)}"
    body = next(iter(matches.values()))
    assert body["properties"]["principalType"] == "ServicePrincipal"
    guid = bicep.function_call(body["name"], "guid")
    assert guid is not None, "role assignment names must be guid(scope, principal, role)"
    assert bicep.accessor_chain(guid["base_string"]) == [body["scope"], "id"]
    assert guid["extra_string_1"] == "managedIdentityPrincipalId"
    assert bicep.accessor_chain(guid["extra_string_2"]) == ["roleDefinitionIds", role]


def test_storage_roles_are_scoped_to_the_account_and_metrics_to_app_insights() -> None:
    template = bicep.parse(RBAC)
    scopes = {
        bicep.accessor_chain(body["properties"]["roleDefinitionId"])[1]: body["scope"]  # type: ignore[index]
        for body in bicep.resources_of_type(template, "Microsoft.Authorization/roleAssignments").values()
        if body["properties"]["principalId"] == "managedIdentityPrincipalId"
    }
    assert scopes == {
        "storageBlobDataOwner": "storage",
        "storageQueueDataContributor": "storage",
        "storageTableDataContributor": "storage",
        "monitoringMetricsPublisher": "applicationInsights",
    }


def test_deploying_user_gets_queue_access_only_when_named() -> None:
    template = bicep.parse(RBAC)
    assert bicep.resource_condition(template, "userQueueDataContributor") is not None
    body = bicep.resource(template, "userQueueDataContributor")
    assert bicep.accessor_chain(body["properties"]["roleDefinitionId"]) == [
        "roleDefinitionIds", "storageQueueDataContributor",
    ]
    assert bicep.module(bicep.parse(MAIN), "rbac")["params"]["userPrincipalId"] == "principalId"


# --- Monitoring -------------------------------------------------------------------------------


def test_app_insights_and_log_analytics_disable_local_auth() -> None:
    template = bicep.parse(MONITORING)
    insights = bicep.resource(template, "applicationInsights")["properties"]
    assert insights["DisableLocalAuth"] is True
    assert bicep.accessor_chain(insights["WorkspaceResourceId"]) == ["logAnalytics", "id"]
    workspace = bicep.resource(template, "logAnalytics")["properties"]
    assert workspace["features"]["disableLocalAuth"] is True


# --- Microsoft Graph --------------------------------------------------------------------------


def test_graph_module_uses_the_graph_extension_for_the_easy_auth_app_registration_only() -> None:
    template = bicep.parse(GRAPH)
    assert "microsoftGraphV1" in template["extensions"]
    assert {body["type"] for body in template["resources"].values()} == {
        "Microsoft.Graph/applications",
        "Microsoft.Graph/servicePrincipals",
    }
    config = json.loads((bicep.INFRA / "bicepconfig.json").read_text(encoding="utf-8"))
    assert config["extensions"]["microsoftGraphV1"].startswith(
        "br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:"
    )
    assert bicep.module_condition(bicep.parse(MAIN), "graph") == "createAuthApplication"


@pytest.mark.parametrize("path", [p.relative_to(bicep.INFRA).as_posix() for p in bicep.bicep_files()])
def test_no_template_assigns_graph_app_roles(path: str) -> None:
    # A Bicep app-role assignment to the identity created in the same deployment fails the first
    # time (msgraph-bicep-types issue 193); infra/hooks/postprovision.sh grants them instead.
    assert "appRoleAssignedTo" not in bicep.text(path)
    assert "grantGraphPermissions" not in bicep.text(path)


def test_api_app_registration_defines_the_four_app_roles() -> None:
    template = bicep.parse(GRAPH)
    values = {role["value"] for role in bicep.variable(template, "apiAppRoles")}
    assert values == {
        "PasscodeReset.Submit", "PasscodeReset.Read", "PasscodeReset.RevealPasscode", "PasscodeReset.Approve"
    }
    app = bicep.resource(template, "apiApplication")
    assert app["api"]["requestedAccessTokenVersion"] == 2  # what authsettingsV2's v2.0 issuer expects
    assert app["appRoles"]["loop_type"]["detail"]["array_name"] == "apiAppRoles"
    assert app["appRoles"]["config"]["allowedMemberTypes"] == ["User", "Application"]
    assert bicep.resource(template, "apiServicePrincipal")["appRoleAssignmentRequired"] is True


# --- Alerts -----------------------------------------------------------------------------------


def test_four_log_alerts_over_app_insights() -> None:
    template = bicep.parse(ALERTS)
    rules = bicep.resources_of_type(template, "Microsoft.Insights/scheduledQueryRules")
    assert set(rules) == {"poisonAlert", "failureRateAlert", "throttlingAlert", "eventGridAlert", "guardrailAlert"}
    for body in rules.values():
        assert body["kind"] == "LogAlert"
        assert [bicep.accessor_chain(scope) for scope in body["properties"]["scopes"]] == [
            ["applicationInsights", "id"],
        ]
        assert body["properties"]["actions"] == {"actionGroups": "actionGroupIds"}
    assert bicep.resource_condition(template, "actionGroup") is not None
    assert bicep.module_condition(bicep.parse(MAIN), "alerts") == "alertsEnabled"


def test_alert_queries_follow_the_telemetry_contract() -> None:
    template = bicep.parse(ALERTS)
    poison = bicep.variable(template, "poisonQuery")
    assert "-poison" in poison and "MaxDequeueCount" in poison and "retries_exhausted" in poison
    failure = bicep.function_call(bicep.variable(template, "failureRateQuery"), "format")
    assert failure is not None
    query = next(value for value in failure.values() if isinstance(value, str) and "summarize" in value)
    assert 'customDimensions.event) == "outcome"' in query
    assert 'status in ("failed", "timed_out")' in query
    assert "sum(itemCount)" in query
    throttling = bicep.variable(template, "throttlingQuery")
    assert 'resultCode == "429"' in throttling and throttling.lstrip().startswith("dependencies")


# --- Wiring -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(bicep.parse(MAIN)["modules"]))
def test_main_passes_every_required_module_parameter_and_no_unknown_one(name: str) -> None:
    main = bicep.parse(MAIN)
    path = bicep.module_path(main, name)
    assert (bicep.INFRA / path).is_file()
    target = bicep.parse(path)
    passed = set(bicep.module(main, name)["params"])
    assert passed <= set(target["parameters"]), f"{name}: unknown {passed - set(target['parameters'])}"
    assert bicep.required_params(target) <= passed, f"{name}: missing {bicep.required_params(target) - passed}"


def test_main_reads_only_outputs_the_modules_declare() -> None:
    main = bicep.parse(MAIN)
    for module_name, output in bicep.module_output_references(main):
        outputs = bicep.parse(bicep.module_path(main, module_name)).get("outputs", {})
        assert output in outputs, f"{module_name}.outputs.{output} is not declared"


def test_every_abbreviation_main_uses_exists() -> None:
    abbreviations = json.loads((bicep.INFRA / "abbreviations.json").read_text(encoding="utf-8"))
    used = set(re.findall(r"abbrs\.([A-Za-z]+)", bicep.text(MAIN)))
    assert used and used <= set(abbreviations)


def test_main_targets_the_subscription_and_creates_the_resource_group() -> None:
    main = bicep.parse(MAIN)
    assert main["globals"]["scope"]["value"] == "subscription"
    assert list(bicep.resources_of_type(main, "Microsoft.Resources/resourceGroups")) == ["rg"]
    assert all(bicep.module(main, name)["scope"] == "rg" for name in main["modules"])


def test_retention_is_limited_to_the_days_application_insights_accepts() -> None:
    template = bicep.parse(MONITORING)
    allowed = bicep.decorator(template, "retentionInDays", "allowed")
    assert allowed == [30, 60, 90, 120, 180, 270, 365, 550, 730]
    assert bicep.param_default(template, "retentionInDays") in allowed
    insights = bicep.resource(template, "applicationInsights")["properties"]
    assert insights["RetentionInDays"] == "retentionInDays"
