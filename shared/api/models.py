"""The HTTP API's response models (request bodies are the contract's `ResetRequest`): the same
pydantic models build the answers and the OpenAPI document (shared/api/openapi.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.ports import CheckState

ProgressStatus = Literal["queued", "processing", "submitted", "awaiting_approval"]


class ResetAccepted(BaseModel):
    """Body of a 202: the request is in progress; poll `statusUrl` (also in `Location`)."""

    model_config = ConfigDict(extra="forbid", title="PasscodeResetAccepted")

    requestId: str = Field(description="The request's idempotency key (generated when the caller gave none)")
    status: ProgressStatus = Field(
        description="queued: accepted, not picked up yet; processing: being worked on; "
        "submitted: Intune accepted the action, waiting for the device; awaiting_approval: held for an "
        "approver (both only with until=final)"
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


SecretKind = Literal["passcode", "unlockPin"]


class PasscodeReveal(BaseModel):
    model_config = ConfigDict(extra="forbid", title="PasscodeReveal")

    requestId: str
    deviceId: str = Field(description="Intune managed device id")
    kind: SecretKind = Field(
        description="passcode: the new passcode of an Android passcode reset; unlockPin: the 6-digit recovery "
        "PIN of a macOS remote lock (Intune shows it 30 days or until the next action on the Mac)"
    )
    passcode: str = Field(
        description="The secret the user must type, as `kind` says (secret: never stored or logged)"
    )
    actionState: str = Field(description="State of the action (resetPasscode or remoteLock) on the device")
    startedAt: str | None = Field(default=None, description="When Intune started the action (UTC)")


class HealthChecks(BaseModel):
    model_config = ConfigDict(extra="forbid", title="HealthChecks")

    storage: CheckState = Field(description="Ledger table and request queue")
    graph: CheckState = Field(description="Microsoft Graph (Intune) with the app's identity")


class HealthReport(BaseModel):
    model_config = ConfigDict(extra="forbid", title="HealthReport")

    status: Literal["healthy", "degraded"]
    checks: HealthChecks
