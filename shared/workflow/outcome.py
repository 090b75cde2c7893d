"""The one outcome path: build an event, record it on the ledger, publish it, log and count it.

Every outcome of a request goes through `Outcomes`: a final status (`finish`), the `submitted`
event (`submitted`), the recorded event again after a redelivery (`republish`), and the two
outcomes that have no record of their own (`unrecorded`: an invalid message, a requestId reused
with another payload). The ledger write comes first and is conditional: whoever loses the race
republishes the winner's event, so a request never gets two different final events
(docs/contract.md#guarantees, docs/decisions/0001-outcome-event-identity.md).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from shared.core.approvals import approval_expiry, on_approval_check
from shared.core.contract import EventDevice, ReasonCode, ResetRequest, Status
from shared.core.errors import StorageConflict
from shared.core.events import build_event, event_json, new_event_id
from shared.core.lifecycle import FollowUp, LedgerRecord, State, first_followup
from shared.observability import telemetry
from shared.workflow.services import Services

log = logging.getLogger("passcode_reset")


class Outcomes:
    """The outcomes of one request (`request` is None for a message that is not a valid request)."""

    def __init__(self, services: Services, request: ResetRequest | None, request_id: str | None) -> None:
        self.s = services
        self.request = request
        self.request_id = request_id

    async def unrecorded(self, status: Status, code: ReasonCode, message: str, event_id: str) -> None:
        """An outcome with no ledger record: its id is derived from the message, so a redelivery
        publishes the same event again."""
        with telemetry.step("publish", status=status.value, reasonCode=code.value):
            await self._emit(self._event(None, status, (code, message), event_id))

    async def finish(self, record: LedgerRecord, status: Status, code: ReasonCode | None, message: str = "") -> bool:
        """Record the final outcome, then publish it; a lost race republishes the winner's (False)."""
        with telemetry.step("publish", status=status.value, reasonCode=code.value if code else None):
            now = self.s.clock()
            reason = (code, message) if code is not None else None
            note = f"{code}: {message}" if code is not None else None
            event = self._event(record, status, reason, new_event_id())
            try:
                await self.s.ledger.replace(record.moved_to(State.of(status), now, note, last_event_json=event))
            except StorageConflict:
                await self.republish(await self.reload())  # whoever won recorded the outcome
                return False
            await self._emit(event)
            return True

    async def hold(self, record: LedgerRecord, code: ReasonCode, message: str) -> None:
        """Hold the request for a human: record and publish `awaiting_approval`, schedule the check
        that ends the wait after APPROVAL_TIMEOUT_SECONDS (docs/contract.md#approval-rules)."""
        with telemetry.step("publish", status=Status.AWAITING_APPROVAL.value, reasonCode=code.value):
            now = self.s.clock()
            event = self._event(record, Status.AWAITING_APPROVAL, (code, message), new_event_id())
            target = record.moved_to(
                State.AWAITING_APPROVAL, now, f"{code}: {message}", held_at=now, last_event_json=event
            )
            try:
                await self.s.ledger.replace(target)
            except StorageConflict:
                await self.republish(await self.reload())
                return
            await self._emit(event)
            await self.follow_up(approval_expiry(self.s.policy), kind="approval")

    async def submitted(self, record: LedgerRecord) -> None:
        """Intune accepted the action: record and publish `submitted`, schedule the first check."""
        with telemetry.step("publish", status=Status.SUBMITTED.value):
            now = self.s.clock()
            event = self._event(record, Status.SUBMITTED, None, new_event_id())
            target = record.moved_to(State.SUBMITTED, now, submitted_at=now, last_event_json=event)
            try:
                await self.s.ledger.replace(target)
            except StorageConflict:
                fresh = await self.reload()
                if fresh.final or fresh.state is State.SUBMITTED:
                    await self.republish(fresh)
                    return
                await self.s.ledger.replace(replace(target, etag=fresh.etag, history=fresh.history))
            await self._emit(event)
            await self.follow_up(first_followup(self.s.policy))

    async def republish(self, record: LedgerRecord) -> None:
        """The recorded event again, unchanged (same id, and the traceparent of its first publication)."""
        with telemetry.step("publish", status=record.state.value, republished=True):
            if record.last_event_json:
                await self.s.publisher.publish(record.last_event_json)
                log.info("republished recorded outcome", extra=log_fields(self.request, record))
            if record.state is State.SUBMITTED:
                await self.follow_up(first_followup(self.s.policy))
            elif record.state is State.AWAITING_APPROVAL:
                # The expiry check again (a crash may have lost the first); duplicates are harmless.
                check = on_approval_check(record, self.s.clock(), self.s.policy)
                await self.follow_up(check if isinstance(check, FollowUp) else FollowUp(1, 0), kind="approval")

    async def follow_up(self, follow_up: FollowUp, *, kind: str = "confirm") -> None:
        """A delayed check on the follow-up queue: `confirm` (the device) or `approval` (expiry)."""
        fields = {"requestId": self.request_id, "check": follow_up.check}
        if kind != "confirm":
            fields["kind"] = kind
        body = json.dumps({**fields, **telemetry.current_trace_context()})
        await self.s.scheduler.schedule_followup(body, follow_up.delay)

    async def reload(self) -> LedgerRecord:
        assert self.request_id is not None
        record = await self.s.ledger.get(self.request_id)
        if record is None:
            raise StorageConflict(f"ledger record {self.request_id} disappeared")
        return record

    def _event(
        self, record: LedgerRecord | None, status: Status, reason: tuple[ReasonCode, str] | None, event_id: str
    ) -> str:
        device = None
        if record is not None and record.device_json:
            device = EventDevice.model_validate_json(record.device_json)
        elif record is not None and record.device_id:
            device = EventDevice(id=record.device_id, platform="unknown")
        shows_action = record is not None and status is not Status.UNSUPPORTED
        event = build_event(
            event_id=event_id,
            now=self.s.clock(),
            status=status,
            request=self.request,
            request_id=self.request_id,
            reason=reason,
            device=device,
            action=record.action if shows_action and record else None,
            scope=record.scope if shows_action and record else None,
            attempt=record.attempt if record else 0,
            trace_context=telemetry.current_trace_context(),
            submitted_by=record.submitted_by if record else None,
            batch_id=record.batch_id if record else None,
            approval=record.approval if record else None,
        )
        return event_json(event)

    async def _emit(self, event: str) -> None:
        await self.s.publisher.publish(event)
        log_outcome(json.loads(event)["data"])


def log_fields(request: ResetRequest | None, record: LedgerRecord, **extra: Any) -> dict[str, Any]:
    return {
        "requestId": record.request_id,
        "correlationId": request.correlationId if request else None,
        "deviceId": record.device_id,
        "platform": record.platform,
        "action": record.action,
        "state": record.state.value,
        **extra,
    }


def log_outcome(data: dict[str, Any]) -> None:
    """The outcome log record (customDimensions event=outcome, docs/operations.md) and counter."""
    reason = data.get("reason") or {}
    device = data.get("device") or {}
    telemetry.count_outcome(data.get("status"), device.get("platform"), reason.get("code"))
    log.info(
        "outcome %s",
        data.get("status"),
        extra={
            "event": "outcome",
            "requestId": data.get("requestId"),
            "correlationId": data.get("correlationId"),
            "status": data.get("status"),
            "reasonCode": reason.get("code"),
            "platform": device.get("platform"),
            "deviceId": device.get("id"),
            "action": data.get("action"),
            "attempt": data.get("attempt"),
        },
    )
