"""The guardrail counter on Azure Tables (Azurite): instances racing for the last slots of the hour
never count more than the limit, and calls given back free their slot (docs/contract.md#guardrails)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest_asyncio
from azure.data.tables.aio import TableServiceClient

from devstack.azurite import Azurite
from shared.adapters.guardrails import TableGuardrails
from shared.adapters.ledger import TableLedger
from shared.core.approvals import GuardrailSlot, Hold
from shared.core.clock import utcnow
from shared.core.contract import ReasonCode
from shared.core.lifecycle import Policy


@pytest_asyncio.fixture(loop_scope="session")
async def table(azurite: Azurite) -> AsyncIterator[tuple[TableServiceClient, str]]:
    name = "Guard" + uuid.uuid4().hex[:10]
    async with TableServiceClient.from_connection_string(azurite.connection_string) as service:
        await service.create_table(name)
        yield service, name
        await service.delete_table(name)


async def test_racing_instances_take_exactly_the_limit(table: tuple[TableServiceClient, str]) -> None:
    service, name = table
    policy = Policy(guardrail_max_actions_per_hour=7)
    # Three "instances", each with its own client, 30 requests at once.
    instances = [TableGuardrails(service.get_table_client(name), policy) for _ in range(3)]
    now = utcnow()
    results = await asyncio.gather(*(instances[i % 3].take(f"r{i}@contoso.com", now, enforce=True) for i in range(30)))
    slots = [r for r in results if isinstance(r, GuardrailSlot)]
    holds = [r for r in results if isinstance(r, Hold)]
    assert (len(slots), len(holds)) == (7, 23)
    assert all(hold.code is ReasonCode.GUARDRAIL_TRIPPED for hold in holds)
    assert (await instances[0].counts(now)).count == 7

    await instances[1].give_back(slots[0])  # that call never reached Intune
    assert isinstance(await instances[2].take("x@contoso.com", now, enforce=True), GuardrailSlot)
    assert isinstance(await instances[2].take("x@contoso.com", now, enforce=True), Hold)
    # An approved request is counted but not held; an hour later the window is free again.
    assert isinstance(await instances[0].take("x@contoso.com", now, enforce=False), GuardrailSlot)
    assert (await instances[0].counts(now)).count == 8
    assert isinstance(
        await instances[0].take("x@contoso.com", now + timedelta(minutes=61), enforce=True), GuardrailSlot
    )


async def test_the_per_requester_guardrail_counts_each_requester(table: tuple[TableServiceClient, str]) -> None:
    service, name = table
    guardrails = TableGuardrails(
        service.get_table_client(name), Policy(guardrail_max_actions_per_hour=0, guardrail_max_per_requester_per_hour=2)
    )
    now = utcnow()
    taken = [await guardrails.take("Runaway@Contoso.com", now, enforce=True) for _ in range(3)]
    assert [type(t).__name__ for t in taken] == ["GuardrailSlot", "GuardrailSlot", "Hold"]
    assert isinstance(await guardrails.take("runaway@contoso.com", now, enforce=True), Hold)  # case-insensitive
    assert isinstance(await guardrails.take("someone@contoso.com", now, enforce=True), GuardrailSlot)
    # The counter lives next to the requests but is no request: the ledger does not see it.
    assert await TableLedger(service.get_table_client(name)).get("guardrail") is None
