"""The follow-up queue's use case: confirm on the device that a submitted action completed
(docs/contract.md#confirmation), and settle follow-ups that failed every delivery."""

from __future__ import annotations

import json
import logging
from typing import Any

from shared.core import lifecycle
from shared.core.approvals import on_approval_check
from shared.core.contract import ResetRequest
from shared.core.errors import GraphError, StorageUnavailable
from shared.core.lifecycle import Finish, LedgerRecord
from shared.observability import logs, telemetry
from shared.workflow.outcome import Outcomes, log_fields
from shared.workflow.request import STORAGE_RETRY_SECONDS, find_our_action
from shared.workflow.services import Services

log = logging.getLogger("passcode_reset")


async def handle_followup(body: bytes, services: Services) -> None:
    """A delayed confirmation check of a submitted action: `submitted` -> final, or check again later."""
    message = _json_object(body)
    with telemetry.request_span("confirm reset action", kind="consumer", incoming=message) as span:
        loaded = await _load(message, services, span, poisoned=False)
        if loaded is None:
            return
        record, outcomes, check = loaded
        if message.get("kind") == "approval":
            with telemetry.step("approval expiry"):
                await _approval_check(record, outcomes, services)
            return
        with telemetry.step("confirm", check=check):
            await _confirm(record, outcomes, check, services)


async def handle_followup_poison(body: bytes, services: Services) -> None:
    """A confirmation check that failed every delivery: the request still gets its final event.
    While storage still fails, the check goes back to the follow-up queue for a later round."""
    try:
        await _settle_followup_poison(body, services)
    except StorageUnavailable as exc:
        await services.scheduler.schedule_followup(body.decode("utf-8"), STORAGE_RETRY_SECONDS)
        log.warning(
            "storage unavailable while settling a poisoned follow-up; it goes back to the follow-up queue",
            extra={"error": str(exc), "delaySeconds": STORAGE_RETRY_SECONDS},
        )


async def _settle_followup_poison(body: bytes, services: Services) -> None:
    message = _json_object(body)
    with telemetry.request_span("settle poisoned follow-up", kind="consumer", incoming=message) as span:
        loaded = await _load(message, services, span, poisoned=True)
        if loaded is None:
            return
        record, outcomes, _ = loaded
        decision = lifecycle.on_followup_poison(record)
        if isinstance(decision, lifecycle.Republish):
            await outcomes.republish(record)
        elif isinstance(decision, lifecycle.Ignore):
            log.warning(decision.why, extra=log_fields(outcomes.request, record))
        else:
            await outcomes.finish(record, decision.status, decision.code, decision.message)


async def _confirm(record: LedgerRecord, outcomes: Outcomes, check: int, services: Services) -> None:
    first = lifecycle.on_followup(record)
    if isinstance(first, lifecycle.Republish):
        await outcomes.republish(record)
        return
    if isinstance(first, lifecycle.Ignore):
        log.warning(first.why, extra=log_fields(outcomes.request, record))
        return
    try:
        found = await find_our_action(services, record)
    except GraphError as exc:
        verdict = lifecycle.confirmation_read_failed(exc, check, services.policy)
    else:
        verdict = lifecycle.confirmation(record, found, services.clock(), check, services.policy)
    if isinstance(verdict, Finish):
        await outcomes.finish(record, verdict.status, verdict.code, verdict.message)
    else:
        await outcomes.follow_up(verdict)


async def _approval_check(record: LedgerRecord, outcomes: Outcomes, services: Services) -> None:
    """The wait for a decision is over: `rejected` / `approval_expired`, unless decided meanwhile."""
    verdict = on_approval_check(record, services.clock(), services.policy)
    if isinstance(verdict, lifecycle.Ignore):
        log.info(verdict.why, extra=log_fields(outcomes.request, record))
    elif isinstance(verdict, Finish):
        await outcomes.finish(record, verdict.status, verdict.code, verdict.message)
    else:
        await outcomes.follow_up(verdict, kind="approval")


async def _load(
    message: dict[str, Any], services: Services, span: telemetry.SpanHandle, *, poisoned: bool
) -> tuple[LedgerRecord, Outcomes, int] | None:
    """The record a follow-up message names, or None (logged) when there is nothing to confirm."""
    try:
        request_id = str(message["requestId"])
        check = int(message.get("check", 1))
    except (ValueError, KeyError, TypeError):
        what = (
            "poisoned follow-up message is not readable" if poisoned else "follow-up message is not readable; dropped"
        )
        log.error(what, extra={"event": "followup_invalid"})
        return None
    span.set("requestId", request_id)
    record = await services.ledger.get(request_id)
    if record is None:
        if not poisoned:
            log.error("follow-up for an unknown request", extra={"requestId": request_id})
        return None
    request = ResetRequest.model_validate_json(record.request_json)
    logs.bind(requestId=request_id, correlationId=request.correlationId)
    logs.bind(deviceId=record.device_id, platform=record.platform, action=record.action)
    return record, Outcomes(services, request, request_id), check


def _json_object(body: bytes) -> dict[str, Any]:
    """A follow-up message as a JSON object ({} when it is not one)."""
    try:
        document = json.loads(body)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}
