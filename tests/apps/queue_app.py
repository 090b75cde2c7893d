"""Queue-triggered test apps, one small FunctionApp per scenario (built per test, so each host
indexes only what the test needs). Queue names come from settings, as in the product app."""

from __future__ import annotations

import asyncio
import logging

import azure.functions as func

from tests.apps.recorder import Recorder

STORAGE = "AzureWebJobsStorage"
app_log = logging.getLogger("tests.apps.queue_app")


def always_failing_app(recorder: Recorder) -> func.FunctionApp:
    """Fails every invocation: the message must end in ``<queue>-poison``."""
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%", connection=STORAGE)
    def always_fails(msg: func.QueueMessage) -> None:
        recorder.add(msg.dequeue_count)
        raise RuntimeError("this function always fails")

    return app


def output_app(recorder: Recorder) -> func.FunctionApp:
    """Echoes to the output queue; ``fail`` sets the output and then raises; ``many`` writes a list."""
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%", connection=STORAGE)
    @app.queue_output(arg_name="out", queue_name="%OUT_QUEUE%", connection=STORAGE)
    def echo(msg: func.QueueMessage, out: func.Out[str]) -> None:
        body = msg.get_body().decode()
        recorder.add(body)
        if body == "many":
            out.set(["first", "second"])  # type: ignore[arg-type]  # a list writes several messages
            return
        out.set(f"echo:{body}")
        if body == "fail":
            raise RuntimeError("failed after setting the output")

    return app


def bytes_app(recorder: Recorder) -> func.FunctionApp:
    """Records the exact body bytes and writes them back unchanged as bytes."""
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%", connection=STORAGE)
    @app.queue_output(arg_name="out", queue_name="%OUT_QUEUE%", connection=STORAGE)
    async def passthrough(msg: func.QueueMessage, out: func.Out[bytes]) -> None:
        recorder.add(msg.get_body())
        out.set(msg.get_body())

    return app


def sleeping_app(recorder: Recorder, seconds: float) -> func.FunctionApp:
    """Async function that sleeps: concurrency gauge and shutdown with in-flight work."""
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%", connection=STORAGE)
    async def sleeper(msg: func.QueueMessage, context: func.Context) -> None:
        recorder.enter()
        recorder.add(("started", msg.get_body().decode(), context.invocation_id))
        try:
            await asyncio.sleep(seconds)
        finally:
            recorder.leave()
        recorder.add(("finished", msg.get_body().decode(), context.invocation_id))

    return app


def logging_app(recorder: Recorder) -> func.FunctionApp:
    """Logs through the standard logging module with ``extra`` fields and reads its context."""
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%IN_QUEUE%", connection=STORAGE)
    def chatty(msg: func.QueueMessage, context: func.Context) -> None:
        app_log.info("processing request", extra={"request_id": "REQ-1"})
        recorder.add(
            {
                "invocation_id": context.invocation_id,
                "function_name": context.function_name,
                "function_directory": context.function_directory,
                "trace_parent": context.trace_context.trace_parent,
                "retry_count": context.retry_context.retry_count,
            }
        )
        if msg.dequeue_count == 1:
            raise ValueError("first attempt fails")

    return app


def token_app(recorder: Recorder) -> func.FunctionApp:
    """Queue names with embedded ``%TOKENS%``, like ``%RESET_REQUESTS_QUEUE%-poison``."""
    app = func.FunctionApp()

    @app.queue_trigger(arg_name="msg", queue_name="%QUEUE_PREFIX%-in", connection=STORAGE)
    @app.queue_output(arg_name="out", queue_name="%QUEUE_PREFIX%-%OUT_SUFFIX%", connection=STORAGE)
    def tokens(msg: func.QueueMessage, out: func.Out[str]) -> None:
        recorder.add(msg.get_body().decode())
        out.set("done")

    return app


def two_queues_app(recorder: Recorder) -> func.FunctionApp:
    """`first` reads %FIRST_QUEUE%, `second` %SECOND_QUEUE%; each records `<name>:<body>`."""
    app = func.FunctionApp()

    @app.function_name("first")
    @app.queue_trigger(arg_name="msg", queue_name="%FIRST_QUEUE%", connection=STORAGE)
    def first(msg: func.QueueMessage) -> None:
        recorder.add(f"first:{msg.get_body().decode()}")

    @app.function_name("second")
    @app.queue_trigger(arg_name="msg", queue_name="%SECOND_QUEUE%", connection=STORAGE)
    def second(msg: func.QueueMessage) -> None:
        recorder.add(f"second:{msg.get_body().decode()}")

    return app
