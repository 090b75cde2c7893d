"""docs/contract.md#event-grid-delivery end to end: function_app.py in the devstack host publishes every
outcome event to the results queue and, through the outbox and `eventgrid_forward`, to a local Event
Grid topic (devstack/eventgrid) over azure-eventgrid. A failing topic delays nothing on the results
queue and loses nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from devstack.eventgrid.receiver import Fault, RunningReceiver, start_receiver
from tests.plugins.product import ProductFactory, ProductStack

ADELE = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"
KIOSK = "00e958d3-baee-4e0f-8544-e8144f9672c4"
KEY = "test-eventgrid-key"


def request(request_id: str, device_id: str = ADELE, **fields: Any) -> dict[str, Any]:
    return {"requestId": request_id, "device": {"intuneDeviceId": device_id},
            "requestedBy": "servicedesk@contoso.com", "ticketId": "INC42", **fields}


@pytest.fixture
async def receiver() -> AsyncIterator[RunningReceiver]:
    async with start_receiver(KEY) as running:
        yield running


def eventgrid_settings(receiver: RunningReceiver, **extra: str) -> dict[str, str]:
    return {"EVENTGRID_TOPIC_ENDPOINT": receiver.url, "EVENTGRID_TOPIC_KEY": KEY, "EVENTGRID_RETRY_SECONDS": "1",
            "RESET_COOLDOWN_SECONDS": "0", **extra}


def delivered(receiver: RunningReceiver) -> dict[str, dict[str, Any]]:
    """What a consumer keeps after de-duplicating on the CloudEvents id."""
    return {record["event"]["id"]: record["event"] for record in receiver.state.events}


async def wait_delivered(receiver: RunningReceiver, ids: set[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ids <= delivered(receiver).keys():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not delivered to Event Grid: {sorted(ids - delivered(receiver).keys())}")
        await asyncio.sleep(0.1)


async def wait_attempts(receiver: RunningReceiver, status: int, count: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(a["status"] == status for a in receiver.state.attempts) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {count} publish attempts answered {status}")
        await asyncio.sleep(0.1)


async def outbox_poison_count(stack: ProductStack) -> int:
    name = stack.settings["RESET_RESULTS_QUEUE"] + "-eventgrid-poison"
    try:
        properties = await stack.service.get_queue_client(name).get_queue_properties()
    except ResourceNotFoundError:
        return 0
    return int(properties.approximate_message_count or 0)


async def test_every_event_reaches_the_topic_unchanged_once_per_id(
    product_stack: ProductFactory, receiver: RunningReceiver
) -> None:
    async with product_stack(**eventgrid_settings(receiver)) as stack:
        await stack.send(request("EG-1"))  # submitted, then completed
        await stack.send(request("EG-2", KIOSK, dryRun=True))
        await stack.send("this is not a request")  # rejected / invalid_request, no ledger record
        await stack.wait_final("EG-1", "EG-2", None)
        queue_events = {event["id"]: event for event in stack.events}
        await wait_delivered(receiver, set(queue_events))
        await stack.host.drain()

        assert delivered(receiver) == queue_events  # the same events, attribute for attribute
        assert {e["data"]["status"] for e in queue_events.values()} >= {"submitted", "completed", "dry_run", "rejected"}
        attempts = receiver.state.attempts
        assert all(a["status"] == 200 for a in attempts)
        assert await outbox_poison_count(stack) == 0


async def test_a_failing_topic_delays_and_loses_nothing(
    product_stack: ProductFactory, receiver: RunningReceiver
) -> None:
    """500s, then 403s (the role missing) for a while: the results queue gets every event at once;
    Event Grid gets each of them once the topic is back (after the poison round, once per id)."""
    receiver.state.fault = Fault(500, until=None, remaining=None)  # down until told otherwise
    async with product_stack(**eventgrid_settings(receiver)) as stack:
        ids = [f"EG-F{n}" for n in range(4)]
        for request_id in ids:
            await stack.send(request(request_id, KIOSK, dryRun=True))
        started = time.monotonic()
        finals = await stack.wait_final(*ids, timeout=20)
        queue_latency = time.monotonic() - started
        assert len(finals) == len(ids) and receiver.state.events == []
        assert queue_latency < 10, queue_latency

        await wait_attempts(receiver, 500, len(ids))
        receiver.state.fault = Fault(403, until=time.monotonic() + 2.0, remaining=None)
        await asyncio.sleep(2.5)  # 403s now; then the topic accepts again
        event_ids = {event["id"] for event in stack.events}
        await wait_delivered(receiver, event_ids, timeout=30)

        statuses = [a["status"] for a in receiver.state.attempts]
        assert 403 in statuses and 200 in statuses
        assert delivered(receiver).keys() == event_ids
        await stack.host.drain(timeout=30)
        assert await outbox_poison_count(stack) == 0
        assert [e["data"]["requestId"] for e in await stack.settle(0.2) if e["id"] not in event_ids] == []
