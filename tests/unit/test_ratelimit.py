"""The Graph budget (shared/adapters/graph_budget.py): Intune's 200 POST / 2,000 requests per 20 s,
kept on the client side, paced, paused by 429s, and refusing to hold a worker longer than the wait bound."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.adapters.graph_budget import (
    BudgetLimits,
    GraphBudget,
    GraphBudgetExhausted,
    SlidingBudget,
    budget_exhausted,
)
from shared.bootstrap import graph_budget, shared_graph_budget
from shared.core.errors import GraphTransientError
from shared.core.lifecycle import Policy
from shared.settings import SettingsError, load_settings
from shared.workflow import handle_request
from tests.fakes import device, harness

BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}


class FakeTime:
    """A clock that only moves when the code under test sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def budget(time: FakeTime, limits: BudgetLimits | None = None, **kwargs: float) -> GraphBudget:
    return GraphBudget(limits or BudgetLimits(), clock=time.clock, sleep=time.sleep, **kwargs)


def starts_of_a_backlog(lane: SlidingBudget, calls: int, now: float = 0.0) -> list[float]:
    starts = []
    for _ in range(calls):
        at = lane.next_start(now)
        lane.book(at)
        starts.append(at)
    return starts


def most_in_any_window(starts: list[float], window: float) -> int:
    """Intune's count: a call at t still counts at t + window - epsilon, not at t + window."""
    ordered = sorted(starts)
    return max(sum(1 for s in ordered if end - window < s <= end) for end in ordered)


# ------------------------------------------------------------------ pacing and the window


def test_a_quiet_budget_lets_calls_start_at_once_up_to_the_burst() -> None:
    lane = SlidingBudget(limit=200, window=20.5, burst=10)
    starts = starts_of_a_backlog(lane, 12)
    assert starts[:10] == pytest.approx([0.0] * 10)
    assert starts[10] == pytest.approx(20.5 / 200)
    assert starts[11] == pytest.approx(2 * 20.5 / 200)


def test_a_backlog_runs_at_the_budget_rate_instead_of_in_bursts_of_a_whole_window() -> None:
    lane = SlidingBudget(limit=200, window=20.5, burst=10)
    starts = starts_of_a_backlog(lane, 1000)
    assert most_in_any_window(starts, 20.5) == 200
    per_second = [sum(1 for s in starts if second <= s < second + 1) for second in range(1, 90)]
    assert max(per_second) <= 11  # never the whole window's 200 in one second
    assert 1000 / starts[-1] == pytest.approx(200 / 20.5, rel=0.02)


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 30),
    window=st.floats(0.5, 30),
    burst=st.integers(1, 30),
    gaps=st.lists(st.floats(0, 3), min_size=1, max_size=120),
)
def test_no_window_ever_holds_more_than_the_limit(limit: int, window: float, burst: int, gaps: list[float]) -> None:
    lane = SlidingBudget(limit, window, burst)
    now, starts = 0.0, []
    for gap in gaps:
        now += gap
        at = lane.next_start(now)
        assert at >= now
        lane.book(at)
        starts.append(at)
    assert starts == sorted(starts)
    assert most_in_any_window(starts, window) <= limit


def test_a_released_slot_can_be_taken_again() -> None:
    lane = SlidingBudget(limit=2, window=10)
    _, second = starts_of_a_backlog(lane, 2)
    assert lane.next_start(0.0) == pytest.approx(10.0)
    lane.release(second)
    assert lane.next_start(0.0) == pytest.approx(second)


# ------------------------------------------------------------------ GraphBudget


async def test_an_action_waits_for_its_paced_slot_within_the_bound() -> None:
    time = FakeTime()
    graph = budget(time, BudgetLimits(actions=20, requests=2000, window_seconds=20))
    for _ in range(2):
        await graph.acquire(action=True)  # burst of 5 % of 20 = 1, then one per 1.025 s
    assert time.sleeps == [pytest.approx(20 * 1.025 / 20)]


async def test_an_action_that_would_wait_past_the_bound_is_refused_with_its_wait_and_nothing_sent() -> None:
    time = FakeTime()
    graph = budget(time, BudgetLimits(actions=2, requests=2000, window_seconds=20))
    await graph.acquire(action=True)
    with pytest.raises(GraphBudgetExhausted) as refused:
        await graph.acquire(action=True)  # next action slot 10.25 s away, bound 2 s
    assert isinstance(refused.value, GraphTransientError)
    assert refused.value.retry_after == pytest.approx(10.25)
    assert time.sleeps == []
    time.now += 10.25
    await graph.acquire(action=True)  # the refused call did not keep a slot
    assert time.sleeps == []


async def test_a_429_pauses_every_call_of_the_client_until_retry_after() -> None:
    time = FakeTime()
    graph = budget(time)
    graph.throttled(retry_after=10)
    for action in (False, True):
        with pytest.raises(GraphBudgetExhausted) as refused:
            await graph.acquire(action=action)
        assert refused.value.retry_after == pytest.approx(10)
    time.now += 10
    await graph.acquire(action=False)
    await graph.acquire(action=True)
    assert time.sleeps == []


async def test_a_short_pause_is_waited_out_instead_of_deferring() -> None:
    time = FakeTime()
    graph = budget(time)
    graph.throttled(retry_after=1.5)
    await graph.acquire(action=True)
    assert sum(time.sleeps) == pytest.approx(1.5)


async def test_a_429_without_retry_after_pauses_for_the_default() -> None:
    time = FakeTime()
    graph = budget(time, default_pause=5.0)
    graph.throttled(retry_after=None)
    with pytest.raises(GraphBudgetExhausted) as refused:
        await graph.acquire(action=False)
    assert refused.value.retry_after == pytest.approx(5.0)


async def test_a_429_that_arrives_while_a_call_waits_for_its_slot_holds_that_call_too() -> None:
    time = FakeTime()
    graph = budget(time, BudgetLimits(actions=20, requests=2000, window_seconds=20))
    await graph.acquire(action=True)

    async def sleep_then_throttled(seconds: float) -> None:
        await time.sleep(seconds)
        graph.throttled(retry_after=30)  # another call got a 429 meanwhile

    graph._sleep = sleep_then_throttled
    with pytest.raises(GraphBudgetExhausted) as refused:
        await graph.acquire(action=True)
    assert refused.value.retry_after == pytest.approx(30)


async def test_reads_do_not_queue_behind_an_action_waiting_for_the_action_budget() -> None:
    time = FakeTime()
    released = asyncio.Event()
    waiting: list[float] = []

    async def sleep(seconds: float) -> None:
        waiting.append(seconds)
        await released.wait()
        time.now += seconds

    graph = GraphBudget(BudgetLimits(actions=20, requests=2000, window_seconds=20), clock=time.clock, sleep=sleep)
    await graph.acquire(action=True)
    action = asyncio.create_task(graph.acquire(action=True))
    await asyncio.sleep(0)
    assert len(waiting) == 1  # the second action sleeps until its slot
    for _ in range(20):
        await graph.acquire(action=False)
    assert len(waiting) == 1  # and no read waited meanwhile
    released.set()
    await action


async def test_a_cancelled_wait_gives_its_slot_back() -> None:
    time = FakeTime()
    released = asyncio.Event()

    async def sleep(seconds: float) -> None:
        await released.wait()

    graph = GraphBudget(BudgetLimits(actions=20, requests=2000, window_seconds=20), clock=time.clock, sleep=sleep)
    await graph.acquire(action=True)
    waiter = asyncio.create_task(graph.acquire(action=True))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    graph._sleep = time.sleep
    await graph.acquire(action=True)
    assert time.sleeps == [pytest.approx(1.025)]  # the slot the cancelled call had, not the one after


async def test_device_lookup_is_refused_while_no_action_could_start_within_the_bound() -> None:
    time = FakeTime()
    graph = budget(time, BudgetLimits(actions=2, requests=2000, window_seconds=20))
    graph.check_action_room()
    await graph.acquire(action=True)
    with pytest.raises(GraphBudgetExhausted) as refused:
        graph.check_action_room()
    assert refused.value.retry_after == pytest.approx(10.25)
    await graph.acquire(action=False)  # reads themselves are not held back


# ------------------------------------------------------------------ sizing from settings


def test_default_budget_is_intunes_for_all_instances_together() -> None:
    graph = shared_graph_budget(load_settings(BASE), ledger_table=None)
    assert graph.limits == BudgetLimits(actions=200, requests=2000, window_seconds=20)
    assert graph.paced_actions_per_second == pytest.approx(200 / 20.5)


def test_the_fallback_share_of_an_instance_is_a_quarter_by_default_never_the_whole_budget() -> None:
    assert graph_budget(load_settings(BASE)).limits == BudgetLimits(actions=50, requests=500, window_seconds=20)
    graph = graph_budget(load_settings({**BASE, "GRAPH_BUDGET_INSTANCES": "40"}))
    assert graph.limits == BudgetLimits(actions=5, requests=50, window_seconds=20)


def test_budget_settings_are_read() -> None:
    env = {**BASE, "GRAPH_POST_BUDGET": "100", "GRAPH_REQUEST_BUDGET": "1000", "GRAPH_BUDGET_WINDOW_SECONDS": "10"}
    assert shared_graph_budget(load_settings(env), None).limits == BudgetLimits(
        actions=100, requests=1000, window_seconds=10
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"GRAPH_POST_BUDGET": "0"}, "GRAPH_POST_BUDGET"),
        ({"GRAPH_POST_BUDGET": "lots"}, "GRAPH_POST_BUDGET: 'lots' is not a whole number of calls"),
        ({"GRAPH_REQUEST_BUDGET": "100"}, "GRAPH_POST_BUDGET: must be less than GRAPH_REQUEST_BUDGET"),
        ({"GRAPH_REQUEST_BUDGET": "200"}, "GRAPH_POST_BUDGET: must be less than GRAPH_REQUEST_BUDGET"),
        ({"GRAPH_BUDGET_WINDOW_SECONDS": "0"}, "GRAPH_BUDGET_WINDOW_SECONDS"),
        ({"GRAPH_BUDGET_INSTANCES": "0"}, "GRAPH_BUDGET_INSTANCES"),
        ({"GRAPH_POST_BUDGET": "3", "GRAPH_BUDGET_INSTANCES": "4"}, "GRAPH_BUDGET_INSTANCES: 4 instances"),
    ],
)
def test_invalid_budget_setting_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings({**BASE, **env})


async def test_a_call_that_overslept_its_full_wait_still_goes_once_its_slot_has_come() -> None:
    time = FakeTime()
    graph = budget(time, BudgetLimits(actions=20, requests=2000, window_seconds=20), max_wait=1.025)

    async def late_sleep(seconds: float) -> None:
        await time.sleep(seconds + 0.05)  # an event loop under load wakes a little late

    graph._sleep = late_sleep
    await graph.acquire(action=True)
    await graph.acquire(action=True)  # its slot is exactly at the bound


# ------------------------------------------------------------------ the workflow's side


async def test_an_action_held_back_by_the_budget_is_deferred_by_its_wait_and_is_no_attempt() -> None:
    h = harness()
    dev = h.gateway.add(device("5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"))
    refusals = Policy().max_action_attempts + 1  # more than a request may spend on real attempts
    h.gateway.perform_failures.extend((budget_exhausted(3.2, "action budget spent"), False) for _ in range(refusals))
    body = json.dumps({"requestId": "BUDGET-1", "device": {"intuneDeviceId": dev.id}, "requestedBy": "a@b.c"})
    for delivery in range(refusals + 1):
        await handle_request(body.encode(), h.services, message_id=f"m{delivery}")
        if h.publisher.events:
            break
        body, delay = h.scheduler.requeued[-1]
        assert delay == 3
        h.clock.advance(delay)
    assert h.publisher.statuses() == ["submitted"]
    assert h.publisher.events[-1]["data"]["attempt"] == 1


async def test_a_new_reset_is_refused_sooner_than_an_action_already_under_way() -> None:
    time = FakeTime()
    limits = BudgetLimits(actions=20, requests=2000, window_seconds=20)  # one action per 1.025 s
    graph = budget(time, limits, max_wait=1.0)
    await graph.acquire(action=True)
    with pytest.raises(GraphBudgetExhausted):
        graph.check_action_room()  # a new reset would wait 1.025 s > 1 s for its action
    await graph.acquire(action=True)  # an admitted request's action may wait up to 2 s
    assert time.sleeps == [pytest.approx(1.025)]
