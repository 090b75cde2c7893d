"""Guardrail soak: a runaway producer against GUARDRAIL_MAX_ACTIONS_PER_HOUR (docs/contract.md#guardrails).

    .venv/bin/python -m bench.guardrail_soak --requests 1000 --limit 50

Starts Azurite, the Intune simulator and the product host (`python -m devstack host`, guardrail on,
every other setting as in the throughput benchmark) as separate processes, gives the simulator one
new device per request (so that the per-device cooldown holds nothing back), then puts every
request on the request queue at once, as a runaway upstream system would. It waits until each
request has its first outcome (`submitted`, or `awaiting_approval`) and counts the action calls in
the simulator's call log.

The guardrail holds when: action calls <= the limit, every other request is `awaiting_approval` /
`guardrail_tripped`, and none is lost. Prints one JSON line (`ok` says whether it held); writes
docs/img/guardrail-soak.png (action calls and held requests over time) and bench/out/guardrail-soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.stack import (
    HOST_READY,
    PROJECT_ROOT,
    SIMULATOR_READY,
    BenchRequest,
    Service,
    host_args,
    host_environment,
    launch,
    parse_time,
    plan_requests,
    simulator_args,
    write_host_json,
)
from devstack.azurite import Azurite
from devstack.children import run_ending_children
from devstack.simulator.control import SimulatorControl

OUT = PROJECT_ROOT / "bench" / "out"
CHART = PROJECT_ROOT / "docs" / "img" / "guardrail-soak.png"
FIRST_OUTCOMES = {"submitted", "awaiting_approval", "completed", "failed", "unsupported", "rejected", "timed_out"}


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    requests, devices = plan_requests(args.requests, prefix="runaway", seed=args.seed, unsupported_share=0.0)
    host_json = write_host_json(OUT / "host.guardrail.json")
    azurite = Azurite()
    simulator: Service | None = None
    host: Service | None = None
    try:
        await asyncio.to_thread(azurite.start)
        simulator = await asyncio.to_thread(
            launch, simulator_args(0.0), dict(os.environ), SIMULATOR_READY, OUT / "guardrail-sim.log"
        )
        async with SimulatorControl(simulator.url) as control:
            await _add_devices(control, devices)
            env = host_environment(
                azurite,
                simulator.url,
                GUARDRAIL_MAX_ACTIONS_PER_HOUR=str(args.limit),
                CONFIRM_FIRST_CHECK_SECONDS="3600",  # keep confirmation reads out of the run
            )
            host = await asyncio.to_thread(
                launch,
                host_args(host_json, OUT / "no-local-settings.json"),
                env,
                HOST_READY,
                OUT / "guardrail-host.log",
            )
            started = time.time()
            outcomes = await _run_away(azurite.connection_string, requests, args.timeout)
            elapsed = time.time() - started
            await asyncio.sleep(1.0)  # anything still in flight would show up in the call log now
            calls = await control.calls(method="POST")
    finally:
        if host is not None:
            await asyncio.to_thread(host.stop)
        if simulator is not None:
            await asyncio.to_thread(simulator.stop)
        await asyncio.to_thread(azurite.stop)
    return _figures(args, requests, outcomes, calls, started, elapsed)


async def _add_devices(control: SimulatorControl, devices: list[dict[str, Any]]) -> None:
    pending = list(devices)

    async def worker() -> None:
        while pending:
            await control.add_device(pending.pop())

    await asyncio.gather(*(worker() for _ in range(16)))


async def _run_away(
    connection: str, requests: list[BenchRequest], give_up_after: float
) -> dict[str, tuple[str, str | None, float]]:
    """Send everything at once; the first outcome of each request: (status, reason code, time)."""
    from azure.storage.queue.aio import QueueServiceClient

    outcomes: dict[str, tuple[str, str | None, float]] = {}
    async with QueueServiceClient.from_connection_string(connection) as service:
        for name in ("passcode-reset-requests", "passcode-reset-results"):
            try:
                await service.create_queue(name)
            except Exception:  # noqa: S110 - the host may have created it already
                pass
        requests_queue = service.get_queue_client("passcode-reset-requests")
        results_queue = service.get_queue_client("passcode-reset-results")
        pending = list(reversed(requests))

        async def send() -> None:
            while pending:
                await requests_queue.send_message(pending.pop().message())

        async def collect() -> None:
            wanted = {r.request_id for r in requests}
            deadline = time.monotonic() + give_up_after
            while not wanted <= outcomes.keys() and time.monotonic() < deadline:
                batch = [m async for m in results_queue.receive_messages(messages_per_page=32, max_messages=32)]
                for message in batch:
                    event = json.loads(message.content)
                    data = event.get("data") or {}
                    request_id = data.get("requestId")
                    if request_id in wanted and request_id not in outcomes and data.get("status") in FIRST_OUTCOMES:
                        reason = (data.get("reason") or {}).get("code")
                        outcomes[request_id] = (data["status"], reason, parse_time(event["time"]))
                    await results_queue.delete_message(message)
                if not batch:
                    await asyncio.sleep(0.25)

        await asyncio.gather(*(send() for _ in range(8)), collect())
    return outcomes


def _figures(
    args: argparse.Namespace,
    requests: list[BenchRequest],
    outcomes: dict[str, tuple[str, str | None, float]],
    calls: list[dict[str, Any]],
    started: float,
    elapsed: float,
) -> dict[str, Any]:
    statuses = Counter(f"{status}/{code}" if code else status for status, code, _ in outcomes.values())
    held = statuses.get("awaiting_approval/guardrail_tripped", 0)
    submitted = statuses.get("submitted", 0)
    lost = len(requests) - len(outcomes)
    result = {
        "benchmark": "guardrail_soak",
        "requests": len(requests),
        "guardrailMaxActionsPerHour": args.limit,
        "actionCalls": len(calls),
        "submitted": submitted,
        "heldGuardrailTripped": held,
        "lost": lost,
        "statuses": dict(sorted(statuses.items())),
        "elapsedSeconds": round(elapsed, 1),
        "ok": len(calls) <= args.limit and submitted + held == len(requests) and lost == 0,
    }
    (OUT / "guardrail-soak.json").write_text(json.dumps(result, indent=2))
    if args.chart:
        _chart(
            args.chart,
            sorted(parse_time(c["time"]) - started for c in calls if c.get("time")),
            sorted(t - started for status, _, t in outcomes.values() if status == "awaiting_approval"),
            args.limit,
            len(requests),
        )
    return result


def _chart(path: Path, action_s: list[float], held_s: list[float], limit: int, total: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    ax.step(
        action_s, range(1, len(action_s) + 1), where="post", color="#08519c", lw=2, label="action calls (cumulative)"
    )
    ax.step(held_s, range(1, len(held_s) + 1), where="post", color="#fd8d3c", lw=2, label="held: guardrail_tripped")
    ax.axhline(limit, color="#d62728", ls="--", lw=1.5, label=f"GUARDRAIL_MAX_ACTIONS_PER_HOUR = {limit}")
    ax.set_xlabel("seconds since the runaway producer started")
    ax.set_ylabel("requests")
    ax.set_ylim(0, total * 1.05)
    ax.legend(loc="center right", fontsize=8)
    ax.set_title(f"A runaway producer of {total} requests against the hourly guardrail")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.guardrail_soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests the runaway producer sends (default 1000)")
    parser.add_argument("--limit", type=int, default=50, help="GUARDRAIL_MAX_ACTIONS_PER_HOUR (default 50)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up waiting for outcomes after (s)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--chart", type=Path, default=CHART, help=f"chart path (default {CHART.relative_to(PROJECT_ROOT)})"
    )
    parser.add_argument("--no-chart", dest="chart", action="store_const", const=None)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.limit < 1:
        parser.error("--requests and --limit must be at least 1")
    return run_ending_children(lambda: _run_and_print(args))


def _run_and_print(args: argparse.Namespace) -> int:
    result = asyncio.run(soak(args))
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
