"""Azure Storage adapters: the account's clients from settings, queues as the ports the use cases
need (event publisher, work scheduler, request queue), and the mapping of storage failures.

Locally `AzureWebJobsStorage` is a connection string (Azurite); in Azure the app uses the same
identity-based `AzureWebJobsStorage__*` settings as the Functions host and its managed identity.

Storage calls retry with the SDKs' own policies, configured here (RETRY): a few quick retries with
backoff and short network timeouts, so a storage outage shows within seconds as
`StorageUnavailable` instead of minutes of SDK-default retries (docs/contract.md#storage-outages,
docs/decisions/0023-storage-retry-budget.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
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


@dataclass(frozen=True)
class StorageRetry:
    """How long one storage call may take before it fails as `StorageUnavailable`.

    Tables use azure-core's RetryPolicy (`retry_total`, `retry_backoff_factor`, `retry_backoff_max`);
    queues use azure-storage-queue's ExponentialRetry, the same policy with storage's own backoff
    formula (`initial_backoff` + `increment_base` ** retry, +- `random_jitter_range`). Both retry
    408, 500, 502, 503 (ServerBusy), 504 and connection errors; a POST whose connection dropped
    after sending is retried by the queue policy only (a duplicate queue message is harmless, a
    duplicate ledger insert would be a 409). Worst case of one call against a storage that
    answers nothing: (retries + 1) x (connect + read timeout) + backoffs; against one that refuses
    or answers 503: the backoffs only, about 1.5 s for tables and 5 s for queues
    (docs/decisions/0023-storage-retry-budget.md).
    """

    retries: int = 2
    backoff_factor: float = 0.5  # tables: 0.5 s, 1 s between attempts
    backoff_max: int = 4
    initial_backoff: float = 0.5  # queues: retry n waits 0.5 + 1.5 ** n: 2 s, 2.75 s (jitter +- 0.5 s)
    increment_base: float = 1.5
    jitter: float = 0.5
    connection_timeout: float = 3.0
    read_timeout: float = 10.0

    def table_options(self) -> dict[str, Any]:
        return {
            "use_env_settings": USE_ENV_SETTINGS,
            "retry_total": self.retries,
            "retry_backoff_factor": self.backoff_factor,
            "retry_backoff_max": self.backoff_max,
            "connection_timeout": self.connection_timeout,
            "read_timeout": self.read_timeout,
        }

    def queue_options(self) -> dict[str, Any]:
        # The async queue clients build their own ExponentialRetry (the async one) from these.
        return {
            "use_env_settings": USE_ENV_SETTINGS,
            "retry_total": self.retries,
            "initial_backoff": self.initial_backoff,
            "increment_base": self.increment_base,
            "random_jitter_range": self.jitter,
            "connection_timeout": self.connection_timeout,
            "read_timeout": self.read_timeout,
        }


RETRY = StorageRetry()


def environment_configures_http(environ: Mapping[str, str], home: Path | None) -> bool:
    """Whether this process's environment has anything for an HTTP client to take from it: a proxy
    variable (`HTTPS_PROXY`, `NO_PROXY`, any `*_proxy` that Python's `getproxies` reads, any case)
    or a netrc file (`NETRC`, `~/.netrc`).

    The storage clients' transport (azure-core's aiohttp transport, `use_env_settings`) would
    otherwise look for both again on every request, each look a hop to a worker thread: 8 % of the
    host's CPU in a batch (docs/decisions/0028-less-host-cpu-per-request.md). Read once at start-up;
    when the environment has any of it, the SDKs' default (read per request) stays."""
    if any(key.lower().endswith("_proxy") and value for key, value in environ.items()):
        return True
    if environ.get("NETRC"):
        return True
    return home is not None and (home / ".netrc").exists()


def _home() -> Path | None:
    try:
        return Path.home()
    except RuntimeError:
        return None


USE_ENV_SETTINGS = environment_configures_http(os.environ, _home())


class StorageClients:
    """Async queue and table clients for one storage account, created once per process.

    `credential` replaces the managed identity of identity-based settings (tests)."""

    def __init__(self, settings: Settings, *, retry: StorageRetry = RETRY, credential: Any = None) -> None:
        from azure.data.tables.aio import TableServiceClient
        from azure.storage.blob.aio import BlobServiceClient
        from azure.storage.queue.aio import QueueServiceClient

        self._credential: Any = None
        self.blobs: Any = None  # the batches' records and item lists (shared/adapters/batch_store.py)
        queue_options, table_options = retry.queue_options(), retry.table_options()
        if settings.storage_connection:
            self.queues = QueueServiceClient.from_connection_string(settings.storage_connection, **queue_options)
            self.tables = TableServiceClient.from_connection_string(settings.storage_connection, **table_options)
            self.blobs = BlobServiceClient.from_connection_string(settings.storage_connection, **queue_options)
        else:
            self._credential = credential or _managed_identity(settings)
            self.queues = QueueServiceClient(
                settings.storage_service_uris["queue"], credential=self._credential, **queue_options
            )
            self.tables = TableServiceClient(
                endpoint=settings.storage_service_uris["table"], credential=self._credential, **table_options
            )
            if "blob" in settings.storage_service_uris:
                self.blobs = BlobServiceClient(
                    settings.storage_service_uris["blob"], credential=self._credential, **queue_options
                )

    def queue(self, name: str) -> Any:
        return self.queues.get_queue_client(name)

    def table(self, name: str) -> Any:
        return self.tables.get_table_client(name)

    def container(self, name: str) -> Any:
        if self.blobs is None:
            raise StorageUnavailable("no blob endpoint: set AzureWebJobsStorage__blobServiceUri")
        return self.blobs.get_container_client(name)

    async def ensure_containers(self, names: list[str]) -> None:
        """Create blob containers that do not exist yet (infra creates them in Azure)."""
        with storage_errors("create blob containers"):
            for name in names:
                try:
                    await self.container(name).create_container()
                except ResourceExistsError:
                    pass

    async def ensure(self, queue_names: list[str], table_names: list[str]) -> None:
        """Create queues and tables that do not exist yet (infra creates them in Azure)."""
        with storage_errors("create queues and tables"):
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
        if self.blobs is not None:
            await self.blobs.close()
        if self._credential is not None:
            await self._credential.close()


def _managed_identity(settings: Settings) -> Any:
    """The identity of `AzureWebJobsStorage__clientId` (else AZURE_CLIENT_ID, else the default
    chain). A token it cannot get fails the storage call like an outage: `StorageUnavailable`
    (azure-identity raises `ClientAuthenticationError`, an `AzureError`)."""
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

    client_id = settings.storage_client_id or settings.azure_client_id
    return ManagedIdentityCredential(client_id=client_id) if client_id else DefaultAzureCredential()


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

    async def depth(self) -> int:
        """Approximate number of messages, invisible ones (delayed, being processed) included."""
        with storage_errors(f"properties of {self.name}"):
            properties = await self._queue.get_queue_properties()
        return int(properties.approximate_message_count or 0)


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
