"""The ledger port (shared/ports.py) on an Azure Table: one entity per requestId, plus one cooldown
entity per device.

The record itself and its states are the lifecycle's (shared/core/lifecycle.py). Here: the entity
mapping and conditional writes. Every write is conditional on the ETag that was read, so two
deliveries of one request can never both act (docs/contract.md#guarantees). Failures other than a
lost race become `StorageUnavailable` (shared/adapters/storage.py).
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.adapters.storage import storage_errors
from shared.core.clock import iso, parse_iso, utcnow
from shared.core.errors import StorageConflict
from shared.core.lifecycle import DeviceClaim, LedgerRecord, State

REQUEST_ROW = "request"
COOLDOWN_ROW = "cooldown"


def _to_entity(record: LedgerRecord) -> dict[str, Any]:
    return {
        "PartitionKey": record.request_id,
        "RowKey": REQUEST_ROW,
        "PayloadHash": record.payload_hash,
        "Request": record.request_json,
        "State": record.state.value,
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
        "SubmittedBy": record.submitted_by,
        "BatchId": record.batch_id,
        "HeldAt": iso(record.held_at) if record.held_at else None,
        "Approval": json.dumps(record.approval, separators=(",", ":")) if record.approval else None,
    }


def record_from_entity(entity: Any) -> LedgerRecord:
    """A ledger record from its table entity (also read by the ops CLI)."""

    def get(name: str) -> Any:
        value = entity.get(name)
        return None if value == "" else value

    return LedgerRecord(
        request_id=entity["PartitionKey"],
        payload_hash=entity["PayloadHash"],
        request_json=entity["Request"],
        state=State(entity["State"]),
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
        submitted_by=get("SubmittedBy"),
        batch_id=get("BatchId"),
        held_at=parse_iso(get("HeldAt")),
        approval=json.loads(get("Approval")) if get("Approval") else None,
    )


class TableLedger:
    """Ledger on an Azure Table (azure-data-tables, async)."""

    def __init__(self, table_client: Any) -> None:
        self._table = table_client

    async def get(self, request_id: str) -> LedgerRecord | None:
        with storage_errors("ledger read"):
            try:
                entity = await self._table.get_entity(request_id, REQUEST_ROW)
            except ResourceNotFoundError:
                return None
        return record_from_entity(entity)

    async def create(self, record: LedgerRecord) -> LedgerRecord:
        with storage_errors("ledger insert"):
            try:
                metadata = await self._table.create_entity(_without_nulls(_to_entity(record)))
            except ResourceExistsError as exc:
                raise StorageConflict(f"ledger record {record.request_id} exists") from exc
        return replace(record, etag=metadata.get("etag"))

    async def replace(self, record: LedgerRecord) -> LedgerRecord:
        with storage_errors("ledger update"):
            try:
                metadata = await self._table.update_entity(
                    _without_nulls(_to_entity(record)),
                    mode=_replace_mode(),
                    etag=record.etag,
                    match_condition=MatchConditions.IfNotModified,
                )
            except (ResourceModifiedError, ResourceNotFoundError) as exc:
                raise StorageConflict(f"ledger record {record.request_id} changed concurrently") from exc
        return replace(record, etag=metadata.get("etag"))

    async def claim_device(self, device_id: str, request_id: str, now: datetime, window: timedelta) -> DeviceClaim:
        """Insert first, read only when a claim exists: a device with no claim (most) costs one
        storage operation instead of a read and an insert."""
        key = _device_key(device_id)
        claim = {"PartitionKey": key, "RowKey": COOLDOWN_ROW, "RequestId": request_id, "ClaimedAt": iso(now)}
        with storage_errors("device claim"):
            for _ in range(5):
                try:
                    await self._table.create_entity(claim)
                    return DeviceClaim(True)
                except ResourceExistsError:
                    pass
                try:
                    entity = await self._table.get_entity(key, COOLDOWN_ROW)
                except ResourceNotFoundError:
                    continue  # released meanwhile: insert again
                if entity.get("RequestId") != request_id:
                    since = parse_iso(entity.get("ClaimedAt"))
                    if since is not None and now - since < window:
                        return DeviceClaim(False, entity.get("RequestId"), since)
                try:
                    await self._table.update_entity(
                        claim,
                        mode=_replace_mode(),
                        etag=entity.metadata["etag"],
                        match_condition=MatchConditions.IfNotModified,
                    )
                    return DeviceClaim(True)
                except (ResourceModifiedError, ResourceNotFoundError):
                    continue  # another request claimed or released it meanwhile: look again
        raise StorageConflict(f"device {device_id} cooldown row kept changing")

    async def release_device(self, device_id: str, request_id: str) -> None:
        key = _device_key(device_id)
        with storage_errors("device release"):
            try:
                entity = await self._table.get_entity(key, COOLDOWN_ROW)
                if entity.get("RequestId") == request_id:
                    await self._table.delete_entity(
                        key, COOLDOWN_ROW, etag=entity.metadata["etag"], match_condition=MatchConditions.IfNotModified
                    )
            except (ResourceNotFoundError, ResourceModifiedError):
                return


def _replace_mode() -> Any:
    # azure-data-tables costs about 40 ms to import; an instance that serves only the HTTP API's
    # status routes still needs the table client, but `import function_app` should not pay for it.
    from azure.data.tables import UpdateMode

    return UpdateMode.REPLACE


def _device_key(device_id: str) -> str:
    return "device:" + device_id.lower()


def _without_nulls(entity: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entity.items() if value is not None}
