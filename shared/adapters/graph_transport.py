"""The Graph client's httpx transports, under msgraph-sdk's middleware (auth, retry handler, ...):

- `BudgetTransport` takes the Graph budget's slot (shared/adapters/graph_budget.py) just before the
  request goes on the wire: a first call's token acquisition, connection set-up or lazy imports
  happen before the slot, so the time between the slot and Intune counting the call stays within
  the budget's margin. A 429 answer pauses the whole budget.
- `GraphDependencyTransport` makes every HTTP call to Graph a dependency span: one span is one
  request on the wire, with its real status code. App Insights lists it under `dependencies`
  with `resultCode` (the throttling alert counts `resultCode == "429"`), and 429 answers are also
  counted as a metric.

Imported with httpx, when the Graph gateway is built (shared/adapters/graph.py).
"""

from __future__ import annotations

import httpx

from shared.adapters.graph_budget import CallBudget
from shared.adapters.retry_after import parse_retry_after
from shared.observability import telemetry

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})  # Intune's action budget counts these


class BudgetTransport(httpx.AsyncBaseTransport):
    def __init__(self, budget: CallBudget, inner: httpx.AsyncBaseTransport) -> None:
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


class GraphDependencyTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with telemetry.dependency_span(request.method, str(request.url)) as span:
            try:
                response = await self._inner.handle_async_request(request)
            except Exception as exc:
                span.set("error.type", type(exc).__qualname__)
                raise
            span.http_status(response.status_code)
        if response.status_code == 429:
            telemetry.count_graph_throttled(request.method)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
