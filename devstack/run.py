"""``python -m devstack run``: the local demo of the whole product.

Starts Azurite (in memory), the Intune Graph simulator and the devstack host as child processes,
submits every ``samples/*.json`` to the request queue, and shows the outcome events of the results
queue in a live table. ``--once`` exits 0 when every sample has a final status (1 at --timeout).
Children log to ``.devstack/logs/``; all of them are stopped on exit, errors included.

The table consumes the results queue (receive + delete): it plays the upstream system that
subscribes to outcome events.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import json
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.storage.queue.aio import QueueClient

from devstack.azurite import PROJECT_ROOT, Azurite, AzuriteError
from devstack.children import end_child, kill_child, start_child
from devstack.settings import SettingsError, load_settings
from devstack.simulator import command as simulator_command

LOG_DIR = PROJECT_ROOT / ".devstack" / "logs"
DEFAULT_REQUESTS_QUEUE = "passcode-reset-requests"
DEFAULT_RESULTS_QUEUE = "passcode-reset-results"
# Settings the app needs that have a documented default (docs/contract.md#settings); given to the host only
# when neither the environment nor local.settings.json sets them.
SETTING_DEFAULTS = {
    "RESET_REQUESTS_QUEUE": DEFAULT_REQUESTS_QUEUE,
    "RESET_RESULTS_QUEUE": DEFAULT_RESULTS_QUEUE,
    "RESET_FOLLOWUPS_QUEUE": "passcode-reset-followups",
    "RESET_BATCHES_QUEUE": "passcode-reset-batches",
    "RESET_LEDGER_TABLE": "PasscodeResets",
}
NON_FINAL = {"queued", "submitted"}
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SIMULATOR_READY = "simulator listening on "
HOST_READY = "host listening on "


class StackError(RuntimeError):
    """A part of the stack failed to start or died; the message carries its log tail."""


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------


@dataclass
class Child:
    """A child process in its own process group, output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise StackError(
                f"{self.name} exited with code {code}; last lines of {self.log_path}:\n{self.log_tail()}"
            )

    async def wait_for_line(self, prefix: str, timeout: float) -> str:  # noqa: ASYNC109 - polls a file
        """The first log line starting with ``prefix`` (the child's ready line)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
                    if line.startswith(prefix):
                        return line
            self.check_alive()
            await asyncio.sleep(0.1)
        raise StackError(f"{self.name} not ready after {timeout:.0f} s; see {self.log_path}:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM to its process group, SIGKILL after ``timeout`` seconds."""
        end_child(self.process, timeout)

    def kill(self) -> None:
        """SIGKILL to its process group, no grace."""
        kill_child(self.process)


def spawn(name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path) -> Child:
    """Start ``argv`` in its own session (devstack/children.py), output to ``log_dir/name.log``."""
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log_file:
        process = start_child(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, env=dict(env)
        )
    return Child(name, process, log_path)


# ---------------------------------------------------------------------------------------------
# Samples and outcome events
# ---------------------------------------------------------------------------------------------


@dataclass
class Sample:
    path: Path
    content: str
    request_id: str | None  # None: the app cannot know it either (invalid JSON or requestId)


def load_samples(directory: Path) -> list[Sample]:
    samples = []
    for path in sorted(directory.glob("*.json")):
        content = path.read_text(encoding="utf-8")
        try:
            request_id = json.loads(content).get("requestId")
        except (json.JSONDecodeError, AttributeError):
            request_id = None
        valid = isinstance(request_id, str) and REQUEST_ID.match(request_id)
        samples.append(Sample(path, content, request_id if valid else None))
    return samples


def parse_event(content: str) -> dict[str, Any] | None:
    """The ``data`` of a CloudEvents message, plain JSON or base64-encoded JSON."""
    for candidate in (content, _b64_text(content)):
        if candidate is None:
            continue
        try:
            event = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and isinstance(event.get("data"), dict):
            if str(event.get("type", "")).startswith("intune.passcode-reset-batch."):
                return _batch_row(event)
            return event["data"]
    return None


def _batch_row(event: dict[str, Any]) -> dict[str, Any]:
    """A batch event as a table row: `batch <id>`, `done`, its counts where the reason goes."""
    data = event["data"]
    counts = " ".join(f"{status}={n}" for status, n in (data.get("counts") or {}).items())
    return {
        "requestId": f"batch {data.get('batchId')}",
        "status": str(event["type"]).rsplit(".", 1)[-1],
        "reason": {"code": counts or "errors"},
    }


def _b64_text(content: str) -> str | None:
    try:
        return base64.b64decode(content, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


@dataclass
class Row:
    request_id: str
    platform: str = ""
    action: str = ""
    scope: str = ""
    status: str = "queued"
    reason: str = ""

    def cells(self) -> list[str]:
        return [self.request_id, self.platform, self.action, self.scope, self.status, self.reason]

    def update(self, data: Mapping[str, Any]) -> None:
        device = data.get("device") if isinstance(data.get("device"), dict) else {}
        reason = data.get("reason") if isinstance(data.get("reason"), dict) else {}
        self.platform = str((device or {}).get("platform") or self.platform or "")
        self.action = str(data.get("action") or "")
        self.scope = str(data.get("scope") or "")
        self.status = str(data.get("status") or "?")
        self.reason = str((reason or {}).get("code") or "")


@dataclass
class Outcomes:
    """Latest outcome per request, and whether every sample reached a final status."""

    expected_ids: list[str]
    expected_anonymous: int
    rows: dict[str, Row] = field(default_factory=dict)
    anonymous_final: int = 0

    def __post_init__(self) -> None:
        for request_id in self.expected_ids:
            self.rows.setdefault(request_id, Row(request_id))

    def apply(self, data: Mapping[str, Any]) -> Row:
        request_id = data.get("requestId")
        if not isinstance(request_id, str) or not request_id:
            self.anonymous_final += 1
            request_id = f"(no requestId #{self.anonymous_final})"
        row = self.rows.setdefault(request_id, Row(request_id))
        row.update(data)
        return row

    def pending(self) -> list[str]:
        waiting = [rid for rid in dict.fromkeys(self.expected_ids) if self.rows[rid].status in NON_FINAL]
        missing = self.expected_anonymous - self.anonymous_final
        return waiting + [f"{missing} sample(s) without a valid requestId"] * (missing > 0)

    @property
    def all_final(self) -> bool:
        return not self.pending()


# ---------------------------------------------------------------------------------------------
# Terminal output
# ---------------------------------------------------------------------------------------------

HEADERS = ["requestId", "platform", "action", "scope", "status", "reason"]
_COLOURS = {
    "completed": "32",
    "dry_run": "36",
    "submitted": "34",
    "queued": "2",
    "failed": "31",
    "timed_out": "31",
    "rejected": "33",
    "unsupported": "35",
}


class LiveTable:
    """A table reprinted in place on a terminal (plain ANSI); appended lines otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._printed = 0

    def render(self, outcomes: Outcomes, changed: Row | None = None) -> None:
        if not self._tty:
            if changed is not None:
                self._stream.write(" | ".join(changed.cells()) + "\n")
                self._stream.flush()
            return
        lines = self._lines(list(outcomes.rows.values()))
        if self._printed:
            self._stream.write(f"\x1b[{self._printed}F\x1b[J")
        self._stream.write("\n".join(lines) + "\n")
        self._stream.flush()
        self._printed = len(lines)

    def header(self) -> None:
        if not self._tty:
            self._stream.write(" | ".join(HEADERS) + "\n")

    def forget(self) -> None:
        """Text was printed below the table: start a new table instead of overwriting."""
        self._printed = 0

    def _lines(self, rows: list[Row]) -> list[str]:
        table = [HEADERS, *(row.cells() for row in rows)]
        widths = [max(len(cells[i]) for cells in table) for i in range(len(HEADERS))]

        def fmt(cells: list[str], status_colour: str | None) -> str:
            padded = [cell.ljust(width) for cell, width in zip(cells, widths, strict=True)]
            if status_colour:
                padded[4] = f"\x1b[{status_colour}m{padded[4]}\x1b[0m"
            return "  ".join(padded).rstrip()

        lines = [f"\x1b[1m{fmt(HEADERS, None)}\x1b[0m", "  ".join("-" * w for w in widths)]
        lines += [fmt(row.cells(), _COLOURS.get(row.status)) for row in rows]
        return lines


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class StackConfig:
    port: int
    app: str
    settings_path: str
    host_json: str
    requests_queue: str
    results_queue: str
    function_key: str
    env: dict[str, str]


def build_config(args: argparse.Namespace, connection: str, graph_url: str, token: str) -> StackConfig:
    """Environment of the host child: the stack's endpoints over the user's settings."""
    settings = load_settings(args.settings)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for name, default in SETTING_DEFAULTS.items():
        if name not in settings:
            env[name] = default
    if "CONFIRM_FIRST_CHECK_SECONDS" not in os.environ:
        env["CONFIRM_FIRST_CHECK_SECONDS"] = "5"
    key = os.environ.get("DEVSTACK_FUNCTION_KEY") or settings.get("DEVSTACK_FUNCTION_KEY") or secrets.token_urlsafe(18)
    env.update(AzureWebJobsStorage=connection, GRAPH_BASE_URL=graph_url, GRAPH_TOKEN=token, DEVSTACK_FUNCTION_KEY=key)
    return StackConfig(
        port=args.port,
        app=args.app,
        settings_path=str(Path(args.settings).resolve()),  # the host runs in the project root
        host_json=str(Path(args.host_json).resolve()),
        requests_queue=settings.get("RESET_REQUESTS_QUEUE", DEFAULT_REQUESTS_QUEUE),
        results_queue=settings.get("RESET_RESULTS_QUEUE", DEFAULT_RESULTS_QUEUE),
        function_key=key,
        env=env,
    )


class Stack:
    """Azurite + simulator + host; ``close()`` stops whatever was started, in reverse order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.azurite: Azurite | None = None
        self.children: list[Child] = []

    async def start_azurite(self) -> Azurite:
        log_path = self.log_dir / "azurite.log"
        log_path.write_bytes(b"")
        self.azurite = Azurite(log_path=log_path)
        await asyncio.to_thread(self.azurite.start)
        return self.azurite

    async def start_simulator(self, token: str) -> str:
        argv = [sys.executable, *simulator_command(port=0, token=token, complete_after=3)]
        child = self._spawn("simulator", argv, os.environ)
        line = await child.wait_for_line(SIMULATOR_READY, timeout=30)
        return line[len(SIMULATOR_READY) :].split()[0]

    async def start_host(self, config: StackConfig) -> str:
        argv = [sys.executable, "-m", "devstack", "host", "--port", str(config.port), "--app", config.app]
        argv += ["--settings", config.settings_path, "--host-json", config.host_json]
        child = self._spawn("host", [*argv, "--shutdown-timeout", "10"], config.env)
        line = await child.wait_for_line(HOST_READY, timeout=90)
        return line[len(HOST_READY) :].split()[0]

    def check_alive(self) -> None:
        for child in self.children:
            child.check_alive()
        if self.azurite is not None and not self.azurite.running:
            raise StackError("Azurite exited; see .devstack/logs/azurite.log")

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop()
        self.children.clear()
        if self.azurite is not None:
            self.azurite.stop()

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> Child:
        child = spawn(name, argv, env, self.log_dir)
        self.children.append(child)
        return child


async def submit(connection: str, queue: str, samples: Sequence[Sample]) -> None:
    async with QueueClient.from_connection_string(connection, queue) as client:
        with contextlib.suppress(ResourceExistsError):
            await client.create_queue()
        for sample in samples:
            await client.send_message(sample.content)


async def receive_outcomes(client: QueueClient) -> list[dict[str, Any]]:
    """One batch of outcome events (deleted once read); unparseable messages are skipped."""
    events = []
    pages = client.receive_messages(messages_per_page=32, visibility_timeout=30).by_page()
    try:
        page = await pages.__anext__()
    except StopAsyncIteration:
        return []
    async for message in page:
        data = parse_event(str(message.content or ""))
        if data is not None:
            events.append(data)
        await client.delete_message(message.id, message.pop_receipt)
    return events


def print_hint(config: StackConfig, host_url: str, connection: str, sample: Path | None) -> None:
    body = f"@{sample.relative_to(PROJECT_ROOT)}" if sample else "'{...}'"
    curl = (
        f"curl -s -X POST {host_url}/api/resets -H 'x-functions-key: {config.function_key}' "
        f"-H 'content-type: application/json' -d {body}"
    )
    print(
        "\nSend more requests while this runs:\n"
        f"  {curl}\n"
        f"  or put a JSON message on the queue {config.requests_queue!r} with\n"
        f"  AzureWebJobsStorage={shlex.quote(connection)}\n"
        f"Logs: {LOG_DIR.relative_to(PROJECT_ROOT)}/  -  Ctrl-C to stop.\n",
        flush=True,
    )


async def watch(
    stack: Stack, config: StackConfig, connection: str, outcomes: Outcomes, once: bool, deadline: float
) -> int:
    """Show outcomes until every sample is final (--once) or until Ctrl-C/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    table = LiveTable(sys.stdout)
    table.header()
    table.render(outcomes)
    async with QueueClient.from_connection_string(connection, config.results_queue) as results:
        while not stop.is_set():
            stack.check_alive()
            try:
                events = await receive_outcomes(results)
            except AzureError:
                events = []  # the results queue is created by the app on its first event
            for data in events:
                table.render(outcomes, outcomes.apply(data))
            if once and outcomes.all_final:
                print(f"all {len(outcomes.expected_ids) + outcomes.expected_anonymous} samples final", flush=True)
                return 0
            if once and time.monotonic() > deadline:
                print(f"timeout: still waiting for {', '.join(outcomes.pending())}", file=sys.stderr)
                return 1
            if not events:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
    print("\nstopping...", flush=True)
    return 0


# A small batch (docs/contract.md#batches) next to the samples: its items show up in the live table as
# `<batchId>.<n>`. A dry run, so it meets no cooldown of the samples' devices.
DEMO_BATCH: dict[str, Any] = {
    "batchId": "demo-batch",
    "requestedBy": "devstack@contoso.com",
    "reason": "make run: a small batch",
    "dryRun": True,
    "devices": [
        {"serialNumber": "G6TZK2XQ0D"},
        {"intuneDeviceId": "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"},
        {"intuneDeviceId": "62a9255c-bdb8-47c5-a8af-e9d1387777ee"},
    ],
}


async def submit_batch(connection: str, queue: str) -> None:
    async with QueueClient.from_connection_string(connection, queue) as client:
        with contextlib.suppress(ResourceExistsError):
            await client.create_queue()
        await client.send_message(json.dumps(DEMO_BATCH))


async def run_stack(args: argparse.Namespace) -> int:
    samples = load_samples(Path(args.samples))
    if not samples:
        print(f"error: no samples/*.json in {args.samples}", file=sys.stderr)
        return 1
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    stack = Stack(LOG_DIR)
    deadline = time.monotonic() + args.timeout
    try:
        print("starting Azurite, the Intune Graph simulator and the host...", flush=True)
        azurite = await stack.start_azurite()
        token = secrets.token_urlsafe(24)
        graph_url = await stack.start_simulator(token)
        config = build_config(args, azurite.connection_string, graph_url, token)
        host_url = await stack.start_host(config)
        print(f"azurite {azurite.ports}, simulator {graph_url}, host {host_url}", flush=True)
        await submit(azurite.connection_string, config.requests_queue, samples)
        batches_queue = load_settings(args.settings).get("RESET_BATCHES_QUEUE", SETTING_DEFAULTS["RESET_BATCHES_QUEUE"])
        await submit_batch(azurite.connection_string, batches_queue)
        print(
            f"submitted {len(samples)} samples to {config.requests_queue!r} and a {len(DEMO_BATCH['devices'])}-device "
            f"batch ({DEMO_BATCH['batchId']}) to {batches_queue!r}\n",
            flush=True,
        )
        if not args.once:
            print_hint(config, host_url, azurite.connection_string, samples[0].path)
        batch_items = [f"{DEMO_BATCH['batchId']}.{n}" for n in range(1, len(DEMO_BATCH["devices"]) + 1)]
        outcomes = Outcomes(
            [s.request_id for s in samples if s.request_id] + batch_items, sum(1 for s in samples if not s.request_id)
        )
        return await watch(stack, config, azurite.connection_string, outcomes, args.once, deadline)
    except (StackError, AzuriteError, SettingsError, AzureError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.close()  # synchronous on purpose: runs even when the task is being cancelled


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="exit when every sample has a final status")
    parser.add_argument("--timeout", type=float, default=120.0, help="with --once: give up after SECONDS")
    parser.add_argument("--port", type=int, default=7071, help="HTTP port of the host (0: any free port)")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--samples", default=str(PROJECT_ROOT / "samples"), help="directory of request samples")
    parser.add_argument("--settings", default="local.settings.json", help="local.settings.json for the host")
    parser.add_argument("--host-json", default="host.json", help="host.json for the host")


def main(args: argparse.Namespace) -> int:
    # Ctrl-C or SIGTERM before watch() handles them cancels run_stack (its finally stops the
    # stack) and ends in KeyboardInterrupt: devstack/__main__.py reports it (exit code 130/143).
    return asyncio.run(run_stack(args))
