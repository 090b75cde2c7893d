"""What the HTTP API's use cases receive: ports and a few settings (built by shared/bootstrap.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from shared.core.lifecycle import Policy
from shared.ports import HealthProbe, IntuneGateway, Ledger, MessageQueue


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
