"""The storage-fault soak (`python -m bench.soak --storage-faults`) in small: 100 requests with
every simulator fault while storage fails under the app (docs/contract.md#storage-outages): one
outage (the storage fault proxy cuts every connection and refuses new ones), one graceful Azurite
restart on the same ports, one 503 ServerBusy burst, and 503s, dropped connections and latency on
a share of all storage calls. Nothing may be lost, no request may get two final event ids or two
actions."""

from __future__ import annotations

from bench.soak import SoakConfig, run_soak
from bench.soak_storage import StoragePlan


async def test_short_storage_fault_soak_loses_nothing_and_acts_once() -> None:
    config = SoakConfig(
        requests=100,
        kills=0,  # host kills have their own short soak (test_soak_short.py)
        window=150,
        lease_seconds=4.0,  # a message whose release failed in an outage comes back after 4 s
        action_lease_seconds=10,
        drop_reads=False,
        reveals=5,
        timeout=100.0,
        quiet=True,
        storage=StoragePlan(outages=1, outage_s=4.0, restarts=1, bursts=1, burst_s=2.0),
    )
    report = await run_soak(config)
    summary = report.line() + "\n" + repr(report.details)
    assert report.storage_outages == 1 and report.storage_restarts == 1, summary
    faults = report.storage_faults or {}
    assert faults.get("busy", 0) > 0 and faults.get("busy_in_burst", 0) > 0, summary
    assert faults.get("drop", 0) + faults.get("drop_after", 0) > 0, summary
    assert report.lost == 0, summary
    assert report.duplicate_finals == 0, summary
    assert report.duplicate_actions == 0, summary
    assert report.unexpected_actions == 0, summary
    assert report.final_events == report.requests, summary
    assert report.statuses.get("completed", 0) > report.requests // 2, summary
    assert report.leaks == 0, summary
