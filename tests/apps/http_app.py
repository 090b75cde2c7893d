"""HTTP test app; module-level ``app`` so it also runs as ``python -m devstack host --app
tests.apps.http_app:app``. ``HTTP_OUT_QUEUE`` names the queue of the enqueue route."""

from __future__ import annotations

import json

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def _json(payload: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload), status_code=status, mimetype="application/json")


@app.route(route="resets/{requestId}", methods=["GET"])
def get_reset(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route": "status", "requestId": req.route_params["requestId"], "params": dict(req.params)})


@app.route(route="resets/{requestId}/passcode", methods=["GET"])
async def get_passcode(req: func.HttpRequest) -> func.HttpResponse:
    return _json({"route": "passcode", "requestId": req.route_params["requestId"]})


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("ok")


@app.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("unhandled failure inside an HTTP function")


@app.route(route="echo", methods=["POST", "PUT"], auth_level=func.AuthLevel.ANONYMOUS)
def echo(req: func.HttpRequest) -> func.HttpResponse:
    payload = {"method": req.method, "body": req.get_body().decode(), "header": req.headers.get("x-test")}
    return func.HttpResponse(
        json.dumps(payload),
        status_code=201,
        headers={"X-Echo": "yes"},
        mimetype="application/problem+json",
    )


@app.route(route="enqueue", methods=["POST"])
@app.queue_output(arg_name="out", queue_name="%HTTP_OUT_QUEUE%", connection="AzureWebJobsStorage")
def enqueue(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    out.set(req.get_body().decode())
    if req.params.get("fail") == "1":
        raise RuntimeError("failed after setting the output")
    return func.HttpResponse(status_code=202)
