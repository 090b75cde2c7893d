"""A small consumer of the results queue that handles each outcome event once (docs/integrations.md).

Delivery is at least once: a redelivered request republishes its recorded event with the same
CloudEvents `id` (docs/contract.md#outcome-events), so the consumer remembers the ids it handled
(here in a JSON file; in production a table or the ITSM tool's own record) and skips repeats.
A message is deleted only after its event was handled, so a crash mid-way means a redelivery,
never a loss.

    AzureWebJobsStorage=... python samples/results_consumer.py --queue passcode-reset-results

Needs only `azure-storage-queue` (and `azure-identity` for --account-url with Entra ID).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from azure.storage.queue.aio import QueueClient

Handler = Callable[[dict[str, Any]], Awaitable[None]]


class SeenIds:
    """Event ids already handled, kept in a JSON file so a restart does not handle them again."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._ids: set[str] = set(json.loads(path.read_text())) if path and path.exists() else set()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        self._ids.add(event_id)
        if self._path is not None:
            self._path.write_text(json.dumps(sorted(self._ids)))


async def consume_once(queue: QueueClient, handle: Handler, seen: SeenIds, *, visibility: int = 60) -> int:
    """Receive one batch, handle each new event, delete every message; returns the events handled."""
    handled = 0
    async for message in queue.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=visibility):
        try:
            event = json.loads(message.content)
            event_id = event["id"]
        except (ValueError, KeyError, TypeError):
            print(f"skipping a message that is not a CloudEvent: {message.id}")
            await queue.delete_message(message)
            continue
        if event_id not in seen:
            await handle(event)  # an exception leaves the message: it comes back after `visibility`
            seen.add(event_id)
            handled += 1
        await queue.delete_message(message)
    return handled


async def print_event(event: dict[str, Any]) -> None:
    data = event.get("data") or {}
    reason = (data.get("reason") or {}).get("code")
    print(f"{event['id']} {data.get('requestId')} ticket={data.get('ticketId')} {data.get('status')} {reason or ''}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue", default="passcode-reset-results")
    parser.add_argument("--seen", type=Path, default=Path("seen-event-ids.json"))
    parser.add_argument("--account-url", help="https://<account>.queue.core.windows.net (Entra ID)")
    args = parser.parse_args()
    if args.account_url:
        from azure.identity.aio import DefaultAzureCredential

        queue = QueueClient(args.account_url, args.queue, credential=DefaultAzureCredential())
    else:
        queue = QueueClient.from_connection_string(os.environ["AzureWebJobsStorage"], args.queue)
    seen = SeenIds(args.seen)
    async with queue:
        while True:
            if not await consume_once(queue, print_event, seen):
                await asyncio.sleep(2)


if __name__ == "__main__":
    asyncio.run(main())
