"""checkov's Bicep scan of infra/: no parsing error, no failed check, every skip explained.

checkov runs from its own virtualenv (.venv-checkov, created by `make setup`) because its pins
clash with the app's. It exits 0 even when it could not parse a file (FIELD-NOTES), so the test
reads the JSON report rather than the exit code.
"""

from __future__ import annotations

import functools
import json
import subprocess
from typing import Any

import pytest

from tests.infra import bicep

CHECKOV_VENV = bicep.REPO / ".venv-checkov"
CHECKOV = CHECKOV_VENV / "bin" / "checkov"
COMMAND = [str(CHECKOV), "--framework", "bicep", "--skip-download", "-o", "json", "-d", "infra"]

pytestmark = pytest.mark.skipif(
    not CHECKOV.exists(), reason="checkov is not installed: run `make setup` (creates .venv-checkov)"
)


@functools.cache
def report() -> dict[str, Any]:
    completed = subprocess.run(  # noqa: S603 - fixed command line
        COMMAND, cwd=bicep.REPO, capture_output=True, text=True, timeout=180, check=False
    )
    assert completed.returncode in (0, 1), f"checkov crashed:\n{completed.stderr[-3000:]}"
    parsed = json.loads(completed.stdout)
    reports = parsed if isinstance(parsed, list) else [parsed]
    (bicep_report,) = [item for item in reports if item.get("check_type") == "bicep"]
    return dict(bicep_report)


def test_checkov_parses_every_scanned_template() -> None:
    assert report()["summary"]["parsing_errors"] == 0, report()["results"].get("parsing_errors")


def test_checkov_finds_no_failed_check() -> None:
    failed = [
        f"{check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}"
        for check in report()["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)


def test_checkov_actually_checked_the_app_and_the_storage() -> None:
    passed = report()["results"]["passed_checks"]
    assert len(passed) >= 15
    assert {"/app/api.bicep", "/app/storage.bicep"} <= {check["file_path"] for check in passed}


def test_every_skipped_check_has_a_reason() -> None:
    for check in report()["results"]["skipped_checks"]:
        comment = check.get("check_result", {}).get("suppress_comment", "")
        assert len(comment) > 20, f"{check['check_id']} on {check['resource']}: skip without a reason"


def test_only_the_graph_module_is_kept_out_of_the_scan() -> None:
    config = (bicep.INFRA / ".checkov.yaml").read_text(encoding="utf-8")
    entries = [line.strip()[2:] for line in config.splitlines() if line.strip().startswith("- ")]
    assert entries == ["app/graph.bicep"]
    scanned = {
        check["file_path"]
        for kind in ("passed_checks", "failed_checks", "skipped_checks")
        for check in report()["results"][kind]
    }
    assert "/app/graph.bicep" not in scanned
