"""Fixtures for the local stack: one Azurite per session, unique queues per test, in-process hosts.

    async def test_x(start_host, queues):
        name = queues.new("requests")
        async with start_host("tests.apps.http_app:app", {"IN_QUEUE": name}) as host:
            await queues.send(name, "hello")
            await host.drain()
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue.aio import QueueServiceClient

from devstack.azurite import Azurite
from devstack.host import DevHost

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TEST_FUNCTION_KEY = "test-function-key"


def fast_host_json(**queue_overrides: Any) -> dict[str, Any]:
    """The project's host.json with test-speed queue options: failed messages are visible again
    at once (visibilityTimeout 0) and idle polling backs off to 200 ms at most."""
    path = PROJECT_ROOT / "host.json"
    document = json.loads(path.read_text()) if path.exists() else {}
    document = copy.deepcopy(document)
    queues = document.setdefault("extensions", {}).setdefault("queues", {})
    queues.update({"visibilityTimeout": "00:00:00", "maxPollingInterval": "00:00:00.200"})
    queues.update(queue_overrides)
    return document


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """In-memory Azurite for the whole session (``.connection_string``, ``.ports``)."""
    with Azurite() as instance:
        yield instance


class Queues:
    """Unique queue names per test and raw (no encoding policy) send/read helpers."""

    def __init__(self, service: QueueServiceClient, prefix: str) -> None:
        self.service = service
        self._prefix = prefix
        self.created: list[str] = []

    def new(self, purpose: str = "q") -> str:
        """A fresh queue name (lowercase, <= 63 chars); not created: the host creates triggers."""
        slug = "".join(c if c.isalnum() else "-" for c in purpose.lower()).strip("-")[:20] or "q"
        name = f"{self._prefix}-{slug}-{uuid.uuid4().hex[:10]}"
        self.created.append(name)
        return name

    async def create(self, name: str) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self.service.create_queue(name)

    async def send(self, name: str, content: str, *, base64_encode: bool = False) -> None:
        await self.create(name)
        text = base64.b64encode(content.encode()).decode() if base64_encode else content
        await self.service.get_queue_client(name).send_message(text)

    async def read_all(self, name: str) -> list[str]:
        """Receive and delete every visible message; raw contents in arrival order."""
        client = self.service.get_queue_client(name)
        contents: list[str] = []
        try:
            while True:
                batch = [m async for m in client.receive_messages(messages_per_page=32, max_messages=32)]
                if not batch:
                    return contents
                for message in batch:
                    contents.append(message.content)
                    await client.delete_message(message)
        except ResourceNotFoundError:
            return contents

    async def count(self, name: str) -> int:
        """Approximate message count (invisible messages included); 0 for a missing queue."""
        try:
            properties = await self.service.get_queue_client(name).get_queue_properties()
        except ResourceNotFoundError:
            return 0
        return int(properties.approximate_message_count or 0)

    async def delete_created(self) -> None:
        for name in self.created:
            for queue in (name, f"{name}-poison"):
                with contextlib.suppress(ResourceNotFoundError):
                    await self.service.delete_queue(queue)


@pytest.fixture
async def queues(azurite: Azurite, request: pytest.FixtureRequest) -> AsyncIterator[Queues]:
    """Per-test queue helper; the queues it named are deleted afterwards."""
    prefix = "t" + uuid.uuid4().hex[:6]
    async with QueueServiceClient.from_connection_string(azurite.connection_string) as service:
        helper = Queues(service, prefix)
        yield helper
        await helper.delete_created()


HostFactory = Callable[..., contextlib.AbstractAsyncContextManager[DevHost]]


@pytest.fixture
def start_host(azurite: Azurite) -> HostFactory:
    """``async with start_host(app, settings, host_json=None, **DevHost kwargs) as host``.

    ``app`` is ``"module:attr"`` or a FunctionApp. Settings default to Azurite's
    ``AzureWebJobsStorage`` and ``DEVSTACK_FUNCTION_KEY=test-function-key``; ``host_json``
    defaults to :func:`fast_host_json`. The host is stopped (5 s grace) on exit.
    """

    @contextlib.asynccontextmanager
    async def factory(
        app: Any,
        settings: Mapping[str, str] | None = None,
        host_json: Mapping[str, Any] | str | Path | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[DevHost]:
        merged = {
            "AzureWebJobsStorage": azurite.connection_string,
            "DEVSTACK_FUNCTION_KEY": TEST_FUNCTION_KEY,
            **(settings or {}),
        }
        kwargs.setdefault("shutdown_timeout", 5.0)
        host = DevHost(app, merged, host_json if host_json is not None else fast_host_json(), **kwargs)
        await host.start()
        try:
            yield host
        finally:
            await host.stop()

    return factory
