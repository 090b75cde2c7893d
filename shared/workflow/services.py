"""What the workflow's handlers receive: the ports and the lifecycle policy, nothing else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from shared.core.approvals import GuardrailSlot, Hold
from shared.core.lifecycle import Policy
from shared.ports import EventPublisher, Guardrails, IntuneGateway, Ledger, WorkScheduler


class NoGuardrails:
    """Both guardrails off (`GUARDRAIL_MAX_*` = 0): nothing is counted and nothing is held."""

    async def take(self, requested_by: str, now: datetime, *, enforce: bool) -> GuardrailSlot | Hold:
        return GuardrailSlot()

    async def give_back(self, slot: GuardrailSlot) -> None:
        return None


@dataclass(frozen=True)
class Services:
    gateway: IntuneGateway
    ledger: Ledger
    publisher: EventPublisher
    scheduler: WorkScheduler
    clock: Callable[[], datetime]
    policy: Policy
    guardrails: Guardrails = field(default_factory=NoGuardrails)
