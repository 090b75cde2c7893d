"""The one way a request enters the system from outside the request queue: the HTTP API's
`POST /api/resets` and the ops CLI's replay both record the request as `queued` and enqueue it.

The ledger record comes first, with a conditional insert, so a repeat of the same request finds
it; the message is (re)sent while the record is still `queued`, because a first submission may
have died between the two writes and the ledger makes a duplicate message harmless. The message
carries the caller's trace context (docs/decisions/0009-trace-context.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from shared.core.contract import ResetRequest
from shared.core.errors import StorageConflict
from shared.core.lifecycle import LedgerRecord, State, new_record
from shared.observability import telemetry
from shared.ports import Ledger, MessageQueue


@dataclass(frozen=True)
class Submission:
    record: LedgerRecord
    created: bool  # this call created the record (False: a repeat found it)
    conflict: bool  # the requestId already belongs to a request with another payload

    @property
    def enqueued(self) -> bool:
        return not self.conflict and self.record.state is State.QUEUED


async def submit_request(
    request: ResetRequest,
    *,
    ledger: Ledger,
    queue: MessageQueue,
    now: datetime,
    note: str,
    submitted_by: str | None = None,
    batch_id: str | None = None,
    approval: dict[str, Any] | None = None,
) -> Submission:
    """Record `request` as queued (idempotent per requestId) and put it on the request queue.

    `submitted_by` (the authenticated HTTP caller) is recorded with the first submission; it is not
    part of the request or its payload hash, so a repeat by someone else is still the same request
    and keeps the first submitter. A batch item (shared/workflow/batches.py) names its `batch_id`,
    and carries its batch's `approval` once the batch is approved (never held again)."""
    try:
        record = new_record(request, State.QUEUED, now, note, submitted_by=submitted_by, batch_id=batch_id)
        record = await ledger.create(replace(record, approval=approval) if approval else record)
        created = True
    except StorageConflict:
        existing = await ledger.get(str(request.requestId))
        if existing is None:
            raise
        record, created = existing, False
    submission = Submission(record, created, conflict=record.payload_hash != request.payload_hash())
    if submission.enqueued:
        await queue.send_message(request.to_message(telemetry.current_trace_context()))
    return submission
