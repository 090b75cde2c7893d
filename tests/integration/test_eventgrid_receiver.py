"""The devstack Event Grid receiver accepts what azure-eventgrid publishes to a CloudEvents topic and
refuses what Event Grid refuses (docs/devstack.md, Event Grid receiver); the app's topic client maps
its answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from devstack.eventgrid.receiver import RunningReceiver, start_receiver
from shared.adapters.eventgrid import EventGridDeliveryFailed, EventGridTopicClient

KEY = "receiver-test-key"
EVENT = {"specversion": "1.0", "id": "4b0c", "source": "/intune-passcode-reset",
         "type": "intune.passcode-reset.completed", "subject": "INC1-1",
         "time": "2026-11-25T10:00:00.000Z", "datacontenttype": "application/json",
         "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "data": {"status": "completed"}}
BATCH = "application/cloudevents-batch+json; charset=utf-8"


@pytest.fixture
async def receiver() -> AsyncIterator[RunningReceiver]:
    async with start_receiver(KEY) as running:
        yield running


async def post(receiver: RunningReceiver, body: Any, *, content_type: str = BATCH, key: str | None = KEY,
               api_version: bool = True) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": content_type, **({"aeg-sas-key": key} if key is not None else {})}
    url = receiver.url + ("?api-version=2018-01-01" if api_version else "")
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session, session.post(url, data=data, headers=headers) as response:
        text = await response.text()
        return response.status, json.loads(text) if text else {}


async def test_the_sdk_publishes_an_event_that_arrives_unchanged(receiver: RunningReceiver) -> None:
    client = EventGridTopicClient(receiver.url, key=KEY)
    try:
        await client.send(json.dumps(EVENT))
    finally:
        await client.aclose()
    assert [record["event"] for record in receiver.state.events] == [EVENT]
    assert receiver.state.attempts[0]["status"] == 200


@pytest.mark.parametrize(
    ("body", "kwargs", "status", "says"),
    [
        ([EVENT], {"key": None}, 401, "aeg-sas-key"),
        ([EVENT], {"key": "wrong"}, 401, "aeg-sas-key"),
        ([EVENT], {"api_version": False}, 400, "api-version"),
        ([EVENT], {"content_type": "application/json"}, 400, "Content-Type"),
        ([EVENT], {"content_type": "application/cloudevents-batch+json; charset=latin-1"}, 400, "charset"),
        (EVENT, {}, 400, "JSON array"),
        ([], {}, 400, "no event"),
        (b"[{", {}, 400, "not UTF-8 JSON"),
        ([{**EVENT, "specversion": "0.3"}], {}, 400, "specversion"),
        ([{k: v for k, v in EVENT.items() if k != "source"}], {}, 400, "'source'"),
        ([{**EVENT, "id": ""}], {}, 400, "'id'"),
        ([{**EVENT, "data_base64": "AA=="}], {}, 400, "exclusive"),
        ([{**EVENT, "Trace-Parent": "x"}], {}, 400, "lowercase"),
        ([{**EVENT, "data": "x" * (1024 * 1024)}], {}, 413, "1 MB"),
        ([{"specversion": "1.0", "id": "1", "source": "/s", "type": "t"}] * 5001, {}, 413, "5,000"),
    ],
)
async def test_what_event_grid_refuses_is_refused_and_not_recorded(
    receiver: RunningReceiver, body: Any, kwargs: dict[str, Any], status: int, says: str
) -> None:
    answer, document = await post(receiver, body, **kwargs)
    assert answer == status and says in document["error"]["message"]
    assert receiver.state.events == []


async def test_a_single_structured_event_is_accepted_too(receiver: RunningReceiver) -> None:
    assert (await post(receiver, EVENT, content_type="application/cloudevents+json; charset=utf-8"))[0] == 200
    assert len(receiver.state.events) == 1


async def test_injected_faults_answer_for_a_count_then_for_a_time(receiver: RunningReceiver) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{receiver.root}/_eg/faults", json={"status": 403, "count": 2}) as response:
            assert response.status == 200
        assert [(await post(receiver, [EVENT]))[0] for _ in range(3)] == [403, 403, 200]
        async with session.post(f"{receiver.root}/_eg/faults", json={"status": 500, "seconds": 0.3}) as response:
            assert response.status == 200
        assert (await post(receiver, [EVENT]))[0] == 500
        await asyncio.sleep(0.35)
        assert (await post(receiver, [EVENT]))[0] == 200
        async with session.get(f"{receiver.root}/_eg/events") as response:
            assert len((await response.json())["events"]) == 2


async def test_the_topic_client_reports_the_status_never_the_key(receiver: RunningReceiver) -> None:
    client = EventGridTopicClient(receiver.url, key="a-wrong-s3cret")
    try:
        with pytest.raises(EventGridDeliveryFailed) as failed:
            await client.send(json.dumps(EVENT))
    finally:
        await client.aclose()
    assert failed.value.status == 401 and "a-wrong-s3cret" not in str(failed.value)
