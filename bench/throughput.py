"""Throughput at Intune's Graph budget, on the local stack (README "Performance").

    .venv/bin/python -m bench.throughput --requests 1000 [--hosts 4]

Starts Azurite (data in a scratch directory, access log on: docs/decisions/0026), the Intune
simulator (Intune's throttling budget of 200 POST / 2,000 requests per 20 s, 150 ms per Graph call)
and N product hosts (`python -m devstack host`, one Graph budget for all of them:
docs/decisions/0013-shared-graph-budget.md) as separate processes. The first host runs every
function; the others run the request function only, as the instances Flex Consumption's
per-function scaling adds for it would (`--every-host-runs-all` to run everything everywhere). Then:

1. baseline, the peers' approach: one request at a time, sequentially, the same Graph calls through
   the same gateway (resolve the device, choose the action, call it), on its own devices;
2. the simulator is reset (empty call log and budget) and gets one new device per request;
3. the product: the requests are put on the request queue at once and the hosts work them off.

Prints one JSON line. Graph figures come from the simulator's call log; storage figures from
Azurite's access log (one line per storage request) less the benchmark's own requests, which it
counts itself; the simulator reports the most calls that arrived in any window of its budget
(`max_actions_per_window`, `budget_exceeded`). Writes bench/out/throughput.png (actions per second
against the budget line), bench/out/throughput.json and bench/out/throughput-hosts-N.json (for
`python -m bench.hosts_chart`), and keeps each host's log in bench/out/host-N.log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from bench.stack import (
    HOST_READY,
    PROJECT_ROOT,
    SIMULATOR_READY,
    SIMULATOR_TOKEN,
    BenchRequest,
    CountingAzurite,
    Service,
    host_args,
    host_environment,
    launch,
    parse_time,
    percentile,
    plan_requests,
    simulator_args,
    write_host_json,
)
from devstack.children import run_ending_children
from devstack.simulator.control import SimulatorControl

OUT = PROJECT_ROOT / "bench" / "out"
FINAL_OR_SUBMITTED = {"submitted", "completed", "failed", "unsupported", "rejected", "dry_run", "timed_out"}


# ------------------------------------------------------------------------------------- baseline


@dataclass
class BaselineResult:
    requests: int
    actions: int
    elapsed_s: float
    failed: int

    @property
    def actions_per_s(self) -> float:
        return self.actions / self.elapsed_s if self.elapsed_s else 0.0


async def run_baseline(graph_url: str, requests: list[BenchRequest]) -> BaselineResult:
    """The peers' script: one device at a time, resolve -> choose -> act, through the same gateway."""
    from shared.adapters.graph import MsGraphIntuneGateway
    from shared.core.platforms import choose_action

    gateway = MsGraphIntuneGateway.with_static_token(graph_url, SIMULATOR_TOKEN)
    actions = failed = 0
    started = time.perf_counter()
    try:
        for request in requests:
            try:
                if request.kind == "intuneDeviceId":
                    found = await gateway.get_device(request.value)
                    devices = [found] if found is not None else []
                else:
                    devices = await gateway.find_devices(request.kind, request.value)
                if len(devices) != 1:
                    failed += 1
                    continue
                decision = choose_action(devices[0].traits, allow_remote_lock=True)
                if decision.action is not None:
                    await gateway.perform(devices[0].id, decision.action)
                    actions += 1
            except Exception:  # a peer's script counts it and moves on
                failed += 1
    finally:
        await gateway.aclose()
    return BaselineResult(len(requests), actions, time.perf_counter() - started, failed)


# ------------------------------------------------------------------------------------- product run


@dataclass
class ProductRun:
    enqueued_at: dict[str, float] = field(default_factory=dict)  # requestId -> epoch when on the queue
    outcome: dict[str, tuple[str, float]] = field(default_factory=dict)  # first outcome: status, time
    events: int = 0
    bench_storage_requests: int = 0
    started: float = 0.0
    finished: float = 0.0


class StorageCounter:
    """Counts every HTTP request the benchmark's own storage clients send (retries included)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, request: Any) -> None:
        self.count += 1


async def drive_product(
    connection: str, requests: list[BenchRequest], run: ProductRun, give_up_after: float, senders: int = 8
) -> None:
    from azure.storage.queue.aio import QueueServiceClient

    counter = StorageCounter()
    async with QueueServiceClient.from_connection_string(connection, raw_request_hook=counter) as service:
        for name in ("passcode-reset-requests", "passcode-reset-results"):
            try:
                await service.create_queue(name)
            except Exception:  # noqa: S110 - the host may have created it already
                pass
        requests_queue = service.get_queue_client("passcode-reset-requests")
        results_queue = service.get_queue_client("passcode-reset-results")
        run.started = time.time()
        pending = list(reversed(requests))

        async def send() -> None:
            while pending:
                request = pending.pop()
                await requests_queue.send_message(request.message())
                run.enqueued_at[request.request_id] = time.time()

        async def collect() -> None:
            deadline = time.monotonic() + give_up_after
            wanted = {r.request_id for r in requests}
            while not wanted <= run.outcome.keys() and time.monotonic() < deadline:
                batch = [m async for m in results_queue.receive_messages(messages_per_page=32, max_messages=32)]
                for message in batch:
                    event = json.loads(message.content)
                    # Consumed as a results consumer does: messages left invisible in the queue
                    # would slow every queue operation of Azurite's (it scans them), not Azure's.
                    await results_queue.delete_message(message)
                    data = event.get("data") or {}
                    run.events += 1
                    request_id = data.get("requestId")
                    if request_id in wanted and request_id not in run.outcome:
                        run.outcome[request_id] = (str(data.get("status")), parse_time(event["time"]))
                if not batch:
                    await asyncio.sleep(0.25)

        await asyncio.gather(*(send() for _ in range(senders)), collect())
        run.finished = max((t for _, t in run.outcome.values()), default=time.time())
        run.bench_storage_requests = counter.count


async def sample_rss(pid: int, samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    import psutil

    process = psutil.Process(pid)
    while not stop.is_set():
        try:
            samples.append((time.time(), process.memory_info().rss / 2**20))
        except psutil.Error:
            return
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except TimeoutError:
            pass


# ------------------------------------------------------------------------------------- figures


def graph_figures(calls: list[dict[str, Any]], requests: list[BenchRequest]) -> dict[str, Any]:
    """Graph calls per request from the simulator's call log. Confirmation reads (v1.0 device
    GETs of deviceActionResults, after `submitted`) are counted apart."""
    by_device = {r.device_id.lower(): r for r in requests}
    by_value = {(r.kind, r.value.lower()): r for r in requests}
    property_kind = {"serialNumber": "serialNumber", "imei": "imei", "azureADDeviceId": "azureAdDeviceId"}
    per_request: Counter[str] = Counter()
    confirmations = unattributed = 0
    for call in calls:
        if call.get("route") == "device" and call.get("version") == "v1.0" and call.get("method") == "GET":
            confirmations += 1
            continue
        owner = None
        if call.get("deviceId"):
            owner = by_device.get(str(call["deviceId"]).lower())
        elif call.get("route") == "list":
            expression = unquote(str((call.get("query") or {}).get("$filter", "")))
            prop, _, literal = expression.partition(" eq ")
            kind = property_kind.get(prop.strip())
            value = literal.strip().strip("'").replace("''", "'").lower()
            owner = by_value.get((kind, value)) if kind else None
        if owner is None:
            unattributed += 1
        else:
            per_request[owner.request_id] += 1
    kinds = Counter(r.kind for r in requests)
    by_kind = {
        kind: round(sum(per_request[r.request_id] for r in requests if r.kind == kind) / kinds[kind], 3)
        for kind in sorted(kinds)
    }
    intune_supported = [r for r in requests if r.kind == "intuneDeviceId" and r.supported]
    most_for_an_action = max((per_request[r.request_id] for r in intune_supported), default=0)
    return {
        "graph_calls_per_request": round((sum(per_request.values()) + unattributed) / len(requests), 3),
        "graph_calls_per_request_by_kind": by_kind,
        "graph_calls_max_intune_id_action_request": most_for_an_action,
        "graph_calls_unattributed": unattributed,
        "graph_confirmation_calls": confirmations,
    }


def chart(path: Path, action_times: list[float], started: float, budget_per_s: float, baseline_per_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seconds = [t - started for t in action_times]
    end = int(max(seconds, default=0)) + 2
    per_second = [0] * end
    for s in seconds:
        if s >= 0:
            per_second[int(s)] += 1
    window = 20
    rolling = [sum(per_second[max(0, i - window + 1) : i + 1]) / min(window, i + 1) for i in range(end)]
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
    ax.bar(range(end), per_second, width=1.0, align="edge", color="#9ecae1", label="actions in each second")
    ax.plot([i + 1 for i in range(end)], rolling, color="#08519c", lw=2, label="actions/s, 20 s average")
    ax.axhline(budget_per_s, color="#d62728", ls="--", lw=1.5, label=f"Intune budget ({budget_per_s:g}/s)")
    ax.axhline(baseline_per_s, color="#7f7f7f", ls=":", lw=1.5, label=f"sequential baseline ({baseline_per_s:.1f}/s)")
    ax.set_xlabel("seconds since the requests were queued")
    ax.set_ylabel("resetPasscode / remoteLock per second")
    ax.set_xlim(0, end)
    ax.set_ylim(0, max(max(per_second, default=0), budget_per_s) * 1.25)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Action calls accepted by the Intune simulator (200 POST / 20 s, 150 ms per call)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


# ------------------------------------------------------------------------------------- main


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    main_requests, main_devices = plan_requests(args.requests, prefix="run", seed=args.seed)
    base_requests, base_devices = plan_requests(args.baseline, prefix="seq", seed=args.seed + 1)
    queue_options = {"batchSize": args.batch_size, "newBatchThreshold": args.new_batch_threshold}
    host_json = write_host_json(OUT / "host.bench.json", **queue_options)
    # Flex Consumption scales each queue-triggered function on instances of its own: the hosts
    # after the first run the request function only, as the instances it scales out to would.
    scaled_json = (
        host_json
        if args.every_host_runs_all
        else write_host_json(OUT / "host.bench.scaled.json", functions=[REQUEST_FUNCTION], **queue_options)
    )
    settings_file = OUT / "no-local-settings.json"  # none: the host reads its settings from the environment

    (OUT / "azurite.log").unlink(missing_ok=True)  # Azurite appends to its log
    azurite = CountingAzurite(log_path=OUT / "azurite.log")
    simulator: Service | None = None
    hosts: list[Service] = []
    log_window: tuple[int, int] | None = None
    throttle: dict[str, Any] = {}
    cpu: list[float] = []
    try:
        await asyncio.to_thread(azurite.start)
        simulator = await asyncio.to_thread(
            launch, simulator_args(args.latency_ms), dict(os.environ), SIMULATOR_READY, OUT / "sim.log"
        )
        async with SimulatorControl(simulator.url) as control:
            if base_requests:
                await add_devices(control, base_devices)
            baseline = await run_baseline(simulator.url, base_requests)
            await control.reset()  # empty call log and throttling budget; the seeded fleet only
            await add_devices(control, main_devices)

            env = host_environment(azurite, simulator.url, CONFIRM_FIRST_CHECK_SECONDS=str(args.confirm_first_check))
            hosts = await asyncio.gather(
                *(
                    asyncio.to_thread(
                        launch,
                        host_args(host_json if n == 0 else scaled_json, settings_file),
                        env,
                        HOST_READY,
                        OUT / f"host-{n}.log",
                    )
                    for n in range(args.hosts)
                )
            )
            rss: list[list[tuple[float, float]]] = [[] for _ in hosts]
            stop_sampling = asyncio.Event()
            samplers = [
                asyncio.create_task(sample_rss(host.process.pid, samples, stop_sampling))
                for host, samples in zip(hosts, rss, strict=True)
            ]
            cpu_before = [process_cpu_seconds(host.process.pid) for host in hosts]

            run = ProductRun()
            log_start = azurite.log_size()
            await drive_product(azurite.connection_string, main_requests, run, give_up_after=args.timeout)
            cpu_after = [process_cpu_seconds(host.process.pid) for host in hosts]
            cpu = [after - before for after, before in zip(cpu_after, cpu_before, strict=True)]
            await asyncio.sleep(0.5)  # let Azurite flush the last access-log lines
            log_window = (log_start, azurite.log_size())
            stop_sampling.set()
            await asyncio.gather(*samplers)
            calls = await control.calls()
            throttle = await control.throttle_usage()
    finally:
        await asyncio.gather(*(asyncio.to_thread(host.stop) for host in hosts))
        if simulator is not None:
            await asyncio.to_thread(simulator.stop)
        storage = azurite.storage_requests(*log_window) if log_window else Counter()
        budget_ops = azurite.lines_containing(BUDGET_ENTITY, *log_window) if log_window else 0
        await asyncio.to_thread(azurite.stop)

    return figures(args, main_requests, run, calls, storage, rss, baseline, hosts, throttle, cpu, budget_ops)


REQUEST_FUNCTION = "reset_request"  # function_app.py's queue-triggered request function
BUDGET_ENTITY = "graph-budget"  # the shared budget's entity (PartitionKey `$graph-budget`) in access-log lines


def process_cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far (its children included), 0 if gone."""
    import psutil

    if pid is None:
        return 0.0
    try:
        process = psutil.Process(pid)
        processes = [process, *process.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for each in processes:
        with contextlib.suppress(psutil.Error):
            times = each.cpu_times()
            total += times.user + times.system
    return total


async def add_devices(control: SimulatorControl, devices: list[dict[str, Any]], parallel: int = 16) -> None:
    pending = list(devices)

    async def worker() -> None:
        while pending:
            await control.add_device(pending.pop())

    await asyncio.gather(*(worker() for _ in range(parallel)))


def figures(
    args: argparse.Namespace,
    requests: list[BenchRequest],
    run: ProductRun,
    calls: list[dict[str, Any]],
    storage: Counter[str],
    rss: list[list[tuple[float, float]]],
    baseline: BaselineResult,
    hosts: list[Service],
    throttle: dict[str, Any],
    cpu: list[float],
    budget_ops: int,
) -> dict[str, Any]:
    window = (run.started, run.finished)
    actions = [c for c in calls if c.get("method") == "POST" and c.get("status") == 204]
    action_times = [parse_time(c["time"]) for c in actions]
    elapsed = run.finished - run.started
    budget_per_s = 200 / 20  # Intune's budget, for all hosts together
    actions_per_s = len(actions) / elapsed if elapsed > 0 else 0.0
    statuses = Counter(status for status, _ in run.outcome.values())
    latencies = [
        (t - run.enqueued_at[rid]) * 1000
        for rid, (status, t) in run.outcome.items()
        if status == "submitted" and rid in run.enqueued_at
    ]
    missing = len(requests) - len(run.outcome)
    graph = graph_figures(calls, requests)
    host_storage = sum(storage.values()) - run.bench_storage_requests
    per_device = Counter(str(c.get("deviceId", "")).lower() for c in actions)
    wrong_actions = sum(1 for r in requests if per_device[r.device_id.lower()] != (1 if r.supported else 0))
    peaks = [round(max((mb for _, mb in samples), default=0.0), 1) for samples in rss]
    firsts = [max((mb for _, mb in s[: max(1, len(s) // 4)]), default=0.0) for s in rss]
    lasts = [max((mb for _, mb in s[-max(1, len(s) // 4) :]), default=0.0) for s in rss]
    throttled = sum(1 for c in calls if c.get("status") == 429)
    result: dict[str, Any] = {
        "hosts": args.hosts,
        "scaled_hosts_run": "every function" if args.every_host_runs_all else REQUEST_FUNCTION,
        "requests": len(requests),
        "elapsed_s": round(elapsed, 2),
        "actions": len(actions),
        "actions_per_s": round(actions_per_s, 3),
        "budget_actions_per_s": budget_per_s,
        "budget_utilisation": round(actions_per_s / budget_per_s, 3),
        "max_actions_per_window": throttle.get("peakWrites"),
        "max_calls_per_window": throttle.get("peakAny"),
        "budget_exceeded": throttle.get("exceeded"),
        "requests_not_one_action": wrong_actions,
        "p50_ms": round(percentile(latencies, 0.50)),
        "p95_ms": round(percentile(latencies, 0.95)),
        **graph,
        "graph_calls_total": len(calls),
        "storage_ops_per_request": round(host_storage / len(requests), 2),
        "budget_storage_ops_per_request": round(budget_ops / len(requests), 3),
        "host_cpu_ms_per_request": round(sum(cpu) * 1000 / len(requests), 1),
        "throttled_429": throttled,
        "throttled_429_share": round(throttled / max(1, len(calls)), 4),
        "failed": statuses.get("failed", 0) + missing,
        "outcomes": dict(sorted(statuses.items())),
        "no_outcome": missing,
        "deferrals": sum(count_log(host, "request deferred") or 0 for host in hosts),
        "peak_rss_mb": max(peaks, default=0.0),
        "peak_rss_mb_by_host": peaks,
        "rss_mb_first_quarter": round(max(firsts, default=0.0), 1),
        "rss_mb_last_quarter": round(max(lasts, default=0.0), 1),
        "baseline_requests": baseline.requests,
        "baseline_actions_per_s": round(baseline.actions_per_s, 3),
        "baseline_failed": baseline.failed,
        "speedup_vs_baseline": round(actions_per_s / baseline.actions_per_s, 2) if baseline.actions_per_s else None,
        "max_speedup_at_budget": round(budget_per_s / baseline.actions_per_s, 2) if baseline.actions_per_s else None,
        "storage_ops_by_kind": dict(storage.most_common()),
        "bench_storage_ops": run.bench_storage_requests,
        "host_ready_s": round(max(host.ready_after for host in hosts), 2) if hosts else None,
        "latency_ms_per_graph_call": args.latency_ms,
        "batch_size": args.batch_size,
        "new_batch_threshold": args.new_batch_threshold,
        "confirm_first_check_s": args.confirm_first_check,
        "window": [round(window[0], 3), round(window[1], 3)],
    }
    chart(OUT / "throughput.png", action_times, run.started, budget_per_s, baseline.actions_per_s)
    (OUT / "throughput.json").write_text(json.dumps(result, indent=2))
    (OUT / "actions.json").write_text(json.dumps([round(t - run.started, 3) for t in action_times]))
    (OUT / f"throughput-hosts-{args.hosts}.json").write_text(
        json.dumps({"result": result, "actions": [round(t - run.started, 3) for t in action_times]})
    )
    return result


def count_log(host: Service | None, message: str) -> int | None:
    if host is None or not host.stderr_path.exists():
        return None
    needle = f'"message": "{message}"'
    with open(host.stderr_path, errors="replace") as log:
        return sum(1 for line in log if needle in line)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests for the product run (default 1000)")
    parser.add_argument("--baseline", type=int, default=60, help="requests for the sequential baseline (default 60)")
    parser.add_argument("--latency-ms", type=float, default=150.0, help="simulator latency per Graph call")
    parser.add_argument("--batch-size", type=int, default=None, help="host.json batchSize (default: host.json's)")
    parser.add_argument("--new-batch-threshold", type=int, default=None, help="host.json newBatchThreshold")
    parser.add_argument(
        "--confirm-first-check",
        type=int,
        default=3600,
        help="CONFIRM_FIRST_CHECK_SECONDS; the default keeps confirmation checks out of the measured window",
    )
    parser.add_argument("--hosts", type=int, default=1, help="product hosts sharing the one Graph budget (default 1)")
    parser.add_argument(
        "--every-host-runs-all",
        action="store_true",
        help="every host runs every function (default: hosts after the first run the request function only, "
        "as Flex Consumption's per-function scaling does)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="give up waiting for outcomes after (s)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.requests < 1 or args.baseline < 0 or args.hosts < 1:
        parser.error("--requests and --hosts must be at least 1, --baseline at least 0")
    queues = json.loads((PROJECT_ROOT / "host.json").read_text())["extensions"]["queues"]
    args.batch_size = args.batch_size or queues["batchSize"]
    args.new_batch_threshold = (
        queues["newBatchThreshold"] if args.new_batch_threshold is None else args.new_batch_threshold
    )
    # SIGTERM and Ctrl-C cancel the run (its finally stops host, simulator and Azurite); whatever
    # is left is ended on the way out.
    return run_ending_children(lambda: _run_and_print(args))


def _run_and_print(args: argparse.Namespace) -> int:
    result = asyncio.run(benchmark(args))
    print(json.dumps(result), flush=True)
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
