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
    """Worth retrying later (429, 500, 502, 503, 504 on reads, timeouts, connection errors).

    For an action POST this also means the action was certainly not applied.
    """


class GraphBudgetExhausted(GraphTransientError):
    """The app's own Graph budget (shared/adapters/graph_budget.py) refused the call: nothing was sent, so it is
    no attempt at an action. Status 429 is what Intune would have answered."""


class GraphPermanentError(GraphError):
    """Graph refused the call for good (400, 401, 403, 404, ...); retrying will not help."""


class ActionOutcomeUnknown(GraphError):
    """An action POST whose result is unknown (504, timeout, dropped connection after sending):
    it may or may not have reached the device, so it must be reconciled before any retry."""


class StorageConflict(Exception):
    """Optimistic concurrency lost: the ledger record changed since it was read."""


class StorageUnavailable(Exception):
    """Storage (queues, the ledger table) did not answer or failed: the operation may be retried.
    The storage adapters raise it for every failure that is not a concurrency conflict; messages
    name the operation, never a URL or a key."""


class TooManyCandidates(GraphPermanentError):
    """The identifier filter matched (or Graph ignored it and returned) too many devices to verify."""
