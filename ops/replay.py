"""Repair after a fix: re-submit failed requests, move parked poison messages back.

Design in docs/decisions/0008-poison-replay.md. In short:

- A failed request cannot run again under its own requestId: the contract allows one final event per
  requestId, and a redelivery only republishes it. A replay is therefore a NEW request with the
  same payload (correlationId kept) under the derived id `<id>-r1` (`<base>-rN` becomes
  `<base>-rN+1`). The id is deterministic and the ledger record is created before the message is
  sent, with a conditional insert, so running the same replay twice replays once.
- By default only requests whose action never reached Intune are replayed; one that was submitted
  (a device-reported failure, a confirmation timeout) would reset the device again, which needs
  `--repeat-action`.
- Messages still sitting in a poison queue (the app was stopped, or its poison triggers failed)
  go back to the queue they came from unchanged; the ledger makes a duplicate harmless.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from azure.core.exceptions import ResourceNotFoundError

from ops.selection import reason_code
from ops.store import OpsStore
from shared.core.clock import iso
from shared.core.contract import REQUEST_ID_PATTERN, ResetRequest, Status, validate_request
from shared.core.lifecycle import LedgerRecord, State
from shared.workflow.submit import submit_request

REPLAYABLE_STATUSES = (Status.FAILED.value, Status.TIMED_OUT.value)
MAX_REQUEST_ID = 128
_REPLAY_SUFFIX = re.compile(r"^(?P<base>.+)-r(?P<n>[0-9]{1,6})$")

Verdict = Literal["replay", "resend", "skip"]


def replay_id(request_id: str) -> str:
    """`INC1` -> `INC1-r1`, `INC1-r1` -> `INC1-r2`; the base is shortened to keep 128 characters."""
    match = _REPLAY_SUFFIX.match(request_id)
    base, number = (match.group("base"), int(match.group("n")) + 1) if match else (request_id, 1)
    suffix = f"-r{number}"
    return base[: MAX_REQUEST_ID - len(suffix)] + suffix


@dataclass(frozen=True)
class ReplayItem:
    source: LedgerRecord
    verdict: Verdict
    why: str
    new_id: str | None = None
    request: ResetRequest | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "requestId": self.source.request_id,
            "status": self.source.state,
            "reasonCode": reason_code(self.source),
            "newRequestId": self.new_id,
            "verdict": self.verdict,
            "why": self.why,
        }


async def plan_replay(store: OpsStore, sources: list[LedgerRecord], *, repeat_action: bool) -> list[ReplayItem]:
    """What a replay of these records would do; reads only."""
    return [await _plan_one(store, source, repeat_action=repeat_action) for source in sources]


async def _plan_one(store: OpsStore, source: LedgerRecord, *, repeat_action: bool) -> ReplayItem:
    if not source.final or source.state not in REPLAYABLE_STATUSES:
        state = source.state if source.final else f"{source.state} (not final)"
        return ReplayItem(source, "skip", f"{state}: only failed and timed_out requests are replayed")
    if source.submitted_at is not None and not repeat_action:
        return ReplayItem(
            source,
            "skip",
            f"the action reached Intune at {iso(source.submitted_at)}; a replay would reset the device "
            "again (--repeat-action)",
        )
    document = json.loads(source.request_json)
    new_id = replay_id(source.request_id)
    request = validate_request({**document, "requestId": new_id})
    if not isinstance(request, ResetRequest):
        return ReplayItem(source, "skip", f"the recorded request no longer validates: {request.message}")
    existing = await store.ledger.get(new_id)
    if existing is None:
        return ReplayItem(source, "replay", "re-submit as a new request", new_id, request)
    if existing.payload_hash != request.payload_hash():
        return ReplayItem(source, "skip", f"requestId {new_id} is taken by a different request", new_id)
    if existing.state is State.QUEUED:
        return ReplayItem(source, "resend", f"replayed as {new_id} but still queued: send its message again",
                          new_id, request)
    return ReplayItem(source, "skip", f"already replayed as {new_id} ({existing.state})", new_id)


async def execute_replay(store: OpsStore, item: ReplayItem, now: datetime, operator: str) -> ReplayItem:
    """Free the device, then submit the new request like `POST /api/resets` does (shared/workflow/submit.py):
    its ledger record conditionally, then its message."""
    assert item.request is not None and item.new_id is not None
    if item.source.submitted_at is None and item.source.device_id:
        # The failed request never acted; its cooldown claim (if any is left) must not block its replay.
        await store.ledger.release_device(item.source.device_id, item.source.request_id)
    submission = await submit_request(
        item.request,
        ledger=store.ledger,
        queue=store.queue(store.settings.requests_queue),
        now=now,
        note=f"replay of {item.source.request_id} by {operator}",
    )
    if not submission.enqueued:
        # Another replay won the insert between plan and execute, and it is not ours or not queued.
        state = "another request" if submission.conflict else submission.record.state.value
        return ReplayItem(item.source, "skip", f"{item.new_id} was created meanwhile ({state})", item.new_id)
    done = "replayed" if item.verdict == "replay" else "sent again"
    return ReplayItem(item.source, item.verdict, f"{done} as {item.new_id}", item.new_id, item.request)


# ---------------------------------------------------------------- poison queues


@dataclass(frozen=True)
class PoisonMessage:
    queue: str
    target: str
    request_id: str | None
    inserted_on: str | None
    dequeue_count: int | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "target": self.target,
            "requestId": self.request_id,
            "insertedOn": self.inserted_on,
            "dequeueCount": self.dequeue_count,
        }


@dataclass(frozen=True)
class PoisonQueue:
    name: str
    target: str
    approximate_count: int
    peeked: list[PoisonMessage]


async def inspect_poison(store: OpsStore) -> list[PoisonQueue]:
    """Each poison queue's approximate length and its first 32 messages (peeked, not taken)."""
    result = []
    for name, target in store.poison_routes:
        client = store.queue(name)
        try:
            properties = await client.get_queue_properties()
            messages = await client.peek_messages(max_messages=32)
        except ResourceNotFoundError:
            result.append(PoisonQueue(name, target, 0, []))
            continue
        peeked = [_poison_message(name, target, message) for message in messages]
        result.append(PoisonQueue(name, target, int(properties.approximate_message_count or 0), peeked))
    return result


async def move_poison(
    store: OpsStore, limit: int, on_moved: Callable[[PoisonMessage], None] | None = None
) -> list[PoisonMessage]:
    """Move up to `limit` messages back to their queues: send the copy first, then delete."""
    moved: list[PoisonMessage] = []
    for name, target in store.poison_routes:
        source, destination = store.queue(name), store.queue(target)
        while len(moved) < limit:
            batch_size = min(32, limit - len(moved))
            try:
                batch = [
                    message
                    async for message in source.receive_messages(
                        messages_per_page=batch_size, max_messages=batch_size, visibility_timeout=300
                    )
                ]
            except ResourceNotFoundError:
                break
            if not batch:
                break
            for message in batch:
                await destination.send_message(message.content)
                await source.delete_message(message)
                entry = _poison_message(name, target, message)
                moved.append(entry)
                if on_moved is not None:
                    on_moved(entry)
    return moved


def _poison_message(queue: str, target: str, message: Any) -> PoisonMessage:
    inserted = getattr(message, "inserted_on", None)
    return PoisonMessage(
        queue=queue,
        target=target,
        request_id=_request_id_of(message.content),
        inserted_on=iso(inserted) if isinstance(inserted, datetime) else None,
        dequeue_count=getattr(message, "dequeue_count", None),
    )


def _request_id_of(content: Any) -> str | None:
    """The requestId of a request or follow-up message (plain or base64 JSON), if readable."""
    text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content or "")
    candidates = [text]
    try:
        candidates.append(base64.b64decode(text.strip(), validate=True).decode("utf-8"))
    except (binascii.Error, ValueError):
        pass
    for candidate in candidates:
        try:
            document = json.loads(candidate)
        except ValueError:
            continue
        value = document.get("requestId") if isinstance(document, dict) else None
        if isinstance(value, str) and re.fullmatch(REQUEST_ID_PATTERN, value):
            return value
    return None
