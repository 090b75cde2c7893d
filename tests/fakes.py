"""Plain in-memory fakes of the workflow's adapters, for pure unit tests of the core.

Integration and end-to-end tests use the real adapters against Azurite and the Intune simulator;
these fakes only stand in for our own small interfaces (never for an Azure or Graph SDK).
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.core.device import ActionResult, IntuneDevice
from shared.core.errors import StorageConflict
from shared.core.lifecycle import DeviceClaim, LedgerRecord, Policy
from shared.core.platforms import Action
from shared.workflow import Services


class ManualClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 25, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def device(
    device_id: str,
    *,
    os: str = "Android",
    version: str = "14",
    device_type: str | None = "androidEnterprise",
    enrollment: str | None = "androidEnterpriseFullyManaged",
    agent: str | None = "mdm",
    upn: str = "adele@contoso.com",
    serial: str | None = None,
    imei: str | None = None,
    aad: str | None = None,
) -> IntuneDevice:
    return IntuneDevice(
        id=device_id,
        name=f"dev-{device_id[:8]}",
        operating_system=os,
        os_version=version,
        device_type=device_type,
        enrollment_type=enrollment,
        management_agent=agent,
        owner_type="company",
        user_principal_name=upn,
        serial_number=serial,
        imei=imei,
        azure_ad_device_id=aad,
    )


@dataclass
class FakeGateway:
    clock: ManualClock
    devices: dict[str, IntuneDevice] = field(default_factory=dict)
    results: dict[str, list[ActionResult]] = field(default_factory=dict)
    action_calls: list[tuple[str, Action]] = field(default_factory=list)
    # Scripted failures, consumed in order: exceptions to raise on the next perform / read calls.
    perform_failures: list[tuple[Exception, bool]] = field(default_factory=list)  # (error, applied first?)
    read_failures: list[Exception] = field(default_factory=list)

    def add(self, dev: IntuneDevice) -> IntuneDevice:
        self.devices[dev.id] = dev
        return dev

    async def get_device(self, device_id: str) -> IntuneDevice | None:
        await asyncio.sleep(0)  # a real await point, so concurrent deliveries interleave
        self._maybe_fail_read()
        return self.devices.get(device_id)

    async def find_devices(self, kind: str, value: str) -> list[IntuneDevice]:
        self._maybe_fail_read()
        return [d for d in self.devices.values() if d.matches(kind, value)]

    async def perform(self, device_id: str, action: Action) -> None:
        await asyncio.sleep(0)
        self.action_calls.append((device_id, action))
        if self.perform_failures:
            error, applied = self.perform_failures.pop(0)
            if applied:
                self._record(device_id, action)
            raise error
        self._record(device_id, action)

    async def action_results(self, device_id: str) -> list[ActionResult]:
        self._maybe_fail_read()
        return list(self.results.get(device_id, []))

    def set_state(self, device_id: str, state: str) -> None:
        self.results[device_id] = [replace(r, state=state) for r in self.results.get(device_id, [])]

    def _record(self, device_id: str, action: Action) -> None:
        now = self.clock()
        others = [r for r in self.results.get(device_id, []) if r.action_name != action.graph_name]
        # Like Intune: a passcode reset leaves the new passcode, a (macOS) remote lock an unlock PIN.
        secret = {"unlock_pin": "654321"} if action.graph_name == "remoteLock" else {"passcode": "secret-1234"}
        self.results[device_id] = [*others, ActionResult(action.graph_name, "pending", now, now, **secret)]

    def _maybe_fail_read(self) -> None:
        if self.read_failures:
            raise self.read_failures.pop(0)


class InMemoryLedger:
    def __init__(self) -> None:
        self.records: dict[str, LedgerRecord] = {}
        self.claims: dict[str, tuple[str, datetime]] = {}
        self._etags = itertools.count(1)

    async def get(self, request_id: str) -> LedgerRecord | None:
        await asyncio.sleep(0)
        return self.records.get(request_id)

    async def create(self, record: LedgerRecord) -> LedgerRecord:
        if record.request_id in self.records:
            raise StorageConflict("exists")
        return self._store(record)

    async def replace(self, record: LedgerRecord) -> LedgerRecord:
        current = self.records.get(record.request_id)
        if current is None or current.etag != record.etag:
            raise StorageConflict("etag mismatch")
        return self._store(record)

    async def claim_device(self, device_id: str, request_id: str, now: datetime, window: timedelta) -> DeviceClaim:
        held = self.claims.get(device_id)
        if held and held[0] != request_id and now - held[1] < window:
            return DeviceClaim(False, held[0], held[1])
        self.claims[device_id] = (request_id, now)
        return DeviceClaim(True)

    async def release_device(self, device_id: str, request_id: str) -> None:
        if self.claims.get(device_id, ("",))[0] == request_id:
            del self.claims[device_id]

    def _store(self, record: LedgerRecord) -> LedgerRecord:
        stored = replace(record, etag=str(next(self._etags)))
        self.records[record.request_id] = stored
        return stored


class ListPublisher:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def publish(self, event_json: str) -> None:
        self.events.append(json.loads(event_json))

    def statuses(self, request_id: str | None = None) -> list[str]:
        return [e["data"]["status"] for e in self.events if request_id is None or e["subject"] == request_id]


class ListScheduler:
    def __init__(self) -> None:
        self.requeued: list[tuple[str, int]] = []
        self.followups: list[tuple[str, int]] = []

    async def requeue_request(self, body: str, delay_seconds: int) -> None:
        self.requeued.append((body, delay_seconds))

    async def schedule_followup(self, body: str, delay_seconds: int) -> None:
        self.followups.append((body, delay_seconds))


@dataclass
class Harness:
    clock: ManualClock
    gateway: FakeGateway
    ledger: InMemoryLedger
    publisher: ListPublisher
    scheduler: ListScheduler
    services: Services


def harness(policy: Policy | None = None) -> Harness:
    clock = ManualClock()
    gateway = FakeGateway(clock)
    ledger = InMemoryLedger()
    publisher = ListPublisher()
    scheduler = ListScheduler()
    services = Services(
        gateway=gateway,
        ledger=ledger,
        publisher=publisher,
        scheduler=scheduler,
        clock=clock,
        policy=policy or Policy(cooldown_seconds=900, confirm_first_check_seconds=60, confirm_timeout_seconds=3600),
    )
    return Harness(clock, gateway, ledger, publisher, scheduler, services)
