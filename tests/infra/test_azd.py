"""azure.yaml and infra/main.parameters.json, the two files `azd up` reads besides the Bicep."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from tests.infra import bicep

# PyYAML is not a dependency of the app; checkov's virtualenv has it (see test_checkov.py).
CHECKOV_PYTHON = bicep.REPO / ".venv-checkov" / "bin" / "python"


def load_azure_yaml() -> dict[str, Any]:
    if not CHECKOV_PYTHON.exists():
        pytest.skip("PyYAML comes with .venv-checkov: run `make setup`")
    completed = subprocess.run(  # noqa: S603 - fixed command line
        [
            str(CHECKOV_PYTHON),
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1], encoding='utf-8'))))",
            str(bicep.REPO / "azure.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded: dict[str, Any] = json.loads(completed.stdout)
    return loaded


def test_azure_yaml_deploys_the_repository_root_as_a_python_function_app() -> None:
    config = load_azure_yaml()
    assert config["name"]
    assert config["services"] == {"api": {"project": ".", "language": "python", "host": "function"}}
    assert config["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    for needed in ("host.json", "requirements.txt"):
        assert (bicep.REPO / needed).is_file()


def parameters() -> dict[str, Any]:
    document = json.loads((bicep.INFRA / "main.parameters.json").read_text(encoding="utf-8"))
    assert document["$schema"].endswith("/deploymentParameters.json#")
    assert document["contentVersion"] == "1.0.0.0"
    values: dict[str, Any] = {name: entry["value"] for name, entry in document["parameters"].items()}
    return values


def test_parameters_file_covers_every_required_parameter() -> None:
    required = bicep.required_params(bicep.parse("main.bicep"))
    assert required == {"environmentName", "location"}
    assert required <= set(parameters())


def test_parameters_file_names_only_declared_parameters() -> None:
    assert set(parameters()) <= set(bicep.parse("main.bicep")["parameters"])


def test_required_parameters_come_from_the_azd_environment() -> None:
    values = parameters()
    assert values["environmentName"] == "${AZURE_ENV_NAME}"
    assert values["location"] == "${AZURE_LOCATION}"
    assert values["principalId"] == "${AZURE_PRINCIPAL_ID}"


@pytest.mark.parametrize("name", sorted(parameters()))
def test_environment_defaults_agree_with_the_template_defaults(name: str) -> None:
    match = re.fullmatch(r"\$\{[A-Z0-9_]+(?:=(?P<default>[^}]*))?\}", parameters()[name])
    assert match, f"{name}: expected ${{VAR}} or ${{VAR=default}}"
    if match["default"] is None:
        return
    template_default = bicep.param_default(bicep.parse("main.bicep"), name)
    rendered = str(template_default).lower() if isinstance(template_default, bool) else str(template_default)
    assert match["default"] == rendered


def test_no_output_is_named_like_a_variable_the_parameters_file_reads() -> None:
    # azd writes outputs into the environment main.parameters.json reads: an output AUTH_CLIENT_ID
    # fed the created app's id back as authClientId and silently turned app creation off.
    # Only an output that echoes its own input unchanged (AZURE_LOCATION = location) may share its name.
    read = {
        variable: parameter
        for parameter, value in parameters().items()
        for variable in re.findall(r"\$\{([A-Za-z0-9_]+)", value)
    }
    outputs = bicep.parse("main.bicep")["outputs"]
    fed_back = {name for name in set(outputs) & set(read) if outputs[name]["value"] != read[name]}
    assert read and outputs
    assert not fed_back, f"outputs read back as different inputs: {sorted(fed_back)}"


def test_easy_auth_client_id_output_is_the_created_or_given_registration() -> None:
    outputs = bicep.parse("main.bicep")["outputs"]
    assert "AUTH_CLIENT_ID" not in outputs
    assert "AUTH_APPLICATION_CLIENT_ID" in outputs
    assert parameters()["authClientId"] == "${AUTH_CLIENT_ID}"


def test_postprovision_hook_grants_or_prints_the_graph_permissions() -> None:
    hooks = load_azure_yaml()["hooks"]
    assert hooks["postprovision"]["shell"] == "sh"
    script = hooks["postprovision"]["run"]
    assert (bicep.REPO / script).is_file()
    assert script == "infra/hooks/postprovision.sh"
    # The grant is opt-in (it needs a Privileged Role Administrator); no template parameter for it.
    assert "grantGraphPermissions" not in parameters()
