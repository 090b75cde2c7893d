"""docs/contract.md#event-grid-delivery in the pure workflow, with fakes of our own ports: the outbox
copy, the forwarding retries, the poison round, and the settings that turn it on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.adapters.eventgrid import OutboxPublisher
from shared.core.errors import StorageUnavailable
from shared.settings import SettingsError, load_settings
from shared.workflow import Services, handle_request
from shared.workflow.eventgrid import EventGridServices, forward_event, handle_forward_poison
from tests.fakes import device, harness

DEV = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"
EVENT = json.dumps({"specversion": "1.0", "id": "e-1", "source": "/intune-passcode-reset",
                    "type": "intune.passcode-reset.completed", "data": {"requestId": "R-1", "status": "completed"}})
BASE = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}


class Outbox:
    """The outbox queue: messages with their delay; `failures` sends fail first (storage down)."""

    def __init__(self, failures: int = 0) -> None:
        self.messages: list[tuple[str, int]] = []
        self.failures = failures

    async def send_message(self, content: str, delay_seconds: int = 0) -> None:
        if self.failures:
            self.failures -= 1
            raise StorageUnavailable("storage unavailable (send to outbox: ServiceRequestError)")
        self.messages.append((content, delay_seconds))

    def ids(self) -> list[str]:
        return [json.loads(content)["id"] for content, _ in self.messages]


class Topic:
    def __init__(self, failures: int = 0) -> None:
        self.accepted: list[str] = []
        self.failures = failures

    async def send(self, event_json: str) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("Event Grid answered 500 (Internal Server Error)")
        self.accepted.append(event_json)


def request(request_id: str = "REQ-1", **fields: Any) -> bytes:
    return json.dumps({"requestId": request_id, "device": {"intuneDeviceId": DEV},
                       "requestedBy": "servicedesk@contoso.com", **fields}).encode()


async def test_every_published_event_goes_to_the_results_queue_and_then_to_the_outbox() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    outbox = Outbox()
    services = Services(**{**vars(h.services), "publisher": OutboxPublisher(h.publisher, outbox)})
    await handle_request(request(dryRun=True), services, message_id="m1")
    assert [e["data"]["status"] for e in h.publisher.events] == ["dry_run"]
    assert outbox.ids() == [h.publisher.events[0]["id"]] and outbox.messages[0][1] == 0
    assert json.loads(outbox.messages[0][0]) == h.publisher.events[0]


async def test_an_outbox_write_failure_fails_the_invocation_and_the_redelivery_sends_the_same_event_to_both() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    outbox = Outbox(failures=1)
    services = Services(**{**vars(h.services), "publisher": OutboxPublisher(h.publisher, outbox)})
    with pytest.raises(StorageUnavailable):
        await handle_request(request(), services, message_id="m1")
    submitted = h.publisher.events[0]  # the results-queue copy went out first
    assert submitted["data"]["status"] == "submitted" and outbox.messages == []

    await handle_request(request(), services, message_id="m1")  # the queue redelivers it
    assert len(h.gateway.action_calls) == 1
    assert {e["id"] for e in h.publisher.events} == {submitted["id"]}
    assert outbox.ids() == [submitted["id"]]
    assert h.scheduler.followups, "the redelivery schedules the confirmation the failed one could not"


async def test_forwarding_sends_the_outbox_message_unchanged() -> None:
    topic = Topic()
    await forward_event(EVENT, EventGridServices(topic=topic, outbox=Outbox(), retry_seconds=300))
    assert topic.accepted == [EVENT]


async def test_a_failing_topic_fails_the_invocation_so_the_queue_retries() -> None:
    topic = Topic(failures=1)
    services = EventGridServices(topic=topic, outbox=Outbox(), retry_seconds=300)
    with pytest.raises(RuntimeError, match="500"):
        await forward_event(EVENT, services)
    await forward_event(EVENT, services)
    assert topic.accepted == [EVENT]


async def test_a_poisoned_event_goes_back_to_the_outbox_after_the_retry_delay() -> None:
    outbox = Outbox()
    await handle_forward_poison(EVENT, EventGridServices(topic=Topic(), outbox=outbox, retry_seconds=120))
    assert outbox.messages == [(EVENT, 120)]


async def test_a_poisoned_event_is_not_lost_when_the_outbox_is_down() -> None:
    outbox = Outbox(failures=1)
    with pytest.raises(StorageUnavailable):  # the poison message stays, and is retried
        await handle_forward_poison(EVENT, EventGridServices(topic=Topic(), outbox=outbox, retry_seconds=120))


@pytest.mark.parametrize("body", ["not json", "[]", '{"id": "x"}', json.dumps({**json.loads(EVENT), "id": 7})])
async def test_an_outbox_message_that_is_not_a_cloudevent_is_dropped_not_retried(body: str) -> None:
    topic, outbox = Topic(), Outbox()
    services = EventGridServices(topic=topic, outbox=outbox, retry_seconds=1)
    await forward_event(body, services)
    await handle_forward_poison(body, services)
    assert topic.accepted == [] and outbox.messages == []


async def test_with_event_grid_turned_off_waiting_events_are_consumed_without_a_retry() -> None:
    outbox = Outbox()
    await forward_event(EVENT, EventGridServices(topic=None, outbox=outbox, retry_seconds=1))  # no raise: no retry
    assert outbox.messages == []


# ---------------------------------------------------------------- settings


def test_event_grid_is_off_by_default_and_the_outbox_is_named_after_the_results_queue() -> None:
    settings = load_settings({**BASE, "RESET_RESULTS_QUEUE": "results"})
    assert settings.eventgrid_topic_endpoint is None and settings.eventgrid_retry_seconds == 300
    assert settings.eventgrid_outbox_queue == "results-eventgrid"


def test_the_managed_identity_is_used_for_an_https_topic() -> None:
    endpoint = "https://passcode.westeurope-1.eventgrid.azure.net/api/events"
    settings = load_settings({**BASE, "EVENTGRID_TOPIC_ENDPOINT": endpoint})
    assert settings.eventgrid_topic_endpoint == endpoint and settings.eventgrid_topic_key is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"EVENTGRID_TOPIC_ENDPOINT": "https://t.westeurope-1.eventgrid.azure.net/api/events",
          "EVENTGRID_TOPIC_KEY": "s3cret-k3y"}, "EVENTGRID_TOPIC_KEY: a key is accepted only for a local"),
        ({"EVENTGRID_TOPIC_ENDPOINT": "http://t.westeurope-1.eventgrid.azure.net/api/events",
          "EVENTGRID_TOPIC_KEY": "s3cret-k3y"}, "EVENTGRID_TOPIC_KEY"),
        ({"EVENTGRID_TOPIC_ENDPOINT": "http://10.0.0.5:8960/api/events"}, "EVENTGRID_TOPIC_ENDPOINT: plain http"),
        ({"EVENTGRID_TOPIC_ENDPOINT": "http://127.0.0.1:8960/api/events"}, "EVENTGRID_TOPIC_KEY: required"),
        ({"EVENTGRID_TOPIC_KEY": "s3cret-k3y"}, "EVENTGRID_TOPIC_KEY: set without EVENTGRID_TOPIC_ENDPOINT"),
        ({"EVENTGRID_TOPIC_ENDPOINT": "eventgrid"}, "EVENTGRID_TOPIC_ENDPOINT: not an absolute"),
        ({"EVENTGRID_RETRY_SECONDS": "0"}, "EVENTGRID_RETRY_SECONDS"),
        ({"RESET_RESULTS_QUEUE": "r" * 47}, "RESET_RESULTS_QUEUE: at most 46 characters"),
    ],
)
def test_bad_event_grid_settings_stop_the_app_naming_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings({**BASE, **env})
    assert message in str(refused.value)
    assert "s3cret-k3y" not in str(refused.value)


def test_a_key_for_a_loopback_receiver_is_accepted_and_never_printed() -> None:
    settings = load_settings(
        {**BASE, "EVENTGRID_TOPIC_ENDPOINT": "http://127.0.0.1:8960/api/events", "EVENTGRID_TOPIC_KEY": "s3cret-k3y"}
    )
    assert settings.eventgrid_topic_key == "s3cret-k3y" and "s3cret-k3y" not in repr(settings)
