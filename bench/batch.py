"""A batch at Intune's Graph budget while the help desk keeps working (README "Batches").

    .venv/bin/python -m bench.batch --items 10000      # about 17 minutes at 10 actions/s
    .venv/bin/python -m bench.batch --items 300        # a few minutes

Starts Azurite (data in a scratch directory, access log on: docs/decisions/0026), the Intune
simulator (Intune's throttling budget of 200 POST / 2,000 requests per 20 s, 150 ms per Graph call)
and one product host as separate processes, adds one new device per item (mixed platforms and
identifier kinds, 10 % without a supported action: bench/stack.py's plan), then:

1. `POST /api/batches` with every item (JSON), timed: `expansion_s` is the time until the batch's
   item list is stored and its chain started (the 202);
2. while the batch runs, a single request every 2 s (`POST /api/resets`, a device of its own);
   `single_p95_ms` is the 95th percentile of POST to its `submitted` event;
3. the results queue is read until every item has a first outcome; `GET /api/batches/{id}` is
   polled every 10 s along the way (`--poll-seconds`: the batch API's `Retry-After`, as a Power
   Automate flow waiting with `?until=done` would).

Prints one JSON line: items, elapsed_s (POST to the last item's first outcome), expansion_s,
budget_utilisation (action POSTs Intune accepted per second over Intune's 10 per second, in the
window from the POST to the last first outcome), failed (items and singles whose first outcome is
`failed`, or that have none), single_p95_ms, storage_ops_per_item (the storage requests Azurite
served in that window, less the benchmark's own and less those of the confirmation checks that
fall in the window, over the items and singles: what taking an item to its first outcome costs,
as `bench.throughput`'s storage_ops_per_request counts it for single requests),
storage_ops_per_item_with_confirmations (the same with the confirmation checks' requests), and
confirmation_checks / confirmation_ops_per_check (`confirmation_ops` says how they are told apart
in Azurite's access log), peak_rss_mb (the host), host_cpu_ms_per_item, azurite_cpu_ms_per_item,
simulator_cpu_ms_per_item (each process's CPU over the same window, confirmation checks included).
Writes docs/img/batch.png (items by status over time; single requests' latency) and
bench/out/batch.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.stack import (
    HOST_READY,
    PROJECT_ROOT,
    SIMULATOR_READY,
    BenchRequest,
    CountingAzurite,
    LoggedRequest,
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
from bench.throughput import StorageCounter, add_devices, process_cpu_seconds, sample_rss
from devstack.children import run_ending_children
from devstack.simulator.control import SimulatorControl

OUT = PROJECT_ROOT / "bench" / "out"
CHART = PROJECT_ROOT / "docs" / "img" / "batch.png"
BUDGET_PER_S = 200 / 20  # Intune's action budget
FOLLOWUPS = "passcode-reset-followups"


def batch_body(batch_id: str, items: list[BenchRequest]) -> dict[str, Any]:
    return {
        "batchId": batch_id,
        "requestedBy": "bench@contoso.com",
        "ticketId": "BENCH-BATCH",
        "reason": "batch benchmark",
        "allowRemoteLock": True,
        "devices": [{item.kind: item.value} for item in items],
    }


class Run:
    def __init__(self) -> None:
        self.started = 0.0
        self.posted = 0.0
        self.first: dict[str, tuple[str, float]] = {}  # requestId -> first outcome status, event time
        self.single_sent: dict[str, float] = {}
        self.single_submitted: dict[str, float] = {}
        self.polls: list[dict[str, Any]] = []
        self.done_events = 0
        self.later_events = 0  # events after a request's first outcome (confirmations)
        self.single_retries = 0  # 503 answers to a single request's POST, retried after Retry-After
        self.bench_storage = 0

    def note(self, event: dict[str, Any]) -> None:
        """One event from the results queue: the batch's done event, a request's first outcome
        (or a later one), a single's `submitted` time."""
        if event.get("type") == "intune.passcode-reset-batch.done":
            self.done_events += 1
            return
        data = event.get("data") or {}
        request_id = data.get("requestId")
        at = parse_time(event["time"])
        if request_id in self.single_sent and data.get("status") == "submitted":
            self.single_submitted.setdefault(request_id, at)
        if request_id and request_id not in self.first:
            self.first[request_id] = (str(data.get("status")), at)
        elif request_id:
            self.later_events += 1


async def drive(
    host: Service,
    key: str,
    connection: str,
    batch_id: str,
    items: list[BenchRequest],
    singles: list[BenchRequest],
    run: Run,
    give_up_after: float,
    poll_seconds: float = 10.0,
) -> None:
    from azure.storage.queue.aio import QueueServiceClient

    wanted = {f"{batch_id}.{n}" for n in range(1, len(items) + 1)}
    counter = StorageCounter()
    headers = {"x-functions-key": key}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        QueueServiceClient.from_connection_string(connection, raw_request_hook=counter) as service,
    ):
        results = service.get_queue_client("passcode-reset-results")
        run.started = time.time()
        async with http.post(f"{host.url}/api/batches", json=batch_body(batch_id, items)) as answer:
            accepted = await answer.json()
            if answer.status != 202:
                raise RuntimeError(f"batch refused: {answer.status} {accepted}")
        run.posted = time.time()
        finished = asyncio.Event()

        async def send_singles() -> None:
            for single in singles:
                if finished.is_set():
                    return
                body = json.loads(single.message())
                run.single_sent[single.request_id] = time.time()
                for _ in range(10):  # like a client: a 503 is retried after its Retry-After
                    async with http.post(f"{host.url}/api/resets", json=body) as answer:
                        if answer.status == 202:
                            break
                        if answer.status != 503:
                            raise RuntimeError(f"single refused: {answer.status}")
                        run.single_retries += 1
                        await asyncio.sleep(float(answer.headers.get("Retry-After", "1")))
                await asyncio.sleep(2.0)

        async def poll() -> None:
            while not finished.is_set():
                async with http.get(f"{host.url}/api/batches/{batch_id}") as answer:
                    state = await answer.json()
                run.polls.append({"t": round(time.time() - run.started, 2), **state})
                try:
                    await asyncio.wait_for(finished.wait(), poll_seconds)
                except TimeoutError:
                    pass

        async def collect() -> None:
            deadline = time.monotonic() + give_up_after
            while not wanted <= run.first.keys() and time.monotonic() < deadline:
                page = [m async for m in results.receive_messages(messages_per_page=32, max_messages=32)]
                for message in page:
                    run.note(json.loads(message.content))
                    await results.delete_message(message)
                if not page:
                    await asyncio.sleep(0.25)
            finished.set()

        await asyncio.gather(send_singles(), poll(), collect())
        await asyncio.sleep(3)  # the singles still on their way reach `submitted`
        while True:
            page = [m async for m in results.receive_messages(messages_per_page=32, max_messages=32)]
            if not page:
                break
            for message in page:
                run.note(json.loads(message.content))
        run.bench_storage = counter.count


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    OUT.mkdir(parents=True, exist_ok=True)
    items, item_devices = plan_requests(args.items, prefix="bat", seed=args.seed)
    max_singles = int(args.timeout / 2) + 10
    singles, single_devices = plan_requests(max_singles, prefix="one", seed=args.seed + 1, unsupported_share=0.0)
    host_json = write_host_json(OUT / "host.batch.json")
    (OUT / "azurite-batch.log").unlink(missing_ok=True)
    azurite = CountingAzurite(log_path=OUT / "azurite-batch.log")
    simulator: Service | None = None
    host: Service | None = None
    rss: list[tuple[float, float]] = []
    run = Run()
    calls: list[dict[str, Any]] = []
    window: tuple[int, int] | None = None
    cpu: dict[str, float] = {}
    batch_id = f"bench-{int(time.time())}"
    try:
        await asyncio.to_thread(azurite.start)
        simulator = await asyncio.to_thread(
            launch, simulator_args(args.latency_ms), dict(os.environ), SIMULATOR_READY, OUT / "sim-batch.log"
        )
        async with SimulatorControl(simulator.url) as control:
            await add_devices(control, item_devices + single_devices)
            env = host_environment(azurite, simulator.url, CONFIRM_FIRST_CHECK_SECONDS=str(args.confirm_first_check))
            host = await asyncio.to_thread(
                launch, host_args(host_json, OUT / "no-local-settings.json"), env, HOST_READY, OUT / "host-batch.log"
            )
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_rss(host.process.pid, rss, stop))
            start_log = azurite.log_size()
            pids = {"host": host.process.pid, "azurite": azurite.pid, "simulator": simulator.process.pid}
            cpu_before = {name: process_cpu_seconds(pid) for name, pid in pids.items()}
            await drive(
                host,
                env["DEVSTACK_FUNCTION_KEY"],
                azurite.connection_string,
                batch_id,
                items,
                singles,
                run,
                args.timeout,
                args.poll_seconds,
            )
            await asyncio.sleep(0.5)
            window = (start_log, azurite.log_size())
            cpu = {name: process_cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
            stop.set()
            await sampler
            calls = await control.calls()
    finally:
        if host is not None:
            await asyncio.to_thread(host.stop)
        if simulator is not None:
            await asyncio.to_thread(simulator.stop)
        logged = list(azurite.logged_requests(*window)) if window else []
        await asyncio.to_thread(azurite.stop)
    return figures(args, batch_id, items, run, calls, logged, rss, cpu)


def figures(
    args: argparse.Namespace,
    batch_id: str,
    items: list[BenchRequest],
    run: Run,
    calls: list[dict[str, Any]],
    logged: list[LoggedRequest],
    rss: list[tuple[float, float]],
    cpu: dict[str, float],
) -> dict[str, Any]:
    storage = Counter(request.kind for request in logged)
    item_ids = [f"{batch_id}.{n}" for n in range(1, len(items) + 1)]
    item_firsts = [run.first[i] for i in item_ids if i in run.first]
    last = max((t for _, t in item_firsts), default=time.time())
    elapsed = last - run.started
    actions = [c for c in calls if c.get("method") == "POST" and c.get("status") == 204]
    in_window = [c for c in actions if run.started <= parse_time(c["time"]) <= last]
    statuses = Counter(status for status, _ in item_firsts)
    single_latency = [
        (run.single_submitted[rid] - sent) * 1000
        for rid, sent in run.single_sent.items()
        if rid in run.single_submitted
    ]
    single_failed = sum(1 for rid in run.single_sent if rid in run.first and run.first[rid][0] == "failed")
    missing = len(items) - len(item_firsts)
    work = len(items) + len(run.single_sent)
    host_storage = sum(storage.values()) - run.bench_storage
    confirming = confirmation_ops(logged, run, args.confirm_first_check)
    checks = storage.get(f"DELETE {FOLLOWUPS}/messages/<id>", 0)
    result: dict[str, Any] = {
        "items": len(items),
        "elapsed_s": round(elapsed, 1),
        "expansion_s": round(run.posted - run.started, 2),
        "budget_utilisation": round(len(in_window) / elapsed / BUDGET_PER_S, 3) if elapsed > 0 else 0.0,
        "failed": statuses.get("failed", 0) + missing + single_failed,
        "single_p95_ms": round(percentile(single_latency, 0.95)),
        "single_p50_ms": round(percentile(single_latency, 0.50)),
        "singles": len(run.single_sent),
        "singles_submitted": len(single_latency),
        "singles_without_outcome": sum(1 for rid in run.single_sent if rid not in run.first),
        "single_503_retries": run.single_retries,
        "storage_ops_per_item": round((host_storage - confirming) / work, 2) if work else None,
        "storage_ops_per_item_with_confirmations": round(host_storage / work, 2) if work else None,
        "confirm_first_check_s": args.confirm_first_check,
        "poll_seconds": args.poll_seconds,
        "confirmation_checks": checks,
        "confirmation_ops_per_check": round(confirming / checks, 2) if checks else None,
        "later_events": run.later_events,
        "followup_queue_ops": sum(n for kind, n in storage.items() if FOLLOWUPS in kind),
        "peak_rss_mb": round(max((mb for _, mb in rss), default=0.0), 1),
        # CPU per item (work: items and singles) of each process from the batch's POST to the end,
        # confirmation checks included: host, Azurite and simulator share this machine's cores.
        **{f"{name}_cpu_ms_per_item": round(cpu_s * 1000 / work, 1) if work else None for name, cpu_s in cpu.items()},
        "outcomes": dict(sorted(statuses.items())),
        "no_outcome": missing,
        "done_events": run.done_events,
        "throttled_429": sum(1 for c in calls if c.get("status") == 429),
        "actions": len(in_window),
        "storage_ops_by_kind": dict(storage.most_common(12)),
        "latency_ms_per_graph_call": args.latency_ms,
    }
    chart(run, item_ids, single_latency, args.chart)
    (OUT / "batch.json").write_text(json.dumps({"result": result, "polls": run.polls}, indent=2))
    return result


def confirmation_ops(logged: list[LoggedRequest], run: Run, first_check: int) -> int:
    """The storage requests of the confirmation checks among `logged`: the follow-up queue's
    receives and deletes and its messages beyond each submitted request's first check (a check
    that looks again), and the ledger reads and writes of a submitted request from half its first
    check's delay after its `submitted` event on (the request path has written its last by then:
    the record before the event), with one results-queue message per such write (the event of a
    final outcome; a check that looks again writes nothing)."""
    submitted_at = {rid: at for rid, (status, at) in run.first.items() if status == "submitted"}
    after = max(2.0, first_check / 2)
    ledger_reads = ledger_writes = followup_ops = followup_posts = 0
    for request in logged:
        if FOLLOWUPS in request.kind:
            if request.kind.startswith("POST "):
                followup_posts += 1
            else:
                followup_ops += 1
            continue
        at = submitted_at.get(request.partition_key or "")
        if at is None or request.at < at + after:
            continue
        if request.kind.startswith("GET "):
            ledger_reads += 1
        elif request.kind.startswith(("PUT ", "MERGE ", "PATCH ")):
            ledger_writes += 1
    looked_again = max(0, followup_posts - len(submitted_at))
    return followup_ops + looked_again + ledger_reads + 2 * ledger_writes


def chart(run: Run, item_ids: list[str], single_latency: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    firsts = sorted((t - run.started, status) for rid in item_ids if (hit := run.first.get(rid)) for status, t in [hit])
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    statuses = sorted({status for _, status in firsts})
    end = max((t for t, _ in firsts), default=1.0)
    grid = [end * i / 200 for i in range(201)]
    for status in statuses:
        times = [t for t, s in firsts if s == status]
        top.plot(grid, [sum(1 for t in times if t <= g) for g in grid], label=status)
    top.set_ylabel("items with a first outcome")
    top.set_title(f"A {len(item_ids):,}-item batch at Intune's budget (10 actions/s), local stack")
    top.legend(loc="upper left")
    sent = sorted(
        (run.single_sent[rid] - run.started, (run.single_submitted[rid] - run.single_sent[rid]) * 1000)
        for rid in run.single_sent
        if rid in run.single_submitted
    )
    bottom.plot([t for t, _ in sent], [ms / 1000 for _, ms in sent], ".", label="single request: POST to submitted")
    bottom.axhline(5, color="grey", linestyle="--", label="target p95 5 s")
    bottom.set_ylabel("seconds")
    bottom.set_xlabel("seconds since the batch was posted")
    bottom.legend(loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000, help="devices in the batch (default 10000)")
    parser.add_argument("--latency-ms", type=float, default=150.0, help="simulator latency per Graph call")
    parser.add_argument(
        "--confirm-first-check", type=int, default=60,
        help="CONFIRM_FIRST_CHECK_SECONDS (default 60, the product's): a long batch's confirmation checks run "
        "during it, as in production; a larger value keeps them out, but their follow-up messages then wait "
        "in the queue, where every one slows each operation of Azurite's (docs/decisions/0026)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=2400.0, help="give up waiting for outcomes after (s)")
    parser.add_argument(
        "--poll-seconds", type=float, default=10.0,
        help="GET /api/batches/{id} every this many seconds (default 10, the API's Retry-After)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--chart", type=Path, default=CHART, help=f"where to write the chart (default {CHART})")
    args = parser.parse_args(argv)
    if not 1 <= args.items <= 10_000:
        parser.error("--items must be 1 to 10000")
    return run_ending_children(lambda: _run_and_print(args))


def _run_and_print(args: argparse.Namespace) -> int:
    result = asyncio.run(benchmark(args))
    print(json.dumps(result), flush=True)
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
