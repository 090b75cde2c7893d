"""Azure Functions entrypoints (Python v2 programming model): bindings and translation only.

Every function hands the message to a use case in `shared.workflow` with the adapters built by
`shared.bootstrap`; nothing below this file imports `azure.functions`.
"""

from __future__ import annotations

import azure.functions as func

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
