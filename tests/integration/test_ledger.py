"""The request ledger on Azure Tables (Azurite): optimistic concurrency and device cooldown."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest
import pytest_asyncio
from azure.data.tables.aio import TableServiceClient

from devstack.azurite import Azurite
from shared.adapters.ledger import TableLedger
from shared.core.clock import utcnow
from shared.core.errors import StorageConflict
from shared.core.lifecycle import LedgerRecord, State


@pytest_asyncio.fixture(loop_scope="session")
async def ledger(azurite: Azurite) -> AsyncIterator[TableLedger]:
    name = "Ledger" + uuid.uuid4().hex[:10]
    async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        await service.create_table(name)
        yield TableLedger(service.get_table_client(name))
        await service.delete_table(name)


def record(request_id: str) -> LedgerRecord:
    now = utcnow()
    return LedgerRecord(request_id=request_id, payload_hash="h1", request_json="{}", state=State.PROCESSING,
                        created_at=now, updated_at=now, requested_by="desk@contoso.com")


async def test_record_round_trips_with_history(ledger: TableLedger) -> None:
    created = await ledger.create(record("R-1"))
    moved = await ledger.replace(created.moved_to("acting", utcnow(), "calling", attempt=1, action_started_at=utcnow()))
    loaded = await ledger.get("R-1")
    assert loaded is not None and loaded.state == "acting" and loaded.attempt == 1
    assert [h["state"] for h in loaded.history] == ["acting"] and loaded.etag == moved.etag


async def test_second_create_of_the_same_request_conflicts(ledger: TableLedger) -> None:
    await ledger.create(record("R-2"))
    with pytest.raises(StorageConflict):
        await ledger.create(record("R-2"))


async def test_stale_write_loses(ledger: TableLedger) -> None:
    created = await ledger.create(record("R-3"))
    await ledger.replace(replace(created, state="acting"))
    with pytest.raises(StorageConflict):
        await ledger.replace(replace(created, state="rejected"))


async def test_missing_record_is_none(ledger: TableLedger) -> None:
    assert await ledger.get("nope") is None


async def test_device_cooldown_blocks_other_requests_inside_the_window(ledger: TableLedger) -> None:
    now = utcnow()
    window = timedelta(seconds=900)
    assert (await ledger.claim_device("DEV-A", "R-10", now, window)).granted
    assert (await ledger.claim_device("DEV-A", "R-10", now, window)).granted  # same request again
    blocked = await ledger.claim_device("DEV-A", "R-11", now + timedelta(seconds=60), window)
    assert not blocked.granted and blocked.blocking_request_id == "R-10"
    assert (await ledger.claim_device("DEV-A", "R-12", now + timedelta(seconds=901), window)).granted


async def test_released_claim_frees_the_device(ledger: TableLedger) -> None:
    now = utcnow()
    window = timedelta(seconds=900)
    await ledger.claim_device("DEV-B", "R-20", now, window)
    await ledger.release_device("DEV-B", "R-21")  # not the holder: no effect
    assert not (await ledger.claim_device("DEV-B", "R-22", now, window)).granted
    await ledger.release_device("DEV-B", "R-20")
    assert (await ledger.claim_device("DEV-B", "R-22", now, window)).granted


async def test_racing_claims_of_one_device_grant_exactly_one(ledger: TableLedger) -> None:
    """Ten requests claim one free device at once (an insert each, a read only for the losers),
    and ten more claim a device whose cooldown ran out (a conditional update each): one wins."""
    now = utcnow()
    window = timedelta(seconds=900)
    free = await asyncio.gather(*(ledger.claim_device("DEV-C", f"R-3{n}", now, window) for n in range(10)))
    assert sum(claim.granted for claim in free) == 1
    winner = next(f"R-3{n}" for n, claim in enumerate(free) if claim.granted)
    assert {claim.blocking_request_id for claim in free if not claim.granted} == {winner}

    later = now + timedelta(seconds=901)
    expired = await asyncio.gather(*(ledger.claim_device("DEV-C", f"R-4{n}", later, window) for n in range(10)))
    assert sum(claim.granted for claim in expired) == 1
