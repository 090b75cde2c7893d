"""`python -m bench.soak --requests 5000`: the fault soak of issue 7 (docs/contract.md#guarantees).

Starts Azurite with on-disk persistence (a temporary `--location`), the Intune Graph simulator and
the devstack host (`bench.soak_host`) as child processes, gives every request its own simulator
device, and pushes the requests (mixed platforms and identifier kinds, plain and base64 queue
messages, some through `POST /api/resets`, 10 % sent twice: half at once, half after their final
event) while the simulator injects faults on Graph calls:

    429 (5 %, Retry-After), 503 (3 %, Retry-After), 504, 500 and 502 after applying an action (1 %
    of POSTs each; a 5xx on a POST is an unknown outcome, reconciled before any retry),
    dropped connections (1 % before, 0.5 % of POSTs after applying), latency spikes (2 %, 1.5 s)

and the host is killed with SIGKILL and restarted at fixed points of progress. At the end it waits
until every queue is empty, then prints ONE JSON line on stdout:

    requests           distinct requests sent
    final_events       distinct final CloudEvents ids received
    lost               requests with no final event
    duplicate_finals   requests with more than one distinct final event id (decision 0001)
    duplicate_actions  requests whose device got more than one applied action (simulator log)
    poison             messages the host moved to a poison queue
    elapsed_s          wall time of the whole run, set-up included
    ...                and: kills, messages_sent, unexpected_actions (an action where none
                       should run), leaks (secrets found in host logs or events), leak_scan_s
                       (seconds the leak scan took), statuses
    storage_outages    with --storage-faults (bench/soak_storage.py): storage cut off entirely,
    storage_restarts   Azurite stopped gracefully and started again, and storage_faults: the
                       injected storage faults by kind (503 ServerBusy, dropped, latency, ...)

Exit code 0 when lost, duplicate_finals, duplicate_actions, unexpected_actions and leaks are 0.
Progress goes to stderr. Everything listens on loopback only; the run is bounded by --timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from bench.leak_scan import find_leaks
from bench.soak_eventgrid import EventGridLeg
from bench.soak_fleet import PlannedRequest, build_plan
from bench.soak_storage import CLIENT_RETRY, StorageFaultLeg, StoragePlan
from devstack.azurite import ACCOUNT_KEY, PROJECT_ROOT, Azurite
from devstack.children import run_ending_children
from devstack.run import Child, spawn
from devstack.simulator import command as simulator_command
from devstack.simulator.control import SimulatorControl

FINAL_STATUSES = frozenset({"completed", "failed", "unsupported", "rejected", "dry_run", "timed_out"})
REQUESTS_QUEUE = "soak-requests"
RESULTS_QUEUE = "soak-results"
FOLLOWUPS_QUEUE = "soak-followups"
LEDGER_TABLE = "SoakLedger"
POISON_LINE = "message moved to poison queue"


@dataclass
class SoakConfig:
    requests: int = 5000
    kills: int = 3  # SIGKILL + restart of the host, spread over the run
    window: int = 400  # requests in flight (sent, no final event yet)
    duplicate_share: float = 0.10
    http_share: float = 0.05
    faults: bool = True
    retry_after: float = 1.0  # Retry-After of the injected 429/503 answers
    drop_reads: bool = True  # drop connections of reads too (a read retried after a drop waits 5-30 s)
    complete_after: float = 0.3  # the simulated device finishes an action after this many seconds
    lease_seconds: float = 10.0  # visibility of a message a host received (see bench/soak_host.py)
    action_lease_seconds: int | None = None  # None: the product's Policy default
    after_apply_5xx: float = 0.01  # share of POSTs answered 500 (and as many 502) after applying the action
    reveals: int = 20  # passcode reveals through the HTTP API after the run (the leak scan covers them)
    timeout: float = 1800.0
    seed: int = 7
    keep: bool = False  # keep the work directory (logs, Azurite data)
    quiet: bool = False
    eventgrid: bool = False  # also deliver to a local Event Grid topic that fails at times (bench/soak_eventgrid.py)
    storage: StoragePlan | None = None  # --storage-faults: outages, an Azurite restart, 503s (bench/soak_storage.py)
    hosts: int = 1  # --hosts N: N hosts share Intune's budget, which the simulator enforces and checks per window


@dataclass
class SoakReport:
    requests: int
    final_events: int
    lost: int
    duplicate_finals: int
    duplicate_actions: int
    poison: int
    elapsed_s: float
    kills: int
    messages_sent: int
    unexpected_actions: int
    leaks: int
    leak_scan_s: float
    statuses: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)  # not printed: lists for tests and debugging
    eventgrid: dict[str, Any] | None = None  # with --eventgrid: bench/soak_eventgrid.py
    storage_outages: int = 0  # with --storage-faults: bench/soak_storage.py
    storage_restarts: int = 0
    storage_faults: dict[str, Any] | None = None
    hosts: int = 1
    budget: dict[str, Any] | None = None  # with --hosts N > 1: the simulator's most calls per window

    @property
    def targets_met(self) -> bool:
        failures = (self.lost, self.duplicate_finals, self.duplicate_actions, self.unexpected_actions, self.leaks)
        eventgrid = self.eventgrid or {}
        over_budget = bool((self.budget or {}).get("exceeded"))
        return (
            not any(failures)
            and not eventgrid.get("final_missing")
            and not eventgrid.get("unknown")
            and not over_budget
        )

    def line(self) -> str:
        optional = ("eventgrid", "storage_faults", "budget")
        fields = {k: v for k, v in asdict(self).items() if k != "details" and not (k in optional and v is None)}
        fields["guardrails"] = "off"  # GUARDRAIL_MAX_ACTIONS_PER_HOUR=0 for this run (see _host_env)
        return json.dumps(fields, separators=(", ", ": "))


# ---------------------------------------------------------------------------------------------- processes


class HostProcess:
    """The devstack host child; a new log file per start, so every generation's lines are kept."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, config: SoakConfig, host_json: Path, name: str = "host"
    ) -> None:
        self.name = name
        self.env = env
        self.log_dir = log_dir
        self.config = config
        self.host_json = host_json
        self.child: Child | None = None
        self.generation = 0
        self.url = ""
        self.ready = asyncio.Event()

    async def start(self) -> str:
        self.generation += 1
        argv = [sys.executable, "-m", "bench.soak_host", "--port", "0", "--host-json", str(self.host_json)]
        argv += ["--lease-seconds", str(self.config.lease_seconds)]
        if self.config.action_lease_seconds is not None:
            argv += ["--action-lease-seconds", str(self.config.action_lease_seconds)]
        self.child = spawn(f"{self.name}-{self.generation}", argv, self.env, self.log_dir)
        line = await self.child.wait_for_line("host listening on ", timeout=90)
        self.url = line.split()[3]
        self.ready.set()
        return self.url

    def kill(self) -> None:
        """SIGKILL, no grace: in-flight invocations die wherever they are."""
        self.ready.clear()
        if self.child is not None:
            self.child.kill()

    async def stop(self) -> None:
        self.ready.clear()
        if self.child is not None:
            await asyncio.to_thread(self.child.stop, 15.0)

    def log_paths(self) -> list[Path]:
        return [self.log_dir / f"{self.name}-{n}.log" for n in range(1, self.generation + 1)]


async def start_simulator(log_dir: Path, token: str, config: SoakConfig) -> tuple[Child, str]:
    # Several hosts: Intune's budget on, so that the run shows they share it.
    options = {"complete_after": config.complete_after, "seed": config.seed, "no_throttle": config.hosts == 1}
    argv = [sys.executable, *simulator_command(port=0, token=token, **options)]
    child = spawn("simulator", argv, {**os.environ, "PYTHONUNBUFFERED": "1"}, log_dir)
    line = await child.wait_for_line("simulator listening on ", timeout=30)
    return child, line.split()[3]


def fault_rules(config: SoakConfig) -> list[dict[str, Any]]:
    """Latency first (it adds to whatever follows); then the first terminal rule that fires wins."""
    forever: dict[str, Any] = {"times": None}
    post = {"method": "POST"}
    return [
        {"fault": "latency", "probability": 0.02, "latencyMs": 1500, **forever},
        {"fault": "504_after_apply", "match": post, "probability": 0.01, **forever},
        {"fault": "500_after_apply", "match": post, "probability": config.after_apply_5xx, **forever},
        {"fault": "502_after_apply", "match": post, "probability": config.after_apply_5xx, **forever},
        {"fault": "drop_after_apply", "match": post, "probability": 0.005, **forever},
        {"fault": "429", "probability": 0.05, "retryAfter": config.retry_after, **forever},
        {"fault": "503", "probability": 0.03, "retryAfter": config.retry_after, **forever},
        {"fault": "drop", "probability": 0.01, **({} if config.drop_reads else {"match": post}), **forever},
    ]


def write_host_json(path: Path) -> None:
    """The project's host.json, with failed messages retried after 2 s instead of 30 s."""
    document = json.loads((PROJECT_ROOT / "host.json").read_text())
    document.setdefault("extensions", {}).setdefault("queues", {})["visibilityTimeout"] = "00:00:02"
    path.write_text(json.dumps(document, indent=2))


# ---------------------------------------------------------------------------------------------- the run


class Soak:
    def __init__(self, config: SoakConfig, workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.log_dir = workdir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.token = secrets.token_urlsafe(24)
        self.function_key = secrets.token_urlsafe(24)
        self.devices, self.plan = build_plan(
            config.requests, seed=config.seed, duplicate_share=config.duplicate_share, http_share=config.http_share
        )
        self.by_id = {p.request_id: p for p in self.plan}
        self.final_ids: dict[str | None, set[str]] = collections.defaultdict(set)
        self.faults_fired: dict[str, int] = {}
        self.first_final: dict[str, dict[str, Any]] = {}
        self.event_texts: list[str] = []
        self.messages_sent = 0
        self.in_flight = 0
        self.kills = 0
        self.hosts: list[HostProcess] = []  # the first is the one the HTTP API is called on
        self.budget: dict[str, Any] | None = None
        self.kill_choice = random.Random(config.seed)
        self.window = asyncio.Semaphore(config.window)
        self.late: list[asyncio.Task[None]] = []
        self.background: list[asyncio.Task[None]] = []  # tasks that outlive _drive: the collector
        self.progress = asyncio.Event()
        self.http_errors: collections.Counter[str] = collections.Counter()
        self.eventgrid: EventGridLeg | None = None
        self.eventgrid_report: dict[str, Any] | None = None
        self.storage: StorageFaultLeg | None = None
        self.disruption = asyncio.Lock()  # a host kill and a storage disruption never overlap

    def say(self, text: str) -> None:
        if not self.config.quiet:
            print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    async def run(self) -> SoakReport:
        started = time.monotonic()
        azurite = Azurite(location=self.workdir / "azurite", log_path=self.log_dir / "azurite.log")
        simulator: Child | None = None
        host: HostProcess | None = None
        try:
            await asyncio.to_thread(azurite.start)
            simulator, graph_url = await start_simulator(self.log_dir, self.token, self.config)
            self.say(f"azurite {azurite.ports} (data in {azurite.location}), simulator {graph_url}")
            if self.config.eventgrid:
                self.eventgrid = await EventGridLeg.start(self.log_dir, {**os.environ, "PYTHONUNBUFFERED": "1"})
                self.say(f"event grid receiver {self.eventgrid.url}")
            storage_connection = azurite.connection_string
            if self.config.storage is not None:
                self.storage = await StorageFaultLeg.start(azurite, self.config.storage, self.config.seed)
                storage_connection = self.storage.connection_string
                self.say(f"storage fault proxy {self.storage.proxy.ports}: {self.storage.schedule()}")
            async with SimulatorControl(graph_url) as control, QueueServiceClient.from_connection_string(
                storage_connection, **CLIENT_RETRY
            ) as service, aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
                await self._add_devices(control)
                for name in (REQUESTS_QUEUE, RESULTS_QUEUE):
                    with contextlib.suppress(ResourceExistsError):
                        await service.create_queue(name)
                host_json = self.workdir / "host.json"
                write_host_json(host_json)
                env = self._host_env(storage_connection, graph_url)
                if self.eventgrid is not None:
                    env.update(self.eventgrid.host_settings())
                host = HostProcess(env, self.log_dir, self.config, host_json)
                self.hosts = [host] + [
                    HostProcess(env, self.log_dir, self.config, host_json, name=f"host{n}")
                    for n in range(2, self.config.hosts + 1)
                ]
                await asyncio.gather(*(h.start() for h in self.hosts))
                self.say(f"host {host.url}; {len(self.plan)} requests, {self.config.kills} kills planned")
                if self.config.faults:
                    await control.add_faults(fault_rules(self.config))
                deadline = started + self.config.timeout
                await self._drive(service, session, host, deadline)
                if self.storage is not None:
                    self.storage.calm()
                await self._wait_drained(service, deadline)
                if self.eventgrid is not None:
                    self.eventgrid_report = await self.eventgrid.report(
                        [json.loads(text) for text in self.event_texts],
                        {event_id for ids in self.final_ids.values() for event_id in ids},
                    )
                fired: collections.Counter[str] = collections.Counter()
                for rule in await control.faults():
                    fired[rule["fault"]] += int(rule.get("fired") or 0)
                self.faults_fired = dict(sorted(fired.items()))
                await control.clear_faults()
                if self.config.hosts > 1:
                    usage = await control.throttle_usage()
                    self.budget = {
                        "max_actions_per_window": usage.get("peakWrites"),
                        "max_calls_per_window": usage.get("peakAny"),
                        "exceeded": usage.get("exceeded"),
                    }
                reveals = await self._reveal_passcodes(session, host)
                actions = await control.actions()
                views = await control.devices()
                calls = len(await control.calls())
            await asyncio.gather(*(h.stop() for h in self.hosts))
            logs = [path for h in self.hosts for path in h.log_paths()]
            return self._report(started, actions, views, reveals, logs, calls)
        finally:
            await self._cancel_background()
            if self.eventgrid is not None:
                await asyncio.to_thread(self.eventgrid.stop)
            if self.storage is not None:
                await self.storage.stop()
            for started_host in self.hosts or ([host] if host is not None else []):
                await started_host.stop()
            if simulator is not None:
                await asyncio.to_thread(simulator.stop, 10.0)
            await asyncio.to_thread(azurite.stop)

    async def _cancel_background(self) -> None:
        """A run cut short (SIGTERM, Ctrl-C, an error) leaves the collector and late duplicates
        running on clients that are closed by now: end them quietly."""
        tasks = [*self.background, *self.late]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- set-up ----------------------------------------------------------------------------------

    async def _add_devices(self, control: SimulatorControl) -> None:
        pending = iter(self.devices)

        async def worker() -> None:
            for device in pending:
                await control.add_device(device)

        await asyncio.gather(*(worker() for _ in range(8)))
        self.say(f"{len(self.devices)} simulator devices added")

    def _host_env(self, connection: str, graph_url: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "AzureWebJobsStorage": connection,
            "RESET_REQUESTS_QUEUE": REQUESTS_QUEUE,
            "RESET_RESULTS_QUEUE": RESULTS_QUEUE,
            "RESET_FOLLOWUPS_QUEUE": FOLLOWUPS_QUEUE,
            "RESET_BATCHES_QUEUE": "soak-batches",
            "RESET_LEDGER_TABLE": LEDGER_TABLE,
            "GRAPH_BASE_URL": graph_url,
            "GRAPH_TOKEN": self.token,
            "DEVSTACK_FUNCTION_KEY": self.function_key,
            "CONFIRM_FIRST_CHECK_SECONDS": "1",
            "CONFIRM_TIMEOUT_SECONDS": "600",
            "RESET_COOLDOWN_SECONDS": "900",
            "ALLOW_PASSCODE_REVEAL": "true",
            # One host: Intune's budget is not what this run measures (bench/throughput.py does): the
            # simulator does not enforce it and the app's client-side pacer gets room to match.
            # Several hosts: Intune's budget, shared by them (the code's defaults).
            **({"GRAPH_POST_BUDGET": "100000", "GRAPH_REQUEST_BUDGET": "1000000"} if self.config.hosts == 1 else {}),
            # Guardrails off: this run counts every request reaching one final outcome, and a
            # guardrail holds requests for approval by design (bench/guardrail_soak.py measures that).
            "GUARDRAIL_MAX_ACTIONS_PER_HOUR": "0",
        }

    # -- driving ---------------------------------------------------------------------------------

    async def _drive(
        self, service: QueueServiceClient, session: aiohttp.ClientSession, host: HostProcess, deadline: float
    ) -> None:
        self._requests_queue = service.get_queue_client(REQUESTS_QUEUE)
        self._session = session
        self._host = host
        self._stop_collector = asyncio.Event()
        self._collector = asyncio.create_task(self._collect(service.get_queue_client(RESULTS_QUEUE)))
        self.background.append(self._collector)
        killer = asyncio.create_task(self._kill_at_progress(host))
        reporter = asyncio.create_task(self._report_progress())
        # The topic fails now and then while requests flow (not while the queues drain).
        topic_faults = asyncio.create_task(self.eventgrid.inject_faults()) if self.eventgrid else None
        storage_faults = (
            asyncio.create_task(
                self.storage.disrupt(
                    self._reached, self.disruption, host.ready, self.say, lambda: len(self.first_final), len(self.plan)
                )
            )
            if self.storage
            else None
        )
        todo = iter(self.plan)

        async def sender() -> None:
            for planned in todo:
                await self.window.acquire()
                self.in_flight += 1
                await self._send(planned)
                if planned.duplicate == "early":
                    await self._send(planned)

        async def everything() -> None:
            await asyncio.gather(*(sender() for _ in range(8)))
            while len(self.first_final) < len(self.plan):
                self.progress.clear()
                await self.progress.wait()
            await killer  # a restart in progress finishes first
            if storage_faults is not None:
                await storage_faults  # so does a storage disruption
            await asyncio.gather(*self.late)

        try:
            await asyncio.wait_for(everything(), max(1.0, deadline - time.monotonic()))
        except TimeoutError:
            self.say("timeout: not every request had its final event within --timeout")
        finally:
            killer.cancel()
            reporter.cancel()
            if topic_faults is not None:
                topic_faults.cancel()
            if storage_faults is not None:
                storage_faults.cancel()

    async def _send(self, planned: PlannedRequest) -> None:
        self.messages_sent += 1
        if planned.channel == "http":
            await self._post(planned)
            return
        text = planned.text()
        if planned.channel == "queue-base64":
            text = base64.b64encode(text.encode()).decode("ascii")
        for attempt in range(20):
            try:
                await self._requests_queue.send_message(text)
                return
            except AzureError:
                if attempt == 19:
                    raise
                await asyncio.sleep(0.5)

    async def _post(self, planned: PlannedRequest) -> None:
        """POST /api/resets like a flow that retries until the API answers (the host may be down)."""
        session, host = self._session, self._host
        headers = {"x-functions-key": self.function_key}
        for _ in range(240):
            await host.ready.wait()
            try:
                async with session.post(f"{host.url}/api/resets", json=planned.body, headers=headers) as response:
                    if response.status in (200, 202):
                        return
                    self.http_errors[f"POST {response.status}"] += 1
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.http_errors[f"POST {type(exc).__name__}"] += 1
            await asyncio.sleep(0.5)
        raise RuntimeError(f"POST /api/resets for {planned.request_id} kept failing: {dict(self.http_errors)}")

    async def _collect(self, queue: QueueClient) -> None:
        """Consume the results queue like an upstream subscriber: receive, record, delete."""
        while True:
            try:
                # Short: a receive whose answer was lost (storage faults) hides its events this long.
                pages = queue.receive_messages(messages_per_page=32, visibility_timeout=15).by_page()
                page = await pages.__anext__()
                batch = [message async for message in page]
            except StopAsyncIteration:
                batch = []
            except AzureError:
                batch = []
            for message in batch:
                self._record(str(message.content or ""))
            if batch:
                await asyncio.gather(*(self._delete(queue, m) for m in batch))
                continue
            if self._stop_collector.is_set():
                return
            await asyncio.sleep(0.2)

    @staticmethod
    async def _delete(queue: QueueClient, message: Any) -> None:
        with contextlib.suppress(ResourceNotFoundError, AzureError):
            await queue.delete_message(message)

    def _record(self, text: str) -> None:
        self.event_texts.append(text)
        event = json.loads(text)
        data = event["data"]
        request_id = data.get("requestId")
        if data["status"] not in FINAL_STATUSES:
            return
        self.final_ids[request_id].add(event["id"])
        if request_id in self.by_id and request_id not in self.first_final:
            self.first_final[request_id] = data
            self.window.release()
            self.in_flight -= 1
            self.progress.set()
            planned = self.by_id[request_id]
            if planned.duplicate == "late":
                self.late.append(asyncio.create_task(self._send(planned)))

    async def _kill_at_progress(self, host: HostProcess) -> None:
        total = len(self.plan)
        for number in range(1, self.config.kills + 1):
            point = number / (self.config.kills + 1)
            while len(self.first_final) < point * total:
                self.progress.clear()
                await self.progress.wait()
            async with self.disruption:  # never while storage is down: a host starting then exits
                if len(self.hosts) > 1:  # several hosts: a random one dies
                    host = self.kill_choice.choice(self.hosts)
                host.kill()
                self.kills += 1
                self.say(f"SIGKILL host (kill {self.kills}) at {len(self.first_final)}/{total} final")
                await asyncio.sleep(1.0)
                await host.start()
            self.say(f"host restarted: {host.url}")

    async def _reached(self, share: float) -> None:
        """Return once `share` of the requests have their final event."""
        while len(self.first_final) < share * len(self.plan):
            self.progress.clear()
            await self.progress.wait()

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(10)
            self.say(f"{len(self.first_final)}/{len(self.plan)} final, {self.in_flight} in flight, {self.kills} kills")

    async def _wait_drained(self, service: QueueServiceClient, deadline: float) -> None:
        """Every queue empty (invisible and delayed messages count) three times in a row, then the
        results queue read to the end: redeliveries and late duplicates have shown their events."""
        names = [REQUESTS_QUEUE, FOLLOWUPS_QUEUE, f"{REQUESTS_QUEUE}-poison", f"{FOLLOWUPS_QUEUE}-poison"]
        if self.eventgrid is not None:
            names += EventGridLeg.queues(RESULTS_QUEUE)  # every event forwarded, poison rounds included
        quiet = 0
        while quiet < 3 and time.monotonic() < deadline:
            counts = [await _count(service, name) for name in names]
            quiet = quiet + 1 if not any(counts) else 0
            await asyncio.sleep(0.5)
        self._stop_collector.set()
        await self._collector

    async def _reveal_passcodes(self, session: aiohttp.ClientSession, host: HostProcess) -> int:
        """A few passcodes through GET /api/resets/{id}/passcode, so the leak scan sees them pass."""
        revealed = 0
        candidates = [
            rid
            for rid, data in self.first_final.items()
            if data["status"] == "completed" and data.get("action") == "resetPasscode"
            and str((data.get("device") or {}).get("platform", "")).startswith("android")
        ]
        headers = {"x-functions-key": self.function_key}
        for request_id in candidates[: self.config.reveals]:
            async with session.get(f"{host.url}/api/resets/{request_id}/passcode", headers=headers) as response:
                if response.status == 200 and (await response.json()).get("passcode"):
                    revealed += 1
        return revealed

    # -- the report ------------------------------------------------------------------------------

    def _report(
        self,
        started: float,
        actions: dict[str, list[dict[str, Any]]],
        views: list[dict[str, Any]],
        reveals: int,
        host_logs: list[Path],
        calls: int,
    ) -> SoakReport:
        planned_ids = set(self.by_id)
        lost = sorted(planned_ids - set(self.first_final))
        duplicate_finals = sorted(rid for rid in planned_ids if len(self.final_ids.get(rid, ())) > 1)
        device_to_request = {p.device_id: p for p in self.plan}
        duplicate_actions = sorted(
            device_to_request[d].request_id
            for d, applied in actions.items()
            if d in device_to_request and len(applied) > 1
        )
        unexpected = sorted(
            device_to_request[d].request_id
            for d, applied in actions.items()
            if d in device_to_request and applied and not device_to_request[d].acts
        )
        log_text = "\n".join(path.read_text(encoding="utf-8", errors="replace") for path in host_logs if path.exists())
        poison = log_text.count(POISON_LINE)
        secrets_to_find = self._secrets(views)
        scan_started = time.monotonic()
        leaks = find_leaks(secrets_to_find, {"host logs": log_text, "events": "\n".join(self.event_texts)})
        leak_scan_s = round(time.monotonic() - scan_started, 2)
        statuses = collections.Counter(
            f"{d['status']}/{(d.get('reason') or {}).get('code')}" if d.get("reason") else d["status"]
            for d in self.first_final.values()
        )
        stray = [rid for rid in self.final_ids if rid not in planned_ids]
        return SoakReport(
            requests=len(self.plan),
            final_events=sum(len(ids) for ids in self.final_ids.values()),
            lost=len(lost),
            duplicate_finals=len(duplicate_finals),
            duplicate_actions=len(duplicate_actions),
            poison=poison,
            elapsed_s=round(time.monotonic() - started, 1),
            kills=self.kills,
            messages_sent=self.messages_sent,
            unexpected_actions=len(unexpected),
            leaks=len(leaks),
            leak_scan_s=leak_scan_s,
            statuses=dict(sorted(statuses.items())),
            eventgrid=self.eventgrid_report,
            hosts=self.config.hosts,
            budget=self.budget,
            **(self.storage.report() if self.storage is not None else {}),
            details={
                "lost": lost[:50],
                "duplicate_finals": duplicate_finals[:50],
                "duplicate_actions": duplicate_actions[:50],
                "unexpected_actions": unexpected[:50],
                "leaks": leaks[:50],
                "stray_final_request_ids": stray[:50],
                "secrets_scanned": {kind: len(values) for kind, values in secrets_to_find.items()},
                "reveals": reveals,
                "graph_calls": calls,
                "faults_fired": self.faults_fired,
                "http_errors": dict(self.http_errors),
                "host_log_lines": log_text.count("\n"),
                "events": len(self.event_texts),
                "workdir": str(self.workdir),
            },
        )

    def _secrets(self, views: list[dict[str, Any]]) -> dict[str, set[str]]:
        passcodes = {
            str(result["passcode"])
            for view in views
            for result in view.get("deviceActionResults") or []
            if result.get("passcode")
        }
        return {
            "GRAPH_TOKEN": {self.token},
            "function key": {self.function_key},
            "storage account key": {ACCOUNT_KEY},
            "passcode": passcodes,
        }

    # Set by _drive: the clients and tasks every sender, the collector and late duplicates share.
    _stop_collector: asyncio.Event
    _collector: asyncio.Task[None]
    _requests_queue: QueueClient
    _session: aiohttp.ClientSession
    _host: HostProcess


async def _count(service: QueueServiceClient, name: str) -> int:
    try:
        properties = await service.get_queue_client(name).get_queue_properties()
    except ResourceNotFoundError:
        return 0
    return int(properties.approximate_message_count or 0)


async def run_soak(config: SoakConfig) -> SoakReport:
    workdir = Path(tempfile.mkdtemp(prefix="soak-"))
    soak = Soak(config, workdir)
    try:
        return await soak.run()
    finally:
        if not config.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: list[str] | None) -> tuple[SoakConfig, bool]:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    defaults = SoakConfig()
    parser.add_argument("--requests", type=int, default=defaults.requests)
    parser.add_argument("--kills", type=int, default=defaults.kills, help="host SIGKILL + restarts")
    parser.add_argument("--window", type=int, default=defaults.window, help="requests in flight at most")
    parser.add_argument("--duplicates", type=float, default=defaults.duplicate_share, help="share sent twice")
    parser.add_argument("--no-faults", action="store_true", help="no simulator faults")
    parser.add_argument("--retry-after", type=float, default=defaults.retry_after)
    parser.add_argument("--no-drop-reads", action="store_true", help="drop connections of action POSTs only")
    parser.add_argument("--lease-seconds", type=float, default=defaults.lease_seconds)
    parser.add_argument("--action-lease-seconds", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=defaults.timeout)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, Azurite data)")
    parser.add_argument("--details", action="store_true", help="also print the details on stderr")
    parser.add_argument("--eventgrid", action="store_true", help="also deliver to a failing local Event Grid topic")
    parser.add_argument(
        "--hosts", type=int, default=1, help="hosts sharing Intune's budget (enforced and checked per window)"
    )
    parser.add_argument(
        "--storage-faults", action="store_true", help="storage outages, Azurite restart, 503s (bench/soak_storage.py)"
    )
    args = parser.parse_args(argv)
    config = SoakConfig(
        requests=args.requests,
        kills=args.kills,
        window=args.window,
        duplicate_share=args.duplicates,
        faults=not args.no_faults,
        retry_after=args.retry_after,
        drop_reads=not args.no_drop_reads,
        lease_seconds=args.lease_seconds,
        action_lease_seconds=args.action_lease_seconds,
        timeout=args.timeout,
        seed=args.seed,
        keep=args.keep,
        eventgrid=args.eventgrid,
        hosts=max(1, args.hosts),
        storage=StoragePlan(chart=PROJECT_ROOT / "docs" / "img" / "soak-storage.png") if args.storage_faults else None,
    )
    return config, args.details


def main(argv: list[str] | None = None) -> int:
    config, show_details = parse_args(argv)
    # SIGTERM (e.g. from `timeout`) and Ctrl-C cancel the run, whose finally blocks stop the host,
    # the simulator and Azurite in order; whatever is left is ended on the way out.
    return run_ending_children(lambda: _run_and_report(config, show_details))


def _run_and_report(config: SoakConfig, show_details: bool) -> int:
    report = asyncio.run(run_soak(config))
    if show_details or not report.targets_met:
        print(json.dumps(report.details, indent=2), file=sys.stderr)
    print(report.line(), flush=True)
    return 0 if report.targets_met else 1


if __name__ == "__main__":
    sys.exit(main())
