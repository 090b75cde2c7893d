"""infra/hooks/postprovision.sh, the azd hook that grants or prints the Graph permissions.

Runs the real script with `sh` against a fake `az` on PATH that plays Entra ID: Microsoft Graph's
service principal with its app roles, the identity's current assignments, and a new identity that
Graph does not know yet for the first few grants (msgraph-bicep-types issue 193).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.infra import bicep

HOOK = bicep.INFRA / "hooks" / "postprovision.sh"
MI = "6f1c2d3e-0000-4000-8000-00000000abcd"
GRAPH_SP = "9a9a9a9a-0000-4000-8000-000000000001"
ROLES = {
    "DeviceManagementManagedDevices.Read.All": "2f51be20-0bb4-4fed-bf7b-db946066c75e",
    "DeviceManagementManagedDevices.PrivilegedOperations.All": "5b07b0dd-2377-4e44-a38d-703f09a0dc3c",
    "GroupMember.Read.All": "98830695-27a2-44f7-8c18-0c3ebc9698f6",
    "Device.Read.All": "7438b122-aefc-4978-80ed-43db9fcc7715",
    "User.Read.All": "df021288-bdef-4463-88db-98f22de89214",
}

FAKE_AZ = """#!{python}
import json, re, sys
from pathlib import Path
state_path = Path({state!r})
state = json.loads(state_path.read_text())
args = sys.argv[1:]
state["calls"].append(args)
def value(flag):
    return args[args.index(flag) + 1] if flag in args else None
def done(code=0, out=""):
    state_path.write_text(json.dumps(state))
    if out:
        print(out)
    sys.exit(code)
if args[:2] == ["account", "show"]:
    done(0 if state["logged_in"] else 1)
if args[:3] == ["ad", "sp", "show"]:
    query = value("--query")
    if query == "id":
        done(0, {graph_sp!r})
    name = re.search(r"value=='([^']+)'", query)[1]
    done(0, {roles!r}.get(name, ""))
if args[0] == "rest" and value("--method") == "GET":
    done(0, "\\n".join(state["assigned"]))
if args[0] == "rest" and value("--method") == "POST":
    if state["unknown_for"] > 0:
        state["unknown_for"] -= 1
        error = {{"error": {{"code": "Request_BadRequest", "message": "Not a valid reference update."}}}}
        done(1, "ERROR: Bad Request(" + json.dumps(error) + ")")
    body = json.loads(value("--body"))
    assert body["principalId"] == {mi!r} and body["resourceId"] == {graph_sp!r}, body
    assert value("--uri").endswith("/servicePrincipals/{mi}/appRoleAssignments"), value("--uri")
    state["assigned"].append(body["appRoleId"])
    done(0, "{{}}")
done(2, "unexpected az call: " + " ".join(args))
"""


def run_hook(
    tmp_path: Path,
    *,
    grant: str | None,
    assigned: list[str],
    unknown_for: int = 0,
    logged_in: bool = True,
    wait_seconds: int = 30,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    state_path = tmp_path / "az-state.json"
    state_path.write_text(
        json.dumps({"calls": [], "assigned": assigned, "unknown_for": unknown_for, "logged_in": logged_in})
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "az"
    fake.write_text(FAKE_AZ.format(python=sys.executable, state=str(state_path), graph_sp=GRAPH_SP, roles=ROLES, mi=MI))
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "AZURE_MANAGED_IDENTITY_PRINCIPAL_ID": MI,
        "GRAPH_GRANT_RETRY_INTERVAL": "0",
        "GRAPH_GRANT_WAIT_SECONDS": str(wait_seconds),
    }
    if grant is not None:
        env["GRANT_GRAPH_PERMISSIONS"] = grant
    completed = subprocess.run(["sh", str(HOOK)], env=env, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603, S607
    return completed, json.loads(state_path.read_text())


def posts(state: dict[str, Any]) -> list[list[str]]:
    return [call for call in state["calls"] if call[0] == "rest" and "POST" in call]


NEEDED = [
    ROLES["DeviceManagementManagedDevices.Read.All"],
    ROLES["DeviceManagementManagedDevices.PrivilegedOperations.All"],
    ROLES["GroupMember.Read.All"],  # group batches (docs/decisions/0019-group-batches-and-permissions.md)
    ROLES["Device.Read.All"],
]


@pytest.mark.parametrize("grant", [None, "false"])
def test_by_default_nothing_is_granted_and_the_admin_command_is_printed(tmp_path: Path, grant: str | None) -> None:
    completed, state = run_hook(tmp_path, grant=grant, assigned=[])
    assert completed.returncode == 0
    assert posts(state) == []
    out = completed.stdout
    assert "ACTION NEEDED" in out and "Privileged Role Administrator" in out
    assert f"MI={MI}" in out
    assert (
        'az rest --method POST --uri "https://graph.microsoft.com/v1.0/servicePrincipals/$MI/appRoleAssignments"' in out
    )
    assert (
        "DeviceManagementManagedDevices.Read.All DeviceManagementManagedDevices.PrivilegedOperations.All "
        "GroupMember.Read.All Device.Read.All"
    ) in out


def test_the_printed_command_grants_both_permissions_when_an_admin_runs_it(tmp_path: Path) -> None:
    completed, _ = run_hook(tmp_path, grant=None, assigned=[])
    lines = completed.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("MI="))
    end = next(i for i, line in enumerate(lines) if line.strip() == "done")
    script = "\n".join(line[2:] for line in lines[start : end + 1])
    state_path = tmp_path / "az-state.json"
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    ran = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603, S607
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert sorted(json.loads(state_path.read_text())["assigned"]) == sorted(NEEDED)


def test_grant_on_assigns_both_permissions_retrying_while_graph_does_not_know_the_new_identity(tmp_path: Path) -> None:
    completed, state = run_hook(tmp_path, grant="true", assigned=[], unknown_for=2)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert sorted(state["assigned"]) == sorted(NEEDED)
    assert len(posts(state)) == 6  # two refused while replicating, then one per permission
    assert "replication" in completed.stdout
    assert "ACTION NEEDED" not in completed.stdout


def test_grant_on_adds_only_what_is_missing(tmp_path: Path) -> None:
    already = [ROLES["DeviceManagementManagedDevices.Read.All"], ROLES["User.Read.All"]]
    completed, state = run_hook(tmp_path, grant="TRUE", assigned=list(already))
    assert completed.returncode == 0
    assert [json.loads(call[call.index("--body") + 1])["appRoleId"] for call in posts(state)] == [
        ROLES["DeviceManagementManagedDevices.PrivilegedOperations.All"],
        ROLES["GroupMember.Read.All"],
        ROLES["Device.Read.All"],
    ]


def test_nothing_is_posted_or_printed_for_an_admin_when_both_are_granted(tmp_path: Path) -> None:
    completed, state = run_hook(tmp_path, grant="true", assigned=list(NEEDED))
    assert completed.returncode == 0
    assert posts(state) == []
    assert "ACTION NEEDED" not in completed.stdout
    assert completed.stdout.count("is granted.") == 4


def test_grant_on_fails_azd_when_graph_never_knows_the_identity(tmp_path: Path) -> None:
    completed, state = run_hook(tmp_path, grant="true", assigned=[], unknown_for=10_000, wait_seconds=1)
    # GRAPH_GRANT_WAIT_SECONDS=1 with no pause between tries: it gives up and says how to rerun.
    assert completed.returncode == 1
    assert state["assigned"] == []
    assert "azd hooks run postprovision" in completed.stdout
    assert "ACTION NEEDED" in completed.stdout


@pytest.mark.parametrize(("grant", "code"), [(None, 0), ("true", 1)])
def test_without_a_logged_in_azure_cli_the_steps_are_printed(tmp_path: Path, grant: str | None, code: int) -> None:
    completed, state = run_hook(tmp_path, grant=grant, assigned=[], logged_in=False)
    assert completed.returncode == code
    assert posts(state) == []
    assert "az login" in completed.stdout and "ACTION NEEDED" in completed.stdout
