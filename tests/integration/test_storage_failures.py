"""The storage adapters when Azure Storage fails (docs/contract.md#storage-outages): every failure
is `StorageUnavailable` within seconds (bounded retries of the SDKs' own policies, configured in
shared/adapters/storage.py), a short 503 ServerBusy burst is ridden out by those retries, and a
managed identity that cannot get a token fails the same way. Real Azurite behind the storage fault
proxy (bench/storage_proxy.py); the real azure-identity credential against an identity endpoint
that does not answer."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from bench.storage_proxy import StorageFaultProxy
from devstack.azurite import Azurite
from shared.adapters.health import RuntimeHealthProbe
from shared.adapters.ledger import TableLedger
from shared.adapters.storage import StorageClients, StorageQueue
from shared.core.errors import StorageUnavailable
from shared.settings import load_settings

QUEUE = "outage-requests"
FOLLOWUPS = "outage-followups"


def settings_for(connection: str) -> dict[str, str]:
    return {"AzureWebJobsStorage": connection, "RESET_REQUESTS_QUEUE": QUEUE, "RESET_FOLLOWUPS_QUEUE": FOLLOWUPS}


@pytest.fixture
async def proxied(azurite: Azurite) -> AsyncIterator[tuple[StorageFaultProxy, StorageClients, str]]:
    table = "Outage" + uuid.uuid4().hex[:8]
    async with StorageFaultProxy(azurite.ports) as proxy:
        clients = StorageClients(load_settings(settings_for(proxy.connection_string)))
        await clients.ensure([QUEUE], [table])
        try:
            yield proxy, clients, table
        finally:
            await clients.aclose()


async def test_an_outage_is_storage_unavailable_within_seconds(
    proxied: tuple[StorageFaultProxy, StorageClients, str],
) -> None:
    proxy, clients, table = proxied
    ledger, queue = TableLedger(clients.table(table)), StorageQueue(clients.queue(QUEUE), QUEUE)
    proxy.begin_outage()
    for operation in (lambda: ledger.get("R-1"), lambda: queue.send_message("{}")):
        started = time.monotonic()
        with pytest.raises(StorageUnavailable) as raised:
            await operation()
        assert time.monotonic() - started < 10  # retried with backoff, then given up
        assert "127.0.0.1" not in str(raised.value) and "AccountKey" not in str(raised.value)
    probe = RuntimeHealthProbe(clients.table(table), clients.queue(QUEUE), gateway=None)  # type: ignore[arg-type]
    assert await probe.storage() == "unreachable"
    await proxy.end_outage()
    assert await ledger.get("R-1") is None  # back by itself: the same clients work again
    await queue.send_message("{}")
    assert await probe.storage() == "ok"


async def test_a_short_server_busy_burst_is_ridden_out_by_the_retries(
    proxied: tuple[StorageFaultProxy, StorageClients, str],
) -> None:
    proxy, clients, table = proxied
    ledger, queue = TableLedger(clients.table(table)), StorageQueue(clients.queue(QUEUE), QUEUE)
    burst = asyncio.create_task(proxy.busy_burst(0.8))
    await asyncio.sleep(0.05)
    assert await ledger.get("R-2") is None
    await queue.send_message("{}")
    await burst
    assert proxy.counts["busy_in_burst"] >= 2  # both met the 503 and retried


async def test_a_managed_identity_without_a_token_is_storage_unavailable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The App Service / Functions managed identity endpoint, here one that refuses connections.
    monkeypatch.setenv("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "header")
    settings = load_settings(
        {
            "AzureWebJobsStorage__queueServiceUri": "https://127.0.0.1:9/devstoreaccount1",
            "AzureWebJobsStorage__tableServiceUri": "https://127.0.0.1:9/devstoreaccount1",
            "AzureWebJobsStorage__credential": "managedidentity",
            "AzureWebJobsStorage__clientId": str(uuid.uuid4()),
            "RESET_REQUESTS_QUEUE": QUEUE,
            "RESET_FOLLOWUPS_QUEUE": FOLLOWUPS,
        }
    )
    clients = StorageClients(settings)
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable):
            await TableLedger(clients.table("Ledger")).get("R-3")
        # azure-identity retries the identity endpoint itself (the queue client, which retries
        # around the token request, takes longer: within the HTTP routes' deadline all the same).
        assert time.monotonic() - started < 15
        # It was the token that failed: the bearer policy asks for it before any storage call.
        identity = [r.getMessage() for r in caplog.records if r.name.startswith("azure.identity")]
        assert any("ManagedIdentityCredential" in message for message in identity)
    finally:
        await clients.aclose()
