"""The product end to end: function_app.py in the devstack host, on Azurite and the Intune simulator.

    async def test_x(product_stack):
        async with product_stack(CONFIRM_TIMEOUT_SECONDS="5") as stack:
            await stack.send(request)
            events = await stack.wait_final("REQ-1")

Every stack gets its own queues and ledger table, so tests never see each other's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue.aio import QueueServiceClient

from devstack.azurite import Azurite
from devstack.host import DevHost
from devstack.simulator.server import RunningSimulator

FINAL_STATUSES = {"completed", "failed", "unsupported", "rejected", "dry_run", "timed_out"}


@dataclass
class ProductStack:
    host: DevHost
    settings: dict[str, str]
    sim: RunningSimulator
    service: QueueServiceClient
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def requests_queue(self) -> str:
        return self.settings["RESET_REQUESTS_QUEUE"]

    async def send(self, request: dict[str, Any] | str | bytes, *, queue: str | None = None) -> None:
        if isinstance(request, dict):
            text = json.dumps(request)
        elif isinstance(request, bytes):
            text = request.decode("utf-8", "surrogateescape")
        else:
            text = request
        await self.service.get_queue_client(queue or self.requests_queue).send_message(text)

    async def collect(self) -> list[dict[str, Any]]:
        """Move every visible outcome event from the results queue into `events`."""
        client = self.service.get_queue_client(self.settings["RESET_RESULTS_QUEUE"])
        while True:
            batch = [m async for m in client.receive_messages(messages_per_page=32, max_messages=32)]
            if not batch:
                return self.events
            for message in batch:
                self.events.append(json.loads(message.content))
                await client.delete_message(message)

    def of(self, request_id: str | None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["data"]["requestId"] == request_id]

    def finals(self, request_id: str | None) -> list[dict[str, Any]]:
        return [e for e in self.of(request_id) if e["data"]["status"] in FINAL_STATUSES]

    async def wait_final(self, *request_ids: str | None, timeout: float = 30.0) -> dict[str | None, dict[str, Any]]:
        """Wait until every request has a final event; returns the first final event of each."""
        deadline = time.monotonic() + timeout
        while True:
            await self.collect()
            done = {rid: self.finals(rid)[0] for rid in request_ids if self.finals(rid)}
            if len(done) == len(request_ids):
                return done
            if time.monotonic() > deadline:
                missing = [rid for rid in request_ids if rid not in done]
                raise TimeoutError(f"no final event for {missing}; events: {[e['data'] for e in self.events]}")
            await asyncio.sleep(0.1)

    async def settle(self, seconds: float = 1.0) -> list[dict[str, Any]]:
        """Let in-flight work finish, then collect: for asserting that nothing more happens."""
        await asyncio.sleep(seconds)
        return await self.collect()


ProductFactory = Callable[..., contextlib.AbstractAsyncContextManager[ProductStack]]


@pytest.fixture
def product_stack(
    azurite: Azurite, sim: RunningSimulator, start_host: Any, monkeypatch: pytest.MonkeyPatch
) -> ProductFactory:
    @contextlib.asynccontextmanager
    async def factory(host_options: dict[str, Any] | None = None, **overrides: str) -> AsyncIterator[ProductStack]:
        suffix = uuid.uuid4().hex[:10]
        settings = {
            "AzureWebJobsStorage": azurite.connection_string,
            "RESET_REQUESTS_QUEUE": f"req-{suffix}",
            "RESET_RESULTS_QUEUE": f"res-{suffix}",
            "RESET_FOLLOWUPS_QUEUE": f"fup-{suffix}",
            "RESET_BATCHES_QUEUE": f"bat-{suffix}",
            "RESET_LEDGER_TABLE": f"Ledger{suffix}",
            "GRAPH_BASE_URL": sim.url,
            "GRAPH_TOKEN": sim.token,
            "CONFIRM_FIRST_CHECK_SECONDS": "1",
            "CONFIRM_TIMEOUT_SECONDS": "60",
            "RESET_COOLDOWN_SECONDS": "900",
            **overrides,
        }
        # The Functions host exports app settings to the worker's environment; so does this test.
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        try:
            async with (
                QueueServiceClient.from_connection_string(azurite.connection_string) as service,
                start_host("function_app:app", settings, **(host_options or {})) as host,
            ):
                with contextlib.suppress(ResourceExistsError):
                    await service.create_queue(settings["RESET_RESULTS_QUEUE"])
                yield ProductStack(host=host, settings=settings, sim=sim, service=service)
        finally:
            # Once the host has stopped, close the app's own clients, as the worker would on shutdown.
            app_module = sys.modules.get("function_app")
            if app_module is not None:
                await app_module.runtime.aclose()

    return factory
