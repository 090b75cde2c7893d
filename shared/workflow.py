"""The use cases: handle a reset request, confirm a submitted action, settle poison messages.

Handlers receive their adapters (Graph gateway, ledger, publisher, scheduler, clock) in a
`Services` object and hold no other state. The ledger record is the truth about a request; every
step is a conditional write on it, so redeliveries and concurrent duplicates converge on one
action call and one final event (same CloudEvents id when republished).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from shared import logs, telemetry
from shared.contract import (
    EventDevice,
    InvalidRequest,
    ReasonCode,
    ResetRequest,
    Status,
    read_request_message,
)
from shared.errors import (
    ActionOutcomeUnknown,
    GraphBudgetExhausted,
    GraphPermanentError,
    GraphTransientError,
    StorageConflict,
)
from shared.events import EventPublisher, build_event, derived_event_id, event_json, new_event_id
from shared.intune import ActionResult, IntuneDevice, IntuneGateway, TooManyCandidates, latest_result
from shared.ledger import ACTING, PROCESSING, QUEUED, Ledger, LedgerRecord, iso, new_record
from shared.platforms import Action, Decision, choose_action

log = logging.getLogger("passcode_reset")

# Device action states (Graph `actionState`) that end the confirmation.
_FINAL_ACTION_STATES = {
    "done": (Status.COMPLETED, None),
    "failed": (Status.FAILED, ReasonCode.ACTION_FAILED),
    "canceled": (Status.FAILED, ReasonCode.ACTION_CANCELED),
    "notsupported": (Status.FAILED, ReasonCode.ACTION_NOT_SUPPORTED),
}


class WorkScheduler(Protocol):
    async def requeue_request(self, body: str, delay_seconds: int) -> None: ...
    async def schedule_followup(self, body: str, delay_seconds: int) -> None: ...


@dataclass(frozen=True)
class Policy:
    cooldown_seconds: int = 900
    confirm_first_check_seconds: int = 60
    confirm_timeout_seconds: int = 86400
    request_deadline_seconds: int = 3600
    max_action_attempts: int = 5
    # An action call older than this is over (Graph client timeout 30 s): if it left no trace in
    # deviceActionResults it did not reach Intune, and the action may be called again.
    action_lease_seconds: int = 60
    # Clock skew allowed between this app and Intune when matching deviceActionResults.
    clock_tolerance_seconds: int = 30
    max_defer_seconds: int = 300
    max_followup_interval_seconds: int = 3600


@dataclass(frozen=True)
class Services:
    gateway: IntuneGateway
    ledger: Ledger
    publisher: EventPublisher
    scheduler: WorkScheduler
    clock: Callable[[], datetime]
    policy: Policy


class _Defer(Exception):
    """Try this request again later (throttling, transient errors, another delivery at work).

    `cause` is a short word for logs and the deferral counter: graph_throttled (Graph answered
    429), graph_budget (the app's own Graph budget), graph_unavailable (other transient Graph
    errors), ledger_conflict, concurrent_delivery, action_in_flight, action_unconfirmed."""

    def __init__(self, seconds: float, why: str, cause: str) -> None:
        super().__init__(why)
        self.seconds = seconds
        self.why = why
        self.cause = cause

    @classmethod
    def graph(cls, seconds: float, exc: GraphTransientError) -> _Defer:
        if isinstance(exc, GraphBudgetExhausted):
            cause = "graph_budget"
        elif exc.status == 429:
            cause = "graph_throttled"
        else:
            cause = "graph_unavailable"
        return cls(seconds, str(exc), cause)


# ====================================================================== request queue


async def handle_request(body: bytes, services: Services, *, message_id: str) -> None:
    """One message of the request queue; ends in an event, a deferral, or an exception to retry."""
    await _handle_request_message(body, services, message_id, poisoned=False)


async def handle_request_poison(body: bytes, services: Services, *, message_id: str) -> None:
    """A request that failed every delivery: make sure it still ends in exactly one final event."""
    await _handle_request_message(body, services, message_id, poisoned=True)


async def _handle_request_message(body: bytes, services: Services, message_id: str, *, poisoned: bool) -> None:
    message = read_request_message(body)
    name = "settle poisoned reset request" if poisoned else "process reset request"
    with telemetry.request_span(name, kind="consumer", incoming=message.trace_context) as span:
        parsed = message.request
        if isinstance(parsed, InvalidRequest):
            span.set("requestId", parsed.request_id)
            prefix = "invalid-poison" if poisoned else "invalid"
            await _publish_invalid(services, parsed, derived_event_id(prefix, message_id))
            return
        span.set("requestId", parsed.requestId)
        run = _RequestRun(services, parsed)
        await (run.settle_poison() if poisoned else run.run())


async def _publish_invalid(services: Services, invalid: InvalidRequest, event_id: str) -> None:
    logs.bind(requestId=invalid.request_id)
    with telemetry.step("publish"):
        event = build_event(
            event_id=event_id,
            now=services.clock(),
            status=Status.REJECTED,
            request=None,
            request_id=invalid.request_id,
            reason=(ReasonCode.INVALID_REQUEST, invalid.message),
            trace_context=telemetry.current_trace_context(),
        )
        await services.publisher.publish(event_json(event))
        _log_outcome(event.data.model_dump(mode="json"))


class _RequestRun:
    def __init__(self, services: Services, request: ResetRequest) -> None:
        self.s = services
        self.request = request
        self.request_id = str(request.requestId)
        self.payload_hash = request.payload_hash()
        logs.bind(requestId=self.request_id, correlationId=request.correlationId)

    # ------------------------------------------------------------------ entry points

    async def run(self) -> None:
        record = await self._load_or_create()
        if record is None:
            return
        try:
            await self._advance(record)
        except StorageConflict:
            # Another delivery of this request wrote the record meanwhile: look again shortly.
            await self._defer(_Defer(2, "ledger record changed concurrently", "ledger_conflict"))
        except _Defer as defer:
            await self._defer(defer)

    async def settle_poison(self) -> None:
        record = await self._load_or_create()
        if record is None:
            return
        if record.final or record.state == Status.SUBMITTED:
            await self.republish(record)
            return
        if record.state == ACTING:
            try:
                found = await self._find_our_action(record)
            except (GraphTransientError, GraphPermanentError):
                found = None
            if found is not None:
                await self._record_submitted(record)
                return
        await self._release_claim(record)
        await self.finish(
            record,
            Status.FAILED,
            ReasonCode.RETRIES_EXHAUSTED,
            "the request failed on every delivery and was moved to the poison queue",
        )

    async def confirm(self, record: LedgerRecord, check: int) -> None:
        """A follow-up check: final when the device reports the action done or failed."""
        if record.final:
            await self.republish(record)
            return
        if record.state != Status.SUBMITTED or record.submitted_at is None:
            log.warning("follow-up for a request that is not submitted", extra=self._log_fields(record))
            return
        policy = self.s.policy
        deadline = record.submitted_at + timedelta(seconds=policy.confirm_timeout_seconds)
        try:
            found = await self._find_our_action(record)
        except GraphTransientError as exc:
            delay = min(max(exc.retry_after or 30, 1), policy.max_followup_interval_seconds)
            await self._schedule_followup(round(delay), check=check)
            return
        except GraphPermanentError as exc:
            await self.finish(record, Status.FAILED, ReasonCode.GRAPH_REJECTED, f"cannot read the device: {exc}")
            return
        if found is not None and found.state.lower() in _FINAL_ACTION_STATES:
            status, code = _FINAL_ACTION_STATES[found.state.lower()]
            await self.finish(record, status, code, f"the device reported {found.state}" if code else "")
            return
        now = self.s.clock()
        if now >= deadline:
            await self.finish(
                record,
                Status.TIMED_OUT,
                ReasonCode.CONFIRMATION_TIMEOUT,
                f"the device did not confirm within {policy.confirm_timeout_seconds} s "
                f"(last state: {found.state if found else 'no result'})",
            )
            return
        interval = policy.confirm_first_check_seconds * 2 ** min(check, 12)
        delay = min(max(interval, 1), policy.max_followup_interval_seconds, (deadline - now).total_seconds() + 1)
        await self._schedule_followup(max(1, round(delay)), check=check + 1)

    # ------------------------------------------------------------------ the state machine

    async def _advance(self, record: LedgerRecord) -> None:
        for _ in range(4):
            if record.final:
                await self.republish(record)
                return
            if record.state == Status.SUBMITTED:
                await self.republish(record)
                return
            if record.state == ACTING:
                reconciled = await self._reconcile(record)
                if reconciled is None:
                    return
                record = reconciled
                continue
            if record.state in (PROCESSING, QUEUED):
                await self._process(record)
                return
            raise RuntimeError(f"ledger record {self.request_id} has unknown state {record.state!r}")
        raise _Defer(5, "ledger record kept changing", "ledger_conflict")

    async def _process(self, record: LedgerRecord) -> None:
        now = self.s.clock()
        if record.state == QUEUED:
            record = await self._write(record.moved_to(PROCESSING, now))
        if now - record.created_at > timedelta(seconds=self.s.policy.request_deadline_seconds):
            await self.finish(
                record,
                Status.FAILED,
                ReasonCode.RETRIES_EXHAUSTED,
                f"no action could be taken within {self.s.policy.request_deadline_seconds} s",
            )
            return

        with telemetry.step("resolve", deviceIdentifier=self.request.device.kind):
            device = await self._resolve_device(record)
        if device is None:
            return
        with telemetry.step("classify") as span:
            decision = choose_action(device.traits, allow_remote_lock=self.request.allowRemoteLock)
            record = replace(
                record,
                device_id=device.id,
                device_json=_device_summary(device, decision).model_dump_json(),
                platform=decision.platform.value,
                action=decision.action.value if decision.action else None,
                scope=decision.scope.value if decision.scope else None,
            )
            span.set("platform", record.platform)
            span.set("action", record.action)
        logs.bind(deviceId=device.id, platform=record.platform, action=record.action)
        if not decision.supported:
            await self.finish(record, Status.UNSUPPORTED, ReasonCode.PLATFORM_UNSUPPORTED, decision.why_not or "")
            return
        if self.request.dryRun:
            await self.finish(
                record,
                Status.DRY_RUN,
                ReasonCode.WOULD_RUN,
                f"dryRun: {decision.action} ({decision.scope}) would run on this device",
            )
            return
        with telemetry.step("act", action=record.action, scope=record.scope):
            await self._act(record, device, decision)

    async def _resolve_device(self, record: LedgerRecord) -> IntuneDevice | None:
        ref = self.request.device
        try:
            if ref.kind == "intuneDeviceId":
                found = await self.s.gateway.get_device(ref.value)
                candidates = [found] if found is not None and found.matches(ref.kind, ref.value) else []
            else:
                candidates = await self.s.gateway.find_devices(ref.kind, ref.value)
        except GraphTransientError as exc:
            raise _Defer.graph(self._backoff(record, exc.retry_after), exc) from None
        except TooManyCandidates as exc:
            await self.finish(record, Status.REJECTED, ReasonCode.AMBIGUOUS_DEVICE, str(exc))
            return None
        except GraphPermanentError as exc:
            await self.finish(record, Status.FAILED, ReasonCode.GRAPH_REJECTED, f"device lookup refused: {exc}")
            return None

        if not candidates:
            await self.finish(
                record, Status.REJECTED, ReasonCode.DEVICE_NOT_FOUND, f"no Intune device has this {ref.kind}"
            )
            return None
        if len(candidates) > 1:
            await self.finish(
                record,
                Status.REJECTED,
                ReasonCode.AMBIGUOUS_DEVICE,
                f"{len(candidates)} Intune devices share this {ref.kind}; use intuneDeviceId",
            )
            return None
        device = candidates[0]
        expected = self.request.expectedUserPrincipalName
        if expected is not None and (device.user_principal_name or "").casefold() != expected.casefold():
            record = replace(record, device_id=device.id)
            logs.bind(deviceId=device.id)
            await self.finish(
                record,
                Status.REJECTED,
                ReasonCode.USER_MISMATCH,
                "the device's primary user is not expectedUserPrincipalName",
            )
            return None
        return device

    async def _act(self, record: LedgerRecord, device: IntuneDevice, decision: Decision) -> None:
        assert decision.action is not None
        policy = self.s.policy
        if record.attempt >= policy.max_action_attempts:
            await self._release_claim(record)
            await self.finish(
                record,
                Status.FAILED,
                ReasonCode.RETRIES_EXHAUSTED,
                f"the action call failed {record.attempt} times",
            )
            return
        now = self.s.clock()
        claim = await self.s.ledger.claim_device(
            device.id, self.request_id, now, timedelta(seconds=policy.cooldown_seconds)
        )
        if not claim.granted:
            since = iso(claim.blocking_since) if claim.blocking_since else "recently"
            await self.finish(
                record,
                Status.REJECTED,
                ReasonCode.COOLDOWN,
                f"request {claim.blocking_request_id} reset this device at {since}; "
                f"a new reset is allowed {policy.cooldown_seconds} s after that",
            )
            return
        try:
            record = await self._write(
                record.moved_to(
                    ACTING, now, f"calling {decision.action}", attempt=record.attempt + 1, action_started_at=now
                )
            )
        except StorageConflict:
            raise _Defer(5, "another delivery of this request is at work", "concurrent_delivery") from None

        try:
            await self.s.gateway.perform(device.id, decision.action)
        except GraphTransientError as exc:
            # 429/503/connection refused: Intune did not take the action; try again later. A call
            # the app's own Graph budget held back was never sent: it is no attempt.
            delay = self._backoff(record, exc.retry_after)
            attempt = record.attempt - 1 if isinstance(exc, GraphBudgetExhausted) else record.attempt
            await self._write_quietly(
                record.moved_to(PROCESSING, self.s.clock(), f"action call: {exc}", attempt=attempt)
            )
            raise _Defer.graph(delay, exc) from None
        except ActionOutcomeUnknown as exc:
            log.warning("action call result unknown, reconciling", extra=self._log_fields(record, note=str(exc)))
            found = await self._find_our_action_or_defer(record)
            if found is None:
                raise _Defer(10, f"{exc}; not visible on the device yet", "action_unconfirmed") from None
        except GraphPermanentError as exc:
            await self._release_claim(record)
            code = ReasonCode.ACTION_NOT_SUPPORTED if exc.status == 400 else ReasonCode.GRAPH_REJECTED
            await self.finish(record, Status.FAILED, code, f"Intune refused {decision.action}: {exc}")
            return
        await self._record_submitted(record)

    async def _reconcile(self, record: LedgerRecord) -> LedgerRecord | None:
        """A record left in ACTING: find out whether that action call reached the device.

        Returns the record to go on with, or None when the outcome was recorded here."""
        found = await self._find_our_action_or_defer(record)
        if found is not None:
            await self._record_submitted(record)
            return None
        started = record.action_started_at or record.updated_at
        age = (self.s.clock() - started).total_seconds()
        if age < self.s.policy.action_lease_seconds:
            wait = self.s.policy.action_lease_seconds - age + 1
            raise _Defer(wait, "an action call may still be in flight", "action_in_flight")
        return await self._write(
            record.moved_to(PROCESSING, self.s.clock(), "the previous action call never reached the device")
        )

    async def _find_our_action_or_defer(self, record: LedgerRecord) -> ActionResult | None:
        try:
            return await self._find_our_action(record)
        except GraphTransientError as exc:
            raise _Defer.graph(self._backoff(record, exc.retry_after), exc) from None

    async def _find_our_action(self, record: LedgerRecord) -> ActionResult | None:
        if record.device_id is None or record.action is None or record.action_started_at is None:
            return None
        results = await self.s.gateway.action_results(record.device_id)
        since = record.action_started_at - timedelta(seconds=self.s.policy.clock_tolerance_seconds)
        return latest_result(results, Action(record.action), since)

    # ------------------------------------------------------------------ writing outcomes

    async def _record_submitted(self, record: LedgerRecord) -> None:
        with telemetry.step("publish", status=Status.SUBMITTED.value):
            await self._record_submitted_event(record)

    async def _record_submitted_event(self, record: LedgerRecord) -> None:
        now = self.s.clock()
        event = self._event(record, Status.SUBMITTED, None, new_event_id(), now)
        target = record.moved_to(Status.SUBMITTED.value, now, submitted_at=now, last_event_json=event)
        try:
            record = await self._write(target)
        except StorageConflict:
            fresh = await self._reload()
            if fresh.final or fresh.state == Status.SUBMITTED:
                await self.republish(fresh)
                return
            record = await self._write(replace(target, etag=fresh.etag, history=fresh.history))
        await self.s.publisher.publish(event)
        _log_outcome(json.loads(event)["data"])
        await self._schedule_followup(self.s.policy.confirm_first_check_seconds, check=1)

    async def finish(
        self, record: LedgerRecord, status: Status, code: ReasonCode | None = None, message: str = ""
    ) -> None:
        """Record the final outcome, then publish it; a lost race republishes the winner's."""
        with telemetry.step("publish", status=status.value, reasonCode=code.value if code else None):
            await self._finish(record, status, code, message)

    async def _finish(self, record: LedgerRecord, status: Status, code: ReasonCode | None, message: str) -> None:
        now = self.s.clock()
        reason = (code, message) if code is not None else None
        note = f"{code}: {message}" if code is not None else None
        event = self._event(record, status, reason, new_event_id(), now)
        target = record.moved_to(status.value, now, note, final=True, last_event_json=event)
        try:
            await self._write(target)
        except StorageConflict:
            fresh = await self._reload()
            await self.republish(fresh)  # whoever won recorded the outcome; never a second one
            return
        await self.s.publisher.publish(event)
        _log_outcome(json.loads(event)["data"])

    async def republish(self, record: LedgerRecord) -> None:
        """The recorded event again, unchanged (same id, and the traceparent of its first publication)."""
        with telemetry.step("publish", status=record.state, republished=True):
            if record.last_event_json:
                await self.s.publisher.publish(record.last_event_json)
                log.info("republished recorded outcome", extra=self._log_fields(record))
            if record.state == Status.SUBMITTED and not record.final:
                await self._schedule_followup(self.s.policy.confirm_first_check_seconds, check=1)

    def _event(
        self,
        record: LedgerRecord,
        status: Status,
        reason: tuple[ReasonCode, str] | None,
        event_id: str,
        now: datetime,
    ) -> str:
        device = EventDevice.model_validate_json(record.device_json) if record.device_json else None
        if device is None and record.device_id:
            device = EventDevice(id=record.device_id, platform="unknown")
        event = build_event(
            event_id=event_id,
            now=now,
            status=status,
            request=self.request,
            request_id=self.request_id,
            reason=reason,
            device=device,
            action=record.action if status != Status.UNSUPPORTED else None,
            scope=record.scope if status != Status.UNSUPPORTED else None,
            attempt=record.attempt,
            trace_context=telemetry.current_trace_context(),
        )
        return event_json(event)

    # ------------------------------------------------------------------ ledger plumbing

    async def _load_or_create(self) -> LedgerRecord | None:
        """The request's record, created on first sight; None when the requestId is taken by
        a different payload (request_conflict, published here)."""
        record = await self.s.ledger.get(self.request_id)
        if record is None:
            fresh = new_record(self.request, PROCESSING, self.s.clock())
            try:
                record = await self.s.ledger.create(fresh)
            except StorageConflict:
                record = await self._reload()
        if record.payload_hash != self.payload_hash:
            with telemetry.step("publish", status=Status.REJECTED.value, reasonCode=ReasonCode.REQUEST_CONFLICT.value):
                event = build_event(
                    event_id=derived_event_id("conflict", self.request_id, self.payload_hash),
                    now=self.s.clock(),
                    status=Status.REJECTED,
                    request=self.request,
                    request_id=self.request_id,
                    reason=(
                        ReasonCode.REQUEST_CONFLICT,
                        "this requestId was already used for a different request; use a new requestId",
                    ),
                    trace_context=telemetry.current_trace_context(),
                )
                await self.s.publisher.publish(event_json(event))
                _log_outcome(event.data.model_dump(mode="json"))
            return None
        return record

    async def _reload(self) -> LedgerRecord:
        record = await self.s.ledger.get(self.request_id)
        if record is None:
            raise StorageConflict(f"ledger record {self.request_id} disappeared")
        return record

    async def _write(self, record: LedgerRecord) -> LedgerRecord:
        return await self.s.ledger.replace(record)

    async def _write_quietly(self, record: LedgerRecord) -> None:
        try:
            await self._write(record)
        except StorageConflict:
            log.info("ledger record changed meanwhile", extra=self._log_fields(record))

    async def _release_claim(self, record: LedgerRecord) -> None:
        if record.device_id:
            await self.s.ledger.release_device(record.device_id, self.request_id)

    # ------------------------------------------------------------------ deferral

    def _backoff(self, record: LedgerRecord, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 1.0), self.s.policy.max_defer_seconds)
        base = min(5 * 2 ** min(record.deferrals, 6), self.s.policy.max_defer_seconds)
        return base * random.uniform(0.8, 1.2)

    async def _defer(self, defer: _Defer) -> None:
        record = await self.s.ledger.get(self.request_id)
        if record is not None and not record.final:
            await self._write_quietly(replace(record, deferrals=record.deferrals + 1))
        delay = max(1, round(defer.seconds))
        # The copy carries the trace context, so the next attempt continues this trace (decision 0009).
        await self.s.scheduler.requeue_request(self.request.to_message(telemetry.current_trace_context()), delay)
        telemetry.count_deferral(defer.cause)
        log.info(
            "request deferred",
            extra={
                "requestId": self.request_id,
                "correlationId": self.request.correlationId,
                "delaySeconds": delay,
                "cause": defer.cause,
                "note": defer.why[:200],
            },
        )

    async def _schedule_followup(self, delay: int, *, check: int) -> None:
        body = json.dumps({"requestId": self.request_id, "check": check, **telemetry.current_trace_context()})
        await self.s.scheduler.schedule_followup(body, delay)

    def _log_fields(self, record: LedgerRecord, **extra: Any) -> dict[str, Any]:
        return {
            "requestId": self.request_id,
            "correlationId": self.request.correlationId,
            "deviceId": record.device_id,
            "platform": record.platform,
            "action": record.action,
            "state": record.state,
            **extra,
        }


def _device_summary(device: IntuneDevice, decision: Decision) -> EventDevice:
    return EventDevice(
        id=device.id,
        name=device.name,
        operatingSystem=device.operating_system,
        osVersion=device.os_version,
        platform=decision.platform.value,
        userPrincipalName=device.user_principal_name,
    )


def _log_outcome(data: dict[str, Any]) -> None:
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


# ====================================================================== follow-up queue


async def handle_followup(body: bytes, services: Services) -> None:
    """A delayed confirmation check of a submitted action (SPEC section 6, `submitted` -> final)."""
    message = _json_object(body)
    with telemetry.request_span("confirm reset action", kind="consumer", incoming=message) as span:
        try:
            request_id = str(message["requestId"])
            check = int(message.get("check", 1))
        except (ValueError, KeyError, TypeError):
            log.error("follow-up message is not readable; dropped", extra={"event": "followup_invalid"})
            return
        span.set("requestId", request_id)
        record = await services.ledger.get(request_id)
        if record is None:
            log.error("follow-up for an unknown request", extra={"requestId": request_id})
            return
        run = _RequestRun(services, ResetRequest.model_validate_json(record.request_json))
        logs.bind(deviceId=record.device_id, platform=record.platform, action=record.action)
        with telemetry.step("confirm", check=check):
            await run.confirm(record, check)


def _json_object(body: bytes) -> dict[str, Any]:
    """A follow-up message as a JSON object ({} when it is not one)."""
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


async def handle_followup_poison(body: bytes, services: Services) -> None:
    message = _json_object(body)
    with telemetry.request_span("settle poisoned follow-up", kind="consumer", incoming=message) as span:
        try:
            request_id = str(message["requestId"])
        except (ValueError, KeyError, TypeError):
            log.error("poisoned follow-up message is not readable", extra={"event": "followup_invalid"})
            return
        span.set("requestId", request_id)
        record = await services.ledger.get(request_id)
        if record is None:
            return
        run = _RequestRun(services, ResetRequest.model_validate_json(record.request_json))
        logs.bind(deviceId=record.device_id, platform=record.platform, action=record.action)
        if record.final:
            await run.republish(record)
            return
        await run.finish(
            record,
            Status.FAILED,
            ReasonCode.RETRIES_EXHAUSTED,
            "the action was submitted but confirming it failed on every delivery",
        )
