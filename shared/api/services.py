"""What the HTTP API's use cases receive: ports and a few settings (built by shared/bootstrap.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from shared.core.lifecycle import Policy
from shared.ports import HealthProbe, IntuneGateway, Ledger, MessageQueue
from shared.workflow.services import Services


@dataclass(frozen=True)
class ApiServices:
    ledger: Ledger
    requests_queue: MessageQueue
    gateway: IntuneGateway
    clock: Callable[[], datetime]
    policy: Policy
    health: HealthProbe
    require_roles: bool = False
    allow_passcode_reveal: bool = False
    # The queue use cases' ports, for the approval route (shared/workflow/approval.py): a decision
    # publishes events and re-enqueues requests like the queue side does.
    workflow: Services | None = None
