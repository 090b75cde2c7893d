"""The HTTP API's transport-neutral types and answers: an `HttpCall` in, an `HttpAnswer` out.

function_app.py translates `azure.functions` objects to and from these, so the use cases in this
room never see the Functions SDK. Errors are RFC 9457 problem details
(docs/contract.md#problem-details); they name the fields at fault and never echo input values.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

from pydantic import ValidationError

from shared.api.auth import Denied
from shared.api.models import Problem, ProblemFieldError
from shared.core.contract import REQUEST_ID_PATTERN, ResetRequest
from shared.core.errors import GraphError, GraphTransientError, StorageConflict, StorageUnavailable

log = logging.getLogger("passcode_reset")

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:intune-passcode-reset:problem:"
UNAVAILABLE_RETRY_AFTER = 10
# What a dependency can raise: answered 503 + Retry-After, never 500 (docs/contract.md#storage-outages).
DEPENDENCY_ERRORS = (StorageUnavailable, GraphError, StorageConflict, OSError, TimeoutError)
# Every keyed route answers within this time, 503 + Retry-After when a dependency holds it up
# (docs/contract.md#storage-outages: within 30 s; docs/decisions/0023-storage-retry-budget.md).
ROUTE_DEADLINE_SECONDS = 25.0

Services = TypeVar("Services")


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


@dataclass(frozen=True)
class Links:
    status_url: str
    until_final: bool

    @classmethod
    def of(cls, call: HttpCall, request_id: str, until: str | None, *, route_segments: int) -> Links:
        """The absolute status URL on the host the caller used (`route_segments`: how many path
        segments the called route has after the prefix). `until` is kept so a poller that follows
        `Location` keeps waiting for the same thing; a function key the caller put in the URL
        (`code`) is kept too, because pollers that follow `Location` do not resend headers."""
        parts = urlsplit(call.url)
        base = base_path(parts.path, trailing_segments=route_segments)
        query: dict[str, str] = {}
        if until:
            query["until"] = until
        if call.query.get("code"):
            query["code"] = call.query["code"]
        url = f"{parts.scheme}://{parts.netloc}{base}/resets/{quote(request_id, safe='')}"
        return cls(status_url=url + (f"?{urlencode(query)}" if query else ""), until_final=until == "final")


def base_path(path: str, *, trailing_segments: int) -> str:
    """The route prefix (e.g. `/api`): the request path without the route's own segments."""
    segments = path.rstrip("/").split("/")
    return "/".join(segments[: max(1, len(segments) - trailing_segments)])


def until_parameter(call: HttpCall) -> str | HttpAnswer | None:
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


def route_request_id(call: HttpCall) -> str | HttpAnswer:
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


async def serve(
    use_case: Callable[[HttpCall, Services], Awaitable[HttpAnswer]],
    call: HttpCall,
    load: Callable[[], Awaitable[Services]],
    *,
    deadline: float = ROUTE_DEADLINE_SECONDS,
) -> HttpAnswer:
    """Load the services (the first call builds them and creates queues and tables) and run one
    route's use case within `deadline`: storage or Graph that fails or does not answer in time is a
    503 `dependency-unavailable` with `Retry-After`, never a 500 or a hanging caller. A use case cut
    short mid-way is safe: every write it makes is idempotent per requestId (submit: the record
    first, then the message, re-sent by a repeat; docs/decisions/0024-half-done-submissions.md)."""
    try:
        async with asyncio.timeout(deadline):
            return await use_case(call, await load())
    except DEPENDENCY_ERRORS as exc:
        request_id = call.route_params.get("requestId")
        return unavailable(exc, request_id if request_id and re.fullmatch(REQUEST_ID_PATTERN, request_id) else None)


def denied(denied: Denied) -> HttpAnswer:
    if denied.status == 401:
        return problem(401, "unauthenticated", "Unauthenticated", denied.detail, headers={"WWW-Authenticate": "Bearer"})
    return problem(403, "forbidden", "Forbidden", denied.detail)


def unknown_request(request_id: str) -> HttpAnswer:
    return problem(404, "unknown-request", "Unknown request", "no request has this requestId", request_id=request_id)


def unavailable(exc: BaseException, request_id: str | None) -> HttpAnswer:
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
