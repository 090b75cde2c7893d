"""The request queue's use case: one reset request, from its message to its outcome.

Each step loads the facts (the ledger record, the device, Graph's answer), asks the lifecycle
(shared/core/lifecycle.py) what to do, and carries that out. The ledger record is the truth about
a request; every write is conditional on it, so redeliveries and concurrent duplicates converge on
one action call and one final event (docs/contract.md#guarantees).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta

from shared.core import lifecycle
from shared.core.approvals import GuardrailSlot, Hold, approval_hold, requester_check
from shared.core.batches import item_number
from shared.core.contract import EventDevice, InvalidRequest, ReasonCode, ResetRequest, Status, read_request_message
from shared.core.device import ActionResult, IntuneDevice, our_action_result
from shared.core.errors import (
    GraphError,
    GraphPermanentError,
    GraphTransientError,
    StorageConflict,
    StorageUnavailable,
    TooManyCandidates,
)
from shared.core.events import derived_event_id
from shared.core.lifecycle import Defer, Finish, LedgerRecord, State, new_record
from shared.core.platforms import Action, Decision, choose_action
from shared.observability import logs, telemetry
from shared.workflow.outcome import Outcomes, log_fields
from shared.workflow.services import Services

log = logging.getLogger("passcode_reset")

# A poisoned message that meets storage still failing goes back to its queue after this long
# (docs/contract.md#storage-outages): its own retries would end in `<queue>-poison-poison`,
# which nothing reads.
STORAGE_RETRY_SECONDS = 60

# How often one delivery follows the record through reconciliation before giving up for now.
_MAX_STEPS = 4


class _Deferred(Exception):
    """Carries a `Defer` decision out of the step that made it."""

    def __init__(self, defer: Defer) -> None:
        super().__init__(defer.why)
        self.defer = defer


async def handle_request(body: bytes, services: Services, *, message_id: str) -> None:
    """One message of the request queue; ends in an event, a deferral, or an exception to retry."""
    await _handle_request_message(body, services, message_id, poisoned=False)


async def handle_request_poison(body: bytes, services: Services, *, message_id: str) -> None:
    """A request that failed every delivery: make sure it still ends in exactly one final event.

    While storage still fails, the message goes back to the request queue for a later round (the
    lifecycle's deadline bounds the rounds) instead of failing into `<queue>-poison-poison`."""
    try:
        await _handle_request_message(body, services, message_id, poisoned=True)
    except StorageUnavailable as exc:
        await services.scheduler.requeue_request(body.decode("utf-8"), STORAGE_RETRY_SECONDS)
        log.warning(
            "storage unavailable while settling a poisoned request; it goes back to the request queue",
            extra={"error": str(exc), "delaySeconds": STORAGE_RETRY_SECONDS},
        )


async def _handle_request_message(body: bytes, services: Services, message_id: str, *, poisoned: bool) -> None:
    message = read_request_message(body)
    name = "settle poisoned reset request" if poisoned else "process reset request"
    with telemetry.request_span(name, kind="consumer", incoming=message.trace_context) as span:
        parsed = message.request
        if isinstance(parsed, InvalidRequest):
            span.set("requestId", parsed.request_id)
            logs.bind(requestId=parsed.request_id)
            event_id = derived_event_id("invalid-poison" if poisoned else "invalid", message_id)
            outcomes = Outcomes(services, None, parsed.request_id)
            await outcomes.unrecorded(Status.REJECTED, ReasonCode.INVALID_REQUEST, parsed.message, event_id)
            return
        span.set("requestId", parsed.requestId)
        run = RequestRun(services, parsed, batch_id=_item_batch(parsed, message.batch_id))
        await (run.settle_poison() if poisoned else run.run())


class RequestRun:
    """One delivery of one valid request."""

    def __init__(self, services: Services, request: ResetRequest, *, batch_id: str | None = None) -> None:
        self.s = services
        self.request = request
        self.request_id = str(request.requestId)
        # Set for a batch item its batch released as a message alone: the record is created here.
        self.batch_id = batch_id
        self.outcomes = Outcomes(services, request, self.request_id)
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
            await self._defer(Defer(2, "ledger_conflict", "ledger record changed concurrently"))
        except _Deferred as deferred:
            await self._defer(deferred.defer)

    async def settle_poison(self) -> None:
        record = await self._load_or_create()
        if record is None:
            return
        found = None
        if record.state is State.ACTING:
            try:
                found = await self._find_our_action(record)
            except GraphError:
                found = None
        decision = lifecycle.on_poison(record, found)
        if isinstance(decision, lifecycle.Republish):
            await self.outcomes.republish(record)
        elif isinstance(decision, lifecycle.RecordSubmitted):
            await self.outcomes.submitted(record)
        else:
            await self._release_claim(record)
            await self._finish(record, decision)

    # ------------------------------------------------------------------ the state machine

    async def _advance(self, record: LedgerRecord) -> None:
        for _ in range(_MAX_STEPS):
            step = lifecycle.on_delivery(record, self.s.clock(), self.s.policy)
            if isinstance(step, lifecycle.Republish):
                await self.outcomes.republish(record)
                return
            if isinstance(step, Finish):
                await self._finish(record, step)
                return
            if isinstance(step, lifecycle.Process):
                await self._process(record)
                return
            reconciled = await self._reconcile(record)
            if reconciled is None:
                return
            record = reconciled
        raise _Deferred(Defer(5, "ledger_conflict", "ledger record kept changing"))

    async def _reconcile(self, record: LedgerRecord) -> LedgerRecord | None:
        """A record left ACTING: the record to go on with, or None when the outcome is settled here."""
        found = await self._find_our_action_or_defer(record)
        decision = lifecycle.after_reconcile(record, found, self.s.clock(), self.s.policy)
        if isinstance(decision, Defer):
            raise _Deferred(decision)
        if isinstance(decision, lifecycle.RecordSubmitted):
            await self.outcomes.submitted(record)
            return None
        return await self.s.ledger.replace(record.moved_to(State.PROCESSING, self.s.clock(), decision.note))

    async def _process(self, record: LedgerRecord) -> None:
        if record.state is State.QUEUED:
            record = await self.s.ledger.replace(record.moved_to(State.PROCESSING, self.s.clock()))
        refused = requester_check(self.request.requestedBy, self.s.policy)
        if refused is not None:  # before any Graph call (docs/contract.md#requester-allow-list)
            await self._finish(record, refused)
            return

        with telemetry.step("resolve", deviceIdentifier=self.request.device.kind):
            resolved = await self._resolve_device(record)
        if resolved is None:
            return
        with telemetry.step("classify") as span:
            device, record = resolved
            decision = choose_action(device.traits, allow_remote_lock=self.request.allowRemoteLock)
            record = replace(
                record,
                device_json=_device_summary(device, decision).model_dump_json(),
                platform=decision.platform.value,
                action=decision.action.value if decision.action else None,
                scope=decision.scope.value if decision.scope else None,
            )
            span.set("platform", record.platform)
            span.set("action", record.action)
        logs.bind(deviceId=device.id, platform=record.platform, action=record.action)
        verdict = lifecycle.classification(decision, dry_run=self.request.dryRun)
        if isinstance(verdict, Finish):
            await self._finish(record, verdict)
            return
        hold = approval_hold(record, self.s.policy)
        if hold is not None:
            await self._hold(record, hold)
            return
        with telemetry.step("act", action=record.action, scope=record.scope):
            await self._act(record, device, decision)

    async def _resolve_device(self, record: LedgerRecord) -> tuple[IntuneDevice, LedgerRecord] | None:
        """The device and the record that names it, or None when the request ended here."""
        ref = self.request.device
        try:
            if ref.kind == "intuneDeviceId":
                found = await self.s.gateway.get_device(ref.value)
                candidates = [found] if found is not None and found.matches(ref.kind, ref.value) else []
            else:
                candidates = await self.s.gateway.find_devices(ref.kind, ref.value)
        except GraphTransientError as exc:
            raise _Deferred(
                lifecycle.graph_defer(exc, lifecycle.backoff(record, exc.retry_after, self.s.policy))
            ) from None
        except TooManyCandidates as exc:
            await self._finish(record, Finish(Status.REJECTED, ReasonCode.AMBIGUOUS_DEVICE, str(exc)))
            return None
        except GraphPermanentError as exc:
            await self._finish(
                record, Finish(Status.FAILED, ReasonCode.GRAPH_REJECTED, f"device lookup refused: {exc}")
            )
            return None
        verdict = lifecycle.resolution(ref.kind, candidates, self.request.expectedUserPrincipalName)
        if isinstance(verdict, Finish):
            if verdict.code is ReasonCode.USER_MISMATCH:
                record = replace(record, device_id=candidates[0].id)
                logs.bind(deviceId=candidates[0].id)
            await self._finish(record, verdict)
            return None
        return verdict, replace(record, device_id=verdict.id)

    async def _act(self, record: LedgerRecord, device: IntuneDevice, decision: Decision) -> None:
        assert decision.action is not None
        policy = self.s.policy
        verdict = lifecycle.before_action(record, policy)
        if isinstance(verdict, Finish):
            await self._release_claim(record)
            await self._finish(record, verdict)
            return
        now = self.s.clock()
        # The guardrails count this call before the cooldown claim; an approved request is
        # counted but never held again (docs/contract.md#guardrails).
        slot = await self.s.guardrails.take(self.request.requestedBy, now, enforce=not record.approved)
        if isinstance(slot, Hold):
            telemetry.count_guardrail_trip()
            await self._hold(record, slot)
            return
        claim = await self.s.ledger.claim_device(
            device.id, self.request_id, now, timedelta(seconds=policy.cooldown_seconds)
        )
        verdict = lifecycle.cooldown(claim, policy)
        if isinstance(verdict, Finish):
            await self.s.guardrails.give_back(slot)
            await self._finish(record, verdict)
            return
        try:
            record = await self.s.ledger.replace(
                record.moved_to(
                    State.ACTING, now, f"calling {decision.action}", attempt=record.attempt + 1, action_started_at=now
                )
            )
        except StorageConflict:
            await self.s.guardrails.give_back(slot)
            raise _Deferred(Defer(5, "concurrent_delivery", "another delivery of this request is at work")) from None

        try:
            await self.s.gateway.perform(device.id, decision.action)
        except GraphError as exc:
            await self._after_action_error(record, exc, slot)
            return
        await self.outcomes.submitted(record)

    async def _hold(self, record: LedgerRecord, hold: Hold) -> None:
        log.info("request held for approval", extra=log_fields(self.request, record, reasonCode=hold.code.value))
        await self.outcomes.hold(record, hold.code, hold.message)

    async def _after_action_error(self, record: LedgerRecord, error: GraphError, slot: GuardrailSlot) -> None:
        decision = lifecycle.after_action_error(error, record, self.s.policy)
        if not isinstance(decision, lifecycle.Reconcile):
            # Intune did not take it (throttled, refused, never sent): not an action call to count.
            await self.s.guardrails.give_back(slot)
        if isinstance(decision, lifecycle.Retry):
            try:
                await self.s.ledger.replace(
                    record.moved_to(State.PROCESSING, self.s.clock(), decision.note, attempt=decision.attempt)
                )
            except StorageConflict:
                log.info("ledger record changed meanwhile", extra=log_fields(self.request, record))
            raise _Deferred(decision.defer)
        if isinstance(decision, lifecycle.Reconcile):
            log.warning(
                "action call result unknown, reconciling", extra=log_fields(self.request, record, note=str(error))
            )
            found = await self._find_our_action_or_defer(record)
            settled = lifecycle.after_unknown_outcome(found, str(error))
            if isinstance(settled, Defer):
                raise _Deferred(settled)
            await self.outcomes.submitted(record)
            return
        await self._release_claim(record)
        await self._finish(record, decision)

    # ------------------------------------------------------------------ reading the device's results

    async def _find_our_action_or_defer(self, record: LedgerRecord) -> ActionResult | None:
        try:
            return await self._find_our_action(record)
        except GraphTransientError as exc:
            raise _Deferred(
                lifecycle.graph_defer(exc, lifecycle.backoff(record, exc.retry_after, self.s.policy))
            ) from None

    async def _find_our_action(self, record: LedgerRecord) -> ActionResult | None:
        return await find_our_action(self.s, record)

    # ------------------------------------------------------------------ ledger plumbing

    async def _finish(self, record: LedgerRecord, finish: Finish) -> None:
        await self.outcomes.finish(record, finish.status, finish.code, finish.message)

    async def _load_or_create(self) -> LedgerRecord | None:
        """The request's record, created on first sight; None when the requestId is taken by
        a different payload (request_conflict, published here).

        A batch item released as a message alone has no record yet as a rule: it is created first
        and read only when it exists (a repeated release, a redelivery), one storage operation
        where reading first takes two (docs/decisions/0027-batch-items-released-as-messages.md)."""
        record = None if self.batch_id is not None else await self.s.ledger.get(self.request_id)
        if record is None:
            note = "batch item" if self.batch_id is not None else None
            fresh = new_record(self.request, State.PROCESSING, self.s.clock(), note, batch_id=self.batch_id)
            try:
                record = await self.s.ledger.create(fresh)
            except StorageConflict:
                record = await self.outcomes.reload()
        payload_hash = self.request.payload_hash()
        if record.payload_hash != payload_hash:
            await self.outcomes.unrecorded(
                Status.REJECTED,
                ReasonCode.REQUEST_CONFLICT,
                "this requestId was already used for a different request; use a new requestId",
                derived_event_id("conflict", self.request_id, payload_hash),
            )
            return None
        return record

    async def _release_claim(self, record: LedgerRecord) -> None:
        if record.device_id:
            await self.s.ledger.release_device(record.device_id, self.request_id)

    async def _defer(self, defer: Defer) -> None:
        record = await self.s.ledger.get(self.request_id)
        if record is not None and not record.final:
            try:
                await self.s.ledger.replace(replace(record, deferrals=record.deferrals + 1))
            except StorageConflict:
                log.info("ledger record changed meanwhile", extra=log_fields(self.request, record))
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


async def find_our_action(services: Services, record: LedgerRecord) -> ActionResult | None:
    """This request's own result in the device's deviceActionResults (one Graph read), if any."""
    if record.device_id is None or record.action is None or record.action_started_at is None:
        return None
    results = await services.gateway.action_results(record.device_id)
    return our_action_result(results, Action(record.action), record.action_started_at, services.policy.clock_tolerance)


def _item_batch(request: ResetRequest, batch_id: str | None) -> str | None:
    """The message's `batchId` when the request is that batch's item `<batchId>.<n>`, else None:
    a batch id that does not name the request's own batch is ignored, like any unknown member."""
    if batch_id is None or item_number(batch_id, str(request.requestId)) is None:
        return None
    return batch_id


def _device_summary(device: IntuneDevice, decision: Decision) -> EventDevice:
    return EventDevice(
        id=device.id,
        name=device.name,
        operatingSystem=device.operating_system,
        osVersion=device.os_version,
        platform=decision.platform.value,
        userPrincipalName=device.user_principal_name,
    )
