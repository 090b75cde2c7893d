"""Every resource body in infra/ against Azure's own resource models (the azure-mgmt-* SDKs).

No Bicep compiler and no subscription here, so a misspelt property or a value Azure rejects would
otherwise show up first at `azd up`. tests/infra/resource_models.py walks each resource body and
checks property names against the SDK model's attribute map and literal enum values against the
SDK's enums; it runs in `.venv-azmodels` (built by `make test`, pins in azmodels-requirements.txt).
The virtualenv is a prerequisite of `make pytest`, so a missing one is a failure, not a skip.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.infra import bicep

AZMODELS_PYTHON = bicep.REPO / ".venv-azmodels" / "bin" / "python"
CHECKER = Path(__file__).with_name("resource_models.py")


def run_checker(root: Path, *, as_json: bool = True) -> subprocess.CompletedProcess[str]:
    if not AZMODELS_PYTHON.exists():
        pytest.fail(
            "the Azure SDK models are not installed: run `make .venv-azmodels/.installed-stamp` (make test does)"
        )
    command = [str(AZMODELS_PYTHON), str(CHECKER), *(["--json"] if as_json else []), str(root)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)  # noqa: S603


@functools.cache
def infra_report() -> dict[str, Any]:
    completed = run_checker(bicep.INFRA)
    assert completed.returncode in (0, 1), f"the checker crashed:\n{completed.stderr[-3000:]}"
    report: dict[str, Any] = json.loads(completed.stdout)
    return report


def test_every_resource_body_in_infra_matches_azures_models() -> None:
    findings = [
        f"{f['file']}: {f['resource']} ({f['resource_type']}) {f['path']}: {f['message']}"
        for f in infra_report()["findings"]
    ]
    assert not findings, "\n".join(findings)


def test_every_azure_resource_is_checked_and_only_graph_resources_have_no_model() -> None:
    report = infra_report()
    assert {item["type"].split("/")[0] for item in report["unchecked"]} <= {"Microsoft.Graph"}
    declared = {
        (path.relative_to(bicep.INFRA).as_posix(), name)
        for path in bicep.bicep_files()
        for name, declaration in bicep.parse(path.relative_to(bicep.INFRA).as_posix()).get("resources", {}).items()
        if not declaration.get("existing") and not declaration["type"].startswith("Microsoft.Graph/")
    }
    checked = {(item["file"], item["resource"]) for item in report["checked"]}
    assert checked == declared
    assert len(checked) >= 20


# The SDK module each resource type is checked against: the versioned module of its apiVersion
# where the pinned SDK ships one. A pin or apiVersion bump that loses the match shows up here.
EXPECTED_MODELS = {
    "Microsoft.Web/sites": "azure.mgmt.web.v2024_04_01.models.Site",
    "Microsoft.Web/serverfarms": "azure.mgmt.web.v2024_04_01.models.AppServicePlan",
    "Microsoft.Web/sites/config": "azure.mgmt.web.v2024_04_01.models.SiteAuthSettingsV2",
    "Microsoft.Storage/storageAccounts": "azure.mgmt.storage.v2023_05_01.models.StorageAccountCreateParameters",
    "Microsoft.ManagedIdentity/userAssignedIdentities": "azure.mgmt.msi.v2023_01_31.models.Identity",
    "Microsoft.Authorization/roleAssignments": (
        "azure.mgmt.authorization.v2022_04_01.models.RoleAssignmentCreateParameters"
    ),
    "Microsoft.Insights/components": "azure.mgmt.applicationinsights.v2020_02_02.models.ApplicationInsightsComponent",
}


@pytest.mark.parametrize("resource_type", sorted(EXPECTED_MODELS))
def test_resources_are_checked_against_the_sdk_models_of_their_api_version(resource_type: str) -> None:
    models = {item["model"] for item in infra_report()["checked"] if item["resource_type"] == resource_type}
    assert models == {EXPECTED_MODELS[resource_type]}


# --- the check can fail ------------------------------------------------------------------------


def broken_copy(tmp_path: Path, edits: dict[str, list[tuple[str, str]]]) -> Path:
    root = tmp_path / "infra"
    shutil.copytree(bicep.INFRA, root)
    for relative, replacements in edits.items():
        path = root / relative
        source = path.read_text(encoding="utf-8")
        for old, new in replacements:
            assert source.count(old) == 1, f"{relative}: {old!r} must occur once"
            source = source.replace(old, new)
        path.write_text(source, encoding="utf-8")
    return root


def findings_of(completed: subprocess.CompletedProcess[str]) -> set[tuple[str, str, str]]:
    report = json.loads(completed.stdout)
    return {(f["file"], f["resource"], f["path"]) for f in report["findings"]}


def test_misspelt_properties_and_wrong_enum_values_fail_naming_file_resource_and_path(tmp_path: Path) -> None:
    root = broken_copy(
        tmp_path,
        {
            "app/storage.bicep": [
                ("allowSharedKeyAccess: false", "allowSharedKeyAcess: false"),
                ("minimumTlsVersion: 'TLS1_2'", "minimumTlsVersion: 'TLS1_2x'"),
            ],
            "app/api.bicep": [
                ("instanceMemoryMB: instanceMemoryMB", "instanceMemoryMb: instanceMemoryMB"),
                ("unauthenticatedClientAction: 'Return401'", "unauthenticatedClientAction: 'Return402'"),
            ],
        },
    )
    completed = run_checker(root)
    assert completed.returncode == 1, completed.stderr[-2000:]
    assert findings_of(completed) == {
        ("app/storage.bicep", "storage", "properties.allowSharedKeyAcess"),
        ("app/storage.bicep", "storage", "properties.minimumTlsVersion"),
        ("app/api.bicep", "functionApp", "properties.functionAppConfig.scaleAndConcurrency.instanceMemoryMb"),
        ("app/api.bicep", "authSettings", "properties.globalValidation.unauthenticatedClientAction"),
    }
    messages = [f["message"] for f in json.loads(completed.stdout)["findings"]]
    assert any("did you mean 'allowSharedKeyAccess'" in message for message in messages)
    assert any("'TLS1_2x' is not a value of MinimumTlsVersion" in message for message in messages)


def test_plain_output_names_file_resource_and_path_of_each_error(tmp_path: Path) -> None:
    root = broken_copy(tmp_path, {"app/monitoring.bicep": [("IngestionMode: 'LogAnalytics'", "IngestionMode: 'Log'")]})
    completed = run_checker(root, as_json=False)
    assert completed.returncode == 1
    errors = [line for line in completed.stdout.splitlines() if line.startswith("ERROR ")]
    assert len(errors) == 1
    assert errors[0].startswith(
        "ERROR app/monitoring.bicep: applicationInsights (Microsoft.Insights/components) properties.IngestionMode:"
    )


def test_allowed_values_of_a_parameter_are_checked_where_it_is_used(tmp_path: Path) -> None:
    root = broken_copy(
        tmp_path, {"app/rbac.bicep": [("  'User'\n  'ServicePrincipal'\n", "  'User'\n  'Application'\n")]}
    )
    completed = run_checker(root)
    assert completed.returncode == 1
    assert findings_of(completed) == {
        ("app/rbac.bicep", "userQueueDataContributor", "properties.principalType"),
    }


def test_a_string_where_azure_wants_a_boolean_fails_even_inside_a_variable(tmp_path: Path) -> None:
    # entraIdProvider is a variable used in one branch of `authEnabled ? {...} : {}`.
    root = broken_copy(
        tmp_path, {"app/api.bicep": [("  enabled: true\n  registration: {", "  enabled: 'true'\n  registration: {")]}
    )
    completed = run_checker(root)
    assert completed.returncode == 1
    assert findings_of(completed) == {
        ("app/api.bicep", "authSettings", "properties.identityProviders.azureActiveDirectory.enabled"),
    }
