"""What the workflow's handlers receive: the ports and the lifecycle policy, nothing else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from shared.core.lifecycle import Policy
from shared.ports import EventPublisher, IntuneGateway, Ledger, WorkScheduler


@dataclass(frozen=True)
class Services:
    gateway: IntuneGateway
    ledger: Ledger
    publisher: EventPublisher
    scheduler: WorkScheduler
    clock: Callable[[], datetime]
    policy: Policy
