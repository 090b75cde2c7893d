"""The request ledger (SPEC section 6 guarantees): one record per requestId on Azure Tables.

It is the single source of truth for idempotency (payload hash), the action's progress (state,
attempt, when the action call started), the recorded outcome event (so a redelivery republishes
the same event, same CloudEvents id) and the per-device cooldown. Every write is conditional on
the ETag that was read, so two deliveries of one request can never both act.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from shared.errors import StorageConflict

if TYPE_CHECKING:
    from shared.contract import ResetRequest

# Ledger states besides the event statuses of SPEC section 6.
QUEUED = "queued"  # accepted over HTTP, not yet picked up
PROCESSING = "processing"  # picked up; no action call in flight
ACTING = "acting"  # an action call started at action_started_at; its result may be unknown
HISTORY_LIMIT = 40


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class LedgerRecord:
    request_id: str
    payload_hash: str
    request_json: str
    state: str
    created_at: datetime
    updated_at: datetime
    attempt: int = 0
    deferrals: int = 0
    action_started_at: datetime | None = None
    submitted_at: datetime | None = None
    device_id: str | None = None
    device_json: str | None = None
    platform: str | None = None
    action: str | None = None
    scope: str | None = None
    last_event_json: str | None = None
    final: bool = False
    requested_by: str | None = None
    ticket_id: str | None = None
    history: tuple[dict[str, Any], ...] = ()
    etag: str | None = field(default=None, compare=False)

    def moved_to(self, state: str, now: datetime, note: str | None = None, **changes: Any) -> LedgerRecord:
        entry = {"time": iso(now), "state": state}
        if note:
            entry["note"] = note[:200]
        history = (*self.history, entry)[-HISTORY_LIMIT:]
        return replace(self, state=state, updated_at=now, history=history, **changes)

    @property
    def last_event(self) -> dict[str, Any] | None:
        return json.loads(self.last_event_json) if self.last_event_json else None


def new_record(request: ResetRequest, state: str, now: datetime, note: str | None = None) -> LedgerRecord:
    """The first ledger record of a request, keyed by its requestId and payload hash."""
    entry = {"time": iso(now), "state": state, **({"note": note} if note else {})}
    return LedgerRecord(
        request_id=str(request.requestId),
        payload_hash=request.payload_hash(),
        request_json=request.to_json(),
        state=state,
        created_at=now,
        updated_at=now,
        requested_by=request.requestedBy,
        ticket_id=request.ticketId,
        history=(entry,),
    )


@dataclass(frozen=True)
class DeviceClaim:
    """Result of claiming a device for an action: granted, or blocked by another request."""

    granted: bool
    blocking_request_id: str | None = None
    blocking_since: datetime | None = None


class Ledger(Protocol):
    async def get(self, request_id: str) -> LedgerRecord | None: ...
    async def create(self, record: LedgerRecord) -> LedgerRecord: ...
    async def replace(self, record: LedgerRecord) -> LedgerRecord: ...
    async def claim_device(self, device_id: str, request_id: str, now: datetime, window: timedelta) -> DeviceClaim: ...
    async def release_device(self, device_id: str, request_id: str) -> None: ...


REQUEST_ROW = "request"
COOLDOWN_ROW = "cooldown"


def _to_entity(record: LedgerRecord) -> dict[str, Any]:
    return {
        "PartitionKey": record.request_id,
        "RowKey": REQUEST_ROW,
        "PayloadHash": record.payload_hash,
        "Request": record.request_json,
        "State": record.state,
        "Final": record.final,
        "CreatedAt": iso(record.created_at),
        "UpdatedAt": iso(record.updated_at),
        "Attempt": record.attempt,
        "Deferrals": record.deferrals,
        "ActionStartedAt": iso(record.action_started_at) if record.action_started_at else None,
        "SubmittedAt": iso(record.submitted_at) if record.submitted_at else None,
        "DeviceId": record.device_id,
        "Device": record.device_json,
        "Platform": record.platform,
        "Action": record.action,
        "Scope": record.scope,
        "LastEvent": record.last_event_json,
        "RequestedBy": record.requested_by,
        "TicketId": record.ticket_id,
        "History": json.dumps(list(record.history), separators=(",", ":")),
    }


def _from_entity(entity: Any) -> LedgerRecord:
    def get(name: str) -> Any:
        value = entity.get(name)
        return None if value == "" else value

    return LedgerRecord(
        request_id=entity["PartitionKey"],
        payload_hash=entity["PayloadHash"],
        request_json=entity["Request"],
        state=entity["State"],
        final=bool(entity.get("Final", False)),
        created_at=parse_iso(entity["CreatedAt"]) or utcnow(),
        updated_at=parse_iso(entity["UpdatedAt"]) or utcnow(),
        attempt=int(entity.get("Attempt") or 0),
        deferrals=int(entity.get("Deferrals") or 0),
        action_started_at=parse_iso(get("ActionStartedAt")),
        submitted_at=parse_iso(get("SubmittedAt")),
        device_id=get("DeviceId"),
        device_json=get("Device"),
        platform=get("Platform"),
        action=get("Action"),
        scope=get("Scope"),
        last_event_json=get("LastEvent"),
        requested_by=get("RequestedBy"),
        ticket_id=get("TicketId"),
        history=tuple(json.loads(entity.get("History") or "[]")),
        etag=entity.metadata.get("etag") if hasattr(entity, "metadata") else None,
    )


class TableLedger:
    """Ledger on an Azure Table (azure-data-tables, async)."""

    def __init__(self, table_client: Any) -> None:
        self._table = table_client

    async def get(self, request_id: str) -> LedgerRecord | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = await self._table.get_entity(request_id, REQUEST_ROW)
        except ResourceNotFoundError:
            return None
        return _from_entity(entity)

    async def create(self, record: LedgerRecord) -> LedgerRecord:
        from azure.core.exceptions import ResourceExistsError

        try:
            metadata = await self._table.create_entity(_without_nulls(_to_entity(record)))
        except ResourceExistsError as exc:
            raise StorageConflict(f"ledger record {record.request_id} exists") from exc
        return replace(record, etag=metadata.get("etag"))

    async def replace(self, record: LedgerRecord) -> LedgerRecord:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        try:
            metadata = await self._table.update_entity(
                _without_nulls(_to_entity(record)),
                mode=UpdateMode.REPLACE,
                etag=record.etag,
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise StorageConflict(f"ledger record {record.request_id} changed concurrently") from exc
        return replace(record, etag=metadata.get("etag"))

    async def claim_device(self, device_id: str, request_id: str, now: datetime, window: timedelta) -> DeviceClaim:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        key = _device_key(device_id)
        for _ in range(5):
            try:
                entity = await self._table.get_entity(key, COOLDOWN_ROW)
            except ResourceNotFoundError:
                entity = None
            if entity is not None and entity.get("RequestId") != request_id:
                since = parse_iso(entity.get("ClaimedAt"))
                if since is not None and now - since < window:
                    return DeviceClaim(False, entity.get("RequestId"), since)
            claim = {"PartitionKey": key, "RowKey": COOLDOWN_ROW, "RequestId": request_id, "ClaimedAt": iso(now)}
            try:
                if entity is None:
                    await self._table.create_entity(claim)
                else:
                    await self._table.update_entity(
                        claim,
                        mode=UpdateMode.REPLACE,
                        etag=entity.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                return DeviceClaim(True)
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
                continue  # another request claimed it meanwhile: look again
        raise StorageConflict(f"device {device_id} cooldown row kept changing")

    async def release_device(self, device_id: str, request_id: str) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        key = _device_key(device_id)
        try:
            entity = await self._table.get_entity(key, COOLDOWN_ROW)
            if entity.get("RequestId") == request_id:
                await self._table.delete_entity(
                    key, COOLDOWN_ROW, etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified
                )
        except (ResourceNotFoundError, ResourceModifiedError):
            return


def _device_key(device_id: str) -> str:
    return "device:" + device_id.lower()


def _without_nulls(entity: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entity.items() if value is not None}
