"""The small error taxonomy the lifecycle (shared/core/lifecycle.py) maps to retry-or-publish, in one place."""

from __future__ import annotations


class GraphError(Exception):
    """A Graph call did not succeed. Messages carry Graph's code and request id, never tokens."""

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after


class GraphTransientError(GraphError):
    """Worth retrying later (on reads: 408, 429, 500, 502, 503, 504, timeouts, connection errors).

    For an action POST only a 429, a connection that could not be opened or the app's own budget:
    the action was certainly not applied.
    """


class GraphBudgetExhausted(GraphTransientError):
    """The app's own Graph budget (shared/adapters/graph_budget.py) refused the call: nothing was sent, so it is
    no attempt at an action. Status 429 is what Intune would have answered."""


class GraphPermanentError(GraphError):
    """Graph refused the call for good (400, 401, 403, 404, ...); retrying will not help."""


class ActionOutcomeUnknown(GraphError):
    """An action POST whose result is unknown (any answer but 2xx, 400, 401, 403, 404 and 429; a
    timeout or a connection dropped after sending): it may or may not have reached the device, so
    it must be reconciled before any retry."""


# docs/contract.md#retries-and-unknown-outcomes, docs/decisions/0011-unknown-action-outcomes.md:
# the only answers to an action POST that prove Intune did not take the action.
ACTION_REFUSED_STATUSES = frozenset({400, 401, 403, 404})
ACTION_NOT_TAKEN_STATUSES = frozenset({429})


def action_answer_kind(status: int) -> str:
    """What an HTTP status answering an action POST tells: "accepted" (2xx), "refused" (400, 401,
    403, 404: for good), "not_taken" (429: throttled, retry later) or "unknown" (everything else,
    500, 502, 503 even with Retry-After, 504, 408, 409, ...: Intune may have queued the action)."""
    if 200 <= status < 300:
        return "accepted"
    if status in ACTION_REFUSED_STATUSES:
        return "refused"
    if status in ACTION_NOT_TAKEN_STATUSES:
        return "not_taken"
    return "unknown"


class StorageConflict(Exception):
    """Optimistic concurrency lost: the ledger record changed since it was read."""


class StorageUnavailable(Exception):
    """Storage (queues, the ledger table) did not answer or failed: the operation may be retried.
    The storage adapters raise it for every failure that is not a concurrency conflict; messages
    name the operation, never a URL or a key."""


class TooManyCandidates(GraphPermanentError):
    """The identifier filter matched (or Graph ignored it and returned) too many devices to verify."""
