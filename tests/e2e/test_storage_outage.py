"""docs/contract.md#storage-outages end to end: function_app.py in the devstack host, its storage
path through the storage fault proxy (bench/storage_proxy.py) in front of Azurite, Graph through
msgraph-sdk to the Intune simulator. An outage closes the proxy's ports and cuts every connection:
what the app sees when Azure Storage is unreachable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables.aio import TableServiceClient

from bench.storage_proxy import StorageFaultProxy
from devstack.azurite import Azurite
from tests.plugins.product import ProductStack
from tests.plugins.stack import TEST_FUNCTION_KEY

ADELE = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"  # Android work profile: resetPasscode
KEY = {"x-functions-key": TEST_FUNCTION_KEY}
# A message the host could not release during an outage comes back after this (the real host: 10 min).
LEASE_SECONDS = 3.0


def request(request_id: str) -> dict[str, Any]:
    return {"requestId": request_id, "device": {"intuneDeviceId": ADELE}, "requestedBy": "servicedesk@contoso.com"}


@pytest.fixture
async def proxy(azurite: Azurite) -> AsyncIterator[StorageFaultProxy]:
    async with StorageFaultProxy(azurite.ports) as running:
        yield running


async def ledger_state(azurite: Azurite, stack: ProductStack, request_id: str) -> str | None:
    async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        table = service.get_table_client(stack.settings["RESET_LEDGER_TABLE"])
        try:
            return str((await table.get_entity(request_id, "request"))["State"])
        except ResourceNotFoundError:
            return None


async def test_submit_during_an_outage_is_503_with_retry_after_and_its_repeat_heals_it(
    product_stack: Any, proxy: StorageFaultProxy, azurite: Azurite
) -> None:
    settings = {"AzureWebJobsStorage": proxy.connection_string}
    async with (
        product_stack(host_options={"lease_seconds": LEASE_SECONDS}, **settings) as stack,
        aiohttp.ClientSession() as http,
    ):
        base = stack.host.url
        async with http.get(f"{base}/api/health") as answer:
            assert answer.status == 200  # the app's clients exist before storage goes away

        # The queue service alone goes away: the ledger record is written, its message is not.
        proxy.begin_outage(("queue",))
        started = time.monotonic()
        async with http.post(f"{base}/api/resets", json=request("OUT-1"), headers=KEY) as answer:
            elapsed = time.monotonic() - started
            body = await answer.json(content_type=None)
            assert answer.status == 503, body
            assert answer.headers["Content-Type"].startswith("application/problem+json")
            assert int(answer.headers["Retry-After"]) > 0
            assert body["type"].endswith(":dependency-unavailable") and body["requestId"] == "OUT-1"
        assert elapsed < 30
        async with http.get(f"{base}/api/health") as answer:
            assert answer.status == 503
            assert (await answer.json())["checks"]["storage"] == "unreachable"
        # Half-done: a queued record without its message, waiting for the caller's repeat.
        assert await ledger_state(azurite, stack, "OUT-1") == "queued"
        assert await stack.settle(0.5) == []

        # Everything goes away; a queue message sent meanwhile (by a client whose path works) waits.
        proxy.begin_outage()
        await stack.send(request("OUT-2") | {"device": {"intuneDeviceId": "359f491b-f7ff-414f-b598-c0e02c1915cd"}})
        started = time.monotonic()
        async with http.post(f"{base}/api/resets", json=request("OUT-3"), headers=KEY) as answer:
            assert answer.status == 503 and "Retry-After" in answer.headers
        assert time.monotonic() - started < 30
        await asyncio.sleep(1.0)
        await proxy.end_outage()

        # Storage is back: the caller's repeat (honouring Retry-After, as Power Automate does while
        # connections to the returning service are re-established) re-sends the message; everything
        # ends once, by itself.
        for _ in range(5):
            async with http.post(f"{base}/api/resets", json=request("OUT-1"), headers=KEY) as answer:
                if answer.status != 503:
                    break
                await asyncio.sleep(min(int(answer.headers["Retry-After"]), 2))
        assert answer.status == 202, await answer.text()
        finals = await stack.wait_final("OUT-1", "OUT-2", timeout=60)
        assert finals["OUT-1"]["data"]["status"] == "completed"
        assert finals["OUT-2"]["data"]["status"] == "completed"
        assert len(await stack.sim.control.calls(method="POST", device_id=ADELE)) == 1
        async with http.get(f"{base}/api/health") as answer:
            assert answer.status == 200
        await stack.settle(1.0)
        finals_seen = {rid: [(e["id"], e["data"]["status"]) for e in stack.finals(rid)] for rid in ("OUT-1", "OUT-2")}
        assert [len({i for i, _ in finals_seen[rid]}) for rid in ("OUT-1", "OUT-2")] == [1, 1], finals_seen


async def test_an_action_called_just_before_storage_died_is_reconciled_not_repeated(
    product_stack: Any, proxy: StorageFaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"AzureWebJobsStorage": proxy.connection_string}
    async with product_stack(host_options={"lease_seconds": LEASE_SECONDS}, **settings) as stack:
        control = stack.sim.control
        # Intune takes 1.5 s to answer the action POST; storage dies while it does.
        await control.add_fault("latency", method="POST", device_id=ADELE, latency_ms=1500)
        await stack.send(request("GONE-1"))
        deadline = time.monotonic() + 30
        while not await control.calls(method="POST", device_id=ADELE):
            assert time.monotonic() < deadline, "the action was never called"
            await asyncio.sleep(0.02)
        # Longer than the ledger client's retries (about 1.5 s against a refused connection): the
        # write after the call fails; the message comes back once the host can release it.
        await proxy.outage(5.0)

        finals = await stack.wait_final("GONE-1", timeout=60)
        assert finals["GONE-1"]["data"]["status"] == "completed"
        assert finals["GONE-1"]["data"]["attempt"] == 1
        assert await control.applied_count(ADELE) == 1
        assert len(await control.calls(method="POST", device_id=ADELE)) == 1
        submitted = [e for e in stack.of("GONE-1") if e["data"]["status"] == "submitted"]
        assert len({e["id"] for e in submitted}) == 1
        # The first delivery really met the outage: it failed (and was retried), it did not hang.
        failed = [r for r in caplog.records if r.getMessage() == "function failed"]
        assert any("StorageUnavailable" in (r.exc_text or "") for r in failed)
