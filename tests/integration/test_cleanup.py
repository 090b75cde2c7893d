"""A stopped command leaves nothing running (issue 18): `python -m bench.soak` and `python -m
devstack run`, stopped by SIGTERM (as `timeout` does) or SIGINT (Ctrl-C) while Azurite, the
simulator and the host run, end all of them before they exit.

Every process the command starts inherits a marker in its environment, so a child that outlived
the command is found even after it was re-parented to init."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.plugins.stack import PROJECT_ROOT

MARKER = "DEVSTACK_CLEANUP_TEST"
SOAK = ["-m", "bench.soak", "--requests", "300", "--kills", "0", "--timeout", "120"]
DEVSTACK_RUN = ["-m", "devstack", "run", "--port", "0"]


def marked_processes(marker: str) -> list[psutil.Process]:
    """Every live process whose environment carries ``MARKER=marker``."""
    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            if process.status() != psutil.STATUS_ZOMBIE and process.environ().get(MARKER) == marker:
                found.append(process)
    return found


@contextlib.contextmanager
def command(args: list[str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The command in its own session with a unique marker; whatever is left is killed afterwards."""
    marker = uuid.uuid4().hex
    with open(tmp_path / "command.log", "wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            [sys.executable, *args],
            cwd=PROJECT_ROOT,
            env={**os.environ, MARKER: marker, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, marker
    finally:
        for leftover in [*marked_processes(marker)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                leftover.kill()
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for_stack(process: subprocess.Popen[bytes], marker: str, log: Path, timeout: float = 60) -> list[str]:
    """Until Azurite (node) and two Python children (simulator, host) run; their names."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited early with {process.returncode}:\n{log.read_text()[-2000:]}"
        children = [p for p in marked_processes(marker) if p.pid != process.pid]
        names = sorted(p.name() for p in children)
        if names.count("node") >= 1 and sum("python" in name for name in names) >= 2:
            return names
        time.sleep(0.1)
    raise AssertionError(f"the stack did not start within {timeout} s:\n{log.read_text()[-2000:]}")


@pytest.mark.parametrize(
    ("args", "sig"),
    [(SOAK, signal.SIGTERM), (SOAK, signal.SIGINT), (DEVSTACK_RUN, signal.SIGTERM)],
    ids=["soak-SIGTERM", "soak-SIGINT", "devstack-run-SIGTERM"],
)
def test_a_stopped_command_leaves_no_process_running(args: list[str], sig: signal.Signals, tmp_path: Path) -> None:
    with command(args, tmp_path) as (process, marker):
        log = tmp_path / "command.log"
        names = wait_for_stack(process, marker, log)
        time.sleep(1.0)  # the host is starting or working: the middle of a run

        process.send_signal(sig)
        exit_code = process.wait(timeout=25)

        left = marked_processes(marker)
        deadline = time.monotonic() + 3
        while left and time.monotonic() < deadline:  # an orphan's zombie is reaped by init
            time.sleep(0.1)
            left = marked_processes(marker)
        assert left == [], f"still running after the command exited: {[p.cmdline()[:4] for p in left]}"
        assert exit_code in (0, 128 + sig), log.read_text()[-2000:]
        assert len(names) >= 3
