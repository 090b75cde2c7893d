"""The approval use case: a human approves or denies a request that is awaiting approval
(docs/contract.md#approval-api). Used by `POST /api/resets/{requestId}/approval`, the ops CLI
(`python -m ops approve|deny`) and, for every item of a batch, the batch approval route.

The rules (may this person decide, is there anything to decide) are pure: shared/core/approvals.py.
Here: the ledger write, conditional on the record that was read, so of two concurrent decisions
exactly one wins and the other gets `NotAwaiting` (409); then, for an approval, the request goes
back on the request queue, and for a denial its final event is published.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from shared.core.approvals import Approve, Decision, NotAwaiting, SamePerson, on_decision
from shared.core.contract import ResetRequest
from shared.core.errors import StorageConflict
from shared.core.lifecycle import LedgerRecord
from shared.observability import telemetry
from shared.workflow.outcome import Outcomes, log_fields
from shared.workflow.services import Services

log = logging.getLogger("passcode_reset")
audit_log = logging.getLogger("passcode_reset.audit")

# An approved request is enqueued twice: a delayed copy before the ledger write (so that a crash
# right after the write loses nothing) and an immediate one after it. The ledger makes the second
# delivery harmless; a copy that arrives while the record still awaits approval republishes.
SAFETY_COPY_DELAY_SECONDS = 10
_ATTEMPTS = 3


@dataclass(frozen=True)
class Decided:
    """The decision is recorded; `record` is the request as it is now."""

    record: LedgerRecord


@dataclass(frozen=True)
class UnknownRequest:
    """404: no request has this requestId."""


DecisionResult = Decided | UnknownRequest | NotAwaiting | SamePerson


async def decide(
    services: Services, request_id: str, decision: Decision, approver: str, comment: str | None = None
) -> DecisionResult:
    """Record `approver`'s decision on a request awaiting approval and carry it out."""
    for _ in range(_ATTEMPTS):
        record = await services.ledger.get(request_id)
        if record is None:
            return UnknownRequest()
        verdict = on_decision(record, decision, approver, comment, services.clock())
        if isinstance(verdict, NotAwaiting | SamePerson):
            _audit(request_id, decision, approver, type(verdict).__name__)
            return verdict
        request = ResetRequest.model_validate_json(record.request_json)
        outcomes = Outcomes(services, request, request_id)
        if isinstance(verdict, Approve):
            message = request.to_message(telemetry.current_trace_context())
            await services.scheduler.requeue_request(message, SAFETY_COPY_DELAY_SECONDS)
            try:
                approved = await services.ledger.replace(verdict.record)
            except StorageConflict:
                continue  # changed meanwhile: decide again on what it is now
            await services.scheduler.requeue_request(message, 0)
            log.info("request approved", extra=log_fields(request, approved, approver=approver))
            _audit(request_id, decision, approver, "approved")
            return Decided(approved)
        if not await outcomes.finish(
            verdict.record, verdict.finish.status, verdict.finish.code, verdict.finish.message
        ):
            continue  # someone else ended it meanwhile: the next look says 409
        _audit(request_id, decision, approver, "denied")
        return Decided(await outcomes.reload())
    return NotAwaiting()


async def decide_many(
    services: Services, request_ids: Iterable[str], decision: Decision, approver: str, comment: str | None = None
) -> dict[str, DecisionResult]:
    """The same decision for several requests (a batch's items); each is decided on its own."""
    return {request_id: await decide(services, request_id, decision, approver, comment) for request_id in request_ids}


def _audit(request_id: str, decision: Decision, approver: str, outcome: str) -> None:
    audit_log.info(
        "approval %s",
        outcome,
        extra={
            "event": "approval_decision",
            "requestId": request_id,
            "decision": decision,
            "principal": approver,
            "outcome": outcome,
        },
    )
