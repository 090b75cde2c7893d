"""Azurite (the npm package pinned in package.json) on loopback, for the local stack and tests.

Azurite is started with port 0 for each service unless ports are given, and the ports are read
from its "successfully listening at" lines: no free-port race. A restart reuses the same ports so
connection strings handed out earlier stay valid.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from devstack.children import end_child, start_child

# The documented, public development-storage key of Azurite and the legacy emulator.
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
LOOPBACK = "127.0.0.1"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXECUTABLE = PROJECT_ROOT / "node_modules" / ".bin" / "azurite"
BASE_ARGS = ("--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose")

_LISTENING = re.compile(r"Azurite (Blob|Queue|Table) service is successfully listening at \S+:(\d+)")


class AzuriteError(RuntimeError):
    """Azurite is missing, did not start, or exited."""


@dataclass(frozen=True)
class AzuritePorts:
    blob: int
    queue: int
    table: int


def connection_string(ports: AzuritePorts, host: str = LOOPBACK) -> str:
    """Account-key connection string for an Azurite listening on ``ports``."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{ports.blob}/{ACCOUNT_NAME};"
        f"QueueEndpoint=http://{host}:{ports.queue}/{ACCOUNT_NAME};"
        f"TableEndpoint=http://{host}:{ports.table}/{ACCOUNT_NAME};"
    )


# What `UseDevelopmentStorage=true` means: Azurite on its default ports.
DEVELOPMENT_STORAGE_CONNECTION_STRING = connection_string(AzuritePorts(10000, 10001, 10002))


class Azurite:
    """One Azurite process. ``location=None`` keeps data in memory; a directory persists it.

    ``start()``/``stop()``/``restart()`` block (Azurite is ready in about a second); from async
    code use :func:`start_azurite` or ``asyncio.to_thread``.
    """

    def __init__(
        self,
        location: str | os.PathLike[str] | None = None,
        *,
        ports: AzuritePorts | None = None,
        executable: str | os.PathLike[str] = DEFAULT_EXECUTABLE,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.location = Path(location) if location is not None else None
        self.executable = Path(executable)
        self.startup_timeout = startup_timeout
        self._requested_ports = ports
        self._ports: AzuritePorts | None = None
        self._log_path = Path(log_path) if log_path is not None else None
        self._owns_log = False  # a temporary log we created and delete on stop
        self._log_offset = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    # -- public API ---------------------------------------------------------------------------

    @property
    def ports(self) -> AzuritePorts:
        if self._ports is None:
            raise AzuriteError("Azurite has not been started")
        return self._ports

    @property
    def connection_string(self) -> str:
        return connection_string(self.ports)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> Azurite:
        """Start Azurite and wait until all three services listen."""
        with self._lock:
            if self.running:
                return self
            self._check_executable()
            log_file = self._open_log()
            self._process = start_child(
                [str(self.executable), *self._arguments()],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=str(self.location or tempfile.gettempdir()),
            )
            log_file.close()
            try:
                self._ports = self._wait_ready()
            except BaseException:
                self._terminate()
                raise
            return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to Azurite's process group and wait; escalate to SIGKILL after ``timeout``.

        Gracefully first: with ``location``, Azurite writes its state to disk every 5 s and when it
        shuts down, so a SIGKILL would lose writes it had acknowledged."""
        with self._lock:
            self._terminate(timeout)

    def restart(self) -> Azurite:
        """Stop and start again on the same ports (in-memory data is lost, ``location`` data kept)."""
        ports = self._ports
        self.stop()
        if ports is not None:
            self._requested_ports = ports
        return self.start()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------------

    def _check_executable(self) -> None:
        if not self.executable.exists():
            raise AzuriteError(
                f"Azurite not found at {self.executable}: run `npm ci` in {PROJECT_ROOT} "
                f"(or `make setup`) to install the project-local Azurite from package.json"
            )

    def _arguments(self) -> list[str]:
        ports = self._requested_ports or AzuritePorts(0, 0, 0)
        args = [*BASE_ARGS, "--blobHost", LOOPBACK, "--queueHost", LOOPBACK, "--tableHost", LOOPBACK]
        args += ["--blobPort", str(ports.blob), "--queuePort", str(ports.queue)]
        args += ["--tablePort", str(ports.table)]
        if self.location is None:
            args.append("--inMemoryPersistence")
        else:
            self.location.mkdir(parents=True, exist_ok=True)
            args += ["--location", str(self.location)]
        return args

    def _open_log(self) -> BinaryIO:
        if self._log_path is None:
            handle, name = tempfile.mkstemp(prefix="azurite-", suffix=".log")
            os.close(handle)
            self._log_path = Path(name)
            self._owns_log = True
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self._log_path, "ab")  # handed to the child, closed after Popen
        self._log_offset = log.tell()  # a restart appends: parse only this run's lines
        return log

    def _read_log(self) -> str:
        assert self._log_path is not None
        try:
            with open(self._log_path, "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _wait_ready(self) -> AzuritePorts:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            output = self._read_log()
            found = {name.lower(): int(port) for name, port in _LISTENING.findall(output)}
            if len(found) == 3:
                return AzuritePorts(found["blob"], found["queue"], found["table"])
            if self._process.poll() is not None:
                raise AzuriteError(
                    f"Azurite exited with code {self._process.returncode}:\n{output[-2000:]}"
                )
            time.sleep(0.05)
        raise AzuriteError(f"Azurite not ready after {self.startup_timeout:.0f} s:\n{self._read_log()[-2000:]}")

    def _terminate(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is not None:
            end_child(process, timeout)
        if self._owns_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path, self._owns_log = None, False


@contextlib.asynccontextmanager
async def start_azurite(
    location: str | os.PathLike[str] | None = None,
    *,
    ports: AzuritePorts | None = None,
    log_path: str | os.PathLike[str] | None = None,
) -> AsyncIterator[Azurite]:
    """``async with start_azurite() as azurite: azurite.connection_string`` - stopped on exit."""
    import asyncio

    azurite = Azurite(location, ports=ports, log_path=log_path)
    await asyncio.to_thread(azurite.start)
    try:
        yield azurite
    finally:
        await asyncio.to_thread(azurite.stop)


@contextlib.contextmanager
def running_azurite(location: str | os.PathLike[str] | None = None, **kwargs: object) -> Iterator[Azurite]:
    """Synchronous counterpart of :func:`start_azurite`."""
    azurite = Azurite(location, **kwargs)  # type: ignore[arg-type]
    with azurite:
        yield azurite


# -- CLI: python -m devstack azurite ------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--location",
        metavar="DIR",
        help="persist data in DIR (default: in memory, lost on exit)",
    )
    for service in ("blob", "queue", "table"):
        parser.add_argument(
            f"--{service}-port", type=int, default=0, help=f"{service} port (default: a free port)"
        )


def main(args: argparse.Namespace) -> int:
    ports = AzuritePorts(args.blob_port, args.queue_port, args.table_port)
    azurite = Azurite(args.location, ports=ports if any((ports.blob, ports.queue, ports.table)) else None)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        azurite.start()
    except AzuriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        where = f"in {azurite.location}" if azurite.location else "in memory"
        print(f"azurite running (data {where}); Ctrl-C to stop", file=sys.stderr)
        print(azurite.connection_string, flush=True)
        while not stop.wait(0.5):
            if not azurite.running:
                print("error: Azurite exited unexpectedly", file=sys.stderr)
                return 1
    finally:
        azurite.stop()
    return 0
