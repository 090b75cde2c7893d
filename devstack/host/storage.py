"""Queue clients of the host, per connection string and queue."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from shared.adapters.storage import USE_ENV_SETTINGS

# The retries of the Functions host's queue clients: Azure.Core's default RetryOptions (3 retries,
# exponential from 0.8 s: 0.8 + 1.6 + 3.2 s), approximated with azure-storage-queue's
# ExponentialRetry, whose n-th retry waits initial_backoff + increment_base ** n (1.5, 2.25, 3.4 s),
# and network timeouts short enough that a storage outage shows within seconds.
HOST_STORAGE_RETRY: dict[str, Any] = {
    "retry_total": 3,
    "initial_backoff": 0,
    "increment_base": 1.5,
    "random_jitter_range": 0.3,
    "connection_timeout": 5,
    "read_timeout": 30,
    # Proxy variables and netrc read per request only when the environment has any, as the app's
    # own clients do (shared/adapters/storage.py): the real host is .NET and pays nothing for them.
    "use_env_settings": USE_ENV_SETTINGS,
}


class QueueStore:
    """Async queue clients per (connection string, queue), created queues remembered."""

    def __init__(self) -> None:
        self._services: dict[str, QueueServiceClient] = {}
        self._ensured: set[tuple[str, str]] = set()

    def client(self, connection: str, queue: str) -> QueueClient:
        service = self._services.get(connection)
        if service is None:
            service = QueueServiceClient.from_connection_string(connection, **HOST_STORAGE_RETRY)
            self._services[connection] = service
        return service.get_queue_client(queue)

    async def ensure(self, connection: str, queue: str) -> None:
        if (connection, queue) in self._ensured:
            return
        with contextlib.suppress(ResourceExistsError):
            await self.client(connection, queue).create_queue()
        self._ensured.add((connection, queue))

    async def send(self, connection: str, queue: str, texts: Iterable[str]) -> None:
        client = self.client(connection, queue)
        for text in texts:
            try:
                await client.send_message(text)
            except ResourceNotFoundError:  # output and poison queues are created on first write
                await self.ensure(connection, queue)
                await client.send_message(text)

    async def close(self) -> None:
        for service in self._services.values():
            await service.close()
        self._services.clear()
