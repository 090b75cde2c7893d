"""docs/contract.md#approvals-guardrails-and-requesters: the pure rules as tables, and the request
and approval use cases with plain in-memory fakes of our own ports."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.core import approvals
from shared.core.approvals import (
    Approve,
    Deny,
    GuardrailSlot,
    Hold,
    InvalidSetting,
    NotAwaiting,
    SamePerson,
    bump,
    guardrail_trip,
    matching_rules,
    on_approval_check,
    on_decision,
    parse_allowed_requesters,
    parse_approval_rules,
    requester_allowed,
    rolling_count,
    unbump,
)
from shared.core.contract import ReasonCode, ResetRequest, Status
from shared.core.errors import GraphTransientError
from shared.core.lifecycle import Finish, FollowUp, Ignore, LedgerRecord, Policy, State, deadline_start, new_record
from shared.workflow import handle_followup, handle_request
from shared.workflow.approval import Decided, UnknownRequest, decide
from tests.fakes import Harness, device, harness

NOW = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
DEV = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"
MAC = "7a1d2c3b-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


# ====================================================================== settings


@pytest.mark.parametrize(
    ("text", "rules"),
    [
        ("", frozenset()),
        ("macos", {"macos"}),
        (" MacOS , resetpasscode,,", {"macos", "resetPasscode"}),
        ("removePasscode,remoteLock,batch,*", {"removePasscode", "remoteLock", "batch", "*"}),
        ("android-dedicated", {"android-dedicated"}),
    ],
)
def test_approval_rules_parse_to_their_canonical_names(text: str, rules: set[str]) -> None:
    assert parse_approval_rules(text) == frozenset(rules)


@pytest.mark.parametrize("text", ["wipe", "macos,ios-*", "android", "all"])
def test_an_unknown_approval_rule_is_named(text: str) -> None:
    with pytest.raises(InvalidSetting, match=re.escape(repr(text.split(",")[-1]))):
        parse_approval_rules(text)


@pytest.mark.parametrize("entry", ["a b@contoso.com", "@", "x@", "a@b@c", "@contoso.com\x00"])
def test_an_allow_list_entry_that_is_neither_upn_nor_suffix_is_refused(entry: str) -> None:
    with pytest.raises(InvalidSetting):
        parse_allowed_requesters(entry)


@pytest.mark.parametrize(
    ("requested_by", "allowed", "expected"),
    [
        ("anyone", (), True),
        ("ServiceDesk@Contoso.com", ("servicedesk@contoso.com",), True),
        ("adele@contoso.com", ("@contoso.com",), True),
        ("adele@sub.contoso.com", ("@contoso.com",), False),
        ("adele@evilcontoso.com", ("@contoso.com",), False),
        ("adele@contoso.com.evil", ("@contoso.com",), False),
        ("bob@fabrikam.com", ("servicedesk@contoso.com", "@contoso.com"), False),
    ],
)
def test_requester_allow_list(requested_by: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert requester_allowed(requested_by, parse_allowed_requesters(",".join(allowed))) is expected


# ====================================================================== rules


@pytest.mark.parametrize(
    ("rules", "platform", "action", "in_batch", "matched"),
    [
        ("macos", "macos", "remoteLock", False, ["macos"]),
        ("resetPasscode", "ios", "removePasscode", False, []),  # resetPasscode does not match iOS
        ("removePasscode", "ios", "removePasscode", False, ["removePasscode"]),
        ("resetPasscode", "android-aosp", "resetPasscode", False, ["resetPasscode"]),
        ("batch", "android-aosp", "resetPasscode", False, []),
        ("batch", "android-aosp", "resetPasscode", True, ["batch"]),
        ("*", "windows-mobile", "resetPasscode", False, ["*"]),
        ("macos,*", "macos", "remoteLock", True, ["macos", "*"]),
        ("", "macos", "remoteLock", True, []),
    ],
)
def test_which_rules_match(rules: str, platform: str, action: str, in_batch: bool, matched: list[str]) -> None:
    assert matching_rules(parse_approval_rules(rules), platform=platform, action=action, in_batch=in_batch) == matched


def record(state: State = State.PROCESSING, **changes: Any) -> LedgerRecord:
    request = ResetRequest.model_validate(
        {"requestId": "R-1", "device": {"intuneDeviceId": DEV}, "requestedBy": "Helpdesk@Contoso.com"}
    )
    base = replace(new_record(request, State.PROCESSING, NOW - timedelta(minutes=5)), state=state)
    return replace(base, platform="android-aosp", action="resetPasscode", **changes)


def test_an_approved_request_is_never_held_again() -> None:
    policy = Policy(approval_rules=frozenset({"*"}))
    assert approvals.approval_hold(record(), policy) == Hold(
        ReasonCode.APPROVAL_REQUIRED, "resetPasscode on a android-aosp device needs approval (APPROVAL_REQUIRED: *)"
    )
    approved = record(approval={"decision": "approve", "by": "x", "at": "2026-11-25T10:29:00.000Z"})
    assert approvals.approval_hold(approved, policy) is None


# ====================================================================== guardrails


@pytest.mark.parametrize(
    ("scope", "count", "actions_limit", "requester_limit", "trips"),
    [
        ("actions", 99, 100, 0, False),
        ("actions", 100, 100, 0, True),
        ("actions", 5000, 0, 0, False),  # 0 = off
        ("requester", 2, 100, 3, False),
        ("requester", 3, 100, 3, True),
        ("requester", 50, 100, 0, False),
    ],
)
def test_when_a_guardrail_trips(scope: Any, count: int, actions_limit: int, requester_limit: int, trips: bool) -> None:
    policy = Policy(guardrail_max_actions_per_hour=actions_limit, guardrail_max_per_requester_per_hour=requester_limit)
    hold = guardrail_trip(scope, count, policy)
    assert (hold is not None) is trips
    if hold is not None:
        assert hold.code is ReasonCode.GUARDRAIL_TRIPPED


def test_the_rolling_hour_is_the_last_sixty_minute_buckets() -> None:
    buckets: dict[str, int] = {}
    for minutes_ago in (75, 60, 59, 30, 0, 0):
        buckets = bump(buckets, NOW - timedelta(minutes=minutes_ago))
    # Counted at each moment: the calls of the 60 minutes ending then.
    assert rolling_count(buckets, NOW) == 4  # 59, 30 and twice 0 minutes ago (60 and 75 are over)
    assert rolling_count(buckets, NOW + timedelta(minutes=30)) == 2
    assert rolling_count(buckets, NOW + timedelta(minutes=61)) == 0
    assert "202611250930" not in bump(buckets, NOW)  # buckets older than the hour are dropped


def test_a_call_given_back_is_no_longer_counted() -> None:
    buckets = bump(bump({}, NOW), NOW)
    assert rolling_count(unbump(buckets, approvals.minute_key(NOW)), NOW) == 1
    assert unbump({}, approvals.minute_key(NOW)) == {}


# ====================================================================== expiry and deadline


def test_approval_check_expires_only_when_due_and_only_while_waiting() -> None:
    policy = Policy(approval_timeout_seconds=600)
    held = record(State.AWAITING_APPROVAL, held_at=NOW)
    assert on_approval_check(held, NOW + timedelta(seconds=200), policy) == FollowUp(400, 0)
    expired = on_approval_check(held, NOW + timedelta(seconds=600), policy)
    assert isinstance(expired, Finish) and expired.code is ReasonCode.APPROVAL_EXPIRED
    assert isinstance(on_approval_check(record(State.PROCESSING), NOW, policy), Ignore)


def test_the_deadline_counts_from_the_approval_not_from_the_wait() -> None:
    waited = record(approval={"decision": "approve", "by": "x", "at": "2026-11-26T10:00:00.000Z"})
    assert deadline_start(waited) == datetime(2026, 11, 26, 10, tzinfo=UTC)
    assert deadline_start(record()) == NOW - timedelta(minutes=5)


# ====================================================================== decisions


@pytest.mark.parametrize("approver", ["helpdesk@contoso.com", " HELPDESK@contoso.com", "flow@Contoso.com"])
def test_four_eyes_neither_requester_nor_submitter_may_decide(approver: str) -> None:
    held = record(State.AWAITING_APPROVAL, submitted_by="flow@contoso.com")
    assert isinstance(on_decision(held, "approve", approver, None, NOW), SamePerson)


def test_a_decision_on_a_request_not_awaiting_approval_changes_nothing() -> None:
    for state in (State.PROCESSING, State.REJECTED, State.SUBMITTED):
        assert isinstance(on_decision(record(state), "approve", "boss@contoso.com", None, NOW), NotAwaiting)


def test_approve_goes_back_to_processing_and_deny_ends_rejected() -> None:
    held = record(State.AWAITING_APPROVAL)
    approved = on_decision(held, "approve", "boss@contoso.com", "ok", NOW)
    assert isinstance(approved, Approve)
    assert approved.record.state is State.PROCESSING
    assert approved.record.approval == {
        "decision": "approve",
        "by": "boss@contoso.com",
        "at": "2026-11-25T10:30:00.000Z",
        "comment": "ok",
    }
    denied = on_decision(held, "deny", "boss@contoso.com", None, NOW)
    assert isinstance(denied, Deny)
    assert denied.finish.status is Status.REJECTED and denied.finish.code is ReasonCode.APPROVAL_DENIED


# ====================================================================== the use cases, with fakes


class CountingGuardrails:
    """An in-memory `Guardrails` (our own port) with the core's bucket rules."""

    def __init__(self, policy: Policy, clock: Any) -> None:
        self.policy = policy
        self.buckets: dict[str, int] = {}

    async def take(self, requested_by: str, now: datetime, *, enforce: bool) -> GuardrailSlot | Hold:
        if enforce:
            hold = guardrail_trip("actions", rolling_count(self.buckets, now), self.policy)
            if hold is not None:
                return hold
        self.buckets = bump(self.buckets, now)
        return GuardrailSlot((("actions", approvals.minute_key(now)),))

    async def give_back(self, slot: GuardrailSlot) -> None:
        for _, minute in slot.taken:
            self.buckets = unbump(self.buckets, minute)


def body(request_id: str, device_id: str = DEV, **fields: Any) -> bytes:
    document = {"requestId": request_id, "device": {"intuneDeviceId": device_id}, "requestedBy": "helpdesk@contoso.com"}
    return json.dumps({**document, **fields}).encode()


def stack(**policy: Any) -> Harness:
    h = harness(Policy(cooldown_seconds=0, **policy))
    h.gateway.add(device(DEV, enrollment="androidAOSPUserOwnedDeviceEnrollment"))
    h.gateway.add(device(MAC, os="macOS", version="14.1", device_type="macMDM", enrollment=None))
    return h


def last(h: Harness, request_id: str) -> dict[str, Any]:
    return [e for e in h.publisher.events if e["subject"] == request_id][-1]["data"]


async def deliver_requeued(h: Harness) -> None:
    pending, h.scheduler.requeued = h.scheduler.requeued, []
    for message, _ in pending:
        await handle_request(message.encode(), h.services, message_id="requeued")


async def test_a_matching_rule_holds_before_any_action_call_and_approval_acts_once() -> None:
    h = stack(approval_rules=frozenset({"android-aosp"}))
    await handle_request(body("R-1"), h.services, message_id="m1")
    held = last(h, "R-1")
    assert (held["status"], held["reason"]["code"], held["attempt"]) == ("awaiting_approval", "approval_required", 0)
    assert h.gateway.action_calls == []
    assert [json.loads(b)["kind"] for b, _ in h.scheduler.followups] == ["approval"]

    result = await decide(h.services, "R-1", "approve", "boss@contoso.com", "fine")
    assert isinstance(result, Decided) and result.record.state is State.PROCESSING
    await deliver_requeued(h)  # the safety copy and the immediate copy: one action call
    assert len(h.gateway.action_calls) == 1
    submitted = last(h, "R-1")
    assert submitted["status"] == "submitted"
    assert submitted["approval"]["by"] == "boss@contoso.com" and submitted["approval"]["decision"] == "approve"


async def test_dry_runs_and_unsupported_devices_are_never_held() -> None:
    h = stack(approval_rules=frozenset({"*"}))
    await handle_request(body("DRY", dryRun=True), h.services, message_id="m1")
    await handle_request(body("MAC", MAC), h.services, message_id="m2")  # macOS without allowRemoteLock
    assert (last(h, "DRY")["status"], last(h, "MAC")["status"]) == ("dry_run", "unsupported")


async def test_deny_ends_rejected_and_a_second_decision_changes_nothing() -> None:
    h = stack(approval_rules=frozenset({"*"}))
    await handle_request(body("R-1"), h.services, message_id="m1")
    assert isinstance(await decide(h.services, "R-1", "deny", "boss@contoso.com", "no ticket"), Decided)
    denied = last(h, "R-1")
    assert (denied["status"], denied["reason"]["code"]) == ("rejected", "approval_denied")
    assert denied["approval"]["comment"] == "no ticket"
    assert isinstance(await decide(h.services, "R-1", "approve", "other@contoso.com"), NotAwaiting)
    assert isinstance(await decide(h.services, "NOPE", "approve", "other@contoso.com"), UnknownRequest)
    assert h.gateway.action_calls == [] and h.scheduler.requeued == []


async def test_an_unanswered_hold_expires_through_the_follow_up_queue() -> None:
    h = stack(approval_rules=frozenset({"*"}), approval_timeout_seconds=120)
    await handle_request(body("R-1"), h.services, message_id="m1")
    ((message, delay),) = h.scheduler.followups
    assert delay == 120
    h.scheduler.followups = []
    h.clock.advance(delay)
    await handle_followup(message.encode(), h.services)
    expired = last(h, "R-1")
    assert (expired["status"], expired["reason"]["code"]) == ("rejected", "approval_expired")


async def test_a_requester_outside_the_allow_list_is_rejected_before_any_graph_call() -> None:
    h = stack(allowed_requesters=("@fabrikam.com",))
    calls_before = len(h.gateway.action_calls)
    await handle_request(body("R-1"), h.services, message_id="m1")
    rejected = last(h, "R-1")
    assert (rejected["status"], rejected["reason"]["code"], rejected["device"]) == (
        "rejected",
        "requester_not_allowed",
        None,
    )
    assert len(h.gateway.action_calls) == calls_before


async def test_a_full_guardrail_holds_the_rest_and_an_approved_request_is_not_held_again() -> None:
    h = stack(guardrail_max_actions_per_hour=1)
    guardrails = CountingGuardrails(h.services.policy, h.clock)
    h.services = replace(h.services, guardrails=guardrails)
    other = "11111111-2222-4333-8444-555555555555"
    h.gateway.add(device(other, enrollment="androidAOSPUserOwnedDeviceEnrollment"))
    await handle_request(body("R-1"), h.services, message_id="m1")
    await handle_request(body("R-2", other), h.services, message_id="m2")
    assert (last(h, "R-1")["status"], last(h, "R-2")["status"]) == ("submitted", "awaiting_approval")
    assert last(h, "R-2")["reason"]["code"] == "guardrail_tripped"
    assert len(h.gateway.action_calls) == 1

    await decide(h.services, "R-2", "approve", "boss@contoso.com")
    await deliver_requeued(h)
    assert last(h, "R-2")["status"] == "submitted"
    assert len(h.gateway.action_calls) == 2


async def test_a_throttled_action_call_is_not_counted() -> None:
    h = stack(guardrail_max_actions_per_hour=1)
    guardrails = CountingGuardrails(h.services.policy, h.clock)
    h.services = replace(h.services, guardrails=guardrails)
    h.gateway.perform_failures.append((GraphTransientError("throttled", status=429, retry_after=1), False))
    await handle_request(body("R-1"), h.services, message_id="m1")
    assert rolling_count(guardrails.buckets, h.clock()) == 0
    await deliver_requeued(h)
    assert last(h, "R-1")["status"] == "submitted"
    assert rolling_count(guardrails.buckets, h.clock()) == 1


def test_a_bad_rule_or_allow_list_entry_stops_the_app_naming_the_setting_and_the_entry() -> None:
    from shared.settings import SettingsError, load_settings

    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    with pytest.raises(SettingsError) as raised:
        load_settings({**env, "APPROVAL_REQUIRED": "macos,wipe", "ALLOWED_REQUESTERS": "help desk@contoso.com"})
    assert "APPROVAL_REQUIRED: 'wipe' is not a rule" in str(raised.value)
    assert "ALLOWED_REQUESTERS: 'help desk@contoso.com'" in str(raised.value)
    with pytest.raises(SettingsError, match="GUARDRAIL_MAX_ACTIONS_PER_HOUR"):
        load_settings({**env, "GUARDRAIL_MAX_ACTIONS_PER_HOUR": "-1"})
    settings = load_settings({**env, "APPROVAL_REQUIRED": "MACOS, batch", "GUARDRAIL_MAX_PER_REQUESTER_PER_HOUR": "5"})
    assert (settings.approval_rules, settings.guardrail_max_actions_per_hour) == (frozenset({"macos", "batch"}), 100)
    assert settings.guardrail_max_per_requester_per_hour == 5 and settings.allowed_requesters == ()
