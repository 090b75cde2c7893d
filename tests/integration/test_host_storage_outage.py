"""The devstack host when storage goes away under it, against the Functions host's queue listener.

What the real host does (Azure/azure-webjobs-sdk at f79ea0bf, the queue extension's listener):

- src/Microsoft.Azure.WebJobs.Extensions.Storage/Queues/Listeners/QueueListener.cs, ExecuteAsync:
  a poll that fails with a server-side error (or queue not found) is logged and answered with
  `CreateBackoffResult()`: the next poll waits by RandomizedExponentialBackoffStrategy
  (src/Microsoft.Azure.WebJobs.Host/Timers/RandomizedExponentialBackoffStrategy.cs: the increment
  doubles, +-20 %, capped at maxPollingInterval). The listener keeps polling.
- .../Queues/Listeners/UpdateQueueMessageVisibilityCommand.cs: a failed visibility renewal is
  tried again sooner (LinearSpeedupStrategy); it stops for good only when the pop receipt no longer
  matches or the message or queue is gone.
- .../Queues/QueueProcessor.cs, ReleaseMessageAsync / DeleteMessageAsync: a release or delete that
  fails is not retried by the processor; the message reappears when its visibility timeout ends and
  is delivered again (dequeue count + 1), so a failed invocation is retried, never lost.

The storage path of the host goes through bench/storage_proxy.py; an outage closes its ports and
cuts every connection.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

import azure.functions as func
import pytest

from bench.storage_proxy import StorageFaultProxy
from devstack.azurite import Azurite
from devstack.host.queue_listener import next_poll_delay
from tests.apps.recorder import Recorder
from tests.plugins.stack import Queues, fast_host_json

STORAGE = "AzureWebJobsStorage"


def slow_echo_app(recorder: Recorder, seconds: float) -> func.FunctionApp:
    """Works `seconds`, then echoes to the output queue (written by the host after the function)."""
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%", connection=STORAGE)
    @app.queue_output(arg_name="out", queue_name="%OUT_QUEUE%", connection=STORAGE)
    async def slow_echo(msg: func.QueueMessage, out: func.Out[str]) -> None:
        body = msg.get_body().decode()
        recorder.add(("started", body))
        await asyncio.sleep(seconds)
        out.set(f"echo:{body}")

    return app


def test_poll_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    delays = [0.1]
    for _ in range(12):
        delays.append(next_poll_delay(delays[-1], 0.1, 2.0))
    assert 0.16 <= delays[1] <= 0.24
    assert all(later >= earlier for earlier, later in itertools.pairwise(delays))
    assert delays[-1] == 2.0


async def test_an_outage_under_the_host_loses_nothing_and_the_listener_keeps_polling(
    start_host, queues: Queues, azurite: Azurite, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="devstack.host")
    recorder, source, target = Recorder(), queues.new("in"), queues.new("out")
    async with StorageFaultProxy(azurite.ports) as proxy:
        settings = {STORAGE: proxy.connection_string, "IN_QUEUE": source, "OUT_QUEUE": target}
        host_json = fast_host_json(messageEncoding="none")
        async with start_host(slow_echo_app(recorder, 1.0), settings, host_json, lease_seconds=4) as host:
            await queues.send(source, "first")  # the test's own client talks to Azurite directly
            await recorder.wait_for(lambda events: ("started", "first") in events)
            # Longer than the host's storage retries (about 9 s): the output write of "first"
            # fails, and so do the polls; "second" arrives while the host cannot see it.
            proxy.begin_outage()
            await queues.send(source, "second")
            await asyncio.sleep(10.0)
            await proxy.end_outage()
            await recorder.wait_for(lambda events: ("started", "second") in events, timeout=30)
            await host.drain([source], timeout=30)

    messages = [record.getMessage() for record in caplog.records if record.name == "devstack.host"]
    assert "queue receive failed" in messages  # the listener met the outage ...
    assert "function failed" in messages  # ... and so did the invocation in flight
    assert sorted(await queues.read_all(target)) == ["echo:first", "echo:second"]  # each once
    assert recorder.snapshot().count(("started", "first")) == 2  # failed, then retried
    assert await queues.read_all(f"{source}-poison") == []
