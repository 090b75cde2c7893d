"""One Graph budget for all instances: the rules of the shared book, pure (time is an argument).

docs/contract.md#graph-budget, docs/decisions/0013-shared-graph-budget.md.

Intune counts calls per app and tenant, however many instances of the app run. The instances share
one small *book* (one table entity in the app's storage account, read and rewritten with ETag
concurrency by shared/adapters/shared_budget.py). An instance does not ask the book for every call:
it leases a *block* of slots for the calls waiting in it, and spends them itself.

- Two lanes: actions (`GRAPH_POST_BUDGET`) and reads, which keep the rest of the all-calls budget
  (`GRAPH_REQUEST_BUDGET` - `GRAPH_POST_BUDGET`). An action counts in the action lane only, so the
  two lanes together never exceed the all-calls budget, and neither waits for the other.
- A block is `count` slots granted at `start`; they may be spent only until `start + use_within`.
  The book counts a block for `window + margin` seconds, `margin` being the time the slots may be
  used plus an allowance for the time between a slot and Intune counting the call. So however the
  block's calls fall inside its use time, no window of Intune's holds more than `limit` of them:
  every block a window of Intune's can see started within `window + margin` of the newest one, and
  the book never grants a block that would put more than `limit` slots in such a span.
- A pacer (GCRA) in front: one slot every `(window + margin) / limit` seconds, a burst of 10 % of
  the limit after a quiet spell, so that a backlog runs at the budget's rate instead of spending a
  whole window's budget in its first second and idling for the rest (decision 0007).
- A lease that finds the window full takes its slots in pieces, as the window frees room, rather
  than waiting for room for all of them at once (which left freed room idle, every window).
- Blocks start in time order in each lane (a grant never starts before the last one), which keeps
  the window check a sum over the blocks that still count.
- A 429 from Graph pauses every instance: the book's `paused_until`; no block starts before it.
- Blocks an instance did not spend (it died, or had fewer calls than slots) count until they age
  out of the book, one window and margin later: nothing is lost for longer than that.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

__all__ = ["Block", "BudgetBook", "Grant", "Lane", "LaneRule", "LeasePlan", "plan_lease"]

WINDOW_MARGIN_SHARE = 0.025  # the margin: 2.5 % of the window (decision 0007), at least:
MIN_WINDOW_MARGIN_SECONDS = 0.5
USE_SHARE = 0.7  # of the margin: to spend a block's slots; the rest covers the slot-to-Intune time
BURST_SHARE = 0.1
_EPSILON = 1e-6  # keeps float rounding on the safe side of a window's edge


@dataclass(frozen=True)
class LaneRule:
    """At most `limit` calls in any `window` seconds, counted with Intune's sliding window.

    `hold`: how long a block's slots may be spent after its start (default: 70 % of the margin
    of 0007, 0.35 s at a 20 s window). A lane with room to spare (reads) holds its slots longer,
    so an instance leases reads every few seconds instead of for every few calls; the book then
    counts its blocks that much longer."""

    limit: int
    window: float
    hold: float | None = None

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window <= 0 or (self.hold is not None and self.hold <= 0):
            raise ValueError("a lane needs limit >= 1, window > 0 and hold > 0")

    @property
    def _base_margin(self) -> float:
        return max(self.window * WINDOW_MARGIN_SHARE, min(MIN_WINDOW_MARGIN_SECONDS, self.window / 2))

    @property
    def use_within(self) -> float:
        """How long after its start a block's slots may be spent."""
        return self._base_margin * USE_SHARE if self.hold is None else self.hold

    @property
    def margin(self) -> float:
        """The time a block's slots may be spent plus the allowance for the slot-to-Intune time."""
        return self.use_within + self._base_margin * (1 - USE_SHARE)

    @property
    def span(self) -> float:
        """How long the book counts a block."""
        return self.window + self.margin

    @property
    def interval(self) -> float:
        return self.span / self.limit

    @property
    def burst(self) -> int:
        return max(1, math.floor(self.limit * BURST_SHARE))


@dataclass(frozen=True)
class Block:
    start: float
    count: int


@dataclass(frozen=True)
class Grant:
    """Slots granted to one instance: `count` calls, each starting in [start, use_by)."""

    lane: str
    start: float
    use_by: float
    count: int


@dataclass(frozen=True)
class Lane:
    blocks: tuple[Block, ...] = ()
    due: float = -math.inf  # the pacer's "theoretical arrival time" of the next slot

    def counted(self, rule: LaneRule, at: float) -> int:
        """Slots that still count at `at`."""
        return sum(block.count for block in self.blocks if block.start > at - rule.span)

    def room(self, rule: LaneRule, at: float) -> int:
        """Slots a block starting at `at` (not before the last block) may have."""
        return max(0, rule.limit - self.counted(rule, at))

    def earliest(self, rule: LaneRule, now: float, count: int) -> float:
        """The earliest start, not before `now`, of a block of `count` slots (count <= limit)."""
        at = max(now, self.due - (rule.burst - 1) * rule.interval)
        if self.blocks:
            at = max(at, self.blocks[-1].start)
        return max(at, self._window_edge(rule, at, count))

    def _window_edge(self, rule: LaneRule, at: float, count: int) -> float:
        """When enough of the blocks counted at `at` have aged out for `count` more slots."""
        excess = self.counted(rule, at) + count - rule.limit
        if excess <= 0:
            return -math.inf
        for block in self.blocks:
            if block.start <= at - rule.span:
                continue
            excess -= block.count
            if excess <= 0:
                return block.start + rule.span + _EPSILON
        return math.inf  # count > limit: never

    def granted(self, rule: LaneRule, at: float, count: int) -> Lane:
        due = self.due
        if self._window_edge(rule, at - 2 * _EPSILON, count) > -math.inf:
            # The window, not the pacer, set this start (`earliest` puts it _EPSILON after the
            # block that aged out): the budget is saturated, so no burst credit (otherwise every
            # burst would come back one window later, when it ages out).
            due = max(due, at + (rule.burst - 1) * rule.interval)
        return Lane(_compacted((*self.blocks, Block(at, count))), max(due, at) + count * rule.interval)

    def pruned(self, rule: LaneRule, now: float) -> Lane:
        return replace(self, blocks=tuple(b for b in self.blocks if b.start > now - rule.span))


@dataclass(frozen=True)
class BudgetBook:
    """The shared book: what every instance reads and rewrites (shared/adapters/shared_budget.py)."""

    lanes: dict[str, Lane] = field(default_factory=dict)
    paused_until: float = -math.inf

    def lane(self, name: str) -> Lane:
        return self.lanes.get(name, Lane())

    def paused(self, until: float) -> BudgetBook:
        return replace(self, paused_until=max(self.paused_until, until))

    # -------------------------------------------------------------- storage form (plain fields)

    def to_fields(self) -> dict[str, str | float]:
        """Table properties: per lane its pacer, the first block's start and every block as
        `<ms after the first>+<count>` words (a few KB at most: see `compacted`)."""
        fields: dict[str, str | float] = {"PausedUntil": _finite(self.paused_until)}
        for name, lane in sorted(self.lanes.items()):
            base = lane.blocks[0].start if lane.blocks else 0.0
            fields[f"{name}Due"] = _finite(lane.due)
            fields[f"{name}Base"] = base
            fields[f"{name}Blocks"] = " ".join(f"{round((b.start - base) * 1000)}+{b.count}" for b in lane.blocks)
        return fields

    @classmethod
    def from_fields(cls, fields: Mapping[str, object], lane_names: Iterable[str]) -> BudgetBook:
        """The book stored by `to_fields`. A malformed block is skipped: the pacer, the other
        blocks and Intune's 429 still hold, and the next write stores a clean book."""
        lanes = {}
        for name in lane_names:
            base = _number(fields.get(f"{name}Base"))
            blocks = []
            for word in str(fields.get(f"{name}Blocks") or "").split():
                offset, _, count = word.partition("+")
                try:
                    blocks.append(Block(base + int(offset) / 1000, int(count)))
                except ValueError:
                    continue
            if not math.isfinite(base):
                blocks = []
            lanes[name] = Lane(tuple(sorted(blocks, key=lambda b: b.start)), _number(fields.get(f"{name}Due")))
        return cls(lanes, _number(fields.get("PausedUntil")))


@dataclass(frozen=True)
class LeasePlan:
    """The book after the lease, the grants, and per lane where its next block could start."""

    book: BudgetBook
    grants: tuple[Grant, ...]
    next_start: dict[str, float]


def plan_lease(
    book: BudgetBook,
    rules: dict[str, LaneRule],
    now: float,
    wanted: dict[str, int],
    horizons: dict[str, float],
) -> LeasePlan:
    """Grant each lane up to `wanted[lane]` slots, in one block or in a few pieces (each starting
    as early as the book allows, when the window has room for it), none starting after
    `horizons[lane]` (an absolute time: slots that could only start later are not granted, and cost
    nothing). Blocks older than a window and margin are dropped."""
    lanes = {name: book.lane(name).pruned(rule, now) for name, rule in rules.items()}
    grants = []
    next_start = {}
    for name, rule in rules.items():
        lane = lanes[name]
        left = min(max(0, wanted.get(name, 0)), rule.limit)
        horizon = horizons.get(name, math.inf)
        start = max(lane.earliest(rule, now, 1), book.paused_until)
        # In pieces: as many slots as the book has room for at the earliest start, then the rest
        # as the window frees more. A block waiting for room for all its slots at once would leave
        # the room that older, smaller blocks free idle meanwhile (and that pattern repeats every
        # window): the pieces keep a saturated window full, still at one lease's storage cost.
        while left and start <= horizon:
            count = min(left, lane.room(rule, start))
            lane = lane.granted(rule, start, count)
            grants.append(Grant(name, start, start + rule.use_within, count))
            left -= count
            start = max(lane.earliest(rule, now, 1), book.paused_until)
        lanes[name] = lane
        next_start[name] = start
    return LeasePlan(replace(book, lanes=lanes), tuple(grants), next_start)


MAX_BLOCKS = 400  # per lane; beyond it the oldest blocks are merged (about 4 KB stored per lane)


def _compacted(blocks: tuple[Block, ...]) -> tuple[Block, ...]:
    """At most MAX_BLOCKS blocks: the oldest pairs are merged into the later block of each pair,
    which then counts a little longer than its slots need, never shorter (the safe side)."""
    if len(blocks) <= MAX_BLOCKS:
        return blocks
    merged = []
    excess = len(blocks) - MAX_BLOCKS
    index = 0
    while excess > 0 and index + 1 < len(blocks):
        first, second = blocks[index], blocks[index + 1]
        merged.append(Block(second.start, first.count + second.count))
        index += 2
        excess -= 1
    return tuple(merged) + blocks[index:]


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _number(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return -math.inf
