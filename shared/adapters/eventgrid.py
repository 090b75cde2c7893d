"""Azure Event Grid (docs/contract.md#event-grid-delivery): the outbox copy of every published event
and the topic client that forwards it.

`OutboxPublisher` is the one `EventPublisher` the use cases get when `EVENTGRID_TOPIC_ENDPOINT` is
set: every event goes to the results queue first and then, unchanged, to the outbox queue
(`<RESET_RESULTS_QUEUE>-eventgrid`). The `eventgrid_forward` function sends each outbox message to
the topic with `EventGridTopicClient`; a failing topic leaves the message on the outbox, where the
queue's retries and the poison handler take over (docs/decisions/0021-event-grid-outbox.md). So
Event Grid can never block, delay or lose the results-queue copy.

`azure-eventgrid` is imported when the first topic client is built, not at import: an app without
Event Grid never loads it, and `import function_app` stays as fast as before.
"""

from __future__ import annotations

import json
from typing import Any

from shared.ports import EventOutbox, EventPublisher

# The SDK's own retries are off: the outbox queue retries (maxDequeueCount, visibilityTimeout) and
# an invocation never sleeps on a failing topic. A publish answers within these bounds or fails.
_CONNECTION_TIMEOUT_S = 10
_READ_TIMEOUT_S = 30


class EventGridDeliveryFailed(Exception):
    """The topic did not accept the event. The message names the HTTP status or the error type,
    never the endpoint's key; `status` is None when no answer came (connection, timeout)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class OutboxPublisher:
    """`EventPublisher`: the results queue, then the Event Grid outbox.

    The results queue is written first, so a failing outbox cannot delay it. When the outbox write
    fails the exception propagates: the invocation fails, the message is redelivered, and the
    redelivery republishes the event recorded in the ledger, with the same id, to both queues."""

    def __init__(self, results: EventPublisher, outbox: EventOutbox) -> None:
        self._results = results
        self._outbox = outbox

    async def publish(self, event_json: str) -> None:
        await self._results.publish(event_json)
        await self._outbox.send_message(event_json)


class EventGridTopicClient:
    """`EventGridTopic` over `azure.eventgrid.aio.EventGridPublisherClient`.

    In Azure it authenticates with the managed identity (role EventGrid Data Sender); locally, a
    key (`aeg-sas-key`) is accepted by the settings only for a loopback http receiver. The event is
    sent as the JSON object it was published as, in a one-element CloudEvents batch
    (`application/cloudevents-batch+json`): same id and every attribute unchanged."""

    def __init__(self, endpoint: str, *, key: str | None = None, credential: Any = None) -> None:
        from azure.core.credentials import AzureKeyCredential
        from azure.eventgrid.aio import EventGridPublisherClient

        if (key is None) == (credential is None):
            raise ValueError("EventGridTopicClient needs exactly one of key or credential")
        self.endpoint = endpoint
        self._credential = credential
        self._client = EventGridPublisherClient(
            endpoint,
            AzureKeyCredential(key) if key is not None else credential,
            retry_total=0,
            connection_timeout=_CONNECTION_TIMEOUT_S,
            read_timeout=_READ_TIMEOUT_S,
        )

    @classmethod
    def from_settings(cls, endpoint: str, key: str | None, client_id: str | None) -> EventGridTopicClient:
        if key is not None:
            return cls(endpoint, key=key)
        from azure.identity.aio import DefaultAzureCredential

        return cls(endpoint, credential=DefaultAzureCredential(managed_identity_client_id=client_id))

    async def send(self, event_json: str) -> None:
        from azure.core.exceptions import AzureError, HttpResponseError

        event = json.loads(event_json)
        try:
            # A dict with the CloudEvents attributes is sent as it is (the SDK re-serialises it
            # without touching any member); a CloudEvent object would rewrite `time`.
            await self._client.send([event])
        except HttpResponseError as exc:
            raise EventGridDeliveryFailed(
                f"Event Grid answered {exc.status_code} ({exc.reason})", status=exc.status_code
            ) from exc
        except (AzureError, OSError) as exc:
            raise EventGridDeliveryFailed(f"Event Grid unreachable ({type(exc).__name__})") from exc

    async def aclose(self) -> None:
        await self._client.close()
        if self._credential is not None:
            await self._credential.close()
