"""`POST /api/resets/{requestId}/approval` (docs/contract.md#approval-api): an approver approves or
denies a request that is awaiting approval.

Who the approver is depends on the mode: with App Service Authentication (`AUTH_REQUIRE_ROLES`)
the authenticated principal holding `PasscodeReset.Approve`, and a body `approver` is ignored;
with function keys only the body must name the approver, which is self-asserted (anyone holding
the key can write any name: docs/threat-model.md). The rules and the ledger write are the
workflow's (shared/workflow/approval.py), shared with the ops CLI and the batch approval route.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.api.auth import Denied, Role, authorize
from shared.api.http import (
    DEPENDENCY_ERRORS,
    HttpAnswer,
    HttpCall,
    Links,
    denied,
    json_answer,
    problem,
    route_request_id,
    unavailable,
    unknown_request,
)
from shared.api.models import ProblemFieldError
from shared.api.resets import status_answer
from shared.api.services import ApiServices
from shared.core.approvals import NotAwaiting, SamePerson
from shared.core.contract import describe_validation_error
from shared.observability import logs
from shared.workflow.approval import Decided, UnknownRequest, decide

log = logging.getLogger("passcode_reset")

_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
MAX_BODY_BYTES = 16 * 1024


class ApprovalDecision(BaseModel):
    """Body of `POST /api/resets/{requestId}/approval`."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, title="ApprovalDecision")

    decision: Literal["approve", "deny"] = Field(description="approve: the request goes on; deny: it ends rejected")
    comment: Annotated[str, Field(max_length=1000)] | None = Field(
        default=None, description="Why; recorded in the ledger and in every later event's approval"
    )
    approver: Annotated[str, Field(min_length=1, max_length=256, pattern=_PRINTABLE)] | None = Field(
        default=None,
        description="Required with function keys only (self-asserted); ignored when App Service "
        "Authentication names the caller",
    )


async def decide_approval(call: HttpCall, services: ApiServices) -> HttpAnswer:
    """200 with the status body after the decision; 400, 403 (role, four eyes), 404, 409."""
    caller = authorize(call.headers, Role.APPROVE, require_roles=services.require_roles)
    if isinstance(caller, Denied):
        return denied(caller)
    request_id = route_request_id(call)
    if isinstance(request_id, HttpAnswer):
        return request_id
    logs.bind(requestId=request_id)
    body = _read_body(call.body)
    if isinstance(body, HttpAnswer):
        return body
    if services.require_roles:
        approver = caller.principal or caller.name
    elif body.approver is not None and body.approver.strip():
        approver = body.approver.strip()
    else:
        return _invalid("approver: field required when the API is called with a function key only", "approver")
    assert services.workflow is not None, "the composition root gives the approval route the workflow's ports"
    try:
        result = await decide(services.workflow, request_id, body.decision, approver, body.comment)
    except DEPENDENCY_ERRORS as exc:
        return unavailable(exc, request_id)
    if isinstance(result, UnknownRequest):
        return unknown_request(request_id)
    if isinstance(result, SamePerson):
        return problem(403, "same-person", "Same person", result.detail, request_id=request_id)
    if isinstance(result, NotAwaiting):
        return problem(
            409,
            "not-awaiting-approval",
            "Not awaiting approval",
            "the request is not awaiting approval (already decided, expired, or never held); nothing changed",
            request_id=request_id,
        )
    assert isinstance(result, Decided)
    answer = status_answer(result.record, Links.of(call, request_id, None, route_segments=3), services.policy)
    return json_answer(200, json.loads(answer.body))


def _read_body(raw: bytes) -> ApprovalDecision | HttpAnswer:
    if len(raw) > MAX_BODY_BYTES:
        return problem(413, "payload-too-large", "Payload too large", f"the body is limited to {MAX_BODY_BYTES} bytes")
    try:
        document: Any = json.loads(raw or b"null")
    except (ValueError, RecursionError):
        return _invalid("the body is not valid JSON", "")
    if not isinstance(document, dict):
        return _invalid("the body must be a JSON object", "")
    try:
        return ApprovalDecision.model_validate(document)
    except ValidationError as exc:
        fields = [str(error["loc"][0]) for error in exc.errors(include_input=False, include_url=False) if error["loc"]]
        return _invalid(describe_validation_error(exc), fields[0] if fields else "")


def _invalid(detail: str, field: str) -> HttpAnswer:
    pointer = "#/" + field if field else "#"
    return problem(
        400,
        "invalid-request",
        "Invalid request",
        detail,
        errors=[ProblemFieldError(field=field, pointer=pointer, detail=detail)],
    )
