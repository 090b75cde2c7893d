"""Every template parses: with pycep-parser 0.7.1 here, and (test_checkov.py) with checkov's own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra import bicep


def test_infra_has_the_expected_templates() -> None:
    names = {path.relative_to(bicep.INFRA).as_posix() for path in bicep.bicep_files()}
    assert names == {
        "main.bicep",
        "app/alerts.bicep",
        "app/api.bicep",
        "app/eventgrid.bicep",
        "app/graph.bicep",
        "app/identity.bicep",
        "app/monitoring.bicep",
        "app/rbac.bicep",
        "app/storage.bicep",
    }


@pytest.mark.parametrize("path", bicep.bicep_files(), ids=lambda p: p.relative_to(bicep.INFRA).as_posix())
def test_template_parses(path: Path) -> None:
    template = bicep.parse(path.relative_to(bicep.INFRA).as_posix())
    assert template.get("resources") or template.get("modules")


def checkov_cannot_parse(line: str) -> bool:
    """Syntax pycep-parser 0.5.1 (bundled with checkov 3.3) fails on, per FIELD-NOTES."""
    if line.startswith(("extension ", "import ", "func ")):
        return True
    if not line.startswith("param "):
        return False
    declaration = line.split("=")[0].split()
    param_type = declaration[2] if len(declaration) > 2 else ""
    return param_type.endswith(("[]", "?"))  # `param x string[]`, `param p string?`


def test_only_the_graph_module_uses_syntax_checkov_cannot_parse() -> None:
    offenders = {
        path.relative_to(bicep.INFRA).as_posix()
        for path in bicep.bicep_files()
        for line in path.read_text(encoding="utf-8").splitlines()
        if checkov_cannot_parse(line)
    }
    assert offenders == {"app/graph.bicep"}
