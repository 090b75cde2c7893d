"""Queue triggers: polling one queue with the queue extension's options (batchSize,
newBatchThreshold, maxPollingInterval), message leases, dequeue count and ``<queue>-poison``.

When storage fails under it, the listener does what the Functions host's queue listener does
(docs/devstack.md#when-storage-fails): a failed poll backs off like an empty one (randomized
exponential, up to maxPollingInterval) and polls again, never ending the listener; a failed lease
renewal is retried sooner, and given up only when the message is gone or no longer ours; a
message whose release, delete or move to the poison queue fails is left to reappear when its
visibility ends, so the function runs again (at least once, never lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as TriggerQueueMessage
from azure.storage.queue import QueueMessage as StorageQueueMessage
from azure.storage.queue.aio import QueueClient

from devstack.host.bindings import decode_incoming
from devstack.host.indexing import FunctionDef, QueueBinding
from devstack.host.invoker import context_kwargs, output_kwargs
from devstack.host.logs import CURRENT_INVOCATION, Invocation, elapsed_ms, log

if TYPE_CHECKING:
    from devstack.host.context import HostContext


class Lease:
    """Keeps a received message invisible while its invocation runs, like the host's renewal."""

    def __init__(self, client: QueueClient, message: StorageQueueMessage, duration: float) -> None:
        self._client = client
        self.message_id: str = message.id
        self.pop_receipt: str = message.pop_receipt or ""
        self._duration = duration
        self._done = asyncio.Event()
        self._task = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        wait = self._duration / 2
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), wait)
                return
            try:
                updated = await self._client.update_message(
                    self.message_id, self.pop_receipt, visibility_timeout=int(self._duration)
                )
            except AzureError as exc:
                if lost_ownership(exc):  # deleted, or received again by someone else: not ours now
                    log.warning("message lease lost", extra={"message_id": self.message_id, "error": str(exc)})
                    return
                # Storage failing: try again sooner, before the visibility runs out (the host's
                # LinearSpeedupStrategy in UpdateQueueMessageVisibilityCommand).
                log.warning("message lease renewal failed", extra={"message_id": self.message_id, "error": str(exc)})
                wait = max(1.0, wait / 2)
                continue
            wait = self._duration / 2
            self.pop_receipt = updated.pop_receipt or self.pop_receipt

    async def end(self) -> str:
        """Stop renewing (letting an update in progress finish); returns the current pop receipt."""
        self._done.set()
        await asyncio.shield(self._task)
        return self.pop_receipt


def lost_ownership(exc: AzureError) -> bool:
    """The message was deleted (404) or its pop receipt no longer matches (400): renewing, releasing
    or deleting it again cannot succeed (the host's IsNotFoundMessageOrQueueNotFound and
    IsBadRequestPopReceiptMismatch)."""
    return isinstance(exc, ResourceNotFoundError) or (isinstance(exc, HttpResponseError) and exc.status_code == 400)


def next_poll_delay(delay: float, minimum: float, maximum: float) -> float:
    """The delay after an empty or failed poll: the host's RandomizedExponentialBackoffStrategy
    (the increment doubles, randomized by +-20 %, capped at maxPollingInterval)."""
    return min(maximum, max(minimum, delay * 2 * random.uniform(0.8, 1.2)))


class QueueListener:
    """Polls one queue for one queue-triggered function with the host.json queue options."""

    def __init__(self, host: HostContext, definition: FunctionDef, connection: str) -> None:
        assert isinstance(definition.trigger, QueueBinding)
        self._host = host
        self.definition = definition
        self.queue_name = definition.trigger.queue_name
        self.connection = connection
        self._options = host.options.queues
        self._client = host.store.client(connection, self.queue_name)
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._poller: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        self._poller = asyncio.create_task(self._poll(), name=f"poll {self.queue_name}")

    def wake(self) -> None:
        """Poll now (a function of this host just wrote to the queue), like the host's watcher."""
        self._wake.set()

    async def stop_polling(self) -> None:
        self._stopping = True
        self._wake.set()
        self._slot_freed.set()
        if self._poller is not None:
            await self._poller

    async def finish(self, timeout: float) -> None:  # noqa: ASYNC109 - a grace period, not a deadline
        """Wait up to ``timeout`` for in-flight invocations, then cancel the rest (released)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- polling ----------------------------------------------------------------------------------

    async def _poll(self) -> None:
        delay = self._host.min_polling_interval
        while not self._stopping:
            await self._wait_for_capacity()
            if self._stopping:
                return
            messages = await self._receive()
            if messages:
                delay = self._host.min_polling_interval
                for message in messages:
                    self._spawn(message)
                continue
            await self._sleep(delay)
            delay = next_poll_delay(delay, self._host.min_polling_interval, self._options.max_polling_interval)

    async def _wait_for_capacity(self) -> None:
        """A new batch is fetched only when in-flight work dropped to newBatchThreshold."""
        while not self._stopping and self.in_flight > self._options.new_batch_threshold:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def _receive(self) -> list[StorageQueueMessage]:
        try:
            pages = self._client.receive_messages(
                messages_per_page=self._options.batch_size,
                visibility_timeout=int(self._host.lease_seconds),
            ).by_page()
            page = await pages.__anext__()
            return [message async for message in page]
        except StopAsyncIteration:
            return []
        except Exception as exc:  # storage down, throttling, a timeout: back off and poll again
            log.warning(
                "queue receive failed", extra={"queue": self.queue_name, "error": f"{type(exc).__name__}: {exc}"}
            )
            return []

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)
        self._wake.clear()

    def _spawn(self, message: StorageQueueMessage) -> None:
        task = asyncio.create_task(self._process(message), name=f"{self.definition.name} {message.id}")
        self._tasks.add(task)
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()

    # -- one message ----------------------------------------------------------------------------

    async def _process(self, message: StorageQueueMessage) -> None:
        dequeue_count = message.dequeue_count or 1
        if dequeue_count > self._options.max_dequeue_count:
            # Already over the limit when received (e.g. a previous host died): no invocation.
            await self._move_to_poison(message, message.pop_receipt or "", dequeue_count)
            return
        invocation_id = str(uuid.uuid4())
        CURRENT_INVOCATION.set(Invocation(self.definition.name, invocation_id))
        fields = self._log_fields(invocation_id, message, dequeue_count)
        lease = Lease(self._client, message, self._host.lease_seconds)
        started = time.monotonic()
        log.info("function started", extra=fields)
        try:
            await self._invoke(message, invocation_id)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(lease, 0.0))
            log.warning("function cancelled at shutdown; message released", extra=fields)
            raise
        except Exception:
            receipt = await lease.end()
            log.exception("function failed", extra={**fields, "duration_ms": elapsed_ms(started)})
            await self._after_failure(message, receipt, dequeue_count)
            return
        receipt = await lease.end()
        await self._delete(message.id, receipt)
        log.info("function succeeded", extra={**fields, "duration_ms": elapsed_ms(started)})

    def _log_fields(
        self, invocation_id: str, message: StorageQueueMessage, dequeue_count: int
    ) -> dict[str, Any]:
        return {
            "function": self.definition.name,
            "invocation_id": invocation_id,
            "trigger": "queue",
            "queue": self.queue_name,
            "message_id": message.id,
            "dequeue_count": dequeue_count,
        }

    async def _invoke(self, message: StorageQueueMessage, invocation_id: str) -> None:
        """Decode, call, then write the outputs: only a fully successful invocation returns."""
        definition = self.definition
        body = decode_incoming(str(message.content or ""), self._options.message_encoding)
        trigger_message = TriggerQueueMessage(
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            pop_receipt=message.pop_receipt,
            insertion_time=message.inserted_on,
            expiration_time=message.expires_on,
            time_next_visible=message.next_visible_on,
        )
        outs = output_kwargs(definition)
        kwargs = {definition.trigger.param: trigger_message, **outs, **context_kwargs(definition, invocation_id)}
        result = await self._host.invoker.invoke(definition, invocation_id, kwargs)
        await self._host.write_outputs(definition, outs, result)

    async def _after_failure(self, message: StorageQueueMessage, receipt: str, dequeue_count: int) -> None:
        if dequeue_count >= self._options.max_dequeue_count:
            await self._move_to_poison(message, receipt, dequeue_count)
        else:
            await self._set_visibility(message.id, receipt, self._options.visibility_timeout)

    async def _move_to_poison(self, message: StorageQueueMessage, receipt: str, dequeue_count: int) -> None:
        poison = f"{self.queue_name}-poison"
        try:
            await self._host.store.send(self.connection, poison, [str(message.content or "")])
        except AzureError as exc:
            log.error("moving message to poison queue failed", extra={"queue": poison, "error": str(exc)})
            return
        await self._delete(message.id, receipt)
        log.warning(
            "message moved to poison queue",
            extra={
                "function": self.definition.name,
                "queue": self.queue_name,
                "poison_queue": poison,
                "message_id": message.id,
                "dequeue_count": dequeue_count,
            },
        )

    async def _release(self, lease: Lease, visibility: float) -> None:
        receipt = await lease.end()
        await self._set_visibility(lease.message_id, receipt, visibility)

    async def _set_visibility(self, message_id: str, receipt: str, visibility: float) -> None:
        try:
            await self._client.update_message(message_id, receipt, visibility_timeout=int(visibility))
        except AzureError as exc:
            log.warning("message visibility update failed", extra={"message_id": message_id, "error": str(exc)})

    async def _delete(self, message_id: str, receipt: str) -> None:
        try:
            await self._client.delete_message(message_id, receipt)
        except AzureError as exc:
            log.warning("message delete failed", extra={"message_id": message_id, "error": str(exc)})
