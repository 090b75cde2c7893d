"""Child processes of the devstack and bench commands, and ending them when the command ends.

Every child starts in its own session, so it is the leader of its own process group: a signal to
the group reaches whatever the child started in turn, and a Ctrl-C in the terminal (which goes to
the terminal's foreground group) reaches only the command, which then ends its children in order.
Ending a group is SIGTERM first, SIGKILL only after a grace period: Azurite writes its on-disk state
every few seconds and on SIGTERM, so a SIGKILL first would lose writes it had acknowledged.

The commands (`python -m devstack run`, `python -m bench.soak`, ...) stop their children
themselves, in order, in ``finally`` blocks. What makes that happen on SIGTERM too, and what catches
a child that a cancelled start-up had launched but not yet handed over, is :func:`run_ending_children`
around the command's ``main``: SIGTERM is handled like Ctrl-C (``KeyboardInterrupt``, or in
``asyncio.run`` the cancellation of the main task), and on the way out every child still running
is ended.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_GRACE_SECONDS = 10.0

_lock = threading.Lock()
_running: dict[int, subprocess.Popen[Any]] = {}  # pid (= process group id) -> child


def start_child(argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen`` in a new session, remembered until it is ended or reaped."""
    process: subprocess.Popen[Any] = subprocess.Popen(  # noqa: S603 - the caller's own argv
        list(argv), start_new_session=True, **popen_kwargs
    )
    with _lock:
        _running[process.pid] = process
    return process


def signal_group(process: subprocess.Popen[Any], sig: signal.Signals) -> None:
    """Send ``sig`` to the child's process group, if the child has not been reaped yet."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)


def end_child(
    process: subprocess.Popen[Any], grace: float = DEFAULT_GRACE_SECONDS, sig: signal.Signals = signal.SIGTERM
) -> int:
    """``sig`` (default SIGTERM) to the child's group, SIGKILL after ``grace`` seconds; its exit code."""
    if process.poll() is None:
        signal_group(process, sig)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait()
    forget(process)
    return int(process.returncode)


def kill_child(process: subprocess.Popen[Any]) -> int:
    """SIGKILL to the child's group, no grace (the soak's host kills); its exit code."""
    signal_group(process, signal.SIGKILL)
    process.wait()
    forget(process)
    return int(process.returncode)


def forget(process: subprocess.Popen[Any]) -> None:
    with _lock:
        _running.pop(process.pid, None)


def running_children() -> list[subprocess.Popen[Any]]:
    with _lock:
        return [process for process in _running.values() if process.poll() is None]


def end_all_children(grace: float = DEFAULT_GRACE_SECONDS) -> None:
    """SIGTERM to every child still running (all at once), SIGKILL to those left after ``grace``."""
    children = running_children()
    for process in children:
        signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in children:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            signal_group(process, signal.SIGKILL)
            process.wait()
    for process in children:
        forget(process)


def run_ending_children(main: Callable[[], int], grace: float = DEFAULT_GRACE_SECONDS) -> int:
    """Run a command's ``main`` (in the main thread) so that SIGTERM acts like Ctrl-C and every
    child still running is ended on the way out, however ``main`` ends. Stopped by a signal, the
    exit code is 128 + the signal number, as a shell reports it."""
    received: list[int] = []

    def on_sigterm(signum: int, frame: Any) -> None:
        received.append(signum)
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL, None):
            raise KeyboardInterrupt
        # Whoever handles Ctrl-C handles it: asyncio.run cancels the main task (its finally
        # blocks run, awaits included), a command's own handler stops it, the default raises.
        signal.raise_signal(signal.SIGINT)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started in the background by a shell without job control: SIGINT must still stop it.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return main()
    except KeyboardInterrupt:
        signum = received[-1] if received else signal.SIGINT
        print(f"stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
        return 128 + signum
    finally:
        # A second Ctrl-C or SIGTERM must not cut the ending of the children short; it is bounded
        # by the grace period anyway.
        interrupt = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            end_all_children(grace)
        finally:
            signal.signal(signal.SIGINT, interrupt)
            signal.signal(signal.SIGTERM, previous)
