"""One Graph budget for all instances, coordinated through the app's storage account
(docs/contract.md#graph-budget, docs/decisions/0013-shared-graph-budget.md).

`SharedGraphBudget` is what every Graph call of the process takes a slot from (in the HTTP
transport, shared/adapters/graph_transport.py), like the per-process `GraphBudget` it replaces:

- Calls waiting for a slot are served from blocks of slots the process leased from the shared
  book (shared/core/budget_book.py: the rules, pure). One lease is one read and one conditional
  write of one table entity (`PartitionKey` `$graph-budget` in the ledger table), for as many
  slots as calls are waiting (up to 10 % of the budget), so the storage cost per Graph call stays
  a fraction of one operation under load. One lease at a time per process; a lost race (412) reads
  again.
- An action waits in process for its slot up to `max_hold` (30 s): instances hold their callers'
  places in one global order instead of deferring them (a deferred message costs storage
  operations, and the next message pulled would wait just as long). `check_action_room`, before
  the device lookup, defers a request only when the book's next action slot is further away.
  A read waits at most `max_wait` (2 s).
- A 429 pauses this process at once and every other one through the book (`paused_until`).
- When the book cannot be read or written within `store_timeout` (storage slow or down), the
  process falls back for `store_retry_after` seconds to a local budget of 1/`GRAPH_BUDGET_INSTANCES`
  of the whole (never the whole budget per instance), then tries the book again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.adapters.graph_budget import (
    DEFAULT_MAX_WAIT_SECONDS,
    DEFAULT_PAUSE_SECONDS,
    BudgetLimits,
    GraphBudget,
    budget_exhausted,
)
from shared.adapters.storage import storage_errors
from shared.core.budget_book import BudgetBook, Grant, LaneRule, LeasePlan, plan_lease

__all__ = ["ACTIONS", "READS", "BookConflict", "BudgetStore", "SharedGraphBudget", "TableBudgetStore", "lane_rules"]

log = logging.getLogger("passcode_reset")

ACTIONS, READS = "Actions", "Reads"
LANES = (ACTIONS, READS)
DEFAULT_MAX_HOLD_SECONDS = 30.0
DEFAULT_STORE_TIMEOUT_SECONDS = 3.0
DEFAULT_STORE_RETRY_AFTER_SECONDS = 5.0
MAX_READ_BLOCK = 32
READ_HOLD_SECONDS = 5.0
_CONFLICT_RETRIES = 6
_FRESH_SECONDS = 0.5  # how long the book's "next slot" seen by a lease is trusted without a new lease


class BookConflict(Exception):
    """Another instance wrote the book since it was read (or created it first)."""


class BudgetStore(Protocol):
    async def read(self) -> tuple[BudgetBook | None, str | None]:
        """The book and its ETag; (None, None) when there is none yet."""
        ...

    async def write(self, book: BudgetBook, etag: str | None) -> None:
        """Store the book if it is unchanged since `etag` (None: create it); else BookConflict."""
        ...


class TableBudgetStore:
    """The book as one entity of the ledger table (the ledger's own rows are `RowKey` `request` or
    `cooldown`; nothing lists this one)."""

    PARTITION = "$graph-budget"
    ROW = "book"

    def __init__(self, table_client: Any) -> None:
        self._table = table_client

    async def read(self) -> tuple[BudgetBook | None, str | None]:
        with storage_errors("read the Graph budget"):
            try:
                entity = await self._table.get_entity(self.PARTITION, self.ROW)
            except ResourceNotFoundError:
                return None, None
        return BudgetBook.from_fields(dict(entity), LANES), entity.metadata["etag"]

    async def write(self, book: BudgetBook, etag: str | None) -> None:
        from azure.data.tables import UpdateMode

        entity = {"PartitionKey": self.PARTITION, "RowKey": self.ROW, **book.to_fields()}
        with storage_errors("write the Graph budget"):
            try:
                if etag is None:
                    await self._table.create_entity(entity)
                else:
                    await self._table.update_entity(
                        entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified
                    )
            except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError) as exc:
                raise BookConflict("the Graph budget changed meanwhile") from exc


def lane_rules(limits: BudgetLimits) -> dict[str, LaneRule]:
    """Actions get the action budget; reads the rest of the all-calls budget, so that the two lanes
    together never exceed it (an action is a call too)."""
    reads = limits.requests - limits.actions
    if reads < 1:
        raise ValueError("the all-calls budget must exceed the action budget (reads keep the difference)")
    window = limits.window_seconds
    return {
        ACTIONS: LaneRule(limits.actions, window),
        # Reads use a tenth of their lane (about 1 per request against 1,800 per 20 s): their blocks
        # may be spent for a quarter of the window (5 s), so a lease serves the reads of seconds.
        READS: LaneRule(
            reads, window, hold=max(LaneRule(reads, window).use_within, min(READ_HOLD_SECONDS, window / 4))
        ),
    }


@dataclass(order=True)
class _Slot:
    start: float
    use_by: float


@dataclass
class BudgetStats:
    """What the process did with the book (tests, benchmarks)."""

    leases: int = 0
    conflicts: int = 0
    granted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LANES, 0))
    expired: int = 0  # granted slots that passed their use-by unspent
    fallbacks: int = 0


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class SharedGraphBudget:
    """The Graph budget of all instances together: take a slot before every call, report every 429."""

    def __init__(
        self,
        store: BudgetStore,
        limits: BudgetLimits | None = None,
        *,
        fallback: GraphBudget,
        max_wait: float = DEFAULT_MAX_WAIT_SECONDS,
        max_hold: float = DEFAULT_MAX_HOLD_SECONDS,
        default_pause: float = DEFAULT_PAUSE_SECONDS,
        store_timeout: float = DEFAULT_STORE_TIMEOUT_SECONDS,
        store_retry_after: float = DEFAULT_STORE_RETRY_AFTER_SECONDS,
        clock: Clock = time.time,  # wall clock: the book's times are compared across instances
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.limits = limits or BudgetLimits()
        self.rules = lane_rules(self.limits)
        self.fallback = fallback
        self.max_wait = max_wait
        self.max_hold = max_hold
        self.default_pause = default_pause
        self.store_timeout = store_timeout
        self.store_retry_after = store_retry_after
        self.stats = BudgetStats()
        self._store = store
        self._clock = clock
        self._sleep = sleep
        self._max_block = {ACTIONS: self.rules[ACTIONS].burst, READS: min(MAX_READ_BLOCK, self.rules[READS].burst)}
        self._slots: dict[str, deque[_Slot]] = {lane: deque() for lane in LANES}
        self._waiting = dict.fromkeys(LANES, 0)
        self._next_start = dict.fromkeys(LANES, -math.inf)
        self._next_seen = dict.fromkeys(LANES, -math.inf)
        self._paused_until = -math.inf
        self._fallback_until = -math.inf
        self._lease_lock: asyncio.Lock | None = None
        self._read_seconds = 0.0  # a book read's round trip (moving average)
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def paced_actions_per_second(self) -> float:
        return 1 / self.rules[ACTIONS].interval

    # ------------------------------------------------------------------ the budget's interface

    async def acquire(self, *, action: bool) -> None:
        """Wait for a slot or raise GraphBudgetExhausted: an action waits at most `max_hold`, a read
        `max_wait`."""
        lane = ACTIONS if action else READS
        now = self._clock()
        if self._fallback_until > now:
            await self.fallback.acquire(action=action)
            return
        deadline = now + (self.max_hold if action else self.max_wait)
        self._waiting[lane] += 1
        waiting = True
        try:
            while True:
                now = self._clock()
                if self._paused_until > now:
                    if self._paused_until > deadline:
                        raise budget_exhausted(self._paused_until - now, "paused after a 429")
                    await self._sleep(self._paused_until - now)
                    continue
                slot = self._take(lane, now)
                if slot is None:
                    if self._next_seen[lane] > now - _FRESH_SECONDS and self._next_start[lane] > deadline:
                        raise budget_exhausted(self._next_start[lane] - now, f"{lane.lower()} budget spent")
                    if not await self._lease():
                        self._waiting[lane] -= 1
                        waiting = False
                        await self.fallback.acquire(action=action)
                        return
                    continue
                if slot.start > deadline:
                    self._slots[lane].appendleft(slot)
                    raise budget_exhausted(slot.start - now, f"{lane.lower()} budget spent")
                self._waiting[lane] -= 1
                waiting = False
                if slot.start > now:
                    await self._sleep(slot.start - now)
                now = self._clock()
                if now < slot.use_by and self._paused_until <= now:
                    return
                self.stats.expired += 1  # overslept its use-by (or a 429 came meanwhile): next slot
                self._waiting[lane] += 1
                waiting = True
        finally:
            if waiting:
                self._waiting[lane] -= 1

    def check_action_room(self) -> None:
        """Raise GraphBudgetExhausted when the next action could not start within `max_hold`:
        called before the device lookup that starts a reset, so a deferred request has spent no
        Graph call."""
        now = self._clock()
        if self._fallback_until > now:
            self.fallback.check_action_room()
            return
        start = self._paused_until
        if self._next_seen[ACTIONS] > now - _FRESH_SECONDS:
            start = max(start, self._next_start[ACTIONS])
        if start - now > self.max_hold:
            raise budget_exhausted(start - now, "no action slot soon enough to start a reset")

    def throttled(self, retry_after: float | None) -> None:
        """Graph answered 429: pause this process now and every other one through the book."""
        pause = self.default_pause if retry_after is None else max(0.0, retry_after)
        until = self._clock() + pause
        self._paused_until = max(self._paused_until, until)
        for slots in self._slots.values():
            self.stats.expired += len(slots)
            slots.clear()
        self.fallback.throttled(retry_after)
        task = asyncio.get_running_loop().create_task(self._share_pause(until))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # ------------------------------------------------------------------ leasing

    def _take(self, lane: str, now: float) -> _Slot | None:
        slots = self._slots[lane]
        while slots and slots[0].use_by <= now:
            slots.popleft()
            self.stats.expired += 1
        return slots.popleft() if slots else None

    async def _lease(self) -> bool:
        """Lease blocks for the calls waiting without a slot (one lease at a time). False when the
        book cannot be reached: the process then uses its fallback share for a while."""
        if self._lease_lock is None:
            self._lease_lock = asyncio.Lock()
        async with self._lease_lock:
            if self._fallback_until > self._clock():
                return False
            await asyncio.sleep(0)  # calls that became ready in this turn of the loop join this lease
            wanted = {lane: min(self._max_block[lane], self._waiting[lane] - len(self._slots[lane])) for lane in LANES}
            if wanted[READS] > 0:  # reads have room to spare: a whole block, for the reads of the next seconds
                wanted[READS] = self._max_block[READS]
            if all(count <= 0 for count in wanted.values()):
                return True  # a lease made while this call waited for the lock covered it
            try:
                plan = await asyncio.wait_for(self._lease_from_book(wanted), self.store_timeout)
            except Exception as exc:  # storage down, slow (TimeoutError) or a book that cannot be read
                self._enter_fallback(exc)
                return False
            self._apply(plan)
            return True

    async def _lease_from_book(self, wanted: dict[str, int]) -> LeasePlan | None:
        for attempt in range(_CONFLICT_RETRIES):
            began = self._clock()
            book, etag = await self._store.read()
            # Blocks start after the write has come back (the time of the read, as an estimate):
            # a slot's use time is not spent on the round trip.
            read_time = self._clock()
            self._read_seconds = 0.8 * self._read_seconds + 0.2 * max(0.0, read_time - began)
            now = read_time + min(self._read_seconds, self.rules[ACTIONS].use_within / 2)
            horizons = {ACTIONS: now + self.max_hold, READS: now + self.max_wait}
            plan = plan_lease(book or BudgetBook(), self.rules, now, wanted, horizons)
            if not plan.grants:
                return plan  # nothing fits in time: nothing to write
            try:
                await self._store.write(plan.book, etag)
            except BookConflict:
                self.stats.conflicts += 1
                await self._sleep(random.uniform(0.0, 0.01 * (attempt + 1)))
                continue
            self.stats.leases += 1
            if self.stats.leases % 500 == 0:
                log.info("Graph budget leases", extra={"budgetStats": repr(self.stats)})
            return plan
        return None  # lost every race: the callers try again

    def _apply(self, plan: LeasePlan | None) -> None:
        if plan is None:
            return
        now = self._clock()
        self._paused_until = max(self._paused_until, plan.book.paused_until)
        for grant in plan.grants:
            self._add(grant)
        for lane, start in plan.next_start.items():
            self._next_start[lane] = start
            self._next_seen[lane] = now

    def _add(self, grant: Grant) -> None:
        slots = self._slots[grant.lane]
        slots.extend(_Slot(grant.start, grant.use_by) for _ in range(grant.count))
        if len(slots) > grant.count and slots[-grant.count - 1].start > grant.start:
            self._slots[grant.lane] = deque(sorted(slots))
        self.stats.granted[grant.lane] += grant.count

    def _enter_fallback(self, exc: BaseException) -> None:
        self._fallback_until = self._clock() + self.store_retry_after
        self.stats.fallbacks += 1
        log.warning(
            "Graph budget: the shared budget cannot be reached; this instance keeps its fallback share",
            extra={"error": type(exc).__name__, "retryAfterSeconds": self.store_retry_after},
        )

    async def _share_pause(self, until: float) -> None:
        async def write() -> None:
            for _ in range(_CONFLICT_RETRIES):
                book, etag = await self._store.read()
                if book is not None and book.paused_until >= until:
                    return
                try:
                    await self._store.write((book or BudgetBook()).paused(until), etag)
                    return
                except BookConflict:
                    continue

        try:
            await asyncio.wait_for(write(), self.store_timeout)
        except Exception as exc:  # the pause still holds here; the others meet Intune's 429 themselves
            log.warning("Graph budget: the pause after a 429 could not be shared", extra={"error": type(exc).__name__})
