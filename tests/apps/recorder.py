"""Shared observations between a test and the functions its in-process host runs."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any


class Recorder:
    """Thread-safe list of events (sync functions run in the host's thread pool) plus an
    in-flight gauge for concurrency checks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: list[Any] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def add(self, event: Any) -> None:
        with self._lock:
            self.events.append(event)

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.events)

    async def wait_for(self, condition: Callable[[list[Any]], bool], timeout: float = 10.0) -> list[Any]:
        """Poll until ``condition(events)`` holds; raise ``TimeoutError`` with what was seen."""
        deadline = time.monotonic() + timeout
        while not condition(events := self.snapshot()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met after {timeout} s; events: {events!r}")
            await asyncio.sleep(0.02)
        return events
