"""Azure Functions entrypoints (Python v2 programming model): bindings and translation only.

Every function hands the message to a use case in `shared.workflow` (queues) or `shared.api` (HTTP)
with the adapters built by `shared.bootstrap`; nothing below this file imports `azure.functions`
(import-linter checks it). The contract these functions serve: docs/contract.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import azure.functions as func

from shared.adapters import azure_monitor
from shared.api import approvals, batches, openapi, resets
from shared.api import health as health_api
from shared.api.http import HttpAnswer, HttpCall, serve
from shared.api.services import ApiServices
from shared.bootstrap import LazyRuntime, validate_environment
from shared.core.errors import StorageUnavailable
from shared.observability import telemetry
from shared.workflow import handle_followup, handle_followup_poison, handle_request, handle_request_poison
from shared.workflow.batches import BatchServices, handle_batch_message, handle_batch_poison
from shared.workflow.eventgrid import forward_event, handle_forward_poison

# Start-up check: a bad setting stops the app here with a message naming the setting, instead of
# every invocation failing and pushing requests to the poison queue.
validate_environment()
# Application Insights (OpenTelemetry) only when APPLICATIONINSIGHTS_CONNECTION_STRING is set.
azure_monitor.configure_from_environment()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
runtime = LazyRuntime()
STORAGE = "AzureWebJobsStorage"


def _invocation(context: func.Context) -> contextlib.AbstractContextManager[None]:
    """The invocation's log fields and the trace context the Functions host started for it. The
    Python worker's trace context spells it `Traceparent`/`Tracestate`; the azure-functions types
    (and the devstack host) `trace_parent`/`trace_state`."""
    trace = getattr(context, "trace_context", None)
    return telemetry.invocation(
        invocation_id=context.invocation_id,
        function_name=context.function_name,
        trace_context={
            "traceparent": _first_attribute(trace, "Traceparent", "trace_parent"),
            "tracestate": _first_attribute(trace, "Tracestate", "trace_state"),
        },
    )


def _first_attribute(source: Any, *names: str) -> Any:
    for name in names:
        value = getattr(source, name, None)
        if value:
            return value
    return None


@app.function_name("reset_request")
@app.queue_trigger(arg_name="msg", queue_name="%RESET_REQUESTS_QUEUE%", connection=STORAGE)
async def reset_request(msg: func.QueueMessage, context: func.Context) -> None:
    with _invocation(context):
        services = (await runtime.get()).services
        await handle_request(msg.get_body(), services, message_id=msg.id or "")


@app.function_name("reset_request_poison")
@app.queue_trigger(arg_name="msg", queue_name="%RESET_REQUESTS_QUEUE%-poison", connection=STORAGE)
async def reset_request_poison(msg: func.QueueMessage, context: func.Context) -> None:
    with _invocation(context):
        services = (await runtime.get()).services
        await handle_request_poison(msg.get_body(), services, message_id=msg.id or "")


@app.function_name("reset_followup")
@app.queue_trigger(arg_name="msg", queue_name="%RESET_FOLLOWUPS_QUEUE%", connection=STORAGE)
async def reset_followup(msg: func.QueueMessage, context: func.Context) -> None:
    with _invocation(context):
        services = (await runtime.get()).services
        await handle_followup(msg.get_body(), services)


@app.function_name("reset_followup_poison")
@app.queue_trigger(arg_name="msg", queue_name="%RESET_FOLLOWUPS_QUEUE%-poison", connection=STORAGE)
async def reset_followup_poison(msg: func.QueueMessage, context: func.Context) -> None:
    with _invocation(context):
        services = (await runtime.get()).services
        await handle_followup_poison(msg.get_body(), services)


# The Event Grid outbox (docs/contract.md#event-grid-delivery): named after the results queue, so no
# setting of its own has to be present for the binding (docs/decisions/0021-event-grid-outbox.md).
@app.function_name("eventgrid_forward")
@app.queue_trigger(arg_name="msg", queue_name="%RESET_RESULTS_QUEUE%-eventgrid", connection=STORAGE)
async def eventgrid_forward(msg: func.QueueMessage, context: func.Context) -> None:
    with _invocation(context):
        await forward_event(msg.get_body().decode("utf-8", "replace"), (await runtime.get()).eventgrid)


@app.function_name("eventgrid_forward_poison")
@app.queue_trigger(arg_name="msg", queue_name="%RESET_RESULTS_QUEUE%-eventgrid-poison", connection=STORAGE)
async def eventgrid_forward_poison(msg: func.QueueMessage, context: func.Context) -> None:
    with _invocation(context):
        await handle_forward_poison(msg.get_body().decode("utf-8", "replace"), (await runtime.get()).eventgrid)


# Batches (docs/contract.md#batches): upstream batches and the steps of every batch's chain.
async def _batches() -> BatchServices:
    batch_services = (await runtime.get()).batches
    if batch_services is None:
        raise StorageUnavailable("batches need a blob endpoint (AzureWebJobsStorage__blobServiceUri)")
    return batch_services


@app.function_name("reset_batch")
@app.queue_trigger(arg_name="msg", queue_name="%RESET_BATCHES_QUEUE%", connection=STORAGE)
async def reset_batch(msg: func.QueueMessage, context: func.Context) -> None:
    with _invocation(context):
        await handle_batch_message(msg.get_body(), await _batches(), message_id=msg.id or "")


@app.function_name("reset_batch_poison")
@app.queue_trigger(arg_name="msg", queue_name="%RESET_BATCHES_QUEUE%-poison", connection=STORAGE)
async def reset_batch_poison(msg: func.QueueMessage, context: func.Context) -> None:
    with _invocation(context):
        await handle_batch_poison(msg.get_body(), await _batches(), message_id=msg.id or "")


# ---------------------------------------------------------------- HTTP API (docs/contract.md#http-api)


async def _api() -> ApiServices:
    return (await runtime.get()).api


async def _batch_api() -> batches.BatchApi:
    return batches.BatchApi(await _batches(), require_roles=(await runtime.get()).settings.auth_require_roles)


def _call(req: func.HttpRequest) -> HttpCall:
    return HttpCall.of(req.method, req.url, dict(req.headers), dict(req.params), dict(req.route_params), req.get_body())


def _response(answer: HttpAnswer) -> func.HttpResponse:
    return func.HttpResponse(body=answer.body, status_code=answer.status, headers=answer.headers)


class _HttpInvocation:
    def __init__(self, call: HttpCall, span: telemetry.SpanHandle) -> None:
        self.call = call
        self._span = span

    def respond(self, answer: HttpAnswer) -> func.HttpResponse:
        self._span.http_status(answer.status)
        return _response(answer)


@contextlib.contextmanager
def _http(req: func.HttpRequest, context: func.Context, route: str) -> Iterator[_HttpInvocation]:
    """One HTTP invocation: log fields and a server span continuing the caller's `traceparent`."""
    call = _call(req)
    with _invocation(context), telemetry.http_request_span(call.method, call.url, route, call.headers) as span:
        yield _HttpInvocation(call, span)


ROUTE_RESETS = "resets"
ROUTE_STATUS = "resets/{requestId}"
ROUTE_PASSCODE = "resets/{requestId}/passcode"
ROUTE_APPROVAL = "resets/{requestId}/approval"
ROUTE_BATCHES = "batches"
ROUTE_BATCH = "batches/{batchId}"
ROUTE_BATCH_ITEMS = "batches/{batchId}/items"
ROUTE_BATCH_APPROVAL = "batches/{batchId}/approval"
ROUTE_OPENAPI = "openapi.json"
ROUTE_HEALTH = "health"


@app.function_name("submit_reset")
@app.route(route=ROUTE_RESETS, methods=["POST"])
async def submit_reset(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    with _http(req, context, ROUTE_RESETS) as http:
        return http.respond(await serve(resets.submit_reset, http.call, _api))


@app.function_name("get_reset_status")
@app.route(route=ROUTE_STATUS, methods=["GET"])
async def get_reset_status(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    with _http(req, context, ROUTE_STATUS) as http:
        return http.respond(await serve(resets.get_reset_status, http.call, _api))


@app.function_name("reveal_passcode")
@app.route(route=ROUTE_PASSCODE, methods=["GET"])
async def reveal_passcode(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    with _http(req, context, ROUTE_PASSCODE) as http:
        return http.respond(await serve(resets.reveal_passcode, http.call, _api))


@app.function_name("decide_approval")
@app.route(route=ROUTE_APPROVAL, methods=["POST"])
async def decide_approval(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    with _http(req, context, ROUTE_APPROVAL) as http:
        return http.respond(await serve(approvals.decide_approval, http.call, _api))


@app.function_name("submit_batch")
@app.route(route=ROUTE_BATCHES, methods=["POST"])
async def submit_batch(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    with _http(req, context, ROUTE_BATCHES) as http:
        return http.respond(await serve(batches.submit_batch, http.call, _batch_api))


@app.function_name("get_batch")
@app.route(route=ROUTE_BATCH, methods=["GET"])
async def get_batch(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    with _http(req, context, ROUTE_BATCH) as http:
        return http.respond(await serve(batches.get_batch, http.call, _batch_api))


@app.function_name("get_batch_items")
@app.route(route=ROUTE_BATCH_ITEMS, methods=["GET"])
async def get_batch_items(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    with _http(req, context, ROUTE_BATCH_ITEMS) as http:
        return http.respond(await serve(batches.get_batch_items, http.call, _batch_api))


@app.function_name("decide_batch_approval")
@app.route(route=ROUTE_BATCH_APPROVAL, methods=["POST"])
async def decide_batch_approval(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    with _http(req, context, ROUTE_BATCH_APPROVAL) as http:
        return http.respond(await serve(batches.decide_batch_approval, http.call, _batch_api))


@app.function_name("openapi_document")
@app.route(route=ROUTE_OPENAPI, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def openapi_document(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    with _http(req, context, ROUTE_OPENAPI) as http:
        return http.respond(openapi.openapi_answer(http.call))


@app.function_name("health")
@app.route(route=ROUTE_HEALTH, methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    with _http(req, context, ROUTE_HEALTH) as http:
        return http.respond(await health_api.check_health(_api))
