"""The HTTP API's batch routes (docs/contract.md#batches): submit a batch (JSON or CSV), read its
state and counts (with Power Automate's asynchronous pattern, `?until=done`), list its items.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from pydantic import ValidationError

from shared.api.approvals import ApprovalDecision
from shared.api.auth import Denied, Role, authorize
from shared.api.http import (
    DEPENDENCY_ERRORS,
    PROBLEM_JSON,
    PROBLEM_TYPE_PREFIX,
    HttpAnswer,
    HttpCall,
    base_path,
    denied,
    json_answer,
    problem,
    unavailable,
)
from shared.core.batches import (
    BATCH_ID_PATTERN,
    Batch,
    BatchState,
    ItemRow,
    RowError,
    TooLarge,
    new_batch_id,
    read_batch_csv,
    read_batch_json,
)
from shared.core.contract import describe_validation_error
from shared.observability import logs
from shared.workflow.batches import (
    Accepted,
    BatchDecided,
    BatchNotAwaiting,
    BatchSamePerson,
    BatchServices,
    UnknownBatch,
    accept_batch,
    decide_batch,
    item_identifiers,
    read_batch,
)

log = logging.getLogger("passcode_reset")


@dataclass(frozen=True)
class BatchApi:
    """What the batch routes receive (built by function_app.py from the runtime)."""

    batches: BatchServices
    require_roles: bool = False


APPROVAL_BODY_BYTES = 16 * 1024
# A batch takes a while: pollers come back after this many seconds.
BATCH_RETRY_AFTER = 10
ITEM_COLUMNS = (
    "n",
    "identifierKind",
    "identifierValue",
    "requestId",
    "status",
    "reasonCode",
    "deviceId",
    "platform",
    "action",
)


async def submit_batch(call: HttpCall, api: BatchApi) -> HttpAnswer:
    """202 with where to poll; 400 naming every invalid row; 409 for a reused batchId; 413."""
    caller = authorize(call.headers, Role.SUBMIT, require_roles=api.require_roles)
    if isinstance(caller, Denied):
        return denied(caller)
    s = api.batches
    content_type = call.headers.get("content-type", "").split(";")[0].strip().lower()
    parsed = read_batch_csv(call.body, call.query) if content_type == "text/csv" else read_batch_json(call.body)
    if isinstance(parsed, TooLarge):
        return problem(413, "payload-too-large", "Payload too large", parsed.detail)
    if isinstance(parsed, list):
        return _invalid(parsed)
    batch: Batch = parsed if parsed.fields.batchId is not None else parsed.with_id(new_batch_id())
    logs.bind(batchId=batch.batch_id, correlationId=batch.fields.correlationId)
    try:
        if batch.group_id is not None and not await s.directory.group_exists(batch.group_id):
            return _invalid([RowError(None, "entraGroupId", "Graph knows no group with this id")])
        result = await accept_batch(batch, s)
    except DEPENDENCY_ERRORS as exc:
        return unavailable(exc, None)
    if not isinstance(result, Accepted):
        return problem(
            409,
            "batch-conflict",
            "Batch conflict",
            "this batchId was already used for a different batch; use a new batchId",
        )
    status_url = _batch_url(call, batch.batch_id, route_segments=1)
    body = {"batchId": batch.batch_id, "status": "accepted", "statusUrl": status_url, "items": result.record.items}
    log.info(
        "batch accepted over HTTP" if result.created else "repeated HTTP batch",
        extra={"event": "http_batch", "batchId": batch.batch_id, "items": result.record.items, "caller": caller.name},
    )
    return json_answer(202, body, headers={"Location": status_url, "Retry-After": str(BATCH_RETRY_AFTER)})


async def get_batch(call: HttpCall, api: BatchApi) -> HttpAnswer:
    """The batch's state and counts; with `?until=done`, 202 + Retry-After until it is done."""
    caller = authorize(call.headers, Role.READ, require_roles=api.require_roles)
    if isinstance(caller, Denied):
        return denied(caller)
    s = api.batches
    batch_id = _route_batch_id(call)
    if isinstance(batch_id, HttpAnswer):
        return batch_id
    until = call.query.get("until") or None
    if until not in (None, "done"):
        return _invalid_parameter("until", "the only supported value is 'done'")
    try:
        view = await read_batch(s, batch_id, details=False)
    except DEPENDENCY_ERRORS as exc:
        return unavailable(exc, None)
    if view is None:
        return _unknown_batch()
    body = {
        "batchId": batch_id,
        "state": view.state.value,
        "items": view.record.items,
        "counts": view.progress.counts,
        "final": view.progress.final,
    }
    if until == "done" and view.state is not BatchState.DONE:
        url = _batch_url(call, batch_id, route_segments=2, until="done")
        return json_answer(202, body, headers={"Location": url, "Retry-After": str(BATCH_RETRY_AFTER)})
    return json_answer(200, body)


async def get_batch_items(call: HttpCall, api: BatchApi) -> HttpAnswer:
    """One row per item (JSON, or CSV with `?format=csv`)."""
    caller = authorize(call.headers, Role.READ, require_roles=api.require_roles)
    if isinstance(caller, Denied):
        return denied(caller)
    s = api.batches
    batch_id = _route_batch_id(call)
    if isinstance(batch_id, HttpAnswer):
        return batch_id
    output = call.query.get("format") or "json"
    if output not in ("json", "csv"):
        return _invalid_parameter("format", "json or csv")
    try:
        view = await read_batch(s, batch_id, details=True)
        refs = await item_identifiers(s, view.record) if view is not None else []
    except DEPENDENCY_ERRORS as exc:
        return unavailable(exc, None)
    if view is None:
        return _unknown_batch()
    by_n = {row.n: row for row in view.rows}
    items = [_item(n, ref.kind, ref.value, batch_id, by_n.get(n)) for n, ref in enumerate(refs, start=1)]
    if output == "json":
        return json_answer(200, {"batchId": batch_id, "items": items})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=ITEM_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(items)
    return HttpAnswer(200, text.getvalue().encode("utf-8"), {"Content-Type": "text/csv; charset=utf-8"})


def _item(n: int, kind: str, value: str, batch_id: str, row: ItemRow | None) -> dict[str, Any]:
    return {
        "n": n,
        "identifierKind": kind,
        "identifierValue": value,
        "requestId": f"{batch_id}.{n}",
        "status": row.status if row else "pending",
        "reasonCode": row.reason_code if row else None,
        "deviceId": row.device_id if row else None,
        "platform": row.platform if row else None,
        "action": row.action if row else None,
    }


def _invalid(errors: list[RowError]) -> HttpAnswer:
    rows = sorted({error.row for error in errors if error.row is not None})
    detail = (
        f"{len(rows)} invalid row(s); nothing was accepted" if rows else "the batch is invalid; nothing was accepted"
    )
    body = {
        "type": PROBLEM_TYPE_PREFIX + "invalid-batch",
        "title": "Invalid batch",
        "status": 400,
        "detail": detail,
        "errors": [error.to_json() for error in errors],
    }
    answer = json_answer(400, body)
    answer.headers["Content-Type"] = PROBLEM_JSON
    return answer


def _invalid_parameter(name: str, detail: str) -> HttpAnswer:
    return _invalid([RowError(None, name, detail)])


def _unknown_batch() -> HttpAnswer:
    return problem(404, "unknown-batch", "Unknown batch", "no batch has this batchId")


def _route_batch_id(call: HttpCall) -> str | HttpAnswer:
    batch_id = call.route_params.get("batchId", "")
    if not re.fullmatch(BATCH_ID_PATTERN, batch_id):
        return _invalid_parameter("batchId", "1-100 characters of letters, digits and . _ : -")
    return batch_id


def _batch_url(call: HttpCall, batch_id: str, *, route_segments: int, until: str | None = None) -> str:
    """The absolute status URL on the host the caller used; a function key in the URL is kept."""
    parts = urlsplit(call.url)
    base = base_path(parts.path, trailing_segments=route_segments)
    query = {key: value for key, value in (("until", until), ("code", call.query.get("code"))) if value}
    url = f"{parts.scheme}://{parts.netloc}{base}/batches/{quote(batch_id, safe='')}"
    return url + (f"?{urlencode(query)}" if query else "")


async def decide_batch_approval(call: HttpCall, api: BatchApi) -> HttpAnswer:
    """`POST /api/batches/{batchId}/approval`: one decision for the batch's items, present and to
    come (docs/contract.md#approval-api); the approver is named as for a request's approval."""
    caller = authorize(call.headers, Role.APPROVE, require_roles=api.require_roles)
    if isinstance(caller, Denied):
        return denied(caller)
    batch_id = _route_batch_id(call)
    if isinstance(batch_id, HttpAnswer):
        return batch_id
    logs.bind(batchId=batch_id)
    if len(call.body) > APPROVAL_BODY_BYTES:
        return problem(
            413, "payload-too-large", "Payload too large", f"the body is limited to {APPROVAL_BODY_BYTES} bytes"
        )
    try:
        body = ApprovalDecision.model_validate_json(call.body or b"null")
    except ValidationError as exc:
        return _invalid([RowError(None, _first_field(exc), describe_validation_error(exc))])
    if api.require_roles:
        approver = caller.principal or caller.name
    elif body.approver is not None and body.approver.strip():
        approver = body.approver.strip()
    else:
        return _invalid_parameter("approver", "field required when the API is called with a function key only")
    try:
        result = await decide_batch(api.batches, batch_id, body.decision, approver, body.comment)
    except DEPENDENCY_ERRORS as exc:
        return unavailable(exc, None)
    if isinstance(result, UnknownBatch):
        return _unknown_batch()
    if isinstance(result, BatchSamePerson):
        return problem(403, "same-person", "Same person", result.detail)
    if isinstance(result, BatchNotAwaiting):
        return problem(
            409,
            "not-awaiting-approval",
            "Not awaiting approval",
            "neither the batch nor any of its items is awaiting approval (or it was decided already); nothing changed",
        )
    assert isinstance(result, BatchDecided)
    view = result.view
    return json_answer(
        200,
        {
            "batchId": batch_id,
            "state": view.state.value,
            "items": view.record.items,
            "counts": view.progress.counts,
            "final": view.progress.final,
        },
    )


def _first_field(exc: ValidationError) -> str:
    errors = exc.errors(include_input=False, include_url=False)
    return str(errors[0]["loc"][0]) if errors and errors[0]["loc"] else ""
