"""The external contract: the reset request (docs/contract.md#request-message) and the outcome event (section 6).

The same pydantic models validate queue messages and HTTP bodies and generate the JSON Schemas
published under schemas/.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_MESSAGE_BYTES = 64 * 1024
# The request message member a batch names its item's batch with (never part of the request).
BATCH_MEMBER = "batchId"
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
GUID_PATTERN = r"^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
# Printable text without control characters: identifiers and audit fields end up in OData
# filters, logs and tickets, where control characters only ever cause harm.
_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
# The same, with at least one character that is not white space (`\S` alone would admit one
# control character).
_SERIAL_NUMBER = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"

RequestId = Annotated[str, Field(pattern=REQUEST_ID_PATTERN, description="Idempotency key")]
Guid = Annotated[str, Field(pattern=GUID_PATTERN)]
ShortText = Annotated[str, Field(max_length=128, pattern=_PRINTABLE)]


class Status(StrEnum):
    SUBMITTED = "submitted"
    COMPLETED = "completed"
    FAILED = "failed"
    UNSUPPORTED = "unsupported"
    REJECTED = "rejected"
    DRY_RUN = "dry_run"
    TIMED_OUT = "timed_out"
    AWAITING_APPROVAL = "awaiting_approval"  # held before any action call (docs/contract.md#approval-rules)

    @property
    def is_final(self) -> bool:
        return self not in (Status.SUBMITTED, Status.AWAITING_APPROVAL)


class ReasonCode(StrEnum):
    INVALID_REQUEST = "invalid_request"
    DEVICE_NOT_FOUND = "device_not_found"
    AMBIGUOUS_DEVICE = "ambiguous_device"
    USER_MISMATCH = "user_mismatch"
    COOLDOWN = "cooldown"
    REQUEST_CONFLICT = "request_conflict"
    PLATFORM_UNSUPPORTED = "platform_unsupported"
    WOULD_RUN = "would_run"
    ACTION_FAILED = "action_failed"
    ACTION_CANCELED = "action_canceled"
    ACTION_NOT_SUPPORTED = "action_not_supported"
    GRAPH_REJECTED = "graph_rejected"
    RETRIES_EXHAUSTED = "retries_exhausted"
    CONFIRMATION_TIMEOUT = "confirmation_timeout"
    REQUESTER_NOT_ALLOWED = "requester_not_allowed"
    APPROVAL_DENIED = "approval_denied"
    APPROVAL_EXPIRED = "approval_expired"
    APPROVAL_REQUIRED = "approval_required"
    GUARDRAIL_TRIPPED = "guardrail_tripped"


class DeviceRef(BaseModel):
    """Exactly one identifier of the device to reset."""

    model_config = ConfigDict(
        strict=True,
        extra="ignore",
        frozen=True,
        json_schema_extra={
            "oneOf": [
                {"required": [name], "properties": {name: {"type": "string"}}}
                for name in ("intuneDeviceId", "azureAdDeviceId", "serialNumber", "imei")
            ]
        },
    )

    intuneDeviceId: Guid | None = None
    azureAdDeviceId: Guid | None = None
    serialNumber: Annotated[str, Field(min_length=1, max_length=128, pattern=_SERIAL_NUMBER)] | None = None
    imei: Annotated[str, Field(pattern=r"^[0-9]{14,16}$")] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> DeviceRef:
        given = [name for name in IDENTIFIER_KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(
                "give exactly one of intuneDeviceId, azureAdDeviceId, serialNumber, imei (found: " + found + ")"
            )
        return self

    @property
    def kind(self) -> str:
        return next(name for name in IDENTIFIER_KINDS if getattr(self, name) is not None)

    @property
    def value(self) -> str:
        return str(getattr(self, self.kind))


IDENTIFIER_KINDS = ("intuneDeviceId", "azureAdDeviceId", "serialNumber", "imei")


class ResetRequest(BaseModel):
    """A request to reset one Intune-managed device's passcode (version 1)."""

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True, title="PasscodeResetRequest")

    requestId: RequestId | None = Field(
        default=None, description="Idempotency key; required on the queue, generated over HTTP when absent"
    )
    device: DeviceRef
    expectedUserPrincipalName: Annotated[str, Field(min_length=1, max_length=256, pattern=_PRINTABLE)] | None = None
    requestedBy: Annotated[str, Field(min_length=1, max_length=256, pattern=_PRINTABLE)]
    reason: Annotated[str, Field(max_length=500)] | None = None
    ticketId: ShortText | None = None
    correlationId: ShortText | None = None
    allowRemoteLock: bool = False
    dryRun: bool = False

    def payload_hash(self) -> str:
        """Fingerprint of what the request asks for, used to detect a reused requestId."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    def to_message(self, trace_context: Mapping[str, str] | None = None, *, batch_id: str | None = None) -> str:
        """The queue message for this request: its JSON plus the W3C trace context members
        (docs/decisions/0009-trace-context.md). The model ignores them when reading, so they never
        reach the payload hash or the ledger. A batch item released without a ledger record also
        names its `batchId` (docs/decisions/0027-batch-items-released-as-messages.md)."""
        document = self.model_dump(mode="json", exclude_none=True)
        document.update(trace_members(trace_context or {}))
        if batch_id is not None:
            document[BATCH_MEMBER] = batch_id
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class InvalidRequest:
    """A message that is not a valid request; `request_id` is set when one could be read safely."""

    message: str
    request_id: str | None = None


def parse_request_message(body: bytes | str, *, require_request_id: bool = True) -> ResetRequest | InvalidRequest:
    """Decode a queue message or HTTP body (plain or base64 JSON) into a ResetRequest."""
    return read_request_message(body, require_request_id=require_request_id).request


@dataclass(frozen=True)
class RequestMessage:
    """A request message as read: the request (or why it is invalid) and the W3C trace context
    members it carried (`traceparent`, `tracestate`; empty when absent or malformed)."""

    request: ResetRequest | InvalidRequest
    trace_context: dict[str, str]
    # The `batchId` member as written (a string, else None); only the request function decides
    # whether it names this request's batch (shared/workflow/request.py).
    batch_id: str | None = None


def read_request_message(body: bytes | str, *, require_request_id: bool = True) -> RequestMessage:
    """`parse_request_message` that also returns the message's trace context members."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    if len(raw) > MAX_MESSAGE_BYTES:
        return RequestMessage(InvalidRequest(f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}"), {})
    if not raw.strip():
        return RequestMessage(InvalidRequest("message is empty"), {})
    text = _decode_text(raw)
    if text is None:
        return RequestMessage(InvalidRequest("message is neither UTF-8 JSON nor base64-encoded UTF-8 JSON"), {})
    try:
        document = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except _DuplicateKey as exc:
        return RequestMessage(InvalidRequest(f"duplicate JSON member {str(exc)!r}"), {})
    except RecursionError:
        return RequestMessage(InvalidRequest("message is nested too deeply"), {})
    except ValueError as exc:
        if text.lstrip().startswith(("{", "[")):
            return RequestMessage(
                InvalidRequest(f"message is not valid JSON ({getattr(exc, 'msg', 'syntax error')})"), {}
            )
        return RequestMessage(InvalidRequest("message is neither JSON nor base64-encoded JSON"), {})
    context = trace_members(document) if isinstance(document, dict) else {}
    batch_id = document.get(BATCH_MEMBER) if isinstance(document, dict) else None
    return RequestMessage(
        validate_request(document, require_request_id=require_request_id),
        context,
        batch_id if isinstance(batch_id, str) else None,
    )


def validate_request(document: Any, *, require_request_id: bool = True) -> ResetRequest | InvalidRequest:
    if not isinstance(document, dict):
        return InvalidRequest("message must be a JSON object")
    request_id = _safe_request_id(document)
    try:
        request = ResetRequest.model_validate(document)
    except ValidationError as exc:
        return InvalidRequest(describe_validation_error(exc), request_id)
    except RecursionError:
        return InvalidRequest("message is nested too deeply", request_id)
    if require_request_id and request.requestId is None:
        return InvalidRequest("requestId: field required", None)
    return request


def describe_validation_error(exc: ValidationError) -> str:
    """Field paths and rules only: input values are never echoed (they may be sensitive)."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False)[:10]:
        location = ".".join(str(item) for item in error["loc"] if not str(item).startswith("function-after"))
        message = error["msg"]
        if error["type"] == "missing":
            message = "field required"
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


def _decode_text(raw: bytes) -> str | None:
    """Plain JSON is taken as is; anything else must be base64 of JSON (docs/contract.md#request-message)."""
    stripped = raw.strip()
    if not stripped.startswith((b"{", b"[")):
        try:
            decoded = base64.b64decode(stripped, validate=True).strip()
        except (binascii.Error, ValueError):
            decoded = b""
        if decoded.startswith((b"{", b"[")):
            stripped = decoded
    return _utf8(stripped)


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


class _DuplicateKey(ValueError):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key[:64])
        result[key] = value
    return result


# ---------------------------------------------------------------- W3C trace context (decision 0009)

# Version 00 of https://www.w3.org/TR/trace-context/#traceparent-header (all-zero ids are invalid too).
TRACEPARENT_PATTERN = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
_INVALID_IDS = frozenset({"0" * 32, "0" * 16})
TRACESTATE_MAX_LENGTH = 512
_TRACESTATE = re.compile(r"^[\x20-\x7e]*$")


def trace_members(document: Mapping[str, Any]) -> dict[str, str]:
    """The valid `traceparent` and `tracestate` members of a message, an event or a header map.

    A malformed `traceparent` is dropped (the receiver starts a new trace); `tracestate` only
    travels with a valid `traceparent`, as W3C trace context requires."""
    traceparent = document.get("traceparent")
    if not isinstance(traceparent, str):
        return {}
    traceparent = traceparent.strip().lower()
    trace_and_parent_ids = {traceparent[3:35], traceparent[36:52]}
    if not re.fullmatch(TRACEPARENT_PATTERN, traceparent) or trace_and_parent_ids & _INVALID_IDS:
        return {}
    members = {"traceparent": traceparent}
    tracestate = document.get("tracestate")
    if (
        isinstance(tracestate, str)
        and tracestate.strip()
        and len(tracestate) <= TRACESTATE_MAX_LENGTH
        and _TRACESTATE.fullmatch(tracestate)
    ):
        members["tracestate"] = tracestate.strip()
    return members


def _safe_request_id(document: dict[str, Any]) -> str | None:
    value = document.get("requestId")
    if isinstance(value, str) and re.fullmatch(REQUEST_ID_PATTERN, value):
        return value
    return None


# ---------------------------------------------------------------- outcome events (section 6)

EVENT_SOURCE = "/intune-passcode-reset"
EVENT_TYPE_PREFIX = "intune.passcode-reset."


class EventDevice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str | None = None
    operatingSystem: str | None = None
    osVersion: str | None = None
    platform: str
    userPrincipalName: str | None = None


class EventReason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: ReasonCode
    message: str


class ApprovalRecord(BaseModel):
    """A human decision on a held request (docs/contract.md#approval-api)."""

    model_config = ConfigDict(extra="forbid", title="PasscodeResetApproval")

    decision: Literal["approve", "deny"]
    by: str = Field(description="The approver: the authenticated principal, or self-asserted with function keys")
    at: str = Field(description="When the decision was recorded (UTC)")
    comment: str | None = None


class OutcomeData(BaseModel):
    model_config = ConfigDict(extra="forbid", title="PasscodeResetOutcome")

    requestId: str | None
    correlationId: str | None = None
    status: Status
    action: Literal["removePasscode", "resetPasscode", "remoteLock"] | None = None
    scope: Literal["device", "workProfile"] | None = None
    device: EventDevice | None = None
    reason: EventReason | None = None
    requestReason: str | None = None
    requestedBy: str | None = None
    ticketId: str | None = None
    attempt: int = Field(ge=0)
    submittedBy: str | None = Field(
        default=None, description="The authenticated HTTP caller (roles mode); null on the queue and without roles"
    )
    batchId: str | None = Field(default=None, description="The batch of the request; null outside a batch")
    approval: ApprovalRecord | None = Field(default=None, description="The approval decision, once there is one")

    @model_validator(mode="after")
    def _reason_matches_status(self) -> OutcomeData:
        needs_reason = self.status not in (Status.SUBMITTED, Status.COMPLETED)
        if needs_reason != (self.reason is not None):
            raise ValueError(f"reason must be {'set' if needs_reason else 'null'} for status {self.status}")
        return self


class OutcomeEvent(BaseModel):
    """CloudEvents 1.0, structured mode, JSON."""

    model_config = ConfigDict(extra="forbid", title="PasscodeResetOutcomeEvent")

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str = EVENT_SOURCE
    type: str
    subject: str | None = None
    time: str
    datacontenttype: Literal["application/json"] = "application/json"
    data: OutcomeData
    # CloudEvents distributed tracing extension: the trace of the request that produced the event.
    traceparent: Annotated[str, Field(pattern=TRACEPARENT_PATTERN)] | None = Field(
        default=None,
        description="W3C traceparent of the operation that published this event (CloudEvents "
        "distributed tracing extension)",
    )
    tracestate: Annotated[str, Field(max_length=TRACESTATE_MAX_LENGTH)] | None = Field(
        default=None, description="W3C tracestate accompanying traceparent (distributed tracing extension)"
    )
