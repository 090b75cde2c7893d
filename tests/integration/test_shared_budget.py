"""One Graph budget for all instances on the real stack: the book as a table entity on Azurite
through azure-data-tables, instances racing for it, storage that is down, and two devstack hosts
against one Intune simulator enforcing Intune's budget (bench/throughput.py at full size)."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from devstack.azurite import Azurite
from shared.adapters.graph_budget import BudgetLimits, GraphBudget
from shared.adapters.shared_budget import SharedGraphBudget, TableBudgetStore
from shared.adapters.storage import StorageClients
from shared.settings import load_settings
from tests.unit.test_shared_budget import most_in_any_window


@pytest.fixture
async def table(azurite: Azurite) -> AsyncIterator[Any]:
    clients = StorageClients(load_settings({"AzureWebJobsStorage": azurite.connection_string}))
    name = "Budget" + uuid.uuid4().hex[:12]
    await clients.tables.create_table(name)
    yield clients.table(name)
    await clients.tables.delete_table(name)
    await clients.aclose()


def shared(table: Any, limits: BudgetLimits, **kwargs: Any) -> SharedGraphBudget:
    return SharedGraphBudget(TableBudgetStore(table), limits, fallback=GraphBudget(limits.share(4)), **kwargs)


async def test_instances_racing_for_the_book_in_azure_tables_never_exceed_the_budget(table: Any) -> None:
    limits = BudgetLimits(actions=20, requests=400, window_seconds=2)
    budgets = [shared(table, limits) for _ in range(4)]
    starts: list[float] = []

    async def calls(budget: SharedGraphBudget, count: int) -> None:
        for _ in range(count):
            await budget.acquire(action=True)
            starts.append(time.time())

    began = time.time()
    await asyncio.gather(*(calls(budget, 15) for budget in budgets))  # 60 calls, 3 windows' worth
    assert most_in_any_window(starts, 2.0) <= 20
    assert sum(b.stats.conflicts for b in budgets) > 0  # they did race for the entity
    assert 60 / (max(starts) - began) >= 0.8 * 20 / 2.5  # and still used the budget (window + margin)
    assert all(b.stats.fallbacks == 0 for b in budgets)


async def test_storage_that_is_down_leaves_each_instance_its_fallback_share(azurite: Azurite) -> None:
    dead = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};TableEndpoint=http://127.0.0.1:9/devstoreaccount1"
    key = azurite.connection_string.split("AccountKey=")[1].split(";")[0]
    clients = StorageClients(load_settings({"AzureWebJobsStorage": dead.format(key)}))
    try:
        limits = BudgetLimits(actions=8, requests=80, window_seconds=1)
        budget = shared(clients.table("PasscodeResets"), limits)
        starts = []
        for _ in range(6):
            await budget.acquire(action=True)
            starts.append(time.monotonic())
        assert budget.stats.fallbacks == 1 and budget.stats.leases == 0
        assert most_in_any_window(starts, 1.0) <= 8 // 4  # a quarter of the budget, not all of it
    finally:
        await clients.aclose()


async def test_two_hosts_share_intunes_budget_without_a_window_over_it(tmp_path: Path) -> None:
    from bench import throughput

    throughput.OUT = tmp_path  # keep bench/out for real benchmark runs
    args = argparse.Namespace(
        requests=150, baseline=0, hosts=2, latency_ms=150.0, batch_size=16, new_batch_threshold=8,
        confirm_first_check=3600, timeout=60.0, seed=11, every_host_runs_all=False,
    )  # fmt: skip
    result = await throughput.benchmark(args)
    summary = {k: v for k, v in result.items() if k != "storage_ops_by_kind"}
    assert result["budget_exceeded"] is False, summary
    assert result["max_actions_per_window"] <= 200, summary
    assert result["requests_not_one_action"] == 0, summary
    assert result["failed"] == 0 and result["no_outcome"] == 0, summary
    assert result["throttled_429"] == 0, summary
    assert result["budget_storage_ops_per_request"] < 2, summary
