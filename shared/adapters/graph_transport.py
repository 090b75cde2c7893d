"""The Graph client's httpx transports, under msgraph-sdk's middleware (auth, retry handler, ...):

- `BudgetTransport` takes the Graph budget's slot (shared/adapters/graph_budget.py) just before the
  request goes on the wire: a first call's token acquisition, connection set-up or lazy imports
  happen before the slot, so the time between the slot and Intune counting the call stays within
  the budget's margin. A 429 answer pauses the whole budget.
- `GraphDependencyTransport` makes every HTTP call to Graph a dependency span: one span is one
  request on the wire, with its real status code. App Insights lists it under `dependencies`
  with `resultCode` (the throttling alert counts `resultCode == "429"`), and 429 answers are also
  counted as a metric.

`environment_proxy` gives the inner transport the proxy the environment sets for Graph: httpx
takes proxy variables itself only for a transport of its own making.

Imported with httpx, when the Graph gateway is built (shared/adapters/graph.py).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from urllib.parse import urlsplit

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


def environment_proxy(url: str, proxies: Mapping[str, str] | None = None) -> str | None:
    """The proxy that `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` (any case) set for `url`, unless
    `NO_PROXY` exempts its host; None without one. Only an http(s) proxy is taken (httpx needs an
    extra package for SOCKS). `proxies` is Python's `getproxies()` (the environment) by default."""
    found = urllib.request.getproxies() if proxies is None else proxies
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not found or not host or _bypassed(host, found):
        return None
    proxy = found.get(parts.scheme) or found.get("all")
    return proxy if proxy and urlsplit(proxy).scheme in ("http", "https") else None


def _bypassed(host: str, proxies: Mapping[str, str]) -> bool:
    """`NO_PROXY` as curl reads it: `*`, or comma-separated hosts or domains (a leading dot
    optional, a port ignored) matching the host or a parent domain of it."""
    host = host.lower().rstrip(".")
    for entry in (proxies.get("no") or "").split(","):
        name = entry.strip().lower()
        if name == "*":
            return True
        name = name.lstrip(".").rsplit(":", 1)[0] if name.count(":") == 1 else name.lstrip(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False
