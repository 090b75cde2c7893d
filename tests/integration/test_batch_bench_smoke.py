"""`python -m bench.batch`, small: the benchmark's own stack (Azurite, simulator with Intune's budget
and 150 ms per call, one host process) runs a 20-item batch with single requests alongside, and
prints its one JSON line (the full run: README "Batches")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_a_small_batch_benchmark_reaches_every_item_and_prints_its_figures(tmp_path: Path) -> None:
    chart = tmp_path / "batch.png"
    command = [sys.executable, "-m", "bench.batch", "--items", "20", "--timeout", "120", "--chart", str(chart)]
    ran = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180, check=False)  # noqa: S603
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["items"] == 20 and result["failed"] == 0 and result["no_outcome"] == 0
    assert sum(result["outcomes"].values()) == 20 and result["throttled_429"] == 0
    assert 0 < result["expansion_s"] < result["elapsed_s"]
    assert result["singles"] >= 1 and result["singles_submitted"] >= 1
    for key in ("budget_utilisation", "single_p95_ms", "storage_ops_per_item", "peak_rss_mb", "host_cpu_ms_per_item"):
        assert result[key] > 0, key
    assert chart.stat().st_size > 0
