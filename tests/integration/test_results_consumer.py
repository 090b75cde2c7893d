"""samples/results_consumer.py against Azurite: each event id handled once, redeliveries and restarts
included, a failed handler loses nothing (docs/integrations.md)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue.aio import QueueClient

from devstack.azurite import Azurite

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "results_consumer.py"
_spec = importlib.util.spec_from_file_location("results_consumer", SAMPLE)
assert _spec and _spec.loader
consumer = importlib.util.module_from_spec(_spec)
sys.modules["results_consumer"] = consumer
_spec.loader.exec_module(consumer)


def event(event_id: str, status: str = "completed") -> str:
    return json.dumps({"specversion": "1.0", "id": event_id, "source": "/intune-passcode-reset",
                       "type": f"intune.passcode-reset.{status}", "subject": "INC1-1",
                       "data": {"requestId": "INC1-1", "ticketId": "INC1", "status": status}})


@pytest.fixture
async def queue(azurite: Azurite) -> Any:
    client = QueueClient.from_connection_string(azurite.connection_string, f"consumer-{uuid.uuid4().hex[:10]}")
    async with client:
        await client.create_queue()
        yield client
        await client.delete_queue()


async def test_each_event_id_is_handled_once_across_redeliveries_and_restarts(queue: Any, tmp_path: Path) -> None:
    handled: list[str] = []

    async def handle(received: dict[str, Any]) -> None:
        handled.append(received["id"])

    for text in (event("a", "submitted"), event("b"), event("a", "submitted"), "not json", event("b")):
        await queue.send_message(text)
    seen_file = tmp_path / "seen.json"
    assert await consumer.consume_once(queue, handle, consumer.SeenIds(seen_file)) == 2
    await queue.send_message(event("b"))  # republished after the consumer restarted
    assert await consumer.consume_once(queue, handle, consumer.SeenIds(seen_file)) == 0
    assert handled == ["a", "b"]
    assert (await queue.get_queue_properties()).approximate_message_count == 0


async def test_a_failing_handler_leaves_the_event_for_a_retry(queue: Any) -> None:
    seen = consumer.SeenIds()
    await queue.send_message(event("c"))

    async def broken(received: dict[str, Any]) -> None:
        raise RuntimeError("ITSM unavailable")

    with pytest.raises(RuntimeError):
        await consumer.consume_once(queue, broken, seen, visibility=1)
    handled: list[str] = []

    async def handle(received: dict[str, Any]) -> None:
        handled.append(received["id"])

    for _ in range(30):
        if await consumer.consume_once(queue, handle, seen):
            break
        await asyncio.sleep(0.2)
    assert handled == ["c"]
