"""Azure Functions entrypoints (Python v2 programming model): bindings and translation only.

Every function hands the message to a use case in `shared.workflow` (queues) or `shared.http_api`
(HTTP) with the adapters built by `shared.bootstrap`; nothing below this file imports `azure.functions`.
"""

from __future__ import annotations

import azure.functions as func

from shared import http_api
from shared.bootstrap import LazyRuntime, validate_environment
from shared.workflow import handle_followup, handle_followup_poison, handle_request, handle_request_poison

# Start-up check: a bad setting stops the app here with a message naming the setting, instead of
# every invocation failing and pushing requests to the poison queue.
validate_environment()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
runtime = LazyRuntime()
STORAGE = "AzureWebJobsStorage"


@app.function_name("reset_request")
@app.queue_trigger(arg_name="msg", queue_name="%RESET_REQUESTS_QUEUE%", connection=STORAGE)
async def reset_request(msg: func.QueueMessage) -> None:
    services = (await runtime.get()).services
    await handle_request(msg.get_body(), services, message_id=msg.id or "")


@app.function_name("reset_request_poison")
@app.queue_trigger(arg_name="msg", queue_name="%RESET_REQUESTS_QUEUE%-poison", connection=STORAGE)
async def reset_request_poison(msg: func.QueueMessage) -> None:
    services = (await runtime.get()).services
    await handle_request_poison(msg.get_body(), services, message_id=msg.id or "")


@app.function_name("reset_followup")
@app.queue_trigger(arg_name="msg", queue_name="%RESET_FOLLOWUPS_QUEUE%", connection=STORAGE)
async def reset_followup(msg: func.QueueMessage) -> None:
    services = (await runtime.get()).services
    await handle_followup(msg.get_body(), services)


@app.function_name("reset_followup_poison")
@app.queue_trigger(arg_name="msg", queue_name="%RESET_FOLLOWUPS_QUEUE%-poison", connection=STORAGE)
async def reset_followup_poison(msg: func.QueueMessage) -> None:
    services = (await runtime.get()).services
    await handle_followup_poison(msg.get_body(), services)


# ---------------------------------------------------------------- HTTP API (SPEC section 7)


async def _api() -> http_api.ApiServices:
    return http_api.api_services(await runtime.get())


def _call(req: func.HttpRequest) -> http_api.HttpCall:
    return http_api.HttpCall.of(
        req.method, req.url, dict(req.headers), dict(req.params), dict(req.route_params), req.get_body()
    )


def _response(answer: http_api.HttpAnswer) -> func.HttpResponse:
    return func.HttpResponse(body=answer.body, status_code=answer.status, headers=answer.headers)


@app.function_name("submit_reset")
@app.route(route="resets", methods=["POST"])
async def submit_reset(req: func.HttpRequest) -> func.HttpResponse:
    return _response(await http_api.submit_reset(_call(req), await _api()))


@app.function_name("get_reset_status")
@app.route(route="resets/{requestId}", methods=["GET"])
async def get_reset_status(req: func.HttpRequest) -> func.HttpResponse:
    return _response(await http_api.get_reset_status(_call(req), await _api()))


@app.function_name("reveal_passcode")
@app.route(route="resets/{requestId}/passcode", methods=["GET"])
async def reveal_passcode(req: func.HttpRequest) -> func.HttpResponse:
    return _response(await http_api.reveal_passcode(_call(req), await _api()))


@app.function_name("openapi_document")
@app.route(route="openapi.json", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def openapi_document(req: func.HttpRequest) -> func.HttpResponse:
    return _response(http_api.openapi_answer(_call(req)))


@app.function_name("health")
@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    return _response(await http_api.check_health(_api))
