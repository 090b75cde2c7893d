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

from shared.core.batches import (
    CHUNK_ITEMS,
    Batch,
    BatchRecord,
    BatchState,
    ItemRow,
    Pacing,
    Progress,
    RowError,
    TooLarge,
    batch_done_event,
    batch_rejected_event,
    chunk_of,
    chunks,
    group_items,
    item_request,
    new_batch_record,
    progress,
    read_batch_json,
)
from shared.core.contract import MAX_MESSAGE_BYTES, DeviceRef
from shared.core.errors import GraphPermanentError, GraphTransientError, StorageConflict
from shared.core.events import derived_event_id
from shared.observability import logs
from shared.ports import BatchItems, BatchStore, DelayedQueue, EventPublisher, GroupDirectory, Ledger
from shared.workflow.submit import submit_request

log = logging.getLogger("passcode_reset")

TICK_KEY = "batchTick"
EARLY_RETRY_SECONDS = 2
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
        fresh = new_batch_record(batch, s.clock())
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
    elif record.state is BatchState.RUNNING and record.cursor < (record.items or 0):
        await _release(record, s)
    elif record.state is BatchState.RUNNING:
        await _watch(record, s)


async def _advance(record: BatchRecord, s: BatchServices, delay: int, **changes: Any) -> None:
    """Send the next step's message, then record the step as done."""
    await send_tick(s, record.batch_id, record.tick + 1, delay)
    try:
        await s.store.replace(replace(record, tick=record.tick + 1, **changes))
    except StorageConflict:
        log.info("batch changed meanwhile; the other step goes on", extra={"batchId": record.batch_id})


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
    await _advance(record, s, 0, items=len(refs), state=BatchState.RUNNING, expanded_at=now)


async def _release(record: BatchRecord, s: BatchServices) -> None:
    """Items go to the request queue for up to `RELEASE_WINDOW_SECONDS`, a few at a time, so that
    the queue holds about `Pacing.target_depth` messages: the pipeline never runs dry, and a single
    request waits behind a short queue (docs/decisions/0018-batch-expansion-and-pacing.md). The
    cursor is recorded after each round, so a crash repeats at most one round (harmlessly)."""
    deadline = asyncio.get_running_loop().time() + RELEASE_WINDOW_SECONDS
    items = record.items or 0
    while record.cursor < items:
        count = s.pacing.release_count(record, await s.requests_queue.depth())
        if count:
            await _release_items(record, s, record.cursor + 1, record.cursor + count)
            cursor = record.cursor + count
            changes: dict[str, Any] = {"cursor": cursor}
            if cursor >= items:
                changes["released_at"] = s.clock()
            try:
                record = await s.store.replace(replace(record, **changes))
            except StorageConflict:
                log.info("batch changed meanwhile; the other step goes on", extra={"batchId": record.batch_id})
                return
        if asyncio.get_running_loop().time() >= deadline:
            break
        if record.cursor < items:
            await asyncio.sleep(RELEASE_ROUND_SECONDS)
    await _advance(record, s, 0)


async def _release_items(record: BatchRecord, s: BatchServices, first: int, last: int) -> None:
    refs = await _load_items(record, s, first, last)
    semaphore = asyncio.Semaphore(RELEASE_CONCURRENCY)

    async def release(n: int, ref: DeviceRef) -> None:
        async with semaphore:
            request = item_request(record, n, ref)
            submission = await submit_request(
                request,
                ledger=s.ledger,
                queue=s.requests_queue,
                now=s.clock(),
                note="batch item",
                batch_id=record.batch_id,
            )
            if submission.conflict:
                # The request id is taken by another request: the request queue publishes
                # `rejected` / `request_conflict` for this item.
                await s.requests_queue.send_message(request.to_message())

    await asyncio.gather(*(release(first + i, ref) for i, ref in enumerate(refs)))


async def _load_items(record: BatchRecord, s: BatchServices, first: int, last: int) -> list[DeviceRef]:
    refs: list[DeviceRef] = []
    for index in range(chunk_of(first), chunk_of(last) + 1):
        chunk = await s.store.read_chunk(record.batch_id, record.payload_hash, index)
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
        return  # another copy of this step recorded it; it publishes
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
