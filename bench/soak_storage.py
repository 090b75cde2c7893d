"""The storage leg of the soak (`python -m bench.soak --storage-faults`, docs/contract.md#storage-outages).

Puts the storage fault proxy (bench/storage_proxy.py) between Azurite and everything else (the
host, and the soak's own queue clients, which play the ITSM system), then, while requests flow:

- injects faults on a share of storage calls: 503 ServerBusy, dropped connections (before and
  after the request was applied) and latency;
- cuts storage off entirely (`outages`, `outage_s` seconds each) at fixed points of progress;
- stops Azurite gracefully (SIGTERM: it saves its on-disk state; a SIGKILLed Azurite loses writes
  it had acknowledged, which Azure Storage never does) and starts it again on the same ports;
- answers every call with 503 ServerBusy for a few seconds (`bursts`).

Disruptions take the soak's disruption lock, so a host kill and a storage outage never overlap
(a host started while storage is down cannot index its queues and exits, like the real host).
Reported in the JSON line: `storage_outages`, `storage_restarts` and `storage_faults` (injected
fault counts by kind). With `chart` set, final events over time with the disruptions marked are
drawn there (the CLI: docs/img/soak-storage.png).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.storage_proxy import FaultMix, StorageFaultProxy, fault_counts
from devstack.azurite import Azurite

# The soak's own queue clients retry like the app's (shared/adapters/storage.py), not the SDK's
# default 15 s first backoff.
CLIENT_RETRY: dict[str, Any] = {
    "retry_total": 3,
    "initial_backoff": 0.5,
    "increment_base": 1.5,
    "random_jitter_range": 0.5,
    "connection_timeout": 3,
    "read_timeout": 15,
}
DEFAULT_FAULTS = FaultMix(busy=0.02, drop=0.005, drop_after=0.005, latency=0.01, latency_s=1.0)


@dataclass(frozen=True)
class StoragePlan:
    outages: int = 2
    outage_s: float = 6.0
    restarts: int = 1
    bursts: int = 1
    burst_s: float = 3.0
    faults: FaultMix = DEFAULT_FAULTS
    chart: Path | None = None


class StorageFaultLeg:
    def __init__(self, azurite: Azurite, proxy: StorageFaultProxy, plan: StoragePlan) -> None:
        self.azurite = azurite
        self.proxy = proxy
        self.plan = plan
        self.restarts = 0
        self.restart_s: list[float] = []
        self.windows: list[tuple[str, float, float]] = []  # (kind, start, end), loop time
        self.timeline: list[tuple[float, int]] = []  # (loop time, requests final)
        self.total = 0

    @classmethod
    async def start(cls, azurite: Azurite, plan: StoragePlan, seed: int) -> StorageFaultLeg:
        proxy = await StorageFaultProxy(azurite.ports, faults=plan.faults, seed=seed).start()
        return cls(azurite, proxy, plan)

    @property
    def connection_string(self) -> str:
        return self.proxy.connection_string

    def schedule(self) -> list[tuple[float, str]]:
        """(share of requests final, disruption), spread over the run between the host kills."""
        kinds: list[str] = []
        for n in range(max(self.plan.outages, self.plan.restarts, self.plan.bursts)):
            kinds += [kind for kind, times in self._counts() if n < times]
        return [((n + 0.6) / (len(kinds) + 1), kind) for n, kind in enumerate(kinds)]

    def _counts(self) -> list[tuple[str, int]]:
        return [("outage", self.plan.outages), ("restart", self.plan.restarts), ("burst", self.plan.bursts)]

    async def disrupt(
        self,
        reached: Callable[[float], Awaitable[None]],
        lock: asyncio.Lock,
        host_ready: asyncio.Event,
        say: Callable[[str], None],
        finals: Callable[[], int] | None = None,
        total: int = 0,
    ) -> None:
        """Until done or cancelled: each disruption once its point of progress is reached."""
        loop = asyncio.get_running_loop()
        self.total = total
        watcher = asyncio.create_task(self._watch(finals)) if finals is not None else None
        try:
            for share, kind in self.schedule():
                await reached(share)
                async with lock:
                    await host_ready.wait()
                    say(f"storage: {kind} at {share:.0%} of requests final")
                    started = loop.time()
                    if kind == "outage":
                        await self.proxy.outage(self.plan.outage_s)
                    elif kind == "burst":
                        await self.proxy.busy_burst(self.plan.burst_s)
                    else:
                        await self._restart_azurite()
                    self.windows.append((kind, started, loop.time()))
                    say(f"storage: {kind} over")
            if finals is not None:
                await reached(1.0)
        finally:
            if watcher is not None:
                watcher.cancel()

    async def _watch(self, finals: Callable[[], int]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self.timeline.append((loop.time(), finals()))
            await asyncio.sleep(1.0)

    async def _restart_azurite(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.to_thread(self.azurite.restart)  # SIGTERM first: Azurite saves its state
        self.restart_s.append(round(loop.time() - started, 1))
        self.restarts += 1

    def calm(self) -> None:
        """No more random faults (the soak is draining and checking)."""
        self.proxy.faults = FaultMix()

    def report(self) -> dict[str, Any]:
        return {
            "storage_outages": self.proxy.counts["outages"],
            "storage_restarts": self.restarts,
            "storage_faults": fault_counts(self.proxy) | {"restart_s": self.restart_s},
        }

    async def stop(self) -> None:
        await self.proxy.stop()
        if self.plan.chart is not None and len(self.timeline) > 1:
            self.draw(self.plan.chart)

    def draw(self, path: Path) -> None:
        """Final events over time, the disruptions shaded."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        origin = self.timeline[0][0]
        colours = {"outage": "#d62728", "restart": "#9467bd", "burst": "#ff7f0e"}
        fig, ax = plt.subplots(figsize=(10, 4.5), dpi=110)
        ax.plot(
            [t - origin for t, _ in self.timeline],
            [n for _, n in self.timeline],
            color="#08519c",
            lw=2,
            label="requests with their final event",
        )
        seen: set[str] = set()
        for kind, start, end in self.windows:
            label = {"outage": "storage outage", "restart": "Azurite restart (SIGTERM)", "burst": "503 burst"}[kind]
            ax.axvspan(
                start - origin,
                max(end, start + 0.5) - origin,
                color=colours[kind],
                alpha=0.3,
                label=None if kind in seen else label,
            )
            seen.add(kind)
        ax.set_xlabel("seconds since the host started")
        ax.set_ylabel("requests")
        if self.total:
            ax.set_ylim(0, self.total * 1.05)
        ax.legend(loc="lower right", fontsize=8)
        faults = fault_counts(self.proxy)
        ax.set_title(
            f"Storage faults under {self.total} requests: {faults.get('busy', 0)} x 503 ServerBusy, "
            f"{faults.get('drop', 0) + faults.get('drop_after', 0)} dropped connections"
        )
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
        plt.close(fig)
