"""The guardrails port (shared/ports.py) on an Azure Table: action calls of the rolling hour,
counted for all instances together (docs/contract.md#guardrails).

One entity per counted scope in the ledger table (PartitionKey `guardrail`; RowKey `actions` for
the whole app, `requester:<sha256 of the case-folded requestedBy>` per requester), holding the
per-minute buckets of the last hour as JSON. A call is counted *before* it is made with an
ETag-conditional replace of that entity, so two instances can never both take the last slot: the
loser re-reads and finds the hour full. A call that never reached Intune is given back. The rules
(buckets, the rolling sum, when a guardrail is full) are pure: shared/core/approvals.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

from shared.adapters.storage import storage_errors
from shared.core.approvals import (
    GuardrailSlot,
    Hold,
    Scope,
    bump,
    guardrail_trip,
    minute_key,
    rolling_count,
    unbump,
)
from shared.core.errors import StorageConflict
from shared.core.lifecycle import Policy

GUARDRAIL_PARTITION = "guardrail"
ACTIONS_ROW = "actions"
_ATTEMPTS = 20


def requester_row(requested_by: str) -> str:
    """Requesters are counted under a hash: a UPN is personal data and not a valid key everywhere."""
    return "requester:" + hashlib.sha256(requested_by.strip().casefold().encode()).hexdigest()[:32]


@dataclass(frozen=True)
class GuardrailCount:
    row: str
    count: int
    limit: int


class TableGuardrails:
    """`Guardrails` over the ledger table (azure-data-tables, async)."""

    def __init__(self, table_client: Any, policy: Policy) -> None:
        self._table = table_client
        self._policy = policy

    def _scopes(self, requested_by: str) -> list[tuple[Scope, str]]:
        scopes: list[tuple[Scope, str]] = []
        if self._policy.guardrail_max_actions_per_hour > 0:
            scopes.append(("actions", ACTIONS_ROW))
        if self._policy.guardrail_max_per_requester_per_hour > 0:
            scopes.append(("requester", requester_row(requested_by)))
        return scopes

    async def take(self, requested_by: str, now: datetime, *, enforce: bool) -> GuardrailSlot | Hold:
        taken: list[tuple[str, str]] = []
        for scope, row in self._scopes(requested_by):
            result = await self._take_one(scope, row, now, enforce=enforce)
            if isinstance(result, Hold):
                await self.give_back(GuardrailSlot(tuple(taken)))
                return result
            taken.append((row, result))
        return GuardrailSlot(tuple(taken))

    async def give_back(self, slot: GuardrailSlot) -> None:
        for row, minute in slot.taken:
            await self._update(row, lambda buckets, minute=minute: unbump(buckets, minute))

    async def counts(self, now: datetime) -> GuardrailCount:
        """The app-wide count of the rolling hour (ops)."""
        entity = await self._read(ACTIONS_ROW)
        buckets = _buckets(entity)
        return GuardrailCount(ACTIONS_ROW, rolling_count(buckets, now), self._policy.guardrail_max_actions_per_hour)

    async def _take_one(self, scope: Scope, row: str, now: datetime, *, enforce: bool) -> str | Hold:
        minute = minute_key(now)
        with storage_errors("guardrail count"):
            for _ in range(_ATTEMPTS):
                entity = await self._read(row)
                buckets = _buckets(entity)
                if enforce:
                    hold = guardrail_trip(scope, rolling_count(buckets, now), self._policy)
                    if hold is not None:
                        return hold
                if await self._write(row, entity, bump(buckets, now)):
                    return minute
        raise StorageConflict(f"guardrail {scope} kept changing")

    async def _update(self, row: str, change: Any) -> None:
        with storage_errors("guardrail give back"):
            for _ in range(_ATTEMPTS):
                entity = await self._read(row)
                if entity is None:
                    return
                if await self._write(row, entity, change(_buckets(entity))):
                    return
        raise StorageConflict(f"guardrail {row} kept changing")

    async def _read(self, row: str) -> Any:
        try:
            return await self._table.get_entity(GUARDRAIL_PARTITION, row)
        except ResourceNotFoundError:
            return None

    async def _write(self, row: str, entity: Any, buckets: Mapping[str, int]) -> bool:
        """Replace the buckets if nobody wrote them since `entity` was read; False when someone did."""
        fresh = {
            "PartitionKey": GUARDRAIL_PARTITION,
            "RowKey": row,
            "Minutes": json.dumps(dict(sorted(buckets.items())), separators=(",", ":")),
        }
        try:
            if entity is None:
                await self._table.create_entity(fresh)
            else:
                from azure.data.tables import UpdateMode  # lazily: cold start (see ledger.py)

                await self._table.update_entity(
                    fresh,
                    mode=UpdateMode.REPLACE,
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
        except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
            return False
        return True


def _buckets(entity: Any) -> dict[str, int]:
    if entity is None:
        return {}
    try:
        document = json.loads(entity.get("Minutes") or "{}")
    except ValueError:
        return {}
    return {str(key): int(value) for key, value in document.items() if isinstance(value, int)}
