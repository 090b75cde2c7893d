"""The Graph client's httpx transport, wrapped so that every HTTP call to Graph is a dependency span.

It sits under msgraph-sdk's middleware (auth, retry handler, ...), so one span is one request on
the wire, with its real status code: App Insights lists it under `dependencies` with `resultCode`
(the throttling alert counts `resultCode == "429"`), and 429 answers are also counted as a metric.
Imported with httpx, when the Graph gateway is built (shared/intune.py).
"""

from __future__ import annotations

import httpx

from shared import telemetry


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
