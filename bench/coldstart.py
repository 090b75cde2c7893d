"""Cold start of the product host, with and without compiled bytecode (README "Performance").

    .venv/bin/python -m bench.coldstart

One request waits on an empty request queue; then `python -m devstack host` is launched and the
clock runs from the launch to the request's first outcome event (`submitted`, two Graph calls of
150 ms each on the simulator). Also the import time of `function_app` alone (`python -X importtime`).
Three bytecode states, each run `--runs` times (median reported):

- `cached`: every module, the project's and the installed packages', has compiled bytecode;
- `as_installed`: bytecode for the installed packages only (pip writes it), the project's own
  modules are compiled at each start: this machine sets PYTHONDONTWRITEBYTECODE=1, and a Function
  App runs its package from a read-only mount, so that is the deployed case too;
- `uncached`: no bytecode at all, everything compiled at start.

PYTHONPYCACHEPREFIX points Python at a separate bytecode tree for `cached` and `uncached`, so the
project's files and the virtualenv are left as they are. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.stack import (
    HOST_READY,
    PROJECT_ROOT,
    SIMULATOR_READY,
    host_args,
    host_environment,
    launch,
    parse_time,
    plan_requests,
    simulator_args,
)
from devstack.azurite import Azurite
from devstack.children import run_ending_children
from devstack.simulator.control import SimulatorControl

OUT = PROJECT_ROOT / "bench" / "out"
_IMPORT_LINE = re.compile(r"import time:\s+\d+\s+\|\s+(\d+)\s+\|\s+function_app\s*$", re.MULTILINE)


def bytecode_env(state: str, cache_dir: Path) -> dict[str, str]:
    """The environment for one bytecode state (`warm` writes the cache that `cached` reads)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPYCACHEPREFIX", None)
    if state in ("cached", "warm"):
        env["PYTHONPYCACHEPREFIX"] = str(cache_dir)
    if state == "warm":
        env.pop("PYTHONDONTWRITEBYTECODE")
    elif state == "uncached":
        env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="pycache-empty-", dir=cache_dir.parent)
    return env


def import_time(env: dict[str, str]) -> tuple[float, float]:
    """Seconds to import function_app (importtime's cumulative figure), and the process's wall time."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import function_app"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"import function_app failed:\n{done.stderr[-2000:]}")
    match = _IMPORT_LINE.search(done.stderr)
    return (int(match.group(1)) / 1e6 if match else float("nan")), wall


async def first_outcome(
    azurite: Azurite, control: SimulatorControl, graph_url: str, env: dict[str, str], n: int
) -> tuple[float, float]:
    """(seconds from launch to the host's 'listening' line, seconds from launch to the first outcome)."""
    from azure.storage.queue.aio import QueueServiceClient

    [request], [device] = plan_requests(1, prefix=f"cold{n}", seed=n, unsupported_share=0.0)
    request = type(request)(request.request_id, "intuneDeviceId", device["id"], device["id"], True)
    await control.add_device(device)
    suffix = uuid.uuid4().hex[:8]
    settings = {
        "RESET_REQUESTS_QUEUE": f"cold-req-{suffix}",
        "RESET_RESULTS_QUEUE": f"cold-res-{suffix}",
        "RESET_FOLLOWUPS_QUEUE": f"cold-fup-{suffix}",
        "RESET_BATCHES_QUEUE": f"cold-bat-{suffix}",
        "RESET_LEDGER_TABLE": f"Cold{suffix}",
    }
    async with QueueServiceClient.from_connection_string(azurite.connection_string) as service:
        for name in (settings["RESET_REQUESTS_QUEUE"], settings["RESET_RESULTS_QUEUE"]):
            await service.create_queue(name)
        await service.get_queue_client(settings["RESET_REQUESTS_QUEUE"]).send_message(request.message())
        results = service.get_queue_client(settings["RESET_RESULTS_QUEUE"])
        host_env = host_environment(azurite, graph_url, env, **settings)
        settings_file = OUT / "no-local-settings.json"
        host = await asyncio.to_thread(
            launch, host_args(PROJECT_ROOT / "host.json", settings_file), host_env, HOST_READY, OUT / "cold-host.log"
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                batch = [m async for m in results.receive_messages(max_messages=1, visibility_timeout=600)]
                if batch:
                    event = json.loads(batch[0].content)
                    return host.ready_after, parse_time(event["time"]) - host.started
                await asyncio.sleep(0.02)
            raise TimeoutError("no outcome within 60 s")
        finally:
            await asyncio.to_thread(host.stop)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    states = ("cached", "as_installed", "uncached")
    scratch = Path(tempfile.mkdtemp(prefix="coldstart-", dir=OUT))
    cache_dir = scratch / "pycache"
    results: dict[str, dict[str, list[float]]] = {
        state: {"ready": [], "outcome": [], "import": [], "wall": []} for state in states
    }
    try:
        with Azurite() as azurite:
            simulator = await asyncio.to_thread(
                launch, simulator_args(args.latency_ms), dict(os.environ), SIMULATOR_READY, OUT / "cold-sim.log"
            )
            try:
                async with SimulatorControl(simulator.url) as control:
                    runs = [("warm", 0)] + [(state, n) for n in range(args.runs) for state in states]
                    for number, (state, _) in enumerate(runs):
                        env = bytecode_env(state, cache_dir)
                        ready, outcome = await first_outcome(azurite, control, simulator.url, env, number)
                        if state == "warm":
                            continue  # it wrote the bytecode that `cached` reads
                        results[state]["ready"].append(ready)
                        results[state]["outcome"].append(outcome)
                        import_env = dict(bytecode_env(state, cache_dir), AzureWebJobsStorage=azurite.connection_string)
                        imported, wall = import_time(import_env)
                        results[state]["import"].append(imported)
                        results[state]["wall"].append(wall)
            finally:
                await asyncio.to_thread(simulator.stop)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def median(state: str, key: str) -> float:
        return round(statistics.median(results[state][key]), 3)

    return {
        "first_outcome_s": {s: median(s, "outcome") for s in states},
        "host_ready_s": {s: median(s, "ready") for s in states},
        "import_function_app_s": {s: median(s, "import") for s in states},
        "python_import_function_app_wall_s": {s: median(s, "wall") for s in states},
        "runs": args.runs,
        "latency_ms_per_graph_call": args.latency_ms,
        "graph_calls_to_first_outcome": 2,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per bytecode state (median reported)")
    parser.add_argument("--latency-ms", type=float, default=150.0, help="simulator latency per Graph call")
    args = parser.parse_args(argv)
    # SIGTERM and Ctrl-C cancel the measurement (its finally blocks stop the host, the simulator
    # and Azurite); whatever is left is ended on the way out.
    return run_ending_children(lambda: _measure_and_print(args))


def _measure_and_print(args: argparse.Namespace) -> int:
    result = asyncio.run(measure(args))
    (OUT / "coldstart.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
