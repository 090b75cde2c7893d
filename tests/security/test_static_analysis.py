"""bandit over the product package (issue 7): no finding of medium or high severity."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_bandit_finds_nothing_of_medium_or_high_severity_in_the_product() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bandit", "-r", "shared", "function_app.py", "-ll", "-q", "-f", "txt"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
