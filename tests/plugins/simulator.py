"""Pytest fixtures for the Intune Graph simulator (devstack/simulator).

- `simulator` (session): one in-process simulator on a free loopback port, served by the session
  event loop. Yields a `RunningSimulator`: `.url` (Graph root, no trailing slash; append `/v1.0`
  or `/beta`), `.v1_url`, `.beta_url`, `.token`, `.control` (SimulatorControl), `.state`
  (SimulatorState), `.host`, `.port`, `.reset()`.
- `sim` (function): the same simulator, reset first (seeded fleet, start-up config, no faults,
  no action results beyond the seeded ones, no device scripts, empty throttle budget and call log).

Start-up config: token `devstack-local-token`, actions complete after 2 s (`done`), no latency,
Intune's throttling budget (200 writes / 2,000 requests per 20 s), page size 25. Change it per test
with `await sim.control.configure(...)`; the next `sim` restores it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from devstack.simulator.server import RunningSimulator, start_simulator

__all__ = ["sim", "simulator"]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def simulator() -> AsyncIterator[RunningSimulator]:
    async with start_simulator() as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def sim(simulator: RunningSimulator) -> AsyncIterator[RunningSimulator]:
    simulator.reset()
    yield simulator
