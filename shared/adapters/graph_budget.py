"""Intune's Graph budget, kept on the client side (docs/contract.md#graph-budget,
docs/decisions/0007-graph-budget.md).

Intune throttles each app per tenant at 200 POST and 2,000 requests of any kind per 20 seconds and
answers 429 beyond that. Every Graph call of a process first takes a slot from one `GraphBudget`:

- Two sliding windows: one for actions (POST), one for every call. Each holds the configured budget
  divided by the number of instances that may call Graph at the same time, over a window 2.5 %
  (at least 0.25 s) longer than Intune's, which absorbs the time between taking a slot and Intune
  counting the call.
- Slots are paced, one every window/limit seconds after a burst of 5 % of the limit. A backlog then
  runs at the budget's rate all the time, instead of spending a whole window's budget in its first
  second and idling for the other nineteen.
- A 429 pauses every call of the process until its Retry-After has passed: Intune counts per app,
  so the next call would be refused too.
- A call that would wait longer than `max_wait` seconds (2 s) does not wait: `GraphBudgetExhausted`,
  a transient Graph error carrying `retry_after`, makes the workflow put the request back on the
  queue with that visibility delay, so no worker sits on a spent budget. The check is made before
  the device lookup that starts a reset, so a deferred request has spent no Graph call; the action
  of an admitted request may wait up to twice the bound (for slots booked while it read its device).

`SlidingBudget` is pure (the time is an argument); `GraphBudget` adds the clock, sleeping and the
pause, and takes both as parameters so that tests drive it with a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from shared.core.errors import GraphBudgetExhausted

__all__ = ["BudgetLimits", "CallBudget", "GraphBudget", "GraphBudgetExhausted", "SlidingBudget"]

# Intune's documented budget per app and tenant (docs/contract.md#graph-traffic-and-permissions).
INTUNE_ACTIONS_PER_WINDOW = 200
INTUNE_REQUESTS_PER_WINDOW = 2000
INTUNE_WINDOW_SECONDS = 20.0

# Our window is longer than Intune's by this share, at least by the seconds after it: the time
# between taking a slot and Intune counting the call varies (network, event loop, first-call work).
WINDOW_MARGIN = 0.025
MIN_WINDOW_MARGIN_SECONDS = 0.25
BURST_SHARE = 0.05  # calls that may start back to back after a quiet spell, as a share of the limit
DEFAULT_MAX_WAIT_SECONDS = 2.0
DEFAULT_PAUSE_SECONDS = 5.0  # after a 429 without Retry-After
_ON_TIME = 0.05  # seconds an action may start after its slot in the action budget
_EPSILON = 1e-6  # seconds; keeps float rounding on the safe side of a window's edge


def budget_exhausted(retry_after: float, why: str) -> GraphBudgetExhausted:
    return GraphBudgetExhausted(
        f"Graph budget: {why}; next slot in {retry_after:.1f} s",
        status=429,
        code="budgetExhausted",
        retry_after=retry_after,
    )


@dataclass(frozen=True)
class BudgetLimits:
    """Calls allowed per window: `actions` POSTs and `requests` calls of any kind (POSTs included)."""

    actions: int = INTUNE_ACTIONS_PER_WINDOW
    requests: int = INTUNE_REQUESTS_PER_WINDOW
    window_seconds: float = INTUNE_WINDOW_SECONDS

    def share(self, instances: int) -> BudgetLimits:
        """One instance's part when `instances` processes may call Graph at the same time."""
        if instances < 1:
            raise ValueError("instances must be at least 1")
        return BudgetLimits(
            actions=max(1, self.actions // instances),
            requests=max(1, self.requests // instances),
            window_seconds=self.window_seconds,
        )

    @property
    def actions_per_second(self) -> float:
        return self.actions / self.window_seconds


class SlidingBudget:
    """At most `limit` call starts in any `window` seconds, paced one per `window / limit` seconds
    after a burst of `burst` calls (a GCRA pacer in front of a sliding-window log).

    Slots may be booked in the future (a caller then sleeps until its slot); bookings never go
    backwards in time, so the log stays sorted and the window check stays exact.
    """

    def __init__(self, limit: int, window: float, burst: int = 1) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a budget needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self.interval = window / limit
        self.burst = max(1, min(burst, limit))
        self._starts: deque[float] = deque()
        self._tat = -math.inf  # GCRA "theoretical arrival time" of the next call

    def next_start(self, now: float) -> float:
        """The earliest time, not before `now`, at which one more call may start."""
        self._forget(now)
        at = max(now, self._tat - (self.burst - 1) * self.interval, self._window_edge())
        if self._starts:
            at = max(at, self._starts[-1])
        return at

    def book(self, at: float) -> None:
        """Take the slot at `at`, a time returned by `next_start`."""
        if at <= self._window_edge():
            # The window, not the pacer, set this slot: the budget is saturated, so no burst credit
            # (otherwise every burst would come back one window later, when its calls expire).
            self._tat = max(self._tat, at + (self.burst - 1) * self.interval)
        self._starts.append(at)
        self._tat = max(self._tat, at) + self.interval

    def _window_edge(self) -> float:
        """When the oldest call that still fills the window stops counting (-inf: room now)."""
        if len(self._starts) < self.limit:
            return -math.inf
        return self._starts[-self.limit] + self.window + _EPSILON

    def release(self, at: float) -> None:
        """Give back a slot booked at `at` whose call was never sent."""
        with contextlib.suppress(ValueError):
            self._starts.remove(at)
            self._tat -= self.interval

    def _forget(self, now: float) -> None:
        horizon = now - self.window
        while self._starts and self._starts[0] <= horizon:
            self._starts.popleft()


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class CallBudget(Protocol):
    """What the Graph transport and gateway need of a budget: this process's `GraphBudget`, or the
    budget of all instances together (shared/adapters/shared_budget.py)."""

    async def acquire(self, *, action: bool) -> None: ...

    def check_action_room(self) -> None: ...

    def throttled(self, retry_after: float | None) -> None: ...


class GraphBudget:
    """The Graph budget of one process: take a slot before every call, report every 429."""

    def __init__(
        self,
        limits: BudgetLimits | None = None,
        *,
        max_wait: float = DEFAULT_MAX_WAIT_SECONDS,
        default_pause: float = DEFAULT_PAUSE_SECONDS,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.limits = limits or BudgetLimits()
        self.max_wait = max_wait
        self.default_pause = default_pause
        self._clock = clock
        self._sleep = sleep
        window = self.limits.window_seconds + max(self.limits.window_seconds * WINDOW_MARGIN, MIN_WINDOW_MARGIN_SECONDS)
        self._actions = SlidingBudget(self.limits.actions, window, _burst(self.limits.actions))
        self._requests = SlidingBudget(self.limits.requests, window, _burst(self.limits.requests))
        self._paused_until = -math.inf

    @property
    def paced_actions_per_second(self) -> float:
        """The steady action rate this budget allows (the documented budget less the margin)."""
        return 1 / self._actions.interval

    async def acquire(self, *, action: bool) -> None:
        """Wait for a slot or raise GraphBudgetExhausted: a read waits at most `max_wait`, an action
        twice that (see `check_action_room`).

        An action books its action slot for when both budgets have room, and takes its slot of the
        all-calls budget only when that time has come, so reads never queue behind an action
        waiting for the action budget. If reads used the all-calls budget up meanwhile, the action
        gives its slot back and books again: the time in the action budget's log is always the
        time the call goes out.
        """
        deadline = self._clock() + self.max_wait * (2 if action else 1)
        while True:
            if not action:
                slot = await self._wait_for(self._requests, deadline, "request budget")
                if self._paused_until > slot:  # a 429 arrived while this call waited
                    self._requests.release(slot)
                    continue
                return
            now = self._clock()
            earliest = max(self._requests.next_start(now), self._paused_until)
            action_slot = await self._wait_for(self._actions, deadline, "action budget", not_before=earliest)
            now = self._clock()
            if self._paused_until > action_slot or self._requests.next_start(now) > now + _ON_TIME:
                self._actions.release(action_slot)
                continue
            self._requests.book(now)
            return

    def check_action_room(self) -> None:
        """Raise GraphBudgetExhausted when the next action could not start within `max_wait`.

        Called before the device lookup that starts a reset, so a deferred request has spent no
        Graph call. The action of an admitted reset may then wait up to twice `max_wait` (for the
        slots booked by resets admitted at the same time), which is cheaper than deferring a
        request that has already read its device. Admitted resets are not counted ahead: a reset
        waiting in-process holds its place in the host's batch, and that is the backpressure that
        keeps the host from pulling messages faster than the budget serves them (measured in
        docs/decisions/0007-graph-budget.md).
        """
        now = self._clock()
        start = max(self._actions.next_start(now), self._requests.next_start(now), self._paused_until)
        if start - now > self.max_wait + _EPSILON:
            raise budget_exhausted(start - now, "no action slot soon enough to start a reset")

    def throttled(self, retry_after: float | None) -> None:
        """Graph answered 429: pause every call until `retry_after` seconds from now."""
        pause = self.default_pause if retry_after is None else max(0.0, retry_after)
        self._paused_until = max(self._paused_until, self._clock() + pause)

    async def _wait_for(self, lane: SlidingBudget, deadline: float, name: str, not_before: float = -math.inf) -> float:
        now = self._clock()
        at = max(lane.next_start(now), self._paused_until, not_before)
        if at > now and at > deadline + _EPSILON:  # (a call that overslept its deadline may still go now)
            why = "paused after a 429" if self._paused_until >= at else f"{name} spent"
            raise budget_exhausted(at - now, why)
        lane.book(at)
        if at > now:
            try:
                await self._sleep(at - now)
            except BaseException:
                lane.release(at)
                raise
        return at


def _burst(limit: int) -> int:
    return max(1, math.floor(limit * BURST_SHARE))
