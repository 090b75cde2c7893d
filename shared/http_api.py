"""The HTTP API's use cases (SPEC section 7): submit a reset, read its status, reveal the new
passcode, health. Plain inputs in (`HttpCall`), a small `HttpAnswer` out; function_app.py only
translates `azure.functions` objects to and from these.

The asynchronous request-reply pattern is the contract with Power Automate: 202 + `Location` +
`Retry-After` while the request is in progress, the outcome (200) once there is one. Errors are
RFC 9457 problem details; they name the fields at fault and never echo input values.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import quote, urlencode, urlsplit

from azure.core.exceptions import AzureError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import logs, telemetry
from shared.auth import Caller, Denied, Role, authorize
from shared.contract import (
    MAX_MESSAGE_BYTES,
    REQUEST_ID_PATTERN,
    InvalidRequest,
    ResetRequest,
    parse_request_message,
)
from shared.errors import GraphError, GraphPermanentError, GraphTransientError, StorageConflict
from shared.intune import IntuneGateway, latest_result
from shared.ledger import ACTING, PROCESSING, QUEUED, Ledger, LedgerRecord, iso, new_record
from shared.platforms import Action
from shared.workflow import Policy

if TYPE_CHECKING:
    from shared.bootstrap import Runtime

log = logging.getLogger("passcode_reset")
audit_log = logging.getLogger("passcode_reset.audit")

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:intune-passcode-reset:problem:"
# Seconds a poller should wait while the request is being worked on here (queue trigger polling
# is at most 2 s, processing takes a few seconds more).
IN_PROGRESS_RETRY_AFTER = 2
# Upper bound while a submitted action waits for the device (confirmation checks back off to 1 h).
MAX_CONFIRMING_RETRY_AFTER = 60
UNAVAILABLE_RETRY_AFTER = 10
HEALTH_TIMEOUT_SECONDS = 5.0
# A device id no device has: reading it proves Graph is reachable and the identity may read devices.
_PROBE_DEVICE_ID = "00000000-0000-0000-0000-000000000000"
ProgressStatus = Literal["queued", "processing", "submitted"]
_IN_PROGRESS_STATES: dict[str, ProgressStatus] = {QUEUED: "queued", PROCESSING: "processing", ACTING: "processing"}
_DEPENDENCY_ERRORS = (AzureError, GraphError, StorageConflict, OSError, TimeoutError)


# ====================================================================== transport-neutral types


@dataclass(frozen=True)
class HttpCall:
    """An HTTP request as the use cases see it. Header names are lower-case."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    route_params: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def of(
        cls,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        query: Mapping[str, str] | None = None,
        route_params: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> HttpCall:
        return cls(
            method=method.upper(),
            url=url,
            headers={name.lower(): value for name, value in (headers or {}).items()},
            query=dict(query or {}),
            route_params=dict(route_params or {}),
            body=body or b"",
        )


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", JSON)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


# ====================================================================== response models


class ResetAccepted(BaseModel):
    """Body of a 202: the request is in progress; poll `statusUrl` (also in `Location`)."""

    model_config = ConfigDict(extra="forbid", title="PasscodeResetAccepted")

    requestId: str = Field(description="The request's idempotency key (generated when the caller gave none)")
    status: ProgressStatus = Field(
        description="queued: accepted, not picked up yet; processing: being worked on; "
        "submitted: Intune accepted the action, waiting for the device (only with until=final)"
    )
    statusUrl: str = Field(description="Absolute URL of the status route; the same as the Location header")


class ProblemFieldError(BaseModel):
    model_config = ConfigDict(extra="forbid", title="ProblemFieldError")

    field: str = Field(description="Dotted path of the field at fault; empty for the whole body")
    pointer: str = Field(description="JSON Pointer (as a URI fragment) to the field at fault")
    detail: str = Field(description="What is wrong with it (the value itself is never echoed)")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="forbid", title="Problem")

    type: str = Field(description="Problem type URI (urn:intune-passcode-reset:problem:...)")
    title: str = Field(description="Short summary of the problem type")
    status: int = Field(description="HTTP status code")
    detail: str = Field(description="What went wrong with this request")
    requestId: str | None = Field(default=None, description="The request concerned, when known")
    errors: list[ProblemFieldError] | None = Field(default=None, description="Each field at fault (400)")


class PasscodeReveal(BaseModel):
    model_config = ConfigDict(extra="forbid", title="PasscodeReveal")

    requestId: str
    deviceId: str = Field(description="Intune managed device id")
    passcode: str = Field(description="The new passcode Intune generated (secret: never stored or logged)")
    actionState: str = Field(description="State of the resetPasscode action on the device")
    startedAt: str | None = Field(default=None, description="When Intune started the action (UTC)")


CheckState = Literal["ok", "unreachable", "unauthorized", "unavailable"]


class HealthChecks(BaseModel):
    model_config = ConfigDict(extra="forbid", title="HealthChecks")

    storage: CheckState = Field(description="Ledger table and request queue")
    graph: CheckState = Field(description="Microsoft Graph (Intune) with the app's identity")


class HealthReport(BaseModel):
    model_config = ConfigDict(extra="forbid", title="HealthReport")

    status: Literal["healthy", "degraded"]
    checks: HealthChecks


# ====================================================================== dependencies


class MessageQueue(Protocol):
    """The request queue (an async azure-storage-queue QueueClient satisfies it)."""

    async def send_message(self, content: str) -> Any: ...


class HealthProbe(Protocol):
    async def storage(self) -> CheckState: ...
    async def graph(self) -> CheckState: ...


@dataclass(frozen=True)
class ApiServices:
    ledger: Ledger
    requests_queue: MessageQueue
    gateway: IntuneGateway
    clock: Callable[[], datetime]
    policy: Policy
    health: HealthProbe
    require_roles: bool = False
    allow_passcode_reveal: bool = False


def api_services(runtime: Runtime) -> ApiServices:
    """The HTTP API's adapters, taken from the process's Runtime (the composition root)."""
    settings = runtime.settings
    requests_queue = runtime.storage.queue(settings.requests_queue)
    return ApiServices(
        ledger=runtime.services.ledger,
        requests_queue=requests_queue,
        gateway=runtime.services.gateway,
        clock=runtime.services.clock,
        policy=runtime.services.policy,
        health=RuntimeHealthProbe(runtime.storage.table(settings.ledger_table), requests_queue, runtime.gateway),
        require_roles=settings.auth_require_roles,
        allow_passcode_reveal=settings.allow_passcode_reveal,
    )


class RuntimeHealthProbe:
    """Cheap reads that prove each dependency answers; results are words, never error texts."""

    def __init__(self, table: Any, queue: Any, gateway: IntuneGateway) -> None:
        self._table = table
        self._queue = queue
        self._gateway = gateway

    async def storage(self) -> CheckState:
        try:
            async for _ in self._table.query_entities("PartitionKey eq '~health'", results_per_page=1):
                break
            await self._queue.get_queue_properties()
        except (AzureError, OSError):
            return "unreachable"
        return "ok"

    async def graph(self) -> CheckState:
        try:
            await self._gateway.get_device(_PROBE_DEVICE_ID)
        except GraphError as exc:
            return graph_check_state(exc.status)
        return "ok"


def graph_check_state(status: int | None) -> CheckState:
    """Any HTTP answer means Graph is reachable; 401/403 mean the identity is not allowed in."""
    if status is None:
        return "unreachable"
    if status in (401, 403):
        return "unauthorized"
    if status >= 500:
        return "unavailable"
    return "ok"


# ====================================================================== POST /api/resets


async def submit_reset(call: HttpCall, services: ApiServices) -> HttpAnswer:
    """Validate, record as `queued`, enqueue; 202 with where to poll. Idempotent per requestId."""
    caller = authorize(call.headers, Role.SUBMIT, require_roles=services.require_roles)
    if isinstance(caller, Denied):
        return _denied(caller)
    until = _until(call)
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
    links = _Links.of(call, request_id, until, route_segments=1)
    try:
        return await _submit(request, request_id, links, caller, services)
    except _DEPENDENCY_ERRORS as exc:
        return _unavailable(exc, request_id)


async def _submit(
    request: ResetRequest, request_id: str, links: _Links, caller: Caller, services: ApiServices
) -> HttpAnswer:
    payload_hash = request.payload_hash()
    now = services.clock()
    fresh = new_record(request, QUEUED, now, "accepted over HTTP")
    fields = {"requestId": request_id, "correlationId": request.correlationId, "caller": caller.name}
    try:
        record = await services.ledger.create(fresh)
        created = True
    except StorageConflict:
        existing = await services.ledger.get(request_id)
        if existing is None:
            raise
        record, created = existing, False
    if record.payload_hash != payload_hash:
        log.info("HTTP request conflicts with an earlier request", extra={**fields, "event": "http_conflict"})
        return problem(
            409,
            "request-conflict",
            "Request conflict",
            "this requestId was already used for a different request; use a new requestId",
            request_id=request_id,
        )
    if record.state == QUEUED:
        # A first POST may have died between the ledger write and the enqueue: the ledger makes
        # a duplicate message harmless, a missing one would leave the request queued forever.
        # With the trace context of this HTTP request: one request, one trace (decision 0009).
        await services.requests_queue.send_message(request.to_message(telemetry.current_trace_context()))
    log.info(
        "reset request accepted over HTTP" if created else "repeated HTTP request",
        extra={**fields, "event": "http_accepted" if created else "http_repeat", "state": record.state},
    )
    return _status_answer(record, links, services.policy)


# ====================================================================== GET /api/resets/{requestId}


async def get_reset_status(call: HttpCall, services: ApiServices) -> HttpAnswer:
    """202 while in progress (with `?until=final`: until final), else 200 with the latest outcome."""
    caller = authorize(call.headers, Role.READ, require_roles=services.require_roles)
    if isinstance(caller, Denied):
        return _denied(caller)
    request_id = _route_request_id(call)
    if isinstance(request_id, HttpAnswer):
        return request_id
    logs.bind(requestId=request_id)
    until = _until(call)
    if isinstance(until, HttpAnswer):
        return until
    try:
        record = await services.ledger.get(request_id)
    except _DEPENDENCY_ERRORS as exc:
        return _unavailable(exc, request_id)
    if record is None:
        return _unknown(request_id)
    return _status_answer(record, _Links.of(call, request_id, until, route_segments=2), services.policy)


def _status_answer(record: LedgerRecord, links: _Links, policy: Policy) -> HttpAnswer:
    event = record.last_event
    if record.state in _IN_PROGRESS_STATES or event is None:
        status = _IN_PROGRESS_STATES.get(record.state, "processing")
        return _accepted(record.request_id, status, links, IN_PROGRESS_RETRY_AFTER)
    if links.until_final and not record.final:
        retry = max(IN_PROGRESS_RETRY_AFTER, min(policy.confirm_first_check_seconds, MAX_CONFIRMING_RETRY_AFTER))
        return _accepted(record.request_id, "submitted", links, retry)
    return json_answer(200, event["data"])


def _accepted(request_id: str, status: ProgressStatus, links: _Links, retry_after: int) -> HttpAnswer:
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
        return audit.done(_denied(caller), "denied")
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
    checked = _route_request_id(call)
    if isinstance(checked, HttpAnswer):
        return audit.done(checked, "invalid")
    try:
        record = await services.ledger.get(checked)
        if record is None:
            return audit.done(_unknown(checked), "unknown_request")
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
    except _DEPENDENCY_ERRORS as exc:
        return audit.done(_unavailable(exc, checked), "unavailable")
    if found is None:
        return audit.done(
            _no_passcode(checked, "Intune reports no passcode for this request's action (yet)"), "no_passcode"
        )
    no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    answer = json_answer(200, found.model_dump(mode="json"), headers=no_store)
    return audit.done(answer, "revealed", passcode_returned=True)


async def _find_passcode(record: LedgerRecord, services: ApiServices) -> PasscodeReveal | None:
    """Only a resetPasscode result of this request's own action call counts (same rule as the
    workflow's reconciliation: started at or after the call, within the clock tolerance)."""
    if record.device_id is None or record.action_started_at is None or record.action is None:
        return None
    try:
        action = Action(record.action)
    except ValueError:
        return None
    if action.graph_name != "resetPasscode":
        return None
    since = record.action_started_at - timedelta(seconds=services.policy.clock_tolerance_seconds)
    result = latest_result(await services.gateway.action_results(record.device_id), action, since)
    if result is None or not result.passcode:
        return None
    return PasscodeReveal(
        requestId=record.request_id,
        deviceId=record.device_id,
        passcode=result.passcode,
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


# ====================================================================== health


async def check_health(load: Callable[[], Awaitable[ApiServices]]) -> HttpAnswer:
    """200 healthy or 503 degraded, with one word per dependency; no names, hosts or error texts."""
    try:
        services = await asyncio.wait_for(load(), HEALTH_TIMEOUT_SECONDS * 2)
    except Exception as exc:  # the runtime could not even be built: storage is the first suspect
        log.warning("health: runtime unavailable", extra={"errorType": type(exc).__name__})
        checks = HealthChecks(storage="unreachable", graph="unreachable")
    else:
        storage, graph = await asyncio.gather(_bounded(services.health.storage()), _bounded(services.health.graph()))
        checks = HealthChecks(storage=storage, graph=graph)
    healthy = checks.storage == "ok" and checks.graph == "ok"
    report = HealthReport(status="healthy" if healthy else "degraded", checks=checks)
    return json_answer(200 if healthy else 503, report.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


async def _bounded(check: Awaitable[CheckState]) -> CheckState:
    try:
        return await asyncio.wait_for(check, HEALTH_TIMEOUT_SECONDS)
    except TimeoutError:
        return "unreachable"


# ====================================================================== GET /api/openapi.json


def openapi_answer(call: HttpCall) -> HttpAnswer:
    """The OpenAPI 2.0 document with `host`, `schemes` and `basePath` of the URL it was served at."""
    from shared.openapi import openapi_document

    parts = urlsplit(call.url)
    base_path = _base_path(parts.path, trailing_segments=1)
    document = openapi_document(host=parts.netloc, scheme=parts.scheme or "https", base_path=base_path or "/")
    return json_answer(200, document)


# ====================================================================== helpers


@dataclass(frozen=True)
class _Links:
    status_url: str
    until_final: bool

    @classmethod
    def of(cls, call: HttpCall, request_id: str, until: str | None, *, route_segments: int) -> _Links:
        """The absolute status URL on the host the caller used (`route_segments`: how many path
        segments the called route has after the prefix). `until` is kept so a poller that follows
        `Location` keeps waiting for the same thing; a function key the caller put in the URL
        (`code`) is kept too, because pollers that follow `Location` do not resend headers."""
        parts = urlsplit(call.url)
        base = _base_path(parts.path, trailing_segments=route_segments)
        query: dict[str, str] = {}
        if until:
            query["until"] = until
        if call.query.get("code"):
            query["code"] = call.query["code"]
        url = f"{parts.scheme}://{parts.netloc}{base}/resets/{quote(request_id, safe='')}"
        return cls(status_url=url + (f"?{urlencode(query)}" if query else ""), until_final=until == "final")


def _base_path(path: str, *, trailing_segments: int) -> str:
    """The route prefix (e.g. `/api`): the request path without the route's own segments."""
    segments = path.rstrip("/").split("/")
    return "/".join(segments[: max(1, len(segments) - trailing_segments)])


def _until(call: HttpCall) -> str | HttpAnswer | None:
    value = call.query.get("until")
    if value in (None, ""):
        return None
    if value != "final":
        return problem(
            400,
            "invalid-parameter",
            "Invalid parameter",
            "until: the only supported value is 'final'",
            errors=[ProblemFieldError(field="until", pointer="", detail="the only supported value is 'final'")],
        )
    return value


def _route_request_id(call: HttpCall) -> str | HttpAnswer:
    request_id = call.route_params.get("requestId", "")
    if not re.fullmatch(REQUEST_ID_PATTERN, request_id):
        detail = "1-128 characters of letters, digits and . _ : -"
        return problem(
            400,
            "invalid-parameter",
            "Invalid parameter",
            f"requestId: {detail}",
            errors=[ProblemFieldError(field="requestId", pointer="", detail=detail)],
        )
    return request_id


def field_errors(body: bytes, message: str) -> list[ProblemFieldError]:
    """Each field at fault, from the same model that validated the body; values never echoed."""
    document = _json_object(body)
    if document is not None:
        try:
            ResetRequest.model_validate(document)
        except ValidationError as exc:
            return [_field_error(error) for error in exc.errors(include_input=False, include_url=False)[:20]]
        except RecursionError:
            pass
    return [ProblemFieldError(field="", pointer="#", detail=message)]


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _field_error(error: Any) -> ProblemFieldError:
    location = [str(item) for item in error["loc"] if not str(item).startswith("function-after")]
    detail = "field required" if error["type"] == "missing" else str(error["msg"])
    pointer = "#" + "".join("/" + item.replace("~", "~0").replace("/", "~1") for item in location)
    return ProblemFieldError(field=".".join(location), pointer=pointer, detail=detail)


def json_answer(status: int, body: Any, *, headers: Mapping[str, str] | None = None) -> HttpAnswer:
    return HttpAnswer(
        status=status,
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
        headers={"Content-Type": JSON, **(headers or {})},
    )


def problem(
    status: int,
    kind: str,
    title: str,
    detail: str,
    *,
    request_id: str | None = None,
    errors: list[ProblemFieldError] | None = None,
    headers: Mapping[str, str] | None = None,
) -> HttpAnswer:
    body = Problem(
        type=PROBLEM_TYPE_PREFIX + kind, title=title, status=status, detail=detail, requestId=request_id, errors=errors
    )
    answer = json_answer(status, body.model_dump(mode="json", exclude_none=True), headers=headers)
    answer.headers["Content-Type"] = PROBLEM_JSON
    return answer


def _denied(denied: Denied) -> HttpAnswer:
    if denied.status == 401:
        return problem(401, "unauthenticated", "Unauthenticated", denied.detail, headers={"WWW-Authenticate": "Bearer"})
    return problem(403, "forbidden", "Forbidden", denied.detail)


def _unknown(request_id: str) -> HttpAnswer:
    return problem(404, "unknown-request", "Unknown request", "no request has this requestId", request_id=request_id)


def _unavailable(exc: BaseException, request_id: str | None) -> HttpAnswer:
    # The exception's text can carry storage URLs and hosts: neither the answer nor the log gets it.
    log.warning(
        "HTTP request failed on a dependency",
        extra={"requestId": request_id, "errorType": type(exc).__name__, "graphStatus": getattr(exc, "status", None)},
    )
    retry = UNAVAILABLE_RETRY_AFTER
    if isinstance(exc, GraphTransientError) and exc.retry_after:
        retry = max(1, round(exc.retry_after))
    return problem(
        503,
        "dependency-unavailable",
        "Service unavailable",
        "a dependency of the service did not answer; try again later",
        request_id=request_id,
        headers={"Retry-After": str(retry)},
    )
