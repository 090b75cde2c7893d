"""Which ledger records an operator asks for: time bounds, statuses, reason codes.

The ledger stores times as ISO 8601 UTC strings with milliseconds and a `Z`
(`2026-11-25T10:00:00.000Z`), which sort lexicographically in time order, so time bounds and
statuses become an OData filter that the Table service evaluates; reason codes live inside the
recorded CloudEvent (`LastEvent`) and are matched here, client-side.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from shared.adapters.ledger import REQUEST_ROW
from shared.core.clock import iso
from shared.core.contract import ReasonCode
from shared.core.lifecycle import LedgerRecord, State

IN_PROGRESS_STATES = tuple(state.value for state in State if not state.final)
FINAL_STATUSES = tuple(state.value for state in State if state.final)
KNOWN_STATES = (*IN_PROGRESS_STATES, *FINAL_STATUSES)
STATUS_ALIASES = {"open": IN_PROGRESS_STATES, "final": FINAL_STATUSES}
REASON_CODES = tuple(code.value for code in ReasonCode)

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

TimeField = Literal["CreatedAt", "UpdatedAt"]


class UsageError(ValueError):
    """The command line asks for something impossible; the message says what to write instead."""


def parse_moment(text: str, now: datetime, option: str) -> datetime:
    """`30m`, `1h`, `7d`, `2w` (before now), `now`, or an ISO 8601 date/time (naive means UTC)."""
    value = text.strip()
    if value.lower() == "now":
        return now
    relative = _RELATIVE.match(value.lower())
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        return now - timedelta(**{_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option}: {text!r} is neither a duration (30m, 1h, 7d, 2w) nor an ISO 8601 time "
            "(2026-11-25, 2026-11-25T10:00:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def expand_statuses(values: list[str] | None) -> tuple[str, ...]:
    """Statuses and ledger states as given, with `open` and `final` expanded; validated."""
    result: list[str] = []
    for value in values or []:
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            if item in STATUS_ALIASES:
                result.extend(STATUS_ALIASES[item])
            elif item in KNOWN_STATES:
                result.append(item)
            else:
                choices = ", ".join((*KNOWN_STATES, *STATUS_ALIASES))
                raise UsageError(f"--status: unknown status {item!r} (one of {choices})")
    return tuple(dict.fromkeys(result))


def expand_reasons(values: list[str] | None) -> tuple[str, ...]:
    result: list[str] = []
    for value in values or []:
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            if item not in REASON_CODES:
                raise UsageError(f"--reason: unknown reason code {item!r} (one of {', '.join(REASON_CODES)})")
            result.append(item)
    return tuple(dict.fromkeys(result))


@dataclass(frozen=True)
class Selection:
    """A set of request records: server-side filter plus the client-side rest."""

    statuses: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    time_field: TimeField = "UpdatedAt"

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise UsageError(f"--since ({iso(self.since)}) must be before --until ({iso(self.until)})")

    def odata(self) -> tuple[str, dict[str, str]]:
        """The Table service filter (with @parameters, which the SDK quotes and escapes)."""
        clauses = ["RowKey eq @row"]
        parameters = {"row": REQUEST_ROW}
        if self.since is not None:
            clauses.append(f"{self.time_field} ge @since")
            parameters["since"] = iso(self.since)
        if self.until is not None:
            clauses.append(f"{self.time_field} lt @until")
            parameters["until"] = iso(self.until)
        if self.statuses:
            names = [f"s{index}" for index in range(len(self.statuses))]
            # The SDK substitutes @names only as whole space-separated words: keep spaces inside ( ).
            clauses.append("( " + " or ".join(f"State eq @{name}" for name in names) + " )")
            parameters.update(zip(names, self.statuses, strict=True))
        return " and ".join(clauses), parameters

    def admits(self, record: LedgerRecord) -> bool:
        moment = record.created_at if self.time_field == "CreatedAt" else record.updated_at
        if self.since is not None and moment < self.since:
            return False
        if self.until is not None and moment >= self.until:
            return False
        if self.statuses and record.state not in self.statuses:
            return False
        return not self.reasons or reason_code(record) in self.reasons


def reason_code(record: LedgerRecord) -> str | None:
    """The reason code of the recorded outcome event (None while there is none)."""
    reason = (last_event_data(record) or {}).get("reason") or {}
    code = reason.get("code")
    return code if isinstance(code, str) else None


def last_event_data(record: LedgerRecord) -> dict[str, Any] | None:
    if not record.last_event_json:
        return None
    try:
        data = json.loads(record.last_event_json).get("data")
    except (ValueError, AttributeError):
        return None
    return data if isinstance(data, dict) else None
