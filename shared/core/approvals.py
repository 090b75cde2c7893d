"""Approvals, guardrails and requesters as pure rules (docs/contract.md#approvals-guardrails-and-requesters).

Who may ask (`ALLOWED_REQUESTERS`), which requests wait for a human (`APPROVAL_REQUIRED`), when a
guardrail's rolling hour is full (`GUARDRAIL_MAX_*`), when a wait has expired, and whether an
approver may decide (four eyes). The request use case (shared/workflow/request.py) and the
approval use case (shared/workflow/approval.py) carry these answers out; the guardrail counter
(shared/adapters/guardrails.py) keeps its per-minute buckets with `rolling_count` and `bump`.
Every function here is a table test away (tests/unit/test_approvals.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from shared.core.clock import iso
from shared.core.contract import ReasonCode, Status
from shared.core.lifecycle import Finish, FollowUp, Ignore, LedgerRecord, Policy, State
from shared.core.platforms import Action, Platform

RULE_BATCH = "batch"
RULE_ALL = "*"
Decision = Literal["approve", "deny"]
DECISIONS: tuple[Decision, ...] = ("approve", "deny")

# Canonical spelling of every rule, keyed by its case-folded form.
_RULES: Mapping[str, str] = {
    **{platform.value.casefold(): platform.value for platform in Platform},
    **{action.value.casefold(): action.value for action in Action},
    RULE_BATCH: RULE_BATCH,
    RULE_ALL: RULE_ALL,
}
_REQUESTER_ENTRY = re.compile(r"^[^\s@\x00-\x1f\x7f]*@?[^\s@\x00-\x1f\x7f]+$")


class InvalidSetting(ValueError):
    """A rule or an allow-list entry that is not one; the message names it."""


# ====================================================================== settings


def parse_approval_rules(text: str) -> frozenset[str]:
    """`APPROVAL_REQUIRED`: comma list of platform rows, event actions, `batch`, `*` (any case)."""
    rules = set()
    for raw in text.split(","):
        rule = raw.strip()
        if not rule:
            continue
        canonical = _RULES.get(rule.casefold())
        if canonical is None:
            raise InvalidSetting(
                f"{rule[:64]!r} is not a rule: use a platform row ({', '.join(p.value for p in Platform)}), "
                f"an action ({', '.join(a.value for a in Action)}), {RULE_BATCH} or {RULE_ALL}"
            )
        rules.add(canonical)
    return frozenset(rules)


def parse_allowed_requesters(text: str) -> tuple[str, ...]:
    """`ALLOWED_REQUESTERS`: comma list of exact UPNs and `@domain` suffixes, kept case-folded."""
    entries = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        if len(entry) > 256 or not _REQUESTER_ENTRY.fullmatch(entry) or entry.endswith("@"):
            raise InvalidSetting(
                f"{entry[:64]!r} is neither a UPN (user@contoso.com) nor a suffix starting with @ (@contoso.com)"
            )
        entries.append(entry.casefold())
    return tuple(entries)


# ====================================================================== requesters


def requester_allowed(requested_by: str, allowed: tuple[str, ...]) -> bool:
    """Empty list: anyone. Else an exact UPN or an `@suffix`, case-insensitive."""
    if not allowed:
        return True
    who = requested_by.strip().casefold()
    return any(who == entry or (entry.startswith("@") and who.endswith(entry)) for entry in allowed)


def requester_check(requested_by: str, policy: Policy) -> Finish | None:
    """Checked before any Graph call: a requester outside the allow-list ends rejected."""
    if requester_allowed(requested_by, policy.allowed_requesters):
        return None
    return Finish(
        Status.REJECTED,
        ReasonCode.REQUESTER_NOT_ALLOWED,
        "requestedBy is not in ALLOWED_REQUESTERS; ask the operators to allow this requester",
    )


# ====================================================================== holding a request


@dataclass(frozen=True)
class Hold:
    """Publish `awaiting_approval` with this reason and wait for a human."""

    code: ReasonCode
    message: str


def matching_rules(rules: frozenset[str], *, platform: str | None, action: str | None, in_batch: bool) -> list[str]:
    """The `APPROVAL_REQUIRED` rules a request matches, in a stable order."""
    found = [rule for rule in (platform, action) if rule and rule in rules]
    if in_batch and RULE_BATCH in rules:
        found.append(RULE_BATCH)
    if RULE_ALL in rules:
        found.append(RULE_ALL)
    return found


def approval_hold(record: LedgerRecord, policy: Policy) -> Hold | None:
    """After resolution and classification (so never for dry runs or unsupported devices, which
    ended there), before any claim or action call: does a rule hold this request? An approved
    request (its own decision or its batch's) is never held again."""
    if record.approved:
        return None
    rules = matching_rules(
        policy.approval_rules, platform=record.platform, action=record.action, in_batch=record.batch_id is not None
    )
    if not rules:
        return None
    return Hold(
        ReasonCode.APPROVAL_REQUIRED,
        f"{record.action} on a {record.platform} device needs approval (APPROVAL_REQUIRED: {', '.join(rules)})",
    )


# ====================================================================== guardrails

Scope = Literal["actions", "requester"]
BUCKET_FORMAT = "%Y%m%d%H%M"
WINDOW = timedelta(hours=1)


def minute_key(now: datetime) -> str:
    return now.strftime(BUCKET_FORMAT)


def window_keys(now: datetime) -> tuple[str, str]:
    """The oldest and the newest minute bucket of the rolling hour ending at `now` (inclusive):
    the current minute and the 59 before it."""
    return minute_key(now - WINDOW + timedelta(minutes=1)), minute_key(now)


def rolling_count(buckets: Mapping[str, int], now: datetime) -> int:
    """Action calls counted in the rolling hour: the sum of the last 60 per-minute buckets. It can
    overstate by at most the part of the oldest minute that is already more than an hour ago."""
    oldest, newest = window_keys(now)
    return sum(count for key, count in buckets.items() if oldest <= key <= newest)


def bump(buckets: Mapping[str, int], now: datetime, by: int = 1) -> dict[str, int]:
    """The buckets with `by` added to the current minute, and buckets older than the hour dropped."""
    oldest, newest = window_keys(now)
    kept = {key: count for key, count in buckets.items() if oldest <= key <= newest}
    kept[newest] = max(0, kept.get(newest, 0) + by)
    return {key: count for key, count in kept.items() if count > 0}


def unbump(buckets: Mapping[str, int], key: str) -> dict[str, int]:
    """Give back one call counted in bucket `key` (the call never reached Intune)."""
    kept = dict(buckets)
    if kept.get(key, 0) > 0:
        kept[key] -= 1
    return {k: count for k, count in kept.items() if count > 0}


def guardrail_limit(scope: Scope, policy: Policy) -> int:
    if scope == "actions":
        return policy.guardrail_max_actions_per_hour
    return policy.guardrail_max_per_requester_per_hour


def guardrail_trip(scope: Scope, count: int, policy: Policy) -> Hold | None:
    """A guardrail is full when `count` calls of the rolling hour reached its limit (0 = off)."""
    limit = guardrail_limit(scope, policy)
    if limit <= 0 or count < limit:
        return None
    if scope == "actions":
        what = f"{count} action calls in the last hour reached GUARDRAIL_MAX_ACTIONS_PER_HOUR ({limit})"
    else:
        what = (
            f"this requester's {count} action calls in the last hour reached "
            f"GUARDRAIL_MAX_PER_REQUESTER_PER_HOUR ({limit})"
        )
    return Hold(ReasonCode.GUARDRAIL_TRIPPED, what + "; an approver can let this request go on")


@dataclass(frozen=True)
class GuardrailSlot:
    """Calls counted for one action call: (scope key, minute bucket) pairs, to give back when the
    call never reached Intune (429, connection refused, refused for good, no call at all)."""

    taken: tuple[tuple[str, str], ...] = ()


# ====================================================================== expiry


def approval_expiry(policy: Policy) -> FollowUp:
    """The delayed check that ends an unanswered hold (`check` 0 marks the approval kind)."""
    return FollowUp(max(1, policy.approval_timeout_seconds), check=0)


def on_approval_check(record: LedgerRecord, now: datetime, policy: Policy) -> Finish | FollowUp | Ignore:
    """The delayed approval check arrived: expired, not yet (early delivery), or decided already."""
    if record.state is not State.AWAITING_APPROVAL:
        return Ignore("approval check for a request that is no longer awaiting approval")
    held_at = record.held_at or record.updated_at
    due = held_at + timedelta(seconds=policy.approval_timeout_seconds)
    if now < due:
        return FollowUp(max(1, round((due - now).total_seconds())), check=0)
    return Finish(
        Status.REJECTED,
        ReasonCode.APPROVAL_EXPIRED,
        f"no approval decision within {policy.approval_timeout_seconds} s (APPROVAL_TIMEOUT_SECONDS)",
    )


# ====================================================================== decisions


@dataclass(frozen=True)
class NotAwaiting:
    """409: the request is not awaiting approval; nothing changes."""


@dataclass(frozen=True)
class SamePerson:
    """403: four eyes: the approver asked for (or submitted) the request."""

    detail: str


@dataclass(frozen=True)
class Approve:
    """Record the approval, go back to PROCESSING and re-enqueue the request."""

    record: LedgerRecord


@dataclass(frozen=True)
class Deny:
    """Record the denial as the request's final outcome."""

    record: LedgerRecord
    finish: Finish


def approval_entry(decision: Decision, approver: str, now: datetime, comment: str | None) -> dict[str, Any]:
    """The `approval` member of the record and of every later event."""
    return {"decision": decision, "by": approver, "at": iso(now), "comment": comment}


def on_decision(
    record: LedgerRecord, decision: Decision, approver: str, comment: str | None, now: datetime
) -> NotAwaiting | SamePerson | Approve | Deny:
    """A human decision on a held request (docs/contract.md#approval-api)."""
    if record.state is not State.AWAITING_APPROVAL:
        return NotAwaiting()
    who = approver.strip().casefold()
    if who in {(record.requested_by or "").strip().casefold(), (record.submitted_by or "").strip().casefold()}:
        return SamePerson("four eyes: the approver may be neither requestedBy nor submittedBy of the request")
    entry = approval_entry(decision, approver, now, comment)
    note = f"{decision} by {approver}"
    if decision == "approve":
        return Approve(record.moved_to(State.PROCESSING, now, note, approval=entry))
    return Deny(
        # Outcomes.finish makes the move to REJECTED; the approval travels on the record.
        replace(record, approval=entry),
        Finish(
            Status.REJECTED, ReasonCode.APPROVAL_DENIED, f"denied by {approver}" + (f": {comment}" if comment else "")
        ),
    )


def approval_age(record: LedgerRecord, now: datetime) -> float | None:
    """Seconds the request has been waiting (ops)."""
    held = record.held_at
    return (now - held).total_seconds() if held else None
