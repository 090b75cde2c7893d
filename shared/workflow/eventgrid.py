"""Event Grid delivery (docs/contract.md#event-grid-delivery): forwarding the outbox to the topic.

Every event published on the results queue is also on the outbox queue (shared/adapters/eventgrid.py,
`OutboxPublisher`). `forward_event` sends one outbox message to the topic; when the topic fails the
invocation fails, and the queue retries it (`maxDequeueCount`, `visibilityTimeout`). After the last
retry the host moves it to the outbox's poison queue, and `handle_forward_poison` logs and counts it
(the alert of infra/app/alerts.bicep) and puts it back on the outbox for another round after
`EVENTGRID_RETRY_SECONDS`: delivery is retried until the topic accepts it
(docs/decisions/0021-event-grid-outbox.md). Consumers de-duplicate on the CloudEvents `id`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from shared.observability import telemetry
from shared.ports import EventGridTopic, EventOutbox

log = logging.getLogger("passcode_reset")

_REQUIRED = ("id", "source", "type", "specversion")


@dataclass(frozen=True)
class EventGridServices:
    """`topic` is None when EVENTGRID_TOPIC_ENDPOINT is not set."""

    topic: EventGridTopic | None
    outbox: EventOutbox
    retry_seconds: int


async def forward_event(body: str, services: EventGridServices) -> None:
    """Send one outbox message to the topic; raise (so the queue retries) when it is not accepted."""
    fields = _event_fields(body)
    if fields is None:
        return
    if services.topic is None:
        # Event Grid was turned off with events still waiting: they stay on the results queue and
        # in the ledger; nothing would ever accept them here.
        telemetry.count_eventgrid("dropped_disabled")
        log.warning("Event Grid is off (EVENTGRID_TOPIC_ENDPOINT unset): outbox event not forwarded", extra=fields)
        return
    try:
        await services.topic.send(body)
    except Exception as exc:
        telemetry.count_eventgrid("failed")
        status = getattr(exc, "status", None)
        log.warning(
            "Event Grid delivery failed; the outbox queue retries it",
            extra={**fields, "httpStatus": status, "error": str(exc)[:200]},
        )
        raise
    telemetry.count_eventgrid("delivered")
    log.info("event delivered to Event Grid", extra=fields)


async def handle_forward_poison(body: str, services: EventGridServices) -> None:
    """An event the topic refused `maxDequeueCount` times: alert, then another round later."""
    fields = _event_fields(body)
    if fields is None:
        return
    telemetry.count_eventgrid("undelivered")
    log.error(
        "Event Grid delivery failed on every retry; trying again in %s s",
        services.retry_seconds,
        extra={**fields, "event": "eventgrid_undelivered", "retryInSeconds": services.retry_seconds},
    )
    await services.outbox.send_message(body, services.retry_seconds)


def _event_fields(body: str) -> dict[str, Any] | None:
    """Log fields of an outbox message, or None (logged, counted, not retried) when it is not a
    CloudEvent: only the app writes the outbox, so such a message can never be delivered."""
    try:
        event = json.loads(body)
    except ValueError:
        event = None
    if not isinstance(event, dict) or not all(isinstance(event.get(name), str) for name in _REQUIRED):
        telemetry.count_eventgrid("invalid")
        log.error("outbox message is not a CloudEvent; dropped", extra={"length": len(body)})
        return None
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    return {
        "eventId": event["id"],
        "eventType": event["type"],
        "requestId": (data or {}).get("requestId"),
        "status": (data or {}).get("status"),
    }
