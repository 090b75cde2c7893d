"""The HTTP API's reset routes (docs/contract.md#http-api): submit a reset, read its status,
reveal the new passcode.

The asynchronous request-reply pattern is the contract with Power Automate: 202 + `Location` +
`Retry-After` while the request is in progress, the outcome (200) once there is one.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass

from shared.api.auth import Caller, Denied, Role, authorize
from shared.api.http import (
    DEPENDENCY_ERRORS,
    HttpAnswer,
    HttpCall,
    Links,
    denied,
    field_errors,
    json_answer,
    problem,
    route_request_id,
    unavailable,
    unknown_request,
    until_parameter,
)
from shared.api.models import PasscodeReveal, ProgressStatus, ResetAccepted
from shared.api.services import ApiServices
from shared.core.clock import iso
from shared.core.contract import (
    MAX_MESSAGE_BYTES,
    REQUEST_ID_PATTERN,
    InvalidRequest,
    ResetRequest,
    parse_request_message,
)
from shared.core.device import our_action_result, revealable_secret
from shared.core.errors import GraphPermanentError
from shared.core.lifecycle import LedgerRecord, Policy, State
from shared.core.platforms import Action
from shared.observability import logs
from shared.workflow.submit import submit_request

log = logging.getLogger("passcode_reset")
audit_log = logging.getLogger("passcode_reset.audit")

# Seconds a poller should wait while the request is being worked on here (queue trigger polling
# is at most 2 s, processing takes a few seconds more).
IN_PROGRESS_RETRY_AFTER = 2
# Upper bound while a submitted action waits for the device (confirmation checks back off to 1 h).
MAX_CONFIRMING_RETRY_AFTER = 60


async def submit_reset(call: HttpCall, services: ApiServices) -> HttpAnswer:
    """Validate, record as `queued`, enqueue; 202 with where to poll. Idempotent per requestId."""
    caller = authorize(call.headers, Role.SUBMIT, require_roles=services.require_roles)
    if isinstance(caller, Denied):
        return denied(caller)
    until = until_parameter(call)
    if isinstance(until, HttpAnswer):
        return until
    if len(call.body) > MAX_MESSAGE_BYTES:
        return problem(
            413, "payload-too-large", "Payload too large", f"the request body is limited to {MAX_MESSAGE_BYTES} bytes"
        )
    parsed = parse_request_message(call.body, require_request_id=False)
    if isinstance(parsed, InvalidRequest):
        return problem(
            400,
            "invalid-request",
            "Invalid request",
            parsed.message,
            request_id=parsed.request_id,
            errors=field_errors(call.body, parsed.message),
        )
    request = parsed
    if request.requestId is None:
        # The generated id is part of the request before hashing and enqueueing, so the queue
        # side computes the same payload hash and finds this record.
        request = request.model_copy(update={"requestId": f"http-{uuid.uuid4()}"})
    request_id = str(request.requestId)
    logs.bind(requestId=request_id, correlationId=request.correlationId)
    links = Links.of(call, request_id, until, route_segments=1)
    try:
        return await _submit(request, request_id, links, caller, services)
    except DEPENDENCY_ERRORS as exc:
        return unavailable(exc, request_id)


async def _submit(
    request: ResetRequest, request_id: str, links: Links, caller: Caller, services: ApiServices
) -> HttpAnswer:
    # With the trace context of this HTTP request: one request, one trace (decision 0009).
    submission = await submit_request(
        request,
        ledger=services.ledger,
        queue=services.requests_queue,
        now=services.clock(),
        note="accepted over HTTP",
        # Roles mode: the authenticated caller is accountable (docs/contract.md#accountable-caller).
        submitted_by=caller.principal if services.require_roles else None,
    )
    fields = {"requestId": request_id, "correlationId": request.correlationId, "caller": caller.name}
    if submission.conflict:
        log.info("HTTP request conflicts with an earlier request", extra={**fields, "event": "http_conflict"})
        return problem(
            409,
            "request-conflict",
            "Request conflict",
            "this requestId was already used for a different request; use a new requestId",
            request_id=request_id,
        )
    record = submission.record
    log.info(
        "reset request accepted over HTTP" if submission.created else "repeated HTTP request",
        extra={
            **fields,
            "event": "http_accepted" if submission.created else "http_repeat",
            "state": record.state.value,
        },
    )
    return status_answer(record, links, services.policy)


# ====================================================================== GET /api/resets/{requestId}


async def get_reset_status(call: HttpCall, services: ApiServices) -> HttpAnswer:
    """202 while in progress (with `?until=final`: until final), else 200 with the latest outcome."""
    caller = authorize(call.headers, Role.READ, require_roles=services.require_roles)
    if isinstance(caller, Denied):
        return denied(caller)
    request_id = route_request_id(call)
    if isinstance(request_id, HttpAnswer):
        return request_id
    logs.bind(requestId=request_id)
    until = until_parameter(call)
    if isinstance(until, HttpAnswer):
        return until
    try:
        record = await services.ledger.get(request_id)
    except DEPENDENCY_ERRORS as exc:
        return unavailable(exc, request_id)
    if record is None:
        return unknown_request(request_id)
    return status_answer(record, Links.of(call, request_id, until, route_segments=2), services.policy)


def status_answer(record: LedgerRecord, links: Links, policy: Policy) -> HttpAnswer:
    """What `GET /api/resets/{requestId}` answers for this record (the approval route answers it too)."""
    event = record.last_event
    if record.state.in_progress or event is None:
        status: ProgressStatus = "queued" if record.state is State.QUEUED else "processing"
        return _accepted(record.request_id, status, links, IN_PROGRESS_RETRY_AFTER)
    if links.until_final and not record.final:
        retry = max(IN_PROGRESS_RETRY_AFTER, min(policy.confirm_first_check_seconds, MAX_CONFIRMING_RETRY_AFTER))
        waiting: ProgressStatus = "awaiting_approval" if record.state is State.AWAITING_APPROVAL else "submitted"
        return _accepted(record.request_id, waiting, links, retry)
    return json_answer(200, event["data"])


def _accepted(request_id: str, status: ProgressStatus, links: Links, retry_after: int) -> HttpAnswer:
    body = ResetAccepted(requestId=request_id, status=status, statusUrl=links.status_url)
    return json_answer(
        202,
        body.model_dump(mode="json"),
        headers={"Location": links.status_url, "Retry-After": str(retry_after)},
    )


# ====================================================================== GET /api/resets/{requestId}/passcode


async def reveal_passcode(call: HttpCall, services: ApiServices) -> HttpAnswer:
    """The new passcode, read live from the device's deviceActionResults; every call is audited."""
    caller = authorize(call.headers, Role.REVEAL_PASSCODE, require_roles=services.require_roles)
    request_id = call.route_params.get("requestId")
    principal = caller.caller if isinstance(caller, Denied) else caller
    audit = _PasscodeAudit(principal.name if principal else None, request_id)
    if isinstance(caller, Denied):
        return audit.done(denied(caller), "denied")
    if not services.allow_passcode_reveal:
        return audit.done(
            problem(
                404,
                "passcode-reveal-disabled",
                "Passcode reveal is disabled",
                "this Function App does not reveal passcodes (ALLOW_PASSCODE_REVEAL is false)",
            ),
            "disabled",
        )
    checked = route_request_id(call)
    if isinstance(checked, HttpAnswer):
        return audit.done(checked, "invalid")
    try:
        record = await services.ledger.get(checked)
        if record is None:
            return audit.done(unknown_request(checked), "unknown_request")
        audit.device_id = record.device_id
        found = await _find_passcode(record, services)
    except GraphPermanentError as exc:
        if exc.status == 404:
            return audit.done(_no_passcode(checked, "the device is no longer in Intune"), "device_gone")
        log.warning("Graph refused the passcode read", extra={"requestId": checked, "graphStatus": exc.status})
        return audit.done(
            problem(502, "graph-refused", "Graph refused the request", "Microsoft Graph refused to read the device"),
            "graph_refused",
        )
    except DEPENDENCY_ERRORS as exc:
        return audit.done(unavailable(exc, checked), "unavailable")
    if found is None:
        return audit.done(
            _no_passcode(checked, "Intune reports no passcode for this request's action (yet)"), "no_passcode"
        )
    no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    answer = json_answer(200, found.model_dump(mode="json"), headers=no_store)
    return audit.done(answer, "revealed", passcode_returned=True)


async def _find_passcode(record: LedgerRecord, services: ApiServices) -> PasscodeReveal | None:
    """Only a result of this request's own action call counts (same rule as the workflow's
    reconciliation: started at or after the call, within the clock tolerance): Android's new
    passcode for resetPasscode, the Mac's unlock PIN for remoteLock, none for iOS."""
    if record.device_id is None or record.action_started_at is None or record.action is None:
        return None
    try:
        action = Action(record.action)
    except ValueError:
        return None
    if action is Action.REMOVE_PASSCODE:  # iOS: the passcode is removed, there is none to show
        return None
    results = await services.gateway.action_results(record.device_id)
    result = our_action_result(results, action, record.action_started_at, services.policy.clock_tolerance)
    secret = revealable_secret(result) if result is not None else None
    if result is None or secret is None:
        return None
    kind, value = secret
    return PasscodeReveal(
        requestId=record.request_id,
        deviceId=record.device_id,
        kind="unlockPin" if kind == "unlockPin" else "passcode",
        passcode=value,
        actionState=result.state,
        startedAt=iso(result.started_at) if result.started_at else None,
    )


@dataclass
class _PasscodeAudit:
    """One audit record per passcode call: who, which request and device, whether a passcode was
    returned. The passcode itself is never part of it."""

    principal: str | None
    request_id: str | None
    device_id: str | None = None

    def done(self, answer: HttpAnswer, outcome: str, *, passcode_returned: bool = False) -> HttpAnswer:
        request_id = self.request_id if self.request_id and re.fullmatch(REQUEST_ID_PATTERN, self.request_id) else None
        audit_log.info(
            "passcode reveal %s",
            outcome,
            extra={
                "event": "passcode_reveal",
                "principal": self.principal or "unauthenticated",
                "requestId": request_id,
                "deviceId": self.device_id,
                "outcome": outcome,
                "httpStatus": answer.status,
                "passcodeReturned": passcode_returned,
            },
        )
        return answer


def _no_passcode(request_id: str, detail: str) -> HttpAnswer:
    return problem(404, "no-passcode", "No passcode", detail, request_id=request_id)
