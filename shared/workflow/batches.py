"""The batch use cases (docs/contract.md#batches): accept a batch (HTTP and the batch queue), then
drive it through its message chain on the batch queue: expand (an Entra group), release its items
to the request queue at the Graph budget's pace, watch for completion, publish the done event.

Every step is one delivery of a small message `{"batchTick": {"batchId", "tick"}}`. The batch record
names the current tick; a step first sends the next tick's message, then writes the record with the
new tick, conditionally on the ETag it read. A step that crashed is redelivered and done again;
whatever it released before is released again harmlessly (request ids `<batchId>.<n>` and the
ledger's conditional insert), and of two copies of one tick only the first to write goes on:
docs/decisions/0018-batch-expansion-and-pacing.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from shared.core.approvals import Decision, approval_entry
from shared.core.batches import (
    CHUNK_ITEMS,
    Batch,
    BatchRecord,
    BatchState,
    ItemRow,
    ItemVerdict,
    Pacing,
    Progress,
    RowError,
    TooLarge,
    batch_approval_expired,
    batch_done_event,
    batch_rejected_event,
    chunk_of,
    chunks,
    group_items,
    item_request,
    item_verdict,
    new_batch_record,
    progress,
    read_batch_json,
)
from shared.core.clock import iso
from shared.core.contract import MAX_MESSAGE_BYTES, DeviceRef, ReasonCode, ResetRequest, Status
from shared.core.errors import GraphPermanentError, GraphTransientError, StorageConflict, StorageUnavailable
from shared.core.events import derived_event_id
from shared.core.lifecycle import State, new_record
from shared.observability import logs, telemetry
from shared.ports import BatchItems, BatchStore, DelayedQueue, EventPublisher, GroupDirectory, Ledger
from shared.workflow.approval import decide_many
from shared.workflow.outcome import Outcomes
from shared.workflow.services import Services
from shared.workflow.submit import submit_request

log = logging.getLogger("passcode_reset")

TICK_KEY = "batchTick"
EARLY_RETRY_SECONDS = 2
STORAGE_RETRY_SECONDS = 2
MAX_DELAY_SECONDS = 7 * 24 * 3600 - 1  # a queue message's longest visibility delay
MAX_EARLY_RETRIES = 60
POISON_RETRY_SECONDS = 60
MAX_REVIVALS = 20
RELEASE_CONCURRENCY = 8
# One release step keeps the request queue topped up for this long, looking every round.
RELEASE_WINDOW_SECONDS = 20.0
RELEASE_ROUND_SECONDS = 0.5


@dataclass(frozen=True)
class BatchServices:
    store: BatchStore
    items: BatchItems
    ledger: Ledger
    requests_queue: DelayedQueue
    batches_queue: DelayedQueue
    directory: GroupDirectory
    publisher: EventPublisher
    clock: Callable[[], datetime]
    pacing: Pacing
    # APPROVAL_REQUIRED has `batch`: a batch waits for one decision before any item is released.
    approval_required: bool = False
    approval_timeout_seconds: int = 86400
    # The request use cases' ports: a batch's decision ends or approves its held items through
    # them (shared/workflow/approval.py, the one outcome path). None in the ops CLI.
    workflow: Services | None = None


# ====================================================================== acceptance


@dataclass(frozen=True)
class Accepted:
    record: BatchRecord
    created: bool


@dataclass(frozen=True)
class BatchConflict:
    """The batchId belongs to a batch with another payload."""

    batch_id: str


async def accept_batch(batch: Batch, s: BatchServices) -> Accepted | BatchConflict:
    """Store the batch (its item list first, then its record, the commit point) and start its chain.
    Idempotent per batchId: a repeat with the same payload finds the record and changes nothing."""
    record = await s.store.get(batch.batch_id)
    created = False
    if record is None:
        fresh = new_batch_record(batch, s.clock(), hold=s.approval_required)
        if batch.devices is not None:
            for index, chunk in chunks(batch.devices):
                await s.store.write_chunk(batch.batch_id, fresh.payload_hash, index, chunk)
        try:
            record = await s.store.create(fresh)
            created = True
        except StorageConflict:
            record = await s.store.get(batch.batch_id)
            if record is None:
                raise
    if record.payload_hash != batch.payload_hash():
        return BatchConflict(batch.batch_id)
    if record.tick == 0 and record.state is not BatchState.DONE:
        # Never stepped yet: (re)start the chain. A first submission may have died before sending
        # it; a duplicate first message is harmless (the record's tick decides).
        await send_tick(s, record.batch_id, 0, 0)
    log.info(
        "batch accepted" if created else "repeated batch",
        extra={
            "event": "batch_accepted" if created else "batch_repeat",
            "batchId": record.batch_id,
            "items": record.items,
        },
    )
    return Accepted(record, created)


async def send_tick(s: BatchServices, batch_id: str, tick: int, delay: int, **extra: int) -> None:
    await s.batches_queue.send_message(
        json.dumps({TICK_KEY: {"batchId": batch_id, "tick": tick, **extra}}, separators=(",", ":")), delay
    )


# ====================================================================== the batch queue


async def handle_batch_message(body: bytes, s: BatchServices, *, message_id: str) -> None:
    """One message of the batch queue: a step of a batch's chain, or a batch from upstream."""
    document = _json(body)
    if isinstance(document, dict) and isinstance(document.get(TICK_KEY), dict):
        await step(document[TICK_KEY], s)
        return
    await _intake(body, s, message_id)


async def handle_batch_poison(body: bytes, s: BatchServices, *, message_id: str) -> None:
    """A batch message that failed every delivery: a step is tried again later (the chain must not
    end while items wait); an upstream batch is answered with a `batch.rejected` event."""
    document = _json(body)
    if isinstance(document, dict) and isinstance(document.get(TICK_KEY), dict):
        tick = document[TICK_KEY]
        revived = int(tick.get("revived") or 0) + 1
        batch_id = str(tick.get("batchId"))
        if revived > MAX_REVIVALS:
            log.error("batch step failed too often; the batch stops here", extra={"batchId": batch_id})
            return
        log.warning("batch step failed every delivery; trying again later", extra={"batchId": batch_id})
        await send_tick(s, batch_id, int(tick.get("tick") or 0), POISON_RETRY_SECONDS, revived=revived)
        return
    named = document.get("batchId") if isinstance(document, dict) else None
    errors = [RowError(None, "", "the batch could not be accepted after 5 deliveries; submit it again")]
    event = batch_rejected_event(
        named if isinstance(named, str) else None,
        errors,
        s.clock(),
        derived_event_id("batch-poison", message_id),
    )
    await s.publisher.publish(event)


async def _intake(body: bytes, s: BatchServices, message_id: str) -> None:
    """A batch from an upstream system (docs/contract.md#batch-submission): accepted, or one
    `batch.rejected` event naming every problem."""
    document = _json(body)
    batch_id_given = document.get("batchId") if isinstance(document, dict) else None
    batch_id_given = batch_id_given if isinstance(batch_id_given, str) else None
    if len(body) > MAX_MESSAGE_BYTES:
        parsed: Batch | list[RowError] | TooLarge = TooLarge(f"a batch message is limited to {MAX_MESSAGE_BYTES} bytes")
    elif document is None:
        parsed = [RowError(None, "", "the message is neither JSON nor base64-encoded JSON")]
    else:
        parsed = read_batch_json(json.dumps(document).encode())
    if isinstance(parsed, Batch) and parsed.fields.batchId is None:
        # The queue message id stays the same across redeliveries: so does the generated batchId.
        parsed = parsed.with_id(f"queue-{uuid.uuid5(uuid.NAMESPACE_URL, message_id)}")
    if isinstance(parsed, Batch) and parsed.group_id is not None:
        try:
            known = await s.directory.group_exists(parsed.group_id)
        except GraphPermanentError:
            known = False
        if not known:
            parsed = [RowError(None, "entraGroupId", "Graph knows no group with this id")]
    if isinstance(parsed, Batch):
        result = await accept_batch(parsed, s)
        if isinstance(result, Accepted):
            return
        parsed = [RowError(None, "batchId", "already used for a different batch; use a new batchId")]
    errors = [RowError(None, "", parsed.detail)] if isinstance(parsed, TooLarge) else parsed
    log.warning(
        "batch message rejected", extra={"event": "batch_rejected", "batchId": batch_id_given, "problems": len(errors)}
    )
    await s.publisher.publish(
        batch_rejected_event(batch_id_given, errors, s.clock(), derived_event_id("batch-rejected", message_id))
    )


# ====================================================================== one step of a batch


async def step(tick_message: dict[str, Any], s: BatchServices) -> None:
    batch_id = str(tick_message.get("batchId"))
    tick = int(tick_message.get("tick") or 0)
    logs.bind(batchId=batch_id)
    record = await s.store.get(batch_id)
    if record is None:
        log.error("batch step for an unknown batch", extra={"batchId": batch_id})
        return
    if tick < record.tick:
        return  # a copy of a step that is done
    if tick > record.tick:
        # The step before is still writing (or crashed and will be redelivered): look again shortly.
        early = int(tick_message.get("early") or 0) + 1
        if early <= MAX_EARLY_RETRIES:
            await send_tick(s, batch_id, tick, EARLY_RETRY_SECONDS, early=early)
        return
    if record.state is BatchState.DONE:
        if record.done_event_json:
            await s.publisher.publish(record.done_event_json)  # same event, same id
        return
    if record.state is BatchState.EXPANDING:
        await _expand(record, s)
    elif record.state is BatchState.AWAITING_APPROVAL:
        await _await_approval(record, s)
    elif record.state is BatchState.RUNNING and record.cursor < (record.items or 0):
        await _release(record, s)
    elif record.state is BatchState.RUNNING:
        await _watch(record, s)


async def _advance(record: BatchRecord, s: BatchServices, delay: int, **changes: Any) -> None:
    """Send the next step's message, then record the step as done."""
    await send_tick(s, record.batch_id, record.tick + 1, delay)
    await _record_step(record, s, tick=record.tick + 1, **changes)


async def _record_step(record: BatchRecord, s: BatchServices, **changes: Any) -> BatchRecord | None:
    """Write this step's changes; None when another step has moved the batch on. A conflict with
    the same tick is a copy of this step, or this write itself landing before its answer was lost
    (a storage retry then meets its own ETag change): the changes go on top of what is there, the
    cursor never moving back."""
    for _ in range(3):
        try:
            return await s.store.replace(replace(record, **changes))
        except StorageConflict:
            fresh = await s.store.get(record.batch_id)
            if fresh is None or fresh.tick != record.tick or fresh.state is not record.state:
                log.info("batch moved on meanwhile; the other step goes on", extra={"batchId": record.batch_id})
                return None
            if "cursor" in changes:
                changes["cursor"] = max(changes["cursor"], fresh.cursor)
            record = fresh
    return None


async def _expand(record: BatchRecord, s: BatchServices) -> None:
    """An Entra group's transitive members become the item list."""
    assert record.group_id is not None
    started = s.clock()
    try:
        members = await s.directory.transitive_members(record.group_id)
        devices = {
            member.id: await s.directory.user_managed_devices(member.id)
            for member in members
            if member.odata_type.lower().endswith(".user")
        }
    except GraphTransientError as exc:
        delay = max(1, round(exc.retry_after or 10))
        log.info("group expansion deferred", extra={"batchId": record.batch_id, "delaySeconds": delay})
        await send_tick(s, record.batch_id, record.tick, delay)
        return
    except GraphPermanentError as exc:
        log.error(
            "group cannot be read; the batch has no items",
            extra={"batchId": record.batch_id, "graphStatus": exc.status},
        )
        members, devices = [], {}
    refs = group_items(members, devices)
    for index, chunk in chunks(refs):
        await s.store.write_chunk(record.batch_id, record.payload_hash, index, chunk)
    now = s.clock()
    log.info(
        "group expanded",
        extra={
            "event": "batch_expanded",
            "batchId": record.batch_id,
            "items": len(refs),
            "seconds": round((now - started).total_seconds(), 3),
        },
    )
    state = BatchState.AWAITING_APPROVAL if s.approval_required else BatchState.RUNNING
    await _advance(record, s, 0, items=len(refs), state=state, expanded_at=now)


async def _release(record: BatchRecord, s: BatchServices) -> None:
    """Items go to the request queue for up to `RELEASE_WINDOW_SECONDS`, a few at a time, so that
    the queue holds about `Pacing.target_depth` messages: the pipeline never runs dry, and a single
    request waits behind a short queue (docs/decisions/0018-batch-expansion-and-pacing.md). The
    cursor is recorded after each round, so a crash repeats at most one round (harmlessly)."""
    deadline = asyncio.get_running_loop().time() + RELEASE_WINDOW_SECONDS
    items = record.items or 0
    chunks_read: dict[int, list[list[str]]] = {}
    while record.cursor < items:
        try:
            count = s.pacing.release_count(record, await s.requests_queue.depth())
            if count:
                await _release_items(record, s, record.cursor + 1, record.cursor + count, chunks_read)
        except StorageUnavailable:
            # Come back in a moment rather than fail the step, whose message would then stay
            # invisible for the host's visibilityTimeout (30 s) with the pipeline running dry.
            # What this round released is released again then (harmlessly).
            log.warning("batch release interrupted by storage; again shortly", extra={"batchId": record.batch_id})
            await send_tick(s, record.batch_id, record.tick, STORAGE_RETRY_SECONDS)
            return
        if count:
            cursor = record.cursor + count
            changes: dict[str, Any] = {"cursor": cursor}
            if cursor >= items:
                changes["released_at"] = s.clock()
            written = await _record_step(record, s, **changes)
            if written is None:
                return
            record = written
        if asyncio.get_running_loop().time() >= deadline:
            break
        if record.cursor < items:
            await asyncio.sleep(RELEASE_ROUND_SECONDS)
    await _advance(record, s, 0)


async def _release_items(
    record: BatchRecord, s: BatchServices, first: int, last: int, chunks_read: dict[int, list[list[str]]]
) -> None:
    refs = await _load_items(record, s, first, last, chunks_read)
    semaphore = asyncio.Semaphore(RELEASE_CONCURRENCY)
    verdict = item_verdict(record)

    async def release(n: int, ref: DeviceRef) -> None:
        async with semaphore:
            request = item_request(record, n, ref)
            if verdict.end_code is not None:
                await _end_item(record, s, request, verdict)
                return
            if verdict.approval is None:
                # The request function records the item when it takes it (counted as pending
                # until then, as a `queued` record would be): decision 0027.
                await s.requests_queue.send_message(
                    request.to_message(telemetry.current_trace_context(), batch_id=record.batch_id)
                )
                return
            # Approved with its batch: the decision is recorded here, never carried by a message
            # (anyone who can write to the request queue could write one).
            submission = await submit_request(
                request,
                ledger=s.ledger,
                queue=s.requests_queue,
                now=s.clock(),
                note="batch item",
                batch_id=record.batch_id,
                approval=verdict.approval,
            )
            if submission.conflict:
                # The request id is taken by another request: the request queue publishes
                # `rejected` / `request_conflict` for this item.
                await s.requests_queue.send_message(request.to_message())

    await asyncio.gather(*(release(first + i, ref) for i, ref in enumerate(refs)))


async def _end_item(record: BatchRecord, s: BatchServices, request: ResetRequest, verdict: ItemVerdict) -> None:
    """An item of a denied or expired batch: recorded and ended `rejected` here, never queued."""
    assert s.workflow is not None and verdict.end_code is not None
    request_id = str(request.requestId)
    now = s.clock()
    fresh = new_record(request, State.PROCESSING, now, "batch item", batch_id=record.batch_id)
    try:
        item = await s.ledger.create(replace(fresh, approval=verdict.approval))
    except StorageConflict:
        existing = await s.ledger.get(request_id)
        if existing is None or existing.final or existing.payload_hash != fresh.payload_hash:
            return  # ended by an earlier round, or another request's id
        item = existing
    await Outcomes(s.workflow, request, request_id).finish(
        item, Status.REJECTED, ReasonCode(verdict.end_code), verdict.message
    )


async def _await_approval(record: BatchRecord, s: BatchServices) -> None:
    """Waiting for the batch's decision: look again when APPROVAL_TIMEOUT_SECONDS is over (a
    decision moves the chain on, and this message is then a finished step's copy)."""
    now = s.clock()
    if batch_approval_expired(record, now, s.approval_timeout_seconds):
        expired = {"decision": "expired", "at": iso(now)}
        log.info("batch approval expired", extra={"event": "batch_approval_expired", "batchId": record.batch_id})
        await _advance(record, s, 0, state=BatchState.RUNNING, approval=expired)
        return
    since = record.expanded_at or record.created_at
    remaining = s.approval_timeout_seconds - (now - since).total_seconds()
    await send_tick(s, record.batch_id, record.tick, max(1, min(round(remaining) + 1, MAX_DELAY_SECONDS)))


# ====================================================================== a batch's approval


@dataclass(frozen=True)
class BatchDecided:
    view: BatchView


@dataclass(frozen=True)
class UnknownBatch:
    pass


@dataclass(frozen=True)
class BatchNotAwaiting:
    """409: the batch is not awaiting a decision and none of its items is."""


@dataclass(frozen=True)
class BatchSamePerson:
    detail: str = "four eyes: the approver may not be the batch's requestedBy"


BatchDecisionResult = BatchDecided | UnknownBatch | BatchNotAwaiting | BatchSamePerson


async def decide_batch(
    s: BatchServices, batch_id: str, decision: Decision, approver: str, comment: str | None = None
) -> BatchDecisionResult:
    """One decision for a whole batch (docs/contract.md#approval-api): the items to come are released
    approved (or end `rejected` / `approval_denied`), and items held now are decided the same way."""
    assert s.workflow is not None, "the composition root gives batch approval the workflow's ports"
    for _ in range(3):
        record = await s.store.get(batch_id)
        if record is None:
            return UnknownBatch()
        if approver.strip().casefold() == str(record.fields.get("requestedBy", "")).strip().casefold():
            return BatchSamePerson()
        held = [row.request_id for row in await _rows(record, s) if row.status == Status.AWAITING_APPROVAL.value]
        waiting = record.state is BatchState.AWAITING_APPROVAL
        if record.approval is not None or (not waiting and not held) or record.state is BatchState.DONE:
            return BatchNotAwaiting()
        entry = approval_entry(decision, approver, s.clock(), comment)
        changes: dict[str, Any] = {"approval": entry}
        if waiting:
            changes["state"] = BatchState.RUNNING
            await send_tick(s, batch_id, record.tick + 1, 0)
            changes["tick"] = record.tick + 1
        try:
            await s.store.replace(replace(record, **changes))
        except StorageConflict:
            continue  # changed meanwhile: decide on what it is now
        await decide_many(s.workflow, held, decision, approver, comment)
        log.info(
            "batch decided",
            extra={"event": "batch_decision", "batchId": batch_id, "decision": decision, "heldItems": len(held)},
        )
        view = await read_batch(s, batch_id, details=False)
        assert view is not None
        return BatchDecided(view)
    return BatchNotAwaiting()


async def _rows(record: BatchRecord, s: BatchServices) -> list[ItemRow]:
    items = record.items or 0
    return await s.items.rows(record.batch_id, items, details=False) if items else []


async def _load_items(
    record: BatchRecord, s: BatchServices, first: int, last: int, read: dict[int, list[list[str]]] | None = None
) -> list[DeviceRef]:
    """Items first..last (1-based). `read` keeps the chunks read so far for the next call of the
    same step: a chunk never changes (its name holds the batch's payload hash)."""
    refs: list[DeviceRef] = []
    read = {} if read is None else read
    for index in range(chunk_of(first), chunk_of(last) + 1):
        chunk = read.get(index)
        if chunk is None:
            read.clear()  # a step moves forward through the chunks: keep the one it is in
            chunk = read[index] = await s.store.read_chunk(record.batch_id, record.payload_hash, index)
        base = index * CHUNK_ITEMS
        for offset, (kind, value) in enumerate(chunk):
            if first <= base + offset + 1 <= last:
                refs.append(DeviceRef.model_validate({kind: value}))
    return refs


async def _watch(record: BatchRecord, s: BatchServices) -> None:
    """Every item released: done when every item has a final outcome, else look again later."""
    items = record.items or 0
    done = progress(items, await s.items.rows(record.batch_id, items, details=False))
    if not done.complete:
        await _advance(record, s, s.pacing.monitor_seconds(items))
        return
    now = s.clock()
    event = batch_done_event(record, done, now, derived_event_id("batch-done", record.batch_id))
    try:
        await s.store.replace(replace(record, state=BatchState.DONE, done_at=now, done_event_json=event))
    except StorageConflict:
        # Another copy of this step, or this very write whose answer was lost: whoever recorded the
        # event, it is published (again: the same id, consumers de-duplicate).
        fresh = await s.store.get(record.batch_id)
        if fresh is None or fresh.state is not BatchState.DONE or not fresh.done_event_json:
            return
        event = fresh.done_event_json
    await s.publisher.publish(event)
    log.info(
        "batch done", extra={"event": "batch_done", "batchId": record.batch_id, "items": items, "counts": done.counts}
    )


# ====================================================================== reading a batch


@dataclass(frozen=True)
class BatchView:
    record: BatchRecord
    progress: Progress
    rows: list[ItemRow]

    @property
    def state(self) -> BatchState:
        if (
            self.record.state is BatchState.RUNNING
            and self.record.cursor >= (self.record.items or 0)
            and (self.progress.complete)
        ):
            return BatchState.DONE  # every item final; the done event follows within one check
        return self.record.state


async def read_batch(s: BatchServices, batch_id: str, *, details: bool) -> BatchView | None:
    record = await s.store.get(batch_id)
    if record is None:
        return None
    items = record.items or 0
    rows = await s.items.rows(batch_id, items, details=details) if items else []
    return BatchView(record, progress(items, rows), rows)


async def item_identifiers(s: BatchServices, record: BatchRecord) -> list[DeviceRef]:
    items = record.items or 0
    return await _load_items(record, s, 1, items) if items else []


def _json(body: bytes) -> Any:
    raw = body.strip()
    if raw and not raw.startswith((b"{", b"[")):
        try:
            raw = base64.b64decode(raw, validate=True).strip()
        except (binascii.Error, ValueError):
            return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None
