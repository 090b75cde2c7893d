"""`python -m ops batch submit FILE.csv --dry-run --wait` and `ops batch status` against a running
app (docs/operations.md#batches): the same validation and idempotency as the API, a progress bar,
a summary table."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import aiohttp

from ops.cli import main
from tests.plugins.product import ProductFactory

ADELE = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"
WINDOWS_PC = "62a9255c-bdb8-47c5-a8af-e9d1387777ee"


def run_ops(env: dict[str, str], *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([*argv, "--settings", ""], env=env, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_submit_waits_with_a_progress_bar_and_ends_with_a_summary(
    product_stack: ProductFactory, tmp_path: Path
) -> None:
    async with product_stack() as stack:
        async with aiohttp.ClientSession() as http, http.get(f"{stack.host.url}/api/health") as answer:
            assert answer.status == 200  # the app is up: its queues, table and container exist
        env = {**stack.settings, "USER": "ops-tester"}
        good = tmp_path / "store.csv"
        good.write_text(f"intuneDeviceId,serialNumber\n{ADELE},\n{WINDOWS_PC},\n,NO-SUCH\n")
        argv = ("batch", "submit", str(good), "--dry-run", "--wait", "--batch-id", "OPS-1")
        code, out, err = await asyncio.to_thread(run_ops, env, *argv)
        assert code == 0, err
        assert "batch OPS-1 accepted: 3 devices" in out
        assert "3/3" in out  # the progress bar at its end
        for status, count in (("dry_run", 1), ("rejected", 1), ("unsupported", 1)):
            assert any(status in line and line.rstrip(" │|").endswith(str(count)) for line in out.splitlines()), out

        code, out, _ = await asyncio.to_thread(run_ops, env, "batch", "status", "OPS-1", "--json")
        assert code == 0 and json.loads(out)["counts"] == {"dry_run": 1, "rejected": 1, "unsupported": 1}

        bad = tmp_path / "bad.csv"
        bad.write_text("serialNumber,imei\nA,\n,12\n")
        code, _, err = await asyncio.to_thread(run_ops, env, "batch", "submit", str(bad))
        assert code == 2 and "row 2: imei" in err and "nothing submitted" in err

        code, _, err = await asyncio.to_thread(run_ops, env, "batch", "submit", str(bad.with_name("none.csv")))
        assert code == 2 and "cannot read" in err
        code, _, _ = await asyncio.to_thread(run_ops, env, "batch", "status", "NOPE")
        assert code == 1
