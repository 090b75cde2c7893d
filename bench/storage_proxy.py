"""A storage fault proxy: an HTTP proxy in front of Azurite's blob, queue and table services that
imitates Azure Storage failing (docs/contract.md#storage-outages).

    async with StorageFaultProxy(azurite.ports, faults=FaultMix(busy=0.02)) as proxy:
        settings["AzureWebJobsStorage"] = proxy.connection_string
        await proxy.outage(8.0)        # every connection cut, new ones refused, for 8 s
        await proxy.busy_burst(3.0)    # every call answered 503 ServerBusy for 3 s

Faults on a share of calls (`FaultMix`), each decided per request:

- `busy`: 503 with Azure Storage's `ServerBusy` error (XML for queues and blobs, JSON for tables),
  what a throttled storage account answers; nothing reaches Azurite.
- `drop`: the connection is cut before the request is forwarded (not applied).
- `drop_after`: the request is forwarded and applied, then the connection is cut before the answer
  (the client cannot tell whether it was applied: its retry may find a 409, 412 or 404).
- `latency`: the request waits `latency_s` first (then may still meet another fault).

An outage closes the listening sockets (new connections are refused) and aborts every open
connection, requests in flight included; afterwards the proxy listens on the same ports again.
While Azurite itself is down (a restart) each request's connection is cut, as in an outage.
Everything listens on loopback only.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from devstack.azurite import LOOPBACK, AzuritePorts, connection_string

SERVICES = ("blob", "queue", "table")
# Hop-by-hop headers and those aiohttp computes itself: never copied across the proxy.
_SKIP_REQUEST = frozenset({"host", "content-length", "transfer-encoding", "connection", "keep-alive", "expect"})
_SKIP_RESPONSE = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
_SERVER_BUSY_XML = (
    '<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code>'
    "<Message>The server is busy.</Message></Error>"
)
_SERVER_BUSY_JSON = (
    '{"odata.error":{"code":"ServerBusy","message":{"lang":"en-US","value":"The server is busy."}}}'
)

logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # cut connections are the point here


@dataclass(frozen=True)
class FaultMix:
    """Shares of calls that meet each fault (0 to 1)."""

    busy: float = 0.0
    drop: float = 0.0
    drop_after: float = 0.0
    latency: float = 0.0
    latency_s: float = 1.0


class StorageFaultProxy:
    """One proxy port per Azurite service; `connection_string` points a client at the proxy."""

    def __init__(self, upstream: AzuritePorts, *, faults: FaultMix | None = None, seed: int = 11) -> None:
        self.upstream = upstream
        self.faults = faults or FaultMix()
        self.counts: collections.Counter[str] = collections.Counter()
        self._random = random.Random(seed)
        self._servers: dict[str, web.Server] = {}
        self._listeners: dict[str, asyncio.AbstractServer] = {}
        self._ports: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._down: set[str] = set()
        self._busy_until = 0.0
        self._outage_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> StorageFaultProxy:
        connector = aiohttp.TCPConnector(limit=256, force_close=False)
        self._session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, timeout=aiohttp.ClientTimeout(total=120)
        )
        for service in SERVICES:
            self._servers[service] = web.Server(self._handler(service), handler_cancellation=True, access_log=None)
            await self._listen(service, 0)
        return self

    async def stop(self) -> None:
        for listener in self._listeners.values():
            listener.close()
        self._listeners.clear()
        self._cut_connections()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> StorageFaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def ports(self) -> AzuritePorts:
        return AzuritePorts(self._ports["blob"], self._ports["queue"], self._ports["table"])

    @property
    def connection_string(self) -> str:
        return connection_string(self.ports)

    # -- faults on demand -----------------------------------------------------------------------

    async def outage(self, seconds: float, services: tuple[str, ...] = SERVICES) -> None:
        """Storage (or some of its services) unreachable for `seconds`: listeners closed, every
        connection cut."""
        async with self._outage_lock:
            self.begin_outage(services)
            try:
                await asyncio.sleep(seconds)
            finally:
                await self.end_outage()

    def begin_outage(self, services: tuple[str, ...] = SERVICES) -> None:
        self.counts["outages"] += 1
        for service in services:
            self._down.add(service)
            listener = self._listeners.pop(service, None)
            if listener is not None:
                listener.close()
            self._cut_connections(service)

    async def end_outage(self) -> None:
        for service in sorted(self._down):
            await self._listen(service, self._ports[service])
        self._down.clear()

    async def busy_burst(self, seconds: float) -> None:
        """Every call answered 503 ServerBusy for `seconds` (a throttled account)."""
        loop = asyncio.get_running_loop()
        self.counts["busy_bursts"] += 1
        self._busy_until = loop.time() + seconds
        await asyncio.sleep(seconds)

    # -- internals ------------------------------------------------------------------------------

    async def _listen(self, service: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        for attempt in range(50):
            try:
                listener = await loop.create_server(self._servers[service], LOOPBACK, port, reuse_address=True)
                break
            except OSError:
                if port == 0 or attempt == 49:
                    raise
                await asyncio.sleep(0.1)
        self._listeners[service] = listener
        self._ports[service] = int(listener.sockets[0].getsockname()[1])

    def _cut_connections(self, *services: str) -> None:
        for name, server in self._servers.items():
            if services and name not in services:
                continue
            for handler in server.connections:
                transport = handler.transport
                if transport is not None:
                    transport.abort()

    def _pick(self) -> str | None:
        faults, roll = self.faults, self._random.random()
        for name, share in (("busy", faults.busy), ("drop", faults.drop), ("drop_after", faults.drop_after)):
            if roll < share:
                return name
            roll -= share
        return None

    def _handler(self, service: str) -> Any:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            return await self._handle(service, request)

        return handle

    async def _handle(self, service: str, request: web.BaseRequest) -> web.StreamResponse:
        if service in self._down:
            return await self._cut(request, "cut_in_outage")
        if self.faults.latency and self._random.random() < self.faults.latency:
            self.counts["latency"] += 1
            await asyncio.sleep(self.faults.latency_s)
        if asyncio.get_running_loop().time() < self._busy_until:
            return self._server_busy(service, "busy_in_burst")
        fault = self._pick()
        if fault == "busy":
            return self._server_busy(service, "busy")
        if fault == "drop":
            return await self._cut(request, "drop")
        body = await request.read()
        assert self._session is not None
        url = f"http://{LOOPBACK}:{getattr(self.upstream, service)}{request.rel_url}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP_REQUEST}
        try:
            async with self._session.request(
                request.method,
                url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                skip_auto_headers=("Content-Type", "User-Agent", "Accept-Encoding", "Accept"),
            ) as upstream:
                payload = await upstream.read()
                status, reason = upstream.status, upstream.reason
                answer = [(k, v) for k, v in upstream.headers.items() if k.lower() not in _SKIP_RESPONSE]
        except (aiohttp.ClientError, OSError, TimeoutError):
            return await self._cut(request, "upstream_down")  # Azurite stopped or restarting
        self.counts["forwarded"] += 1
        if fault == "drop_after":
            return await self._cut(request, "drop_after")
        response = web.Response(status=status, reason=reason, body=payload)
        for key, value in answer:
            response.headers.add(key, value)
        return response

    def _server_busy(self, service: str, count: str) -> web.Response:
        self.counts[count] += 1
        json_body = service == "table"
        return web.Response(
            status=503,
            reason="Server Busy",
            text=_SERVER_BUSY_JSON if json_body else _SERVER_BUSY_XML,
            content_type="application/json" if json_body else "application/xml",
            headers={"x-ms-error-code": "ServerBusy"},
        )

    async def _cut(self, request: web.BaseRequest, count: str) -> web.StreamResponse:
        """Cut the caller's connection without an answer."""
        self.counts[count] += 1
        transport = request.transport
        if transport is not None:
            transport.abort()
        await asyncio.sleep(3600)  # cancelled at once: the handler dies with its connection
        raise ConnectionResetError  # pragma: no cover


def fault_counts(proxy: StorageFaultProxy) -> dict[str, int]:
    """The injected faults, for a report (what reached Azurite is `forwarded`)."""
    return {name: count for name, count in sorted(proxy.counts.items()) if name != "forwarded"}
