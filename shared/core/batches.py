"""Batches (docs/contract.md#batches): the submission, its validation row by row, the batch record
and the pure decisions of expansion, release and completion.

A batch is a list of device identifiers (JSON or CSV) or an Entra group, plus the fields every
item request shares. Item n becomes the request `<batchId>.<n>`; its outcome is the normal
request's. The batch record (`BatchRecord`) is the truth about the batch: its state, how many items
it has, how many were released to the request queue (`cursor`) and which tick of its message chain
is current (`tick`); decisions of docs/decisions/0018-batch-expansion-and-pacing.md.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.core.clock import iso, parse_iso
from shared.core.contract import (
    EVENT_SOURCE,
    GUID_PATTERN,
    IDENTIFIER_KINDS,
    TRACEPARENT_PATTERN,
    DeviceRef,
    ResetRequest,
    ShortText,
    Status,
)

MAX_ITEMS = 10_000
# A 10,000-row batch of the longest identifiers (128-character serial numbers) is about 1.5 MB as
# JSON; 4 MiB leaves room for white space and is far below the Functions HTTP limit (100 MB).
MAX_BODY_BYTES = 4 * 1024 * 1024
BATCH_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,100}$"
# Items per stored chunk of the item list (one blob each): a release reads one chunk at a time.
CHUNK_ITEMS = 1000
BATCH_DONE_EVENT_TYPE: Final = "intune.passcode-reset-batch.done"
BATCH_REJECTED_EVENT_TYPE: Final = "intune.passcode-reset-batch.rejected"
PENDING = "pending"  # an item without an outcome event yet (not released, queued or being worked on)

_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
_BOOLEAN_TEXT = {"true": True, "false": False}


class BatchState(StrEnum):
    EXPANDING = "expanding"  # the item list is not known yet (an Entra group being read)
    AWAITING_APPROVAL = "awaiting_approval"
    RUNNING = "running"  # items known; released to the request queue at the Graph budget's pace
    DONE = "done"  # every item has a final outcome; the done event was published


class BatchFields(BaseModel):
    """What every item request of a batch shares (the fields of docs/contract.md#request-fields)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, title="PasscodeResetBatchFields")

    batchId: Annotated[str, Field(pattern=BATCH_ID_PATTERN)] | None = None
    requestedBy: Annotated[str, Field(min_length=1, max_length=256, pattern=_PRINTABLE)]
    reason: Annotated[str, Field(max_length=500)] | None = None
    ticketId: ShortText | None = None
    correlationId: ShortText | None = None
    allowRemoteLock: bool = False
    dryRun: bool = False

    def shared(self) -> dict[str, Any]:
        """The item requests' fields (batchId is not a request field)."""
        return self.model_dump(exclude={"batchId"}, exclude_none=True)


class BatchSubmission(BatchFields):
    """The JSON body of `POST /api/batches` and of a message on the batch queue (for OpenAPI and
    schemas; validation goes row by row through `read_batch_json`)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, title="PasscodeResetBatch")

    devices: list[DeviceRef] | None = Field(default=None, description=f"1 to {MAX_ITEMS} devices, one identifier each")
    entraGroupId: Annotated[str, Field(pattern=GUID_PATTERN)] | None = Field(
        default=None, description="An Entra group: its transitive members' managed devices"
    )


@dataclass(frozen=True)
class RowError:
    """One problem: `row` is the 1-based item number (None: the batch's own fields or the body)."""

    row: int | None
    field: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "detail": self.detail}


@dataclass(frozen=True)
class Batch:
    """A valid batch: its fields and either its devices or its Entra group."""

    fields: BatchFields
    devices: tuple[DeviceRef, ...] | None = None
    group_id: str | None = None

    @property
    def batch_id(self) -> str:
        assert self.fields.batchId is not None
        return self.fields.batchId

    def with_id(self, batch_id: str) -> Batch:
        return replace(self, fields=self.fields.model_copy(update={"batchId": batch_id}))

    def payload_hash(self) -> str:
        """Fingerprint of what the batch asks for: the same list as JSON or CSV hashes the same."""
        document = {
            "fields": self.fields.model_dump(mode="json", exclude={"batchId"}),
            "devices": [[ref.kind, ref.value] for ref in self.devices] if self.devices is not None else None,
            "group": self.group_id.lower() if self.group_id else None,
        }
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class TooLarge:
    detail: str


def new_batch_id() -> str:
    return f"batch-{uuid.uuid4()}"


# ====================================================================== reading a submission


def read_batch_json(body: bytes) -> Batch | list[RowError] | TooLarge:
    """A JSON batch, or every problem found in it (each invalid row named), or TooLarge."""
    if len(body) > MAX_BODY_BYTES:
        return TooLarge(f"the batch body is limited to {MAX_BODY_BYTES} bytes")
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return [RowError(None, "", "the body is not valid UTF-8 JSON")]
    if not isinstance(document, dict):
        return [RowError(None, "", "the body must be a JSON object")]
    devices = document.get("devices")
    group = document.get("entraGroupId")
    errors = _field_errors(document)
    if (devices is None) == (group is None):
        errors.append(RowError(None, "devices", "give exactly one of devices and entraGroupId"))
        return errors
    if group is not None:
        if not isinstance(group, str) or not re.fullmatch(GUID_PATTERN, group):
            errors.append(RowError(None, "entraGroupId", "must be a GUID"))
        return errors or Batch(BatchFields.model_validate(document), group_id=group)
    if not isinstance(devices, list):
        errors.append(RowError(None, "devices", "must be a JSON array"))
        return errors
    if len(devices) > MAX_ITEMS:
        return TooLarge(f"a batch has at most {MAX_ITEMS} devices (this one has {len(devices)})")
    if not devices:
        errors.append(RowError(None, "devices", f"give 1 to {MAX_ITEMS} devices"))
        return errors
    refs: list[DeviceRef] = []
    for number, row in enumerate(devices, start=1):
        ref = _device_ref(row, number, errors)
        if ref is not None:
            refs.append(ref)
    return errors or Batch(BatchFields.model_validate(document), devices=tuple(refs))


def read_batch_csv(body: bytes, query: Mapping[str, str]) -> Batch | list[RowError] | TooLarge:
    """A CSV batch: a header row of identifier columns, one device per row (exactly one non-empty
    cell), the batch's fields as query parameters (`dryRun`, `allowRemoteLock`: `true`/`false`)."""
    if len(body) > MAX_BODY_BYTES:
        return TooLarge(f"the batch body is limited to {MAX_BODY_BYTES} bytes")
    errors: list[RowError] = []
    document: dict[str, Any] = {key: value for key, value in query.items() if key in BatchFields.model_fields}
    for name in ("dryRun", "allowRemoteLock"):
        if name in document:
            if document[name] not in _BOOLEAN_TEXT:
                errors.append(RowError(None, name, "must be exactly true or false"))
                document.pop(name)
            else:
                document[name] = _BOOLEAN_TEXT[document[name]]
    errors.extend(_field_errors(document))
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [*errors, RowError(None, "", "the CSV body is not UTF-8")]
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as exc:
        return [*errors, RowError(None, "", f"the CSV body cannot be read ({exc})")]
    rows = [row for row in rows if row]  # an empty line is no row; a line of empty cells is an invalid one
    if not rows:
        return [*errors, RowError(None, "", "the CSV body needs a header row and at least one device row")]
    header = [cell.strip() for cell in rows[0]]
    unknown = [name for name in header if name not in IDENTIFIER_KINDS]
    if unknown or len(set(header)) != len(header):
        columns = ", ".join(IDENTIFIER_KINDS)
        return [*errors, RowError(None, "header", f"columns must be distinct names among {columns}")]
    body_rows = rows[1:]
    if len(body_rows) > MAX_ITEMS:
        return TooLarge(f"a batch has at most {MAX_ITEMS} devices (this one has {len(body_rows)})")
    if not body_rows:
        return [*errors, RowError(None, "", f"give 1 to {MAX_ITEMS} device rows after the header")]
    refs: list[DeviceRef] = []
    for number, row in enumerate(body_rows, start=1):
        if len(row) > len(header):
            errors.append(RowError(number, "", f"has {len(row)} cells; the header has {len(header)}"))
            continue
        cells = {name: cell.strip() for name, cell in zip(header, row, strict=False) if cell.strip()}
        if len(cells) != 1:
            errors.append(RowError(number, "", f"give exactly one non-empty cell (found {len(cells)})"))
            continue
        ref = _device_ref(cells, number, errors)
        if ref is not None:
            refs.append(ref)
    if errors:
        return errors
    return Batch(BatchFields.model_validate(document), devices=tuple(refs))


def _field_errors(document: Mapping[str, Any]) -> list[RowError]:
    try:
        BatchFields.model_validate(dict(document))
    except ValidationError as exc:
        return [
            RowError(None, _location(error), "field required" if error["type"] == "missing" else error["msg"])
            for error in exc.errors(include_input=False, include_url=False)
        ]
    return []


def _device_ref(row: Any, number: int, errors: list[RowError]) -> DeviceRef | None:
    if not isinstance(row, dict):
        errors.append(RowError(number, "", "must be an object with one identifier"))
        return None
    try:
        return DeviceRef.model_validate(row)
    except ValidationError as exc:
        for error in exc.errors(include_input=False, include_url=False)[:4]:
            errors.append(RowError(number, _location(error), str(error["msg"]).removeprefix("Value error, ")))
        return None


def _location(error: Any) -> str:
    return ".".join(str(item) for item in error["loc"] if not str(item).startswith("function-after"))


# ====================================================================== the batch record


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    payload_hash: str
    fields: dict[str, Any]  # BatchFields.shared(): the item requests' common fields
    group_id: str | None
    state: BatchState
    created_at: datetime
    items: int | None = None  # None until the item list is known (a group before expansion)
    cursor: int = 0  # items 1..cursor were released to the request queue
    tick: int = 0  # the current message of the batch's chain (docs/decisions/0018)
    expanded_at: datetime | None = None
    released_at: datetime | None = None
    done_at: datetime | None = None
    done_event_json: str | None = None
    # The batch's approval (docs/contract.md#approval-api): {decision, by, at, comment}, or
    # {decision: "expired", at} when APPROVAL_TIMEOUT_SECONDS passed without one.
    approval: dict[str, Any] | None = None
    etag: str | None = field(default=None, compare=False)

    def to_json(self) -> str:
        return json.dumps(
            {
                "batchId": self.batch_id,
                "payloadHash": self.payload_hash,
                "fields": self.fields,
                "groupId": self.group_id,
                "state": self.state.value,
                "createdAt": iso(self.created_at),
                "items": self.items,
                "cursor": self.cursor,
                "tick": self.tick,
                "expandedAt": iso(self.expanded_at) if self.expanded_at else None,
                "releasedAt": iso(self.released_at) if self.released_at else None,
                "doneAt": iso(self.done_at) if self.done_at else None,
                "doneEvent": self.done_event_json,
                "approval": self.approval,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes, etag: str | None = None) -> BatchRecord:
        doc = json.loads(text)
        return cls(
            batch_id=doc["batchId"],
            payload_hash=doc["payloadHash"],
            fields=doc["fields"],
            group_id=doc.get("groupId"),
            state=BatchState(doc["state"]),
            created_at=parse_iso(doc["createdAt"]) or datetime.min,
            items=doc.get("items"),
            cursor=int(doc.get("cursor") or 0),
            tick=int(doc.get("tick") or 0),
            expanded_at=parse_iso(doc.get("expandedAt")),
            released_at=parse_iso(doc.get("releasedAt")),
            done_at=parse_iso(doc.get("doneAt")),
            done_event_json=doc.get("doneEvent"),
            approval=doc.get("approval"),
            etag=etag,
        )


def new_batch_record(batch: Batch, now: datetime, *, hold: bool = False) -> BatchRecord:
    """A device list's items are known at once: the batch starts running (or awaiting approval,
    `hold`: APPROVAL_REQUIRED has `batch`); a group starts expanding."""
    items = len(batch.devices) if batch.devices is not None else None
    return BatchRecord(
        batch_id=batch.batch_id,
        payload_hash=batch.payload_hash(),
        fields=batch.fields.shared(),
        group_id=batch.group_id,
        state=(BatchState.AWAITING_APPROVAL if hold else BatchState.RUNNING)
        if items is not None
        else BatchState.EXPANDING,
        created_at=now,
        items=items,
        expanded_at=now if items is not None else None,
    )


def item_request_id(batch_id: str, n: int) -> str:
    return f"{batch_id}.{n}"


def item_number(batch_id: str, request_id: str) -> int | None:
    """n when `request_id` is `<batch_id>.<n>` (only digits after the batch id), else None."""
    prefix = batch_id + "."
    suffix = request_id[len(prefix) :] if request_id.startswith(prefix) else ""
    return int(suffix) if suffix.isdigit() and not suffix.startswith("0") else None


def item_request(record: BatchRecord, n: int, ref: DeviceRef) -> ResetRequest:
    return ResetRequest.model_validate(
        {"requestId": item_request_id(record.batch_id, n), "device": {ref.kind: ref.value}, **record.fields},
        strict=False,
    )


def chunk_of(n: int) -> int:
    """The stored chunk holding item n (1-based)."""
    return (n - 1) // CHUNK_ITEMS


def chunks(refs: Sequence[DeviceRef]) -> Iterable[tuple[int, list[list[str]]]]:
    for index in range(0, len(refs), CHUNK_ITEMS):
        yield index // CHUNK_ITEMS, [[ref.kind, ref.value] for ref in refs[index : index + CHUNK_ITEMS]]


# ====================================================================== group expansion


@dataclass(frozen=True)
class GroupMember:
    """A transitive member of an Entra group as Graph lists it."""

    odata_type: str  # "#microsoft.graph.device", "#microsoft.graph.user", ...
    id: str
    device_id: str | None = None  # a device object's deviceId (= the managed device's azureADDeviceId)


@dataclass(frozen=True)
class UserDevice:
    """One managed device of a user member."""

    id: str
    azure_ad_device_id: str | None


def group_items(members: Sequence[GroupMember], user_devices: Mapping[str, Sequence[UserDevice]]) -> list[DeviceRef]:
    """The items of a group: each device member by its Entra deviceId (the request resolves it; one
    without a managed device ends `device_not_found`), then each user member's managed devices by
    Intune id, skipping any device already an item. Other member types are ignored."""
    refs: list[DeviceRef] = []
    seen_aad: set[str] = set()
    seen_intune: set[str] = set()
    for member in members:
        if (
            member.odata_type.lower().endswith(".device")
            and member.device_id
            and re.fullmatch(GUID_PATTERN, member.device_id)
        ):
            key = member.device_id.lower()
            if key not in seen_aad:
                seen_aad.add(key)
                refs.append(DeviceRef(azureAdDeviceId=member.device_id))
    for member in members:
        if not member.odata_type.lower().endswith(".user"):
            continue
        for device in user_devices.get(member.id, ()):
            aad = (device.azure_ad_device_id or "").lower()
            if (
                device.id.lower() in seen_intune
                or (aad and aad in seen_aad)
                or not re.fullmatch(GUID_PATTERN, device.id)
            ):
                continue
            seen_intune.add(device.id.lower())
            refs.append(DeviceRef(intuneDeviceId=device.id))
    return refs


# ====================================================================== release pacing and progress


@dataclass(frozen=True)
class Pacing:
    """How fast a batch's items go to the request queue: near the Graph action budget's rate, with
    at most `backlog_seconds` of work waiting, so a single request waits behind a short queue."""

    rate_per_second: float  # GRAPH_POST_BUDGET / GRAPH_BUDGET_WINDOW_SECONDS
    backlog_seconds: float = 3.0

    @property
    def target_depth(self) -> int:
        return max(5, round(self.rate_per_second * self.backlog_seconds))

    def release_count(self, record: BatchRecord, queue_depth: int) -> int:
        """Items to release now: enough to bring the request queue to its target depth."""
        remaining = (record.items or 0) - record.cursor
        return max(0, min(remaining, self.target_depth - queue_depth))

    def monitor_seconds(self, items: int) -> int:
        """Between completion checks, which read the whole batch (one table page per 1,000 items)."""
        return max(2, min(30, items // 500))


@dataclass(frozen=True)
class ItemRow:
    """An item as the ledger knows it (None fields: not released yet, or no outcome yet)."""

    n: int
    request_id: str
    status: str  # an event status, or PENDING
    reason_code: str | None = None
    device_id: str | None = None
    platform: str | None = None
    action: str | None = None


FINAL_STATUSES = frozenset(status.value for status in Status if status.is_final)


@dataclass(frozen=True)
class Progress:
    items: int
    counts: dict[str, int]
    final: int

    @property
    def complete(self) -> bool:
        return self.final == self.items


def progress(items: int, rows: Iterable[ItemRow]) -> Progress:
    """Counts by status; items with no ledger record yet count as pending."""
    counts: dict[str, int] = {}
    seen = 0
    for row in rows:
        seen += 1
        counts[row.status] = counts.get(row.status, 0) + 1
    if items > seen:
        counts[PENDING] = counts.get(PENDING, 0) + items - seen
    final = sum(n for status, n in counts.items() if status in FINAL_STATUSES)
    return Progress(items=items, counts=dict(sorted(counts.items())), final=final)


def status_of_state(state: str) -> str:
    """The event status a ledger state stands for; working states are PENDING."""
    return state if state in FINAL_STATUSES or state in ("submitted", "awaiting_approval") else PENDING


# ====================================================================== batch events


class BatchEventData(BaseModel):
    model_config = ConfigDict(extra="forbid", title="PasscodeResetBatchOutcome")

    batchId: str
    items: int = Field(ge=0)
    counts: dict[str, int] = Field(description="Items by final status")
    errors: list[dict[str, Any]] | None = Field(default=None, description="Only in batch.rejected: each problem")


class BatchEvent(BaseModel):
    """CloudEvents 1.0 (structured JSON) about a batch as a whole."""

    model_config = ConfigDict(extra="forbid", title="PasscodeResetBatchEvent")

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str = EVENT_SOURCE
    type: Literal["intune.passcode-reset-batch.done", "intune.passcode-reset-batch.rejected"]
    subject: str | None
    time: str
    datacontenttype: Literal["application/json"] = "application/json"
    data: BatchEventData
    traceparent: Annotated[str, Field(pattern=TRACEPARENT_PATTERN)] | None = None


def batch_done_event(record: BatchRecord, done: Progress, now: datetime, event_id: str) -> str:
    event = BatchEvent(
        id=event_id,
        type=BATCH_DONE_EVENT_TYPE,
        subject=record.batch_id,
        time=iso(now),
        data=BatchEventData(batchId=record.batch_id, items=done.items, counts=done.counts),
    )
    return event.model_dump_json(exclude_none=True)


def batch_rejected_event(batch_id: str | None, errors: Sequence[RowError], now: datetime, event_id: str) -> str:
    """A batch message on the queue that is not a valid batch: nothing of it runs."""
    event = BatchEvent(
        id=event_id,
        type=BATCH_REJECTED_EVENT_TYPE,
        subject=batch_id,
        time=iso(now),
        data=BatchEventData(
            batchId=batch_id or "", items=0, counts={}, errors=[error.to_json() for error in errors[:100]]
        ),
    )
    return event.model_dump_json(exclude_none=True)


# ====================================================================== batch approval


@dataclass(frozen=True)
class ItemVerdict:
    """How a batch's approval decides its items: released as approved requests (`approval` recorded
    on each, so neither rules nor guardrails hold them), or ended `rejected` with `code`."""

    approval: dict[str, Any] | None
    end_code: str | None = None  # "approval_denied" | "approval_expired"
    message: str = ""


def item_verdict(record: BatchRecord) -> ItemVerdict:
    approval = record.approval
    if not approval:
        return ItemVerdict(None)
    if approval.get("decision") == "approve":
        return ItemVerdict(approval)
    if approval.get("decision") == "deny":
        comment = approval.get("comment")
        return ItemVerdict(
            approval, "approval_denied", f"batch denied by {approval.get('by')}" + (f": {comment}" if comment else "")
        )
    return ItemVerdict(None, "approval_expired", "the batch was not approved within APPROVAL_TIMEOUT_SECONDS")


def batch_approval_expired(record: BatchRecord, now: datetime, timeout_seconds: int) -> bool:
    waiting_since = record.expanded_at or record.created_at
    return record.state is BatchState.AWAITING_APPROVAL and (now - waiting_since).total_seconds() >= timeout_seconds
