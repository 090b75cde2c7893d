"""The use cases of the queues (request, follow-up, their poison queues) and the one submit path.

Handlers receive their ports in a `Services` object and hold no other state; every decision they
carry out is made by the lifecycle core (shared/core/lifecycle.py).
"""

from shared.workflow.followup import handle_followup, handle_followup_poison
from shared.workflow.request import handle_request, handle_request_poison
from shared.workflow.services import Services

__all__ = ["Services", "handle_followup", "handle_followup_poison", "handle_request", "handle_request_poison"]
