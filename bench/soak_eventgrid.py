"""The Event Grid leg of the soak (`python -m bench.soak --eventgrid`, docs/contract.md#event-grid-delivery).

Runs the devstack Event Grid receiver (`python -m devstack eventgrid`) as a child process, points the
host at it (EVENTGRID_TOPIC_ENDPOINT / EVENTGRID_TOPIC_KEY), and makes it fail while requests flow:
every 15 s it answers 500 for 4 s, then 403 for 2 s. At the end it reads what the receiver accepted
and reports, for the JSON line's `eventgrid` member:

    delivered       distinct event ids the topic accepted
    final_missing   final events of the results queue that never reached the topic (target 0)
    unknown         ids the topic got that the results queue never showed (target 0)
    duplicates      deliveries beyond the first of an id (allowed: at-least-once)
    failed_publish  publish attempts answered with a fault
    max_lag_s       the longest time from an event's `time` to its first acceptance by the topic
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from devstack.run import Child, spawn

READY = "eventgrid receiver listening on "
FAULT_CYCLE = ((500, 4.0), (403, 2.0))
FAULT_PERIOD_S = 15.0
RETRY_SECONDS = "2"  # EVENTGRID_RETRY_SECONDS: a poisoned event's next round comes quickly in a soak


class EventGridLeg:
    def __init__(self, child: Child, url: str, key: str) -> None:
        self.child = child
        self.url = url
        self.key = key
        self.root = url.rsplit("/api/events", 1)[0]

    @classmethod
    async def start(cls, log_dir: Path, env: dict[str, str]) -> EventGridLeg:
        key = secrets.token_urlsafe(18)
        argv = [sys.executable, "-m", "devstack", "eventgrid", "--port", "0", "--key", key]
        child = spawn("eventgrid", argv, env, log_dir)
        line = await child.wait_for_line(READY, timeout=30)
        return cls(child, line[len(READY):].split()[0], key)

    def host_settings(self) -> dict[str, str]:
        return {"EVENTGRID_TOPIC_ENDPOINT": self.url, "EVENTGRID_TOPIC_KEY": self.key,
                "EVENTGRID_RETRY_SECONDS": RETRY_SECONDS}

    @staticmethod
    def queues(results_queue: str) -> list[str]:
        return [f"{results_queue}-eventgrid", f"{results_queue}-eventgrid-poison"]

    async def inject_faults(self) -> None:
        """Until cancelled: every FAULT_PERIOD_S, 500s then 403s for a few seconds."""
        async with aiohttp.ClientSession() as session:
            while True:
                await asyncio.sleep(FAULT_PERIOD_S)
                for status, seconds in FAULT_CYCLE:
                    async with session.post(f"{self.root}/_eg/faults", json={"status": status, "seconds": seconds}):
                        pass
                    await asyncio.sleep(seconds)

    async def report(self, queue_events: list[dict[str, Any]], final_ids: set[str]) -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            async with session.delete(f"{self.root}/_eg/faults"):
                pass
            async with session.get(f"{self.root}/_eg/events") as response:
                records = (await response.json())["events"]
            async with session.get(f"{self.root}/_eg/attempts") as response:
                attempts = (await response.json())["attempts"]
        first_seen: dict[str, float] = {}
        for record in records:
            first_seen.setdefault(record["event"]["id"], record["receivedAt"])
        queue_ids = {event["id"] for event in queue_events}
        times = {event["id"]: event.get("time") for event in queue_events}
        lags = [first_seen[i] - _epoch(times[i]) for i in first_seen if times.get(i)]
        return {
            "delivered": len(first_seen),
            "final_missing": len(final_ids - first_seen.keys()),
            "unknown": len(first_seen.keys() - queue_ids),
            "duplicates": len(records) - len(first_seen),
            "failed_publish": sum(1 for a in attempts if a.get("status") != 200),
            "max_lag_s": round(max(lags), 1) if lags else None,
        }

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.child.stop(5.0)


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
