"""The lifecycle core as tables: every transition, every guard, every decision (no I/O, no awaits).

Each table row is one rule of docs/contract.md#lifecycle, #confirmation, #guarantees and
#retries-and-unknown-outcomes, stated as facts in and the decision out.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.core import lifecycle
from shared.core.contract import ReasonCode, ResetRequest, Status
from shared.core.device import ActionResult
from shared.core.errors import (
    ActionOutcomeUnknown,
    GraphBudgetExhausted,
    GraphPermanentError,
    GraphTransientError,
)
from shared.core.lifecycle import (
    FINAL_STATES,
    TRANSITIONS,
    Act,
    Defer,
    DeviceClaim,
    Finish,
    FollowUp,
    IllegalTransition,
    LedgerRecord,
    Policy,
    Process,
    Reconcile,
    RecordSubmitted,
    Republish,
    Resume,
    Retry,
    State,
    new_record,
)
from shared.core.platforms import Action, Decision, Platform, Scope
from tests.fakes import device

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
POLICY = Policy()
CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"


def record(state: State = State.PROCESSING, **changes: object) -> LedgerRecord:
    base = LedgerRecord(
        request_id="REQ-1",
        payload_hash="h",
        request_json="{}",
        state=state,
        created_at=NOW,
        updated_at=NOW,
        device_id="dev-1",
        action="resetPasscode",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def result(state: str, started: datetime = NOW, name: str = "resetPasscode") -> ActionResult:
    return ActionResult(action_name=name, state=state, started_at=started, last_updated_at=started)


# ====================================================================== the transition table


@pytest.mark.parametrize(("source", "target"), list(itertools.product(State, State)))
def test_a_record_moves_exactly_along_the_transition_table(source: State, target: State) -> None:
    start = record(source)
    if target in TRANSITIONS[source]:
        moved = start.moved_to(target, NOW + timedelta(seconds=1), "why")
        assert moved.state is target and moved.history[-1] == {
            "time": "2026-11-25T10:00:01.000Z",
            "state": target.value,
            "note": "why",
        }
    else:
        with pytest.raises(IllegalTransition):
            start.moved_to(target, NOW)


def test_final_states_have_no_way_out_and_every_other_state_reaches_one() -> None:
    assert all(not TRANSITIONS[state] for state in FINAL_STATES)
    for state in State:
        seen, frontier = {state}, [state]
        while frontier:
            for nxt in TRANSITIONS[frontier.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    frontier.append(nxt)
        assert seen & FINAL_STATES, f"{state} can never end"


def test_final_states_are_the_final_event_statuses() -> None:
    assert {state.value for state in FINAL_STATES} == {status.value for status in Status if status.is_final}
    assert all(State.of(status).final is status.is_final for status in Status)


def test_a_request_starts_queued_or_processing_only() -> None:
    request = ResetRequest.model_validate(
        {"requestId": "R", "device": {"intuneDeviceId": "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"}, "requestedBy": "a@b"}
    )
    assert new_record(request, State.QUEUED, NOW).state is State.QUEUED
    with pytest.raises(IllegalTransition):
        new_record(request, State.SUBMITTED, NOW)


def test_the_contracts_transition_table_is_the_codes() -> None:
    text = CONTRACT.read_text(encoding="utf-8")
    block = text.split("<!-- transitions:start -->")[1].split("<!-- transitions:end -->")[0]
    documented: dict[State, frozenset[State]] = {}
    for line in block.strip().splitlines()[2:]:
        sources, targets = (cell.strip() for cell in line.strip("|").split("|"))
        allowed = frozenset(State(name) for name in re.findall(r"`([a-z_]+)`", targets))
        for name in re.findall(r"`([a-z_]+)`", sources):
            documented[State(name)] = allowed
    expected = {state: frozenset(targets) for state, targets in TRANSITIONS.items()}
    assert documented == expected, "docs/contract.md#lifecycle: update the transitions table to TRANSITIONS"


# ====================================================================== a delivery


@pytest.mark.parametrize(
    ("state", "age_s", "expected"),
    [
        (State.QUEUED, 0, Process),
        (State.PROCESSING, 3599, Process),
        (State.PROCESSING, 3601, Finish),
        (State.QUEUED, 3601, Finish),
        (State.ACTING, 0, Reconcile),
        (State.ACTING, 99999, Reconcile),  # the deadline never cuts an action call short
        (State.SUBMITTED, 0, Republish),
        *[(state, 0, Republish) for state in FINAL_STATES],
    ],
)
def test_a_delivery_republishes_reconciles_processes_or_gives_up(state: State, age_s: int, expected: type) -> None:
    decision = lifecycle.on_delivery(record(state), NOW + timedelta(seconds=age_s), POLICY)
    assert isinstance(decision, expected)
    if isinstance(decision, Finish):
        assert (decision.status, decision.code) == (Status.FAILED, ReasonCode.RETRIES_EXHAUSTED)


# ====================================================================== resolution and classification

ALICE = device("d-1", upn="alice@contoso.com")
BOB = device("d-2", upn="bob@contoso.com")


@pytest.mark.parametrize(
    ("candidates", "expected_upn", "outcome"),
    [
        ([], None, ReasonCode.DEVICE_NOT_FOUND),
        ([ALICE, BOB], None, ReasonCode.AMBIGUOUS_DEVICE),
        ([ALICE], "bob@contoso.com", ReasonCode.USER_MISMATCH),
        ([ALICE], "ALICE@Contoso.com", "d-1"),
        ([ALICE], None, "d-1"),
    ],
)
def test_resolution_acts_only_on_one_verified_device_of_the_expected_user(
    candidates: list, expected_upn: str | None, outcome: object
) -> None:
    verdict = lifecycle.resolution("serialNumber", candidates, expected_upn)
    if isinstance(verdict, Finish):
        assert (verdict.status, verdict.code) == (Status.REJECTED, outcome)
    else:
        assert verdict.id == outcome


SUPPORTED = Decision(Platform.ANDROID_DEDICATED, Action.RESET_PASSCODE, Scope.DEVICE)
UNSUPPORTED = Decision(Platform.WINDOWS, None, None, "Windows Hello PIN reset is user self-service")


@pytest.mark.parametrize(
    ("decision", "dry_run", "expected"),
    [
        (SUPPORTED, False, None),
        (SUPPORTED, True, (Status.DRY_RUN, ReasonCode.WOULD_RUN)),
        (UNSUPPORTED, False, (Status.UNSUPPORTED, ReasonCode.PLATFORM_UNSUPPORTED)),
        (UNSUPPORTED, True, (Status.UNSUPPORTED, ReasonCode.PLATFORM_UNSUPPORTED)),  # same as without dryRun
    ],
)
def test_classification_ends_unsupported_and_dry_runs_before_any_action(
    decision: Decision, dry_run: bool, expected: tuple | None
) -> None:
    verdict = lifecycle.classification(decision, dry_run=dry_run)
    if expected is None:
        assert isinstance(verdict, Act)
    else:
        assert isinstance(verdict, Finish) and (verdict.status, verdict.code) == expected


@pytest.mark.parametrize(("attempt", "acts"), [(0, True), (4, True), (5, False), (9, False)])
def test_the_action_is_called_at_most_max_action_attempts_times(attempt: int, acts: bool) -> None:
    verdict = lifecycle.before_action(record(attempt=attempt), POLICY)
    assert isinstance(verdict, Act) is acts
    if not acts:
        assert isinstance(verdict, Finish) and verdict.code is ReasonCode.RETRIES_EXHAUSTED


@pytest.mark.parametrize(
    ("claim", "acts"),
    [(DeviceClaim(True), True), (DeviceClaim(False, "REQ-0", NOW - timedelta(seconds=60)), False)],
)
def test_a_device_claimed_by_another_request_is_in_cooldown(claim: DeviceClaim, acts: bool) -> None:
    verdict = lifecycle.cooldown(claim, POLICY)
    assert isinstance(verdict, Act) is acts
    if not acts:
        assert isinstance(verdict, Finish) and verdict.code is ReasonCode.COOLDOWN
        assert "REQ-0" in verdict.message and "2026-11-25T09:59:00.000Z" in verdict.message


# ====================================================================== the action call


@pytest.mark.parametrize(
    ("error", "expected", "attempt_after"),
    [
        (GraphTransientError("429", status=429, retry_after=7), Retry, 3),
        (GraphTransientError("refused"), Retry, 3),
        (GraphBudgetExhausted("budget", status=429, retry_after=2), Retry, 2),  # never sent: no attempt
        (ActionOutcomeUnknown("504", status=504), Reconcile, None),
        (GraphPermanentError("400", status=400), (Status.FAILED, ReasonCode.ACTION_NOT_SUPPORTED), None),
        (GraphPermanentError("403", status=403), (Status.FAILED, ReasonCode.GRAPH_REJECTED), None),
    ],
)
def test_an_action_call_error_retries_reconciles_or_fails(
    error: Exception, expected: object, attempt_after: int | None
) -> None:
    verdict = lifecycle.after_action_error(error, record(State.ACTING, attempt=3), POLICY)  # type: ignore[arg-type]
    if isinstance(expected, tuple):
        assert isinstance(verdict, Finish) and (verdict.status, verdict.code) == expected
        return
    assert isinstance(verdict, expected)  # type: ignore[arg-type]
    if isinstance(verdict, Retry):
        assert verdict.attempt == attempt_after
        if isinstance(error, GraphTransientError) and error.retry_after:
            assert verdict.defer.seconds == error.retry_after


@pytest.mark.parametrize(
    ("found", "age_s", "expected"),
    [
        (result("pending"), 0, RecordSubmitted),
        (result("pending"), 600, RecordSubmitted),
        (None, 10, Defer),  # the call may still be in flight: wait for the lease
        (None, 61, Resume),  # the call is over and left no trace: it never reached Intune
    ],
)
def test_a_record_left_acting_is_reconciled_before_any_new_call(
    found: ActionResult | None, age_s: int, expected: type
) -> None:
    acting = record(State.ACTING, action_started_at=NOW)
    verdict = lifecycle.after_reconcile(acting, found, NOW + timedelta(seconds=age_s), POLICY)
    assert isinstance(verdict, expected)
    if isinstance(verdict, Defer):
        assert verdict.cause == "action_in_flight" and verdict.seconds == POLICY.action_lease_seconds - age_s + 1


def test_an_unknown_outcome_is_submitted_when_seen_and_checked_again_when_not() -> None:
    assert isinstance(lifecycle.after_unknown_outcome(result("pending"), "504"), RecordSubmitted)
    later = lifecycle.after_unknown_outcome(None, "Graph answered 504")
    assert isinstance(later, Defer) and later.cause == "action_unconfirmed"


@pytest.mark.parametrize(
    ("state", "found", "expected"),
    [
        (State.COMPLETED, None, Republish),
        (State.SUBMITTED, None, Republish),
        (State.ACTING, result("pending"), RecordSubmitted),
        (State.ACTING, None, Finish),
        (State.PROCESSING, None, Finish),
        (State.QUEUED, None, Finish),
    ],
)
def test_a_poisoned_request_still_ends_in_one_final_event(
    state: State, found: ActionResult | None, expected: type
) -> None:
    verdict = lifecycle.on_poison(record(state), found)
    assert isinstance(verdict, expected)
    if isinstance(verdict, Finish):
        assert (verdict.status, verdict.code) == (Status.FAILED, ReasonCode.RETRIES_EXHAUSTED)
        assert state in TRANSITIONS and State.FAILED in TRANSITIONS[state]


# ====================================================================== confirmation


@pytest.mark.parametrize(
    ("action_state", "expected"),
    [
        ("done", (Status.COMPLETED, None)),
        ("Done", (Status.COMPLETED, None)),
        ("failed", (Status.FAILED, ReasonCode.ACTION_FAILED)),
        ("canceled", (Status.FAILED, ReasonCode.ACTION_CANCELED)),
        ("notSupported", (Status.FAILED, ReasonCode.ACTION_NOT_SUPPORTED)),
    ],
)
def test_the_device_reports_the_final_outcome(action_state: str, expected: tuple) -> None:
    submitted = record(State.SUBMITTED, submitted_at=NOW)
    verdict = lifecycle.confirmation(submitted, result(action_state), NOW + timedelta(minutes=5), 1, POLICY)
    assert isinstance(verdict, Finish) and (verdict.status, verdict.code) == expected


@pytest.mark.parametrize(
    ("found", "elapsed_s", "check", "expected"),
    [
        (result("pending"), 60, 1, FollowUp(120, 2)),
        (None, 60, 2, FollowUp(240, 3)),
        (result("active"), 60, 12, FollowUp(3600, 13)),  # at most hourly
        (result("pending"), 86400 - 30, 8, FollowUp(31, 9)),  # never past the deadline
        (result("pending"), 86400, 3, (Status.TIMED_OUT, ReasonCode.CONFIRMATION_TIMEOUT)),
        (None, 90000, 3, (Status.TIMED_OUT, ReasonCode.CONFIRMATION_TIMEOUT)),
    ],
)
def test_pending_actions_are_checked_at_doubling_intervals_until_the_deadline(
    found: ActionResult | None, elapsed_s: int, check: int, expected: object
) -> None:
    policy = Policy(confirm_first_check_seconds=60, confirm_timeout_seconds=86400)
    submitted = record(State.SUBMITTED, submitted_at=NOW)
    verdict = lifecycle.confirmation(submitted, found, NOW + timedelta(seconds=elapsed_s), check, policy)
    if isinstance(expected, FollowUp):
        assert verdict == expected
    else:
        assert isinstance(verdict, Finish) and (verdict.status, verdict.code) == expected


@pytest.mark.parametrize(
    ("state", "submitted_at", "expected"),
    [
        (State.COMPLETED, NOW, Republish),
        (State.PROCESSING, None, lifecycle.Ignore),
        (State.SUBMITTED, None, lifecycle.Ignore),
        (State.SUBMITTED, NOW, type(None)),
    ],
)
def test_a_followup_looks_at_the_device_only_for_a_submitted_request(
    state: State, submitted_at: datetime | None, expected: type
) -> None:
    assert isinstance(lifecycle.on_followup(record(state, submitted_at=submitted_at)), expected)


def test_a_followup_that_cannot_read_the_device_tries_again_or_fails() -> None:
    again = lifecycle.confirmation_read_failed(GraphTransientError("503", status=503, retry_after=12), 4, POLICY)
    assert again == FollowUp(12, 4)
    assert lifecycle.confirmation_read_failed(GraphTransientError("reset"), 4, POLICY) == FollowUp(30, 4)
    refused = lifecycle.confirmation_read_failed(GraphPermanentError("403", status=403), 4, POLICY)
    assert isinstance(refused, Finish) and refused.code is ReasonCode.GRAPH_REJECTED


def test_a_poisoned_followup_republishes_or_fails() -> None:
    assert isinstance(lifecycle.on_followup_poison(record(State.TIMED_OUT)), Republish)
    failed = lifecycle.on_followup_poison(record(State.SUBMITTED))
    assert isinstance(failed, Finish) and failed.code is ReasonCode.RETRIES_EXHAUSTED


# ====================================================================== waiting


@pytest.mark.parametrize(("retry_after", "expected"), [(7.0, 7.0), (0.2, 1.0), (9999.0, 300.0)])
def test_graphs_retry_after_is_honoured_within_bounds(retry_after: float, expected: float) -> None:
    assert lifecycle.backoff(record(deferrals=3), retry_after, POLICY) == expected


@pytest.mark.parametrize(("deferrals", "base"), [(0, 5), (1, 10), (3, 40), (6, 300), (20, 300)])
def test_backoff_doubles_with_a_deterministic_jitter_of_twenty_percent(deferrals: int, base: int) -> None:
    waits = [lifecycle.backoff(record(deferrals=deferrals, request_id=f"R-{n}"), None, POLICY) for n in range(50)]
    assert all(0.8 * base <= wait <= 1.2 * base for wait in waits)
    assert len(set(waits)) > 40  # requests deferred together spread out
    again = lifecycle.backoff(record(deferrals=deferrals, request_id="R-7"), None, POLICY)
    assert again == waits[7]  # the same facts, the same answer


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (GraphBudgetExhausted("b", status=429, retry_after=1), "graph_budget"),
        (GraphTransientError("t", status=429), "graph_throttled"),
        (GraphTransientError("t", status=503), "graph_unavailable"),
        (GraphTransientError("t"), "graph_unavailable"),
    ],
)
def test_a_graph_deferral_names_its_cause(error: GraphTransientError, cause: str) -> None:
    assert lifecycle.graph_defer(error, 3.0) == Defer(3.0, cause, str(error))
