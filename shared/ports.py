"""Every interface the use cases (shared/workflow/, shared/api/) need from the outside world.

The adapters in shared/adapters/ implement them over Azure Storage and Microsoft Graph; the unit
tests implement them with plain in-memory fakes (tests/fakes.py). Types only: nothing here does I/O.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from shared.core.approvals import GuardrailSlot, Hold
from shared.core.batches import BatchRecord, GroupMember, ItemRow, UserDevice
from shared.core.device import ActionResult, IntuneDevice
from shared.core.lifecycle import DeviceClaim, LedgerRecord
from shared.core.platforms import Action


class IntuneGateway(Protocol):
    """The Graph calls of docs/contract.md#graph-traffic-and-permissions, mapped to shared/core/errors.py."""

    async def get_device(self, device_id: str) -> IntuneDevice | None: ...
    async def find_devices(self, kind: str, value: str) -> list[IntuneDevice]: ...
    async def perform(self, device_id: str, action: Action) -> None: ...
    async def action_results(self, device_id: str) -> list[ActionResult]: ...


class Ledger(Protocol):
    """One record per requestId, written conditionally (`StorageConflict` on a lost race), and one
    cooldown claim per device."""

    async def get(self, request_id: str) -> LedgerRecord | None: ...
    async def create(self, record: LedgerRecord) -> LedgerRecord: ...
    async def replace(self, record: LedgerRecord) -> LedgerRecord: ...
    async def claim_device(self, device_id: str, request_id: str, now: datetime, window: timedelta) -> DeviceClaim: ...
    async def release_device(self, device_id: str, request_id: str) -> None: ...


class Guardrails(Protocol):
    """Action calls of the rolling hour, counted for all instances together (docs/contract.md#guardrails).

    `take` counts one action call before it is made, unless a guardrail is full (then the `Hold`
    says which); with `enforce=False` (an approved request) it counts without checking. `give_back`
    uncounts a call that never reached Intune."""

    async def take(self, requested_by: str, now: datetime, *, enforce: bool) -> GuardrailSlot | Hold: ...
    async def give_back(self, slot: GuardrailSlot) -> None: ...


class EventPublisher(Protocol):
    """The results queue: one outcome event (CloudEvents JSON) per call."""

    async def publish(self, event_json: str) -> None: ...


class EventGridTopic(Protocol):
    """An Event Grid topic (CloudEvents 1.0 input schema): one event, sent unchanged. Raises on any
    answer but success; the outbox queue retries (docs/contract.md#event-grid-delivery)."""

    async def send(self, event_json: str) -> None: ...


class EventOutbox(Protocol):
    """The queue of events waiting for Event Grid: an event back on it after a delay."""

    async def send_message(self, content: str, delay_seconds: int = 0) -> None: ...


class WorkScheduler(Protocol):
    """Work for later: a request back on its queue, a confirmation check on the follow-up queue."""

    async def requeue_request(self, body: str, delay_seconds: int) -> None: ...
    async def schedule_followup(self, body: str, delay_seconds: int) -> None: ...


class MessageQueue(Protocol):
    """A queue to send to (the request queue, for the HTTP API and the ops CLI)."""

    async def send_message(self, content: str) -> Any: ...


CheckState = Literal["ok", "unreachable", "unauthorized", "unavailable"]


class HealthProbe(Protocol):
    """Cheap reads that prove each dependency answers; results are words, never error texts."""

    async def storage(self) -> CheckState: ...
    async def graph(self) -> CheckState: ...


# ---------------------------------------------------------------- batches (docs/contract.md#batches)


class BatchStore(Protocol):
    """The batch record (conditional writes: `StorageConflict` on a lost race) and the batch's item
    list in chunks of `shared.core.batches.CHUNK_ITEMS` `[kind, value]` pairs, kept apart per
    payload so that a concurrent submission of another payload under the same batchId cannot
    overwrite the list of the one that wins."""

    async def get(self, batch_id: str) -> BatchRecord | None: ...
    async def create(self, record: BatchRecord) -> BatchRecord: ...
    async def replace(self, record: BatchRecord) -> BatchRecord: ...
    async def write_chunk(self, batch_id: str, payload_hash: str, index: int, items: list[list[str]]) -> None: ...
    async def read_chunk(self, batch_id: str, payload_hash: str, index: int) -> list[list[str]]: ...


class BatchItems(Protocol):
    """The ledger records of a batch's items (`<batchId>.<n>`), read as item rows."""

    async def rows(self, batch_id: str, items: int, *, details: bool) -> list[ItemRow]: ...


class GroupDirectory(Protocol):
    """The Entra group reads of a group batch (through the same Graph budget as every call)."""

    async def group_exists(self, group_id: str) -> bool: ...
    async def transitive_members(self, group_id: str) -> list[GroupMember]: ...
    async def user_managed_devices(self, user_id: str) -> list[UserDevice]: ...


class DelayedQueue(Protocol):
    """A queue to send to now or after a delay, whose depth can be read (the batch pacing)."""

    async def send_message(self, content: str, delay_seconds: int = 0) -> Any: ...
    async def depth(self) -> int: ...
