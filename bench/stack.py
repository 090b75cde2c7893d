"""The local stack for the benchmarks, each part in its own process so that it can be measured:
Azurite with its access log on (one line per storage request), the Intune simulator, and the
product host (`python -m devstack host`). Also the benchmark's device fleet and request mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from devstack.azurite import Azurite
from devstack.children import end_child, kill_child, start_child
from devstack.simulator import command as simulator_command
from shared.core.device import IntuneDevice
from shared.core.platforms import choose_action

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FLEET = PROJECT_ROOT / "devstack" / "simulator" / "fleet.json"
SIMULATOR_TOKEN = "devstack-local-token"  # the simulator's default bearer token


class StackError(RuntimeError):
    """A part of the stack did not start."""


# ------------------------------------------------------------------------------------- Azurite


class CountingAzurite(Azurite):
    """Azurite with its access log on: every storage request it serves is one line of its log.

    Its data lives in a scratch directory (in /dev/shm, memory, where there is one) rather than in
    `--inMemoryPersistence`: the in-memory store's queue garbage collection, every 60 s, takes time
    quadratic in the messages deleted since the last one (it totals the size of every extent for
    each extent it deletes) and stalls every storage request meanwhile: 4 s with no request served
    at 1,000 requests, which the benchmark would measure as the product's (docs/performance.md)."""

    def __init__(self, location: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        if location is None:
            memory = Path("/dev/shm")  # noqa: S108 - only the base of a private mkdtemp directory
            base = str(memory) if memory.is_dir() and os.access(memory, os.W_OK) else None
            self._scratch = tempfile.TemporaryDirectory(prefix="azurite-bench-", dir=base)
            location = self._scratch.name
        super().__init__(location, **kwargs)

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def _arguments(self) -> list[str]:
        return [argument for argument in super()._arguments() if argument != "--silent"]

    def log_size(self) -> int:
        assert self._log_path is not None
        return self._log_path.stat().st_size

    def log_lines(self, start: int, end: int) -> list[str]:
        """The access-log lines between two log offsets."""
        assert self._log_path is not None
        with open(self._log_path, "rb") as log:
            log.seek(start)
            return log.read(max(0, end - start)).decode("utf-8", errors="replace").splitlines()

    def storage_requests(self, start: int, end: int) -> Counter[str]:
        """Storage requests logged between two log offsets, by kind (see `request_kind`)."""
        return Counter(kind for line in self.log_lines(start, end) if (kind := request_kind(line)) is not None)

    def logged_requests(self, start: int, end: int) -> Iterator[LoggedRequest]:
        """Each storage request logged between two log offsets: when (the log's whole second),
        its kind (see `request_kind`) and, for a table entity, its PartitionKey."""
        for line in self.log_lines(start, end):
            kind = request_kind(line)
            stamp = _ACCESS_TIME.search(line)
            if kind is None or stamp is None:
                continue
            key = _ENTITY_KEY.search(line)
            at = datetime.strptime(stamp.group(1), "%d/%b/%Y:%H:%M:%S %z").timestamp()
            yield LoggedRequest(at, kind, key.group(1) if key else None)

    def lines_containing(self, needle: str, start: int, end: int) -> int:
        """Storage requests logged between two log offsets whose line contains `needle`."""
        return sum(1 for line in self.log_lines(start, end) if needle in line and request_kind(line) is not None)


@dataclass(frozen=True)
class LoggedRequest:
    at: float  # epoch seconds, whole seconds as Azurite's access log writes them
    kind: str
    partition_key: str | None  # a table entity's, from its URL (an insert names it in its body: None)


_ACCESS_TIME = re.compile(r"\[(\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\]")
_ENTITY_KEY = re.compile(r"\(PartitionKey='([^']*)',RowKey='[^']*'\)")
_ACCESS_LINE = re.compile(r'"(GET|POST|PUT|PATCH|MERGE|DELETE|HEAD|OPTIONS) /[^/ ]+/([^ ?]*)[^"]*" (\d{3})')


def request_kind(line: str) -> str | None:
    """`METHOD resource` for an access-log line: `POST <queue>/messages`, `GET <table>(...)`, ..."""
    match = _ACCESS_LINE.search(line)
    if match is None:
        return None
    method, path = match.group(1), match.group(2)
    head, _, rest = path.partition("/")
    if "(" in head:  # a table entity: Ledger(PartitionKey='..',RowKey='..') or a query Ledger()
        table = head.split("(", 1)[0]
        return f"{method} {table}({'' if head.endswith('()') else 'key'})"
    if rest.startswith("messages/"):
        return f"{method} {head}/messages/<id>"
    return f"{method} {head}{'/' + rest if rest else ''}"


# ------------------------------------------------------------------------------------- processes


@dataclass
class Service:
    """A subprocess of the stack whose stdout announced the URL it listens on."""

    process: subprocess.Popen[str]
    url: str
    started: float  # time.time() just before it was launched
    ready_after: float  # seconds from launch to the "listening" line
    stderr_path: Path

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM to its process group, SIGKILL after ``timeout`` seconds; the exit code."""
        return end_child(self.process, timeout)


def launch(args: list[str], env: Mapping[str, str], ready: str, stderr_path: Path, timeout: float = 60.0) -> Service:
    """Start `python <args>` in the project root; wait for a stdout line matching `ready` (one
    group: the URL). stderr goes to `stderr_path`."""
    pattern = re.compile(ready)
    stderr_path.parent.mkdir(parents=True, exist_ok=True)
    stderr: IO[str] = open(stderr_path, "w")  # handed to the child, closed here after Popen
    started = time.time()
    process = start_child(  # in its own session, ended with the command (devstack/children.py)
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    stderr.close()
    found: list[str] = []
    ready_event = threading.Event()

    def read_stdout() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if not found and (match := pattern.search(line)):
                found.append(match.group(1))
                ready_event.set()
        ready_event.set()

    threading.Thread(target=read_stdout, daemon=True).start()
    if not ready_event.wait(timeout) or not found:
        kill_child(process)
        tail = stderr_path.read_text(errors="replace")[-2000:]
        raise StackError(f"{' '.join(args)} did not start within {timeout} s:\n{tail}")
    return Service(process, found[0], started, time.time() - started, stderr_path)


def simulator_args(latency_ms: float, complete_after: float | None = 2.0) -> list[str]:
    """`python -m devstack simulator` with Intune's throttling budget on (its default)."""
    after = "never" if complete_after is None else complete_after
    return simulator_command(port=0, latency_ms=latency_ms, complete_after=after)


SIMULATOR_READY = r"simulator listening on (\S+)"
HOST_READY = r"host listening on (\S+)"


def host_args(host_json: Path, settings_file: Path) -> list[str]:
    return [
        "-m", "devstack", "host", "--port", "0", "--host-json", str(host_json),
        "--settings", str(settings_file), "--shutdown-timeout", "10",
    ]  # fmt: skip


def host_environment(
    azurite: Azurite, graph_url: str, base: Mapping[str, str] | None = None, **overrides: str
) -> dict[str, str]:
    """The process environment (`base`, default os.environ) with the app settings
    (docs/contract.md#settings) for a host on this stack, as the Functions host exports them to its worker."""
    source = os.environ if base is None else base
    env = {key: value for key, value in source.items() if not key.startswith(("RESET_", "GRAPH_"))}
    env.update(
        {
            "AzureWebJobsStorage": azurite.connection_string,
            "GRAPH_BASE_URL": graph_url,
            "GRAPH_TOKEN": SIMULATOR_TOKEN,
            "RESET_REQUESTS_QUEUE": "passcode-reset-requests",
            "RESET_RESULTS_QUEUE": "passcode-reset-results",
            "RESET_FOLLOWUPS_QUEUE": "passcode-reset-followups",
            "RESET_BATCHES_QUEUE": "passcode-reset-batches",
            "RESET_LEDGER_TABLE": "PasscodeResets",
            "DEVSTACK_FUNCTION_KEY": uuid.uuid4().hex,
            # Benchmarks measure throughput: guardrails off unless a benchmark sets them
            # (bench/guardrail_soak.py does).
            "GUARDRAIL_MAX_ACTIONS_PER_HOUR": "0",
            **overrides,
        }
    )
    return env


def write_host_json(path: Path, *, functions: list[str] | None = None, **queue_options: Any) -> Path:
    """The project's host.json with queue options overridden (batchSize, newBatchThreshold, ...)
    and, with `functions`, only those functions run by the host (host.json `functions`)."""
    document = json.loads((PROJECT_ROOT / "host.json").read_text())
    document.setdefault("extensions", {}).setdefault("queues", {}).update(queue_options)
    if functions is not None:
        document["functions"] = functions
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))
    return path


# ------------------------------------------------------------------------------------- fleet


@dataclass(frozen=True)
class BenchRequest:
    request_id: str
    kind: str  # intuneDeviceId | serialNumber | imei | azureAdDeviceId
    value: str
    device_id: str
    supported: bool  # an action is expected (False: `unsupported` outcome, no POST)

    def message(self) -> str:
        return json.dumps(
            {
                "requestId": self.request_id,
                "device": {self.kind: self.value},
                "requestedBy": "bench@contoso.com",
                "ticketId": "BENCH",
                "reason": "throughput benchmark",
                "allowRemoteLock": True,
            }
        )


def _templates() -> list[dict[str, Any]]:
    data = json.loads(FLEET.read_text())
    devices = data["value"] if isinstance(data, dict) else data
    return [d for d in devices if isinstance(d, dict)]


def _supported(template: dict[str, Any]) -> bool:
    traits = IntuneDevice.from_graph(template).traits
    return choose_action(traits, allow_remote_lock=True).supported


KIND_SHARES = (("intuneDeviceId", 0.80), ("serialNumber", 0.08), ("imei", 0.06), ("azureAdDeviceId", 0.06))
_TEMPLATE_FIELD = {"serialNumber": "serialNumber", "imei": "imei", "azureAdDeviceId": "azureADDeviceId"}


def plan_requests(
    count: int, *, prefix: str, seed: int, unsupported_share: float = 0.1
) -> tuple[list[BenchRequest], list[dict[str, Any]]]:
    """`count` requests, each for its own new device cloned from the seeded fleet (cooldown is per
    device): mostly by intuneDeviceId, some by serialNumber / imei / azureAdDeviceId, and a share
    on platforms with no supported action. Returns the requests and the devices to add."""
    rng = random.Random(seed)
    templates = _templates()
    supported = [t for t in templates if _supported(t)]
    unsupported = [t for t in templates if not _supported(t)]
    kinds = [kind for kind, share in KIND_SHARES for _ in range(round(share * 100))]
    requests: list[BenchRequest] = []
    devices: list[dict[str, Any]] = []
    for n in range(count):
        kind = rng.choice(kinds)
        pool = unsupported if rng.random() < unsupported_share else supported
        candidates = [t for t in pool if kind == "intuneDeviceId" or t.get(_TEMPLATE_FIELD[kind])]
        template = rng.choice(candidates or pool)
        if not candidates:
            kind = "intuneDeviceId"
        device = {k: v for k, v in template.items() if k not in ("@odata.type", "deviceActionResults")}
        device.update(
            id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            deviceName=f"{template.get('deviceName') or 'device'} #{prefix}{n}",
            azureADDeviceId=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        )
        if template.get("serialNumber"):
            device["serialNumber"] = f"{prefix.upper()}{n:07d}{rng.randrange(16**4):04X}"
        if template.get("imei"):
            device["imei"] = f"35{rng.randrange(10**13):013d}"
        field = _TEMPLATE_FIELD.get(kind)
        value = device["id"] if field is None else str(device[field])
        devices.append(device)
        requests.append(BenchRequest(f"{prefix}-{n:05d}", kind, value, device["id"], _supported(template)))
    return requests, devices


# ------------------------------------------------------------------------------------- misc


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def parse_time(text: str) -> float:
    """Epoch seconds of an ISO 8601 time (CloudEvents `time`, simulator call log)."""
    cleaned = text.replace("Z", "+00:00")
    head, dot, tail = cleaned.partition(".")
    if dot:  # Python 3.11 reads at most 6 fractional digits; Graph writes 7
        digits = "".join(ch for ch in tail if ch.isdigit())
        zone = tail[len(digits) :]
        cleaned = f"{head}.{digits[:6]}{zone}"
    return datetime.fromisoformat(cleaned).timestamp()


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    elapsed: list[float] = []
    started = time.perf_counter()
    try:
        yield elapsed
    finally:
        elapsed.append(time.perf_counter() - started)
