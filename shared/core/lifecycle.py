"""The request lifecycle: one state type, the transition table, and every decision as a pure function.

A request's ledger record (`LedgerRecord`) is the truth about it. The use cases in
shared/workflow/ load the record and the facts (the device, Graph's answer, the clock), ask a
function here what to do, and carry the answer out: act, defer, publish an outcome, reconcile,
schedule a follow-up. Nothing here awaits, reads a clock or imports an SDK, so every rule is a
table test away (tests/unit/test_lifecycle.py). The states and statuses are described in
docs/contract.md#statuses and docs/operations.md; `TRANSITIONS` is the table both follow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.core.clock import iso, parse_iso
from shared.core.contract import ReasonCode, ResetRequest, Status
from shared.core.device import ActionResult, IntuneDevice
from shared.core.errors import ActionOutcomeUnknown, GraphBudgetExhausted, GraphError, GraphTransientError
from shared.core.platforms import Decision


class State(StrEnum):
    """The ledger record's state: three working states, then the statuses of the outcome events."""

    QUEUED = "queued"  # accepted over HTTP, not picked up yet
    PROCESSING = "processing"  # picked up; no action call in flight
    ACTING = "acting"  # an action call started at action_started_at; its result may be unknown
    SUBMITTED = "submitted"  # Intune accepted the action; waiting for the device to confirm
    COMPLETED = "completed"
    FAILED = "failed"
    UNSUPPORTED = "unsupported"
    REJECTED = "rejected"
    DRY_RUN = "dry_run"
    TIMED_OUT = "timed_out"
    AWAITING_APPROVAL = "awaiting_approval"  # held before any action call until a human decides

    @property
    def final(self) -> bool:
        return self in FINAL_STATES

    @property
    def in_progress(self) -> bool:
        """No outcome event yet: the HTTP API answers 202 while the record is in one of these."""
        return self in (State.QUEUED, State.PROCESSING, State.ACTING)

    @classmethod
    def of(cls, status: Status) -> State:
        return cls(status.value)


FINAL_STATES = frozenset(
    {State.COMPLETED, State.FAILED, State.UNSUPPORTED, State.REJECTED, State.DRY_RUN, State.TIMED_OUT}
)

# Every move a record can make. `LedgerRecord.moved_to` refuses any other, so a rule that forgets a
# guard fails loudly instead of writing a record that lies. docs/operations.md lists the same table
# (tests/unit/test_lifecycle.py keeps the two equal).
TRANSITIONS: Mapping[State, frozenset[State]] = {
    # Picked up by the request queue; a poisoned message settles a request that never started.
    State.QUEUED: frozenset({State.PROCESSING, State.FAILED}),
    # Resolution, classification, cooldown and policy end here or lead to the action call.
    State.PROCESSING: frozenset(
        {State.ACTING, State.UNSUPPORTED, State.REJECTED, State.DRY_RUN, State.FAILED, State.AWAITING_APPROVAL}
    ),
    # Held for a human (docs/contract.md#approvals-guardrails-and-requesters): approved goes back to
    # PROCESSING (re-enqueued); denied or expired ends rejected.
    State.AWAITING_APPROVAL: frozenset({State.PROCESSING, State.REJECTED}),
    # The action call: accepted, refused, or unknown and then reconciled (back to PROCESSING when it
    # never reached Intune, so the next delivery may call it again).
    State.ACTING: frozenset({State.SUBMITTED, State.PROCESSING, State.FAILED}),
    # Confirmation on the device.
    State.SUBMITTED: frozenset({State.COMPLETED, State.FAILED, State.TIMED_OUT}),
    **{state: frozenset() for state in FINAL_STATES},
}

HISTORY_LIMIT = 40


class IllegalTransition(RuntimeError):
    """A rule tried to move a record along an edge `TRANSITIONS` does not have: a bug, not input."""


@dataclass(frozen=True)
class Policy:
    """The lifecycle's knobs (settings: docs/contract.md#settings; the rest are fixed here)."""

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
    # Approvals and guardrails (docs/contract.md#approvals-guardrails-and-requesters).
    approval_rules: frozenset[str] = frozenset()
    approval_timeout_seconds: int = 86400
    guardrail_max_actions_per_hour: int = 100  # 0 = off
    guardrail_max_per_requester_per_hour: int = 0  # 0 = off
    allowed_requesters: tuple[str, ...] = ()  # empty = anyone

    @property
    def clock_tolerance(self) -> timedelta:
        return timedelta(seconds=self.clock_tolerance_seconds)


# ====================================================================== the record


@dataclass(frozen=True)
class LedgerRecord:
    request_id: str
    payload_hash: str
    request_json: str
    state: State
    created_at: datetime
    updated_at: datetime
    attempt: int = 0
    deferrals: int = 0
    action_started_at: datetime | None = None
    submitted_at: datetime | None = None
    device_id: str | None = None
    device_json: str | None = None
    platform: str | None = None
    action: str | None = None
    scope: str | None = None
    last_event_json: str | None = None
    requested_by: str | None = None
    ticket_id: str | None = None
    history: tuple[dict[str, Any], ...] = ()
    etag: str | None = field(default=None, compare=False)
    # v2, approvals (docs/contract.md#approvals-guardrails-and-requesters): who called over HTTP in
    # roles mode, the batch (set by batch expansion), when the request was last held, and the human
    # decision ({decision, by, at, comment}). An `approve` here, from a request's own approval or from
    # its batch's, means the request is never held (again), by rules or guardrails.
    submitted_by: str | None = None
    batch_id: str | None = None
    held_at: datetime | None = None
    approval: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", State(self.state))  # also accepts the stored string

    @property
    def final(self) -> bool:
        return self.state.final

    def moved_to(self, state: State | str, now: datetime, note: str | None = None, **changes: Any) -> LedgerRecord:
        """The record after one transition of `TRANSITIONS`, with a history entry."""
        state = State(state)
        if state not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"request {self.request_id}: {self.state} -> {state} is not a transition")
        entry = {"time": iso(now), "state": state.value}
        if note:
            entry["note"] = note[:200]
        history = (*self.history, entry)[-HISTORY_LIMIT:]
        return replace(self, state=state, updated_at=now, history=history, **changes)

    @property
    def last_event(self) -> dict[str, Any] | None:
        return json.loads(self.last_event_json) if self.last_event_json else None

    @property
    def approved(self) -> bool:
        return bool(self.approval) and self.approval.get("decision") == "approve"  # type: ignore[union-attr]


def new_record(
    request: ResetRequest,
    state: State,
    now: datetime,
    note: str | None = None,
    *,
    submitted_by: str | None = None,
    batch_id: str | None = None,
) -> LedgerRecord:
    """The first ledger record of a request, keyed by its requestId and payload hash. `submitted_by`
    (the authenticated HTTP caller) is recorded next to the request, not in it: the payload hash is
    of the request only."""
    if state not in (State.QUEUED, State.PROCESSING):
        raise IllegalTransition(f"a request starts queued or processing, not {state}")
    entry = {"time": iso(now), "state": state.value, **({"note": note} if note else {})}
    return LedgerRecord(
        request_id=str(request.requestId),
        payload_hash=request.payload_hash(),
        request_json=request.to_json(),
        state=state,
        created_at=now,
        updated_at=now,
        requested_by=request.requestedBy,
        ticket_id=request.ticketId,
        history=(entry,),
        submitted_by=submitted_by,
        batch_id=batch_id,
    )


@dataclass(frozen=True)
class DeviceClaim:
    """Result of claiming a device for an action: granted, or blocked by another request."""

    granted: bool
    blocking_request_id: str | None = None
    blocking_since: datetime | None = None


# ====================================================================== decisions


@dataclass(frozen=True)
class Finish:
    """Publish this final (or, for SUBMITTED, the first) outcome and record it."""

    status: Status
    code: ReasonCode | None = None
    message: str = ""


@dataclass(frozen=True)
class Defer:
    """Put the request back on its queue for `seconds`. `cause` is a short word for logs and the
    deferral counter: graph_throttled (Graph answered 429), graph_budget (the app's own Graph
    budget), graph_unavailable (other transient Graph errors), ledger_conflict,
    concurrent_delivery, action_in_flight, action_unconfirmed."""

    seconds: float
    cause: str
    why: str


@dataclass(frozen=True)
class Republish:
    """The request already has its outcome: publish the recorded event again, unchanged."""


@dataclass(frozen=True)
class Reconcile:
    """An action call may have reached Intune: look for its result before anything else."""


@dataclass(frozen=True)
class Process:
    """Resolve, classify and (maybe) act."""


@dataclass(frozen=True)
class Act:
    """Call the action."""


@dataclass(frozen=True)
class RecordSubmitted:
    """The action reached Intune: record `submitted`, publish it, schedule the first check."""


@dataclass(frozen=True)
class Retry:
    """Go back to PROCESSING (with `attempt`) and defer: the action may be called again later."""

    defer: Defer
    attempt: int
    note: str


@dataclass(frozen=True)
class Resume:
    """Go back to PROCESSING and carry on in this delivery (the earlier action call is over)."""

    note: str


@dataclass(frozen=True)
class FollowUp:
    """Check the device again in `delay` seconds (`check` counts the checks)."""

    delay: int
    check: int


@dataclass(frozen=True)
class Ignore:
    """Nothing to do (and nothing to publish): `why` goes to the log."""

    why: str


# ====================================================================== a delivery of the request


def on_delivery(record: LedgerRecord, now: datetime, policy: Policy) -> Republish | Reconcile | Process | Finish:
    """A request message arrived (first delivery, redelivery or a deferred copy)."""
    if record.final or record.state in (State.SUBMITTED, State.AWAITING_APPROVAL):
        return Republish()
    if record.state is State.ACTING:
        return Reconcile()
    if now - deadline_start(record) > timedelta(seconds=policy.request_deadline_seconds):
        return Finish(
            Status.FAILED,
            ReasonCode.RETRIES_EXHAUSTED,
            f"no action could be taken within {policy.request_deadline_seconds} s",
        )
    return Process()


def deadline_start(record: LedgerRecord) -> datetime:
    """REQUEST_DEADLINE_SECONDS counts from the first sight of the request, or from its approval: the
    time a request waited for a human is not time it failed to act (docs/decisions/0015-approval-lifecycle.md)."""
    if record.approved:
        decided = parse_iso(str(record.approval.get("at")))  # type: ignore[union-attr]
        if decided is not None and decided > record.created_at:
            return decided
    return record.created_at


def resolution(kind: str, candidates: list[IntuneDevice], expected_upn: str | None) -> IntuneDevice | Finish:
    """The one device to act on, or why there is none. Candidates are already verified against the
    identifier client-side (docs/contract.md#device-resolution): never act on an unverified match."""
    if not candidates:
        return Finish(Status.REJECTED, ReasonCode.DEVICE_NOT_FOUND, f"no Intune device has this {kind}")
    if len(candidates) > 1:
        return Finish(
            Status.REJECTED,
            ReasonCode.AMBIGUOUS_DEVICE,
            f"{len(candidates)} Intune devices share this {kind}; use intuneDeviceId",
        )
    device = candidates[0]
    if expected_upn is not None and (device.user_principal_name or "").casefold() != expected_upn.casefold():
        return Finish(
            Status.REJECTED, ReasonCode.USER_MISMATCH, "the device's primary user is not expectedUserPrincipalName"
        )
    return device


def classification(decision: Decision, *, dry_run: bool) -> Act | Finish:
    """Unsupported platforms and dry runs end before any action call."""
    if not decision.supported:
        return Finish(Status.UNSUPPORTED, ReasonCode.PLATFORM_UNSUPPORTED, decision.why_not or "")
    if dry_run:
        return Finish(
            Status.DRY_RUN,
            ReasonCode.WOULD_RUN,
            f"dryRun: {decision.action} ({decision.scope}) would run on this device",
        )
    return Act()


def before_action(record: LedgerRecord, policy: Policy) -> Act | Finish:
    """The attempt limit, checked before the device is claimed."""
    if record.attempt >= policy.max_action_attempts:
        return Finish(Status.FAILED, ReasonCode.RETRIES_EXHAUSTED, f"the action call failed {record.attempt} times")
    return Act()


def cooldown(claim: DeviceClaim, policy: Policy) -> Act | Finish:
    """A second reset of one device inside the cooldown window is rejected."""
    if claim.granted:
        return Act()
    since = iso(claim.blocking_since) if claim.blocking_since else "recently"
    return Finish(
        Status.REJECTED,
        ReasonCode.COOLDOWN,
        f"request {claim.blocking_request_id} reset this device at {since}; "
        f"a new reset is allowed {policy.cooldown_seconds} s after that",
    )


def after_action_error(error: GraphError, record: LedgerRecord, policy: Policy) -> Retry | Reconcile | Finish:
    """The action call failed. `record` is the ACTING record with this call counted in `attempt`.

    - transient (429, connection refused, the app's own budget): Intune did not take the action;
      back to PROCESSING and try later. A call the app's own budget held back was never sent, so
      it is no attempt.
    - outcome unknown: reconcile against deviceActionResults before any retry.
    - permanent: the request fails (400 means the device cannot do this action).
    """
    if isinstance(error, ActionOutcomeUnknown):
        return Reconcile()
    if isinstance(error, GraphTransientError):
        attempt = record.attempt - 1 if isinstance(error, GraphBudgetExhausted) else record.attempt
        return Retry(graph_defer(error, backoff(record, error.retry_after, policy)), attempt, f"action call: {error}")
    code = ReasonCode.ACTION_NOT_SUPPORTED if error.status == 400 else ReasonCode.GRAPH_REJECTED
    return Finish(Status.FAILED, code, f"Intune refused {record.action}: {error}")


def after_reconcile(
    record: LedgerRecord, found: ActionResult | None, now: datetime, policy: Policy
) -> RecordSubmitted | Resume | Defer:
    """A record left ACTING by an earlier delivery: did its action call reach the device?"""
    if found is not None:
        return RecordSubmitted()
    started = record.action_started_at or record.updated_at
    age = (now - started).total_seconds()
    if age < policy.action_lease_seconds:
        return Defer(policy.action_lease_seconds - age + 1, "action_in_flight", "an action call may still be in flight")
    return Resume("the previous action call never reached the device")


def after_unknown_outcome(found: ActionResult | None, why: str) -> RecordSubmitted | Defer:
    """This delivery's action call has an unknown outcome, and its result was looked for at once."""
    if found is not None:
        return RecordSubmitted()
    return Defer(10, "action_unconfirmed", f"{why}; not visible on the device yet")


def on_poison(record: LedgerRecord, found: ActionResult | None) -> Republish | RecordSubmitted | Finish:
    """A request message that failed every delivery still ends in exactly one final event; an
    action call that did reach Intune is recorded as submitted instead."""
    if record.final or record.state in (State.SUBMITTED, State.AWAITING_APPROVAL):
        return Republish()
    if record.state is State.ACTING and found is not None:
        return RecordSubmitted()
    return Finish(
        Status.FAILED,
        ReasonCode.RETRIES_EXHAUSTED,
        "the request failed on every delivery and was moved to the poison queue",
    )


def on_followup_poison(record: LedgerRecord) -> Republish | Ignore | Finish:
    """A follow-up (confirmation or approval check) that failed every delivery."""
    if record.final:
        return Republish()
    if record.state is State.AWAITING_APPROVAL:
        # Approval checks are sent when the wait is due: one that cannot run still ends the wait.
        return Finish(
            Status.REJECTED,
            ReasonCode.APPROVAL_EXPIRED,
            "no approval decision in time, and the approval check failed on every delivery",
        )
    if record.state is not State.SUBMITTED:
        return Ignore("follow-up poisoned for a request that is not submitted")
    return Finish(
        Status.FAILED,
        ReasonCode.RETRIES_EXHAUSTED,
        "the action was submitted but confirming it failed on every delivery",
    )


# ====================================================================== confirmation

# Device action states (Graph `actionState`, compared lower-case) that end the confirmation.
FINAL_ACTION_STATES: Mapping[str, tuple[Status, ReasonCode | None]] = {
    "done": (Status.COMPLETED, None),
    "failed": (Status.FAILED, ReasonCode.ACTION_FAILED),
    "canceled": (Status.FAILED, ReasonCode.ACTION_CANCELED),
    "notsupported": (Status.FAILED, ReasonCode.ACTION_NOT_SUPPORTED),
}


def first_followup(policy: Policy) -> FollowUp:
    return FollowUp(policy.confirm_first_check_seconds, check=1)


def on_followup(record: LedgerRecord) -> Republish | Ignore | None:
    """A confirmation check arrived: None means look at the device."""
    if record.final:
        return Republish()
    if record.state is not State.SUBMITTED or record.submitted_at is None:
        return Ignore("follow-up for a request that is not submitted")
    return None


def confirmation(
    record: LedgerRecord, found: ActionResult | None, now: datetime, check: int, policy: Policy
) -> Finish | FollowUp:
    """What the device reported for a submitted action: final, timed out, or look again later
    (the interval doubles from CONFIRM_FIRST_CHECK_SECONDS up to an hour, never past the deadline)."""
    assert record.submitted_at is not None
    deadline = record.submitted_at + timedelta(seconds=policy.confirm_timeout_seconds)
    if found is not None and found.state.lower() in FINAL_ACTION_STATES:
        status, code = FINAL_ACTION_STATES[found.state.lower()]
        return Finish(status, code, f"the device reported {found.state}" if code else "")
    if now >= deadline:
        return Finish(
            Status.TIMED_OUT,
            ReasonCode.CONFIRMATION_TIMEOUT,
            f"the device did not confirm within {policy.confirm_timeout_seconds} s "
            f"(last state: {found.state if found else 'no result'})",
        )
    interval = policy.confirm_first_check_seconds * 2 ** min(check, 12)
    delay = min(max(interval, 1), policy.max_followup_interval_seconds, (deadline - now).total_seconds() + 1)
    return FollowUp(max(1, round(delay)), check + 1)


def confirmation_read_failed(error: GraphError, check: int, policy: Policy) -> Finish | FollowUp:
    """Reading the device for a confirmation failed: look again later, or fail when Graph refuses."""
    if isinstance(error, GraphTransientError):
        delay = min(max(error.retry_after or 30, 1), policy.max_followup_interval_seconds)
        return FollowUp(round(delay), check)
    return Finish(Status.FAILED, ReasonCode.GRAPH_REJECTED, f"cannot read the device: {error}")


# ====================================================================== waiting


def backoff(record: LedgerRecord, retry_after: float | None, policy: Policy) -> float:
    """Seconds until the next try: Graph's `Retry-After` when it gave one, otherwise exponential in
    the record's deferrals with a ±20 % jitter derived from the request (so that requests deferred
    together spread out, and the same facts always give the same answer)."""
    if retry_after is not None:
        return min(max(retry_after, 1.0), policy.max_defer_seconds)
    base = min(5 * 2 ** min(record.deferrals, 6), policy.max_defer_seconds)
    return base * (0.8 + 0.4 * _unit_fraction(record.request_id, record.deferrals))


def graph_defer(error: GraphTransientError, seconds: float) -> Defer:
    if isinstance(error, GraphBudgetExhausted):
        cause = "graph_budget"
    elif error.status == 429:
        cause = "graph_throttled"
    else:
        cause = "graph_unavailable"
    return Defer(seconds, cause, str(error))


def _unit_fraction(*parts: object) -> float:
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
