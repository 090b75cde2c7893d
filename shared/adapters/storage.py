"""Azure Storage adapters: the account's clients from settings, queues as the ports the use cases
need (event publisher, work scheduler, request queue), and the mapping of storage failures.

Locally `AzureWebJobsStorage` is a connection string (Azurite); in Azure the app uses the same
identity-based `AzureWebJobsStorage__*` settings as the Functions host and its managed identity.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)

from shared.core.errors import StorageUnavailable
from shared.settings import Settings


@contextlib.contextmanager
def storage_errors(operation: str) -> Iterator[None]:
    """Any storage failure but a lost race becomes `StorageUnavailable` naming the operation (the
    SDK's message can carry the account's URL; it stays in the exception's cause, never in logs)."""
    try:
        yield
    except (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError):
        raise
    except (AzureError, OSError) as exc:
        raise StorageUnavailable(f"storage unavailable ({operation}: {type(exc).__name__})") from exc


class StorageClients:
    """Async queue and table clients for one storage account, created once per process."""

    def __init__(self, settings: Settings) -> None:
        from azure.data.tables.aio import TableServiceClient
        from azure.storage.queue.aio import QueueServiceClient

        self._credential: Any = None
        if settings.storage_connection:
            self.queues = QueueServiceClient.from_connection_string(settings.storage_connection)
            self.tables = TableServiceClient.from_connection_string(settings.storage_connection)
        else:
            from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

            client_id = settings.storage_client_id or settings.azure_client_id
            self._credential = ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()
            self.queues = QueueServiceClient(settings.storage_service_uris["queue"], credential=self._credential)
            self.tables = TableServiceClient(
                endpoint=settings.storage_service_uris["table"], credential=self._credential
            )

    def queue(self, name: str) -> Any:
        return self.queues.get_queue_client(name)

    def table(self, name: str) -> Any:
        return self.tables.get_table_client(name)

    async def ensure(self, queue_names: list[str], table_names: list[str]) -> None:
        """Create queues and tables that do not exist yet (infra creates them in Azure)."""
        for name in queue_names:
            try:
                await self.queue(name).create_queue()
            except ResourceExistsError:
                pass
        for name in table_names:
            await self.tables.create_table_if_not_exists(name)

    async def aclose(self) -> None:
        await self.queues.close()
        await self.tables.close()
        if self._credential is not None:
            await self._credential.close()


class StorageQueue:
    """One queue as the use cases see it: send a message, now or after a delay.

    It is the `MessageQueue` and `EventPublisher` ports (results queue: each event a plain UTF-8
    JSON message) of shared/ports.py."""

    def __init__(self, queue_client: Any, name: str) -> None:
        self._queue = queue_client
        self.name = name

    async def send_message(self, content: str, delay_seconds: int = 0) -> None:
        with storage_errors(f"send to {self.name}"):
            await self._queue.send_message(content, visibility_timeout=_visibility(delay_seconds) or None)

    async def publish(self, event_json: str) -> None:
        await self.send_message(event_json)


class QueueWorkScheduler:
    """Deferred work as queue messages that become visible after a delay (`WorkScheduler` port)."""

    def __init__(self, requests_queue: StorageQueue, followups_queue: StorageQueue) -> None:
        self._requests = requests_queue
        self._followups = followups_queue

    async def requeue_request(self, body: str, delay_seconds: int) -> None:
        await self._requests.send_message(body, delay_seconds)

    async def schedule_followup(self, body: str, delay_seconds: int) -> None:
        await self._followups.send_message(body, delay_seconds)


def _visibility(seconds: int) -> int:
    return max(0, min(int(seconds), 7 * 24 * 3600 - 1))
