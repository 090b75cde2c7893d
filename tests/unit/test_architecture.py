"""The architecture's rules, checked: import-linter's contracts (.importlinter) hold, they fail on a
copy that breaks them, and only function_app.py imports the Functions SDK."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PRODUCT_DIRS = ("shared", "ops", "tools")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_only_function_app_imports_the_functions_sdk() -> None:
    offenders = [
        str(path.relative_to(ROOT))
        for folder in PRODUCT_DIRS
        for path in sorted((ROOT / folder).rglob("*.py"))
        if any(name == "azure.functions" or name.startswith("azure.functions.") for name in imported_modules(path))
    ]
    assert offenders == []
    assert "azure.functions" in imported_modules(ROOT / "function_app.py")


def run_lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 (the venv's own lint-imports)
        [str(LINT_IMPORTS), "--no-cache", "--config", str(root / ".importlinter")],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": str(LINT_IMPORTS.parent), "PYTHONPATH": str(root)},
    )


def test_the_import_contracts_hold() -> None:
    checked = run_lint_imports(ROOT)
    assert checked.returncode == 0, checked.stdout[-3000:]
    assert "0 broken" in checked.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("shared/core/platforms.py", "import azure.core.exceptions", "The core imports no other room"),
        ("shared/core/platforms.py", "from shared.adapters import ledger", "The core imports no other room"),
        ("shared/workflow/submit.py", "import msgraph", "Use cases and ports import no adapter"),
        ("shared/adapters/storage.py", "from shared.workflow import services", "Adapters do not import use cases"),
        ("shared/core/clock.py", "from shared.core import lifecycle", "No import cycles"),
    ],
)
def test_the_import_contracts_fail_on_a_copy_that_breaks_them(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    for folder in ("shared", "ops", "tools", "devstack", "bench"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.json"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    target = tmp_path / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    checked = run_lint_imports(tmp_path)
    assert checked.returncode != 0
    assert f"{broken}" in checked.stdout and "BROKEN" in checked.stdout
