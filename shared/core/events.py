"""Outcome events: CloudEvents 1.0 JSON built from the contract models (docs/contract.md#outcome-events)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from shared.core.clock import iso
from shared.core.contract import (
    EVENT_TYPE_PREFIX,
    ApprovalRecord,
    EventDevice,
    EventReason,
    OutcomeData,
    OutcomeEvent,
    ReasonCode,
    ResetRequest,
    Status,
)

# Namespace for event ids derived from a message (events that have no ledger record to live in).
_EVENT_NAMESPACE = uuid.UUID("0f6f2a0e-3f53-4c3a-9a59-6f1a3c7e2b11")


def derived_event_id(*parts: str) -> str:
    """A stable CloudEvents id: a redelivered message republishes the same event, same id."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, "\x1f".join(parts)))


def new_event_id() -> str:
    return str(uuid.uuid4())


def build_event(
    *,
    event_id: str,
    now: datetime,
    status: Status,
    request: ResetRequest | None,
    request_id: str | None,
    reason: tuple[ReasonCode, str] | None = None,
    device: EventDevice | None = None,
    action: str | None = None,
    scope: str | None = None,
    attempt: int = 0,
    trace_context: Mapping[str, str] | None = None,
    submitted_by: str | None = None,
    batch_id: str | None = None,
    approval: Mapping[str, Any] | None = None,
) -> OutcomeEvent:
    """The outcome event; `trace_context` (traceparent, tracestate) becomes the CloudEvents
    distributed tracing extension attributes."""
    data = OutcomeData(
        requestId=request_id,
        correlationId=request.correlationId if request else None,
        status=status,
        action=action,  # type: ignore[arg-type]
        scope=scope,  # type: ignore[arg-type]
        device=device,
        reason=EventReason(code=reason[0], message=reason[1][:500]) if reason else None,
        requestReason=request.reason if request else None,
        requestedBy=request.requestedBy if request else None,
        ticketId=request.ticketId if request else None,
        attempt=attempt,
        submittedBy=submitted_by,
        batchId=batch_id,
        approval=ApprovalRecord.model_validate(dict(approval)) if approval else None,
    )
    return OutcomeEvent(
        id=event_id,
        type=EVENT_TYPE_PREFIX + status.value,
        subject=request_id,
        time=iso(now),
        data=data,
        traceparent=(trace_context or {}).get("traceparent"),
        tracestate=(trace_context or {}).get("tracestate"),
    )


def event_json(event: OutcomeEvent) -> str:
    # Extension attributes are left out rather than null when there is no trace context.
    absent = {name for name in ("traceparent", "tracestate") if getattr(event, name) is None}
    return event.model_dump_json(exclude=absent)
