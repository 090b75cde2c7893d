"""Every setting the app reads is set by the template, with the contract's default (docs/contract.md#settings)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra import bicep
from tests.infra.contract_settings import (
    ALL_APP_SETTINGS,
    IDENTITY_STORAGE_SETTINGS,
    NEVER_IN_AZURE,
    PLATFORM_SETTINGS,
)

API = "app/api.bicep"
MAIN = "main.bicep"


def app_settings() -> dict[str, Any]:
    """api.bicep's `appSettings` list of {name, value} as a dict."""
    entries = bicep.variable(bicep.parse(API), "appSettings")
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), "a setting is listed twice"
    return {entry["name"]: entry["value"] for entry in entries}


def main_param_behind(api_param: str) -> str:
    """The main.bicep parameter that main passes into api.bicep's parameter `api_param`."""
    passed = bicep.module(bicep.parse(MAIN), "api")["params"][api_param]
    assert isinstance(passed, str) and passed in bicep.parse(MAIN)["parameters"], (
        f"main.bicep passes {passed!r} to api.bicep's {api_param}; expected one of its parameters"
    )
    return passed


def deployed_default(setting: str) -> str:
    """The value `setting` gets when main.bicep is deployed with its defaults."""
    expression = app_settings()[setting]
    api_params = bicep.parse(API)["parameters"]
    if isinstance(expression, str) and expression in api_params:
        return str(bicep.param_default(bicep.parse(MAIN), main_param_behind(expression)))
    converted = bicep.function_call(expression, "string")
    if converted is not None:
        return str(bicep.param_default(bicep.parse(MAIN), main_param_behind(converted["value_to_convert"])))
    if isinstance(expression, dict) and expression.get("operator", {}).get("type") == "conditional":
        operands = expression["operator"]["operands"]
        assert (operands["true_value"], operands["false_value"]) == ("true", "false")
        flag = bicep.param_default(bicep.parse(MAIN), main_param_behind(operands["condition"]))
        return "true" if flag else "false"
    raise AssertionError(f"{setting}: cannot follow {expression!r} to a main.bicep default")


def test_every_setting_the_app_reads_is_set_except_the_local_only_ones() -> None:
    expected = (set(ALL_APP_SETTINGS) - NEVER_IN_AZURE - {"AzureWebJobsStorage"})
    missing = expected - set(app_settings())
    assert not missing, f"api.bicep appSettings lacks {sorted(missing)}"


def test_graph_token_is_never_set_in_azure() -> None:
    assert not NEVER_IN_AZURE & set(app_settings())


def test_template_sets_no_setting_outside_the_contract() -> None:
    known = set(ALL_APP_SETTINGS) | set(IDENTITY_STORAGE_SETTINGS) | PLATFORM_SETTINGS
    unknown = set(app_settings()) - known
    assert not unknown, f"unknown settings (typo, or missing from tests/infra/contract_settings.py): {unknown}"


def test_host_storage_is_identity_based_without_a_connection_string() -> None:
    settings = app_settings()
    assert "AzureWebJobsStorage" not in settings
    assert set(IDENTITY_STORAGE_SETTINGS) <= set(settings)
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identityClientId"
    for kind in ("blob", "queue", "table"):
        assert bicep.accessor_chain(settings[f"AzureWebJobsStorage__{kind}ServiceUri"]) == [
            "storage", "properties", "primaryEndpoints", kind,
        ]


def test_app_uses_the_user_assigned_identity_for_graph_and_telemetry() -> None:
    settings = app_settings()
    assert settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "ClientId=${identityClientId};Authorization=AAD"
    )
    assert bicep.accessor_chain(settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]) == [
        "applicationInsights", "properties", "ConnectionString",
    ]


def test_identity_client_id_is_the_managed_identity_output() -> None:
    passed = bicep.module(bicep.parse(MAIN), "api")["params"]["identityClientId"]
    assert bicep.accessor_chain(passed) == ["identity", "outputs", "clientId"]


@pytest.mark.parametrize(
    "setting",
    sorted(name for name, default in ALL_APP_SETTINGS.items() if default is not None and name not in NEVER_IN_AZURE),
)
def test_deployed_default_matches_the_spec(setting: str) -> None:
    assert deployed_default(setting) == ALL_APP_SETTINGS[setting]


def test_auth_require_roles_follows_easy_auth() -> None:
    operands = app_settings()["AUTH_REQUIRE_ROLES"]["operator"]["operands"]
    assert operands["condition"] == "authEnabled"
    auth = bicep.resource(bicep.parse(API), "authSettings")
    assert auth["properties"]["platform"]["enabled"] == "authEnabled"


def test_settings_list_is_what_the_site_gets() -> None:
    site = bicep.resource(bicep.parse(API), "functionApp")
    assert site["properties"]["siteConfig"]["appSettings"] == "appSettings"
    # No second writer of app settings that would replace the list.
    configs = bicep.resources_of_type(bicep.parse(API), "Microsoft.Web/sites/config")
    assert all(body["name"] != "appsettings" for body in configs.values())
