"""The Graph budget on the real stack, small and quick: the product stays inside Intune's throttling
budget without a single 429, defers what does not fit, and spends two Graph calls per reset
(bench/throughput.py measures the same at full size; nothing here is timed)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from devstack.simulator.server import RunningSimulator
from shared.adapters.graph import MsGraphIntuneGateway
from shared.adapters.graph_budget import BudgetLimits, GraphBudget
from shared.core.errors import GraphBudgetExhausted, GraphTransientError
from shared.core.platforms import Action
from tests.plugins.product import ProductFactory

ADELE = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"  # seeded: Android 14 personal work profile
KIOSK = "00e958d3-baee-4e0f-8544-e8144f9672c4"  # seeded: Android Enterprise dedicated

# A small budget, the same in the simulator (Intune's side) and in the app.
POSTS, REQUESTS, WINDOW = 4, 40, 1


async def add_android_devices(sim: RunningSimulator, count: int) -> list[str]:
    """Devices of their own (the cooldown is per device), each supporting resetPasscode."""
    ids = []
    for n in range(count):
        device: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "deviceName": f"Smoke {n}",
            "operatingSystem": "Android",
            "osVersion": "14",
            "deviceType": "androidEnterprise",
            "deviceEnrollmentType": "androidEnterpriseFullyManaged",
            "managementAgent": "mdm",
            "managedDeviceOwnerType": "company",
            "userPrincipalName": f"smoke{n}@contoso.com",
        }
        ids.append((await sim.control.add_device(device))["id"])
    return ids


async def test_three_windows_worth_of_resets_at_once_are_paced_without_a_429(product_stack: ProductFactory) -> None:
    budget = {
        "GRAPH_POST_BUDGET": str(POSTS),
        "GRAPH_REQUEST_BUDGET": str(REQUESTS),
        "GRAPH_BUDGET_WINDOW_SECONDS": str(WINDOW),
        "CONFIRM_FIRST_CHECK_SECONDS": "600",  # keep confirmation reads out of the count
    }
    async with product_stack(**budget) as stack:
        await stack.sim.control.set_throttle(post_limit=POSTS, any_limit=REQUESTS, window_seconds=WINDOW)
        devices = await add_android_devices(stack.sim, 12)  # three windows' worth, all at once
        ids = [f"SMOKE-{n}" for n in range(len(devices))]
        for request_id, device_id in zip(ids, devices, strict=True):
            await stack.send({"requestId": request_id, "device": {"intuneDeviceId": device_id}, "requestedBy": "a@b.c"})

        await wait_submitted(stack, ids)

        calls = await stack.sim.control.calls()
        assert [c for c in calls if c["status"] == 429] == []
        for device_id in devices:  # one action each; a request deferred after its lookup reads again
            methods = [c["method"] for c in calls if c["deviceId"] == device_id]
            assert methods.count("POST") == 1 and methods[-1] == "POST"
        assert len(calls) <= 2 * len(devices) + 2
        for request_id in ids:
            submitted = [e for e in stack.of(request_id) if e["data"]["status"] == "submitted"]
            assert len(submitted) == 1 and submitted[0]["data"]["attempt"] == 1


async def wait_submitted(stack: Any, ids: list[str], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        await stack.collect()
        done = {e["data"]["requestId"] for e in stack.events if e["data"]["status"] == "submitted"}
        if set(ids) <= done:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not submitted: {sorted(set(ids) - done)}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def gateway(sim: RunningSimulator) -> AsyncIterator[MsGraphIntuneGateway]:
    gw = MsGraphIntuneGateway.with_static_token(sim.url, sim.token, budget=GraphBudget(BudgetLimits()))
    yield gw
    await gw.aclose()


async def test_a_429_pauses_the_whole_client_so_other_devices_wait_too(
    gateway: MsGraphIntuneGateway, sim: RunningSimulator
) -> None:
    await sim.control.add_fault("429", method="POST", device_id=ADELE, retry_after=7)
    with pytest.raises(GraphTransientError) as throttled:
        await gateway.perform(ADELE, Action.RESET_PASSCODE)
    assert throttled.value.status == 429 and throttled.value.retry_after == 7

    with pytest.raises(GraphBudgetExhausted) as held:
        await gateway.get_device(KIOSK)
    assert 6 < (held.value.retry_after or 0) <= 7
    assert await sim.control.calls(device_id=KIOSK) == []  # never sent
