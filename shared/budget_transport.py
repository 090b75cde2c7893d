"""The Graph client's httpx transport behind the Graph budget (shared/ratelimit.py).

The slot is taken here, under msgraph-sdk's middleware, just before the request goes on the wire:
a first call's token acquisition, connection set-up or lazy imports happen before the slot, so
the time between the slot and Intune counting the call stays within the budget's margin. A 429
answer pauses the whole budget. Imported with httpx, when the Graph gateway is built.
"""

from __future__ import annotations

import httpx

from shared.intune import parse_retry_after
from shared.ratelimit import GraphBudget

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})  # Intune's action budget counts these


class BudgetTransport(httpx.AsyncBaseTransport):
    def __init__(self, budget: GraphBudget, inner: httpx.AsyncBaseTransport) -> None:
        self._budget = budget
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._budget.acquire(action=request.method.upper() in WRITE_METHODS)
        response = await self._inner.handle_async_request(request)
        if response.status_code == 429:
            self._budget.throttled(parse_retry_after(response.headers.get("Retry-After")))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
