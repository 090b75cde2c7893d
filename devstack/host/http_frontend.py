"""HTTP triggers: the aiohttp server, routing to functions, function keys, request mapping,
responses and request logs."""

from __future__ import annotations

import hmac
import time
import uuid
from typing import TYPE_CHECKING, Any

import azure.functions as func
from aiohttp import web

from devstack.host.bindings import OutParam
from devstack.host.invoker import context_kwargs, output_kwargs
from devstack.host.logs import CURRENT_INVOCATION, Invocation, elapsed_ms, log
from devstack.host.routes import HttpRoute

if TYPE_CHECKING:
    from devstack.host.context import HostContext


def _request_headers(request: web.Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in request.headers.items():
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


_CHARSET_TYPES = ("text/", "application/json", "application/xml", "application/javascript")


def to_web_response(result: Any) -> web.Response:
    """Map what an HTTP function returned to an aiohttp response like the Python worker does."""
    if result is None:
        return web.Response(status=204)
    if isinstance(result, str | bytes):
        result = func.HttpResponse(result)
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"HTTP function returned {type(result).__name__}, expected func.HttpResponse")
    response = web.Response(status=result.status_code, body=result.get_body())
    for key, value in result.headers.items():
        response.headers.add(key, value)
    if "Content-Type" not in response.headers:
        mimetype = result.mimetype
        wants_charset = mimetype.startswith(_CHARSET_TYPES) or mimetype.endswith("+json")
        response.headers["Content-Type"] = f"{mimetype}; charset={result.charset}" if wants_charset else mimetype
    return response


class HttpFrontend:
    """The aiohttp server: routing, keys, request mapping and request logs."""

    def __init__(self, host: HostContext, routes: list[HttpRoute]) -> None:
        self._host = host
        # Most literal segments first, like ASP.NET routing precedence; catch-alls last.
        self._routes = sorted(routes, key=lambda r: (-r.literal_segments, "{*" in r.template))
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, bind: str, port: int) -> None:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=self._host.shutdown_timeout
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, bind, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop accepting connections; requests in progress get up to the shutdown timeout."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        raw_path = request.raw_path.split("?", 1)[0]
        route, route_params, response = self._route(request.method, raw_path)
        if route is not None and response is None:
            response = await self._serve(request, route, route_params or {})
        assert response is not None
        log.info(
            "http request",
            extra={
                "method": request.method,
                "route": f"/{route.template}" if route else raw_path,
                "function": route.definition.name if route else None,
                "status": response.status,
                "duration_ms": elapsed_ms(started),
            },
        )
        return response

    def _route(
        self, method: str, raw_path: str
    ) -> tuple[HttpRoute | None, dict[str, str] | None, web.Response | None]:
        """The matching route and its parameters, or the 404/405 response to send."""
        matched = [(route, params) for route in self._routes if (params := route.match(raw_path)) is not None]
        if not matched:
            if raw_path in ("", "/"):
                return None, None, web.Response(text="devstack host is running")
            return None, None, web.Response(status=404)
        for route, params in matched:
            if route.allows(method.upper()):
                return route, params, None
        allowed = sorted({m for route, _ in matched for m in (route.trigger.methods or ())})
        return matched[0][0], None, web.Response(status=405, headers={"Allow": ", ".join(allowed)})

    def _authorized(self, request: web.Request, route: HttpRoute) -> bool:
        if route.trigger.auth_level == "anonymous":
            return True
        supplied = request.headers.get("x-functions-key") or request.query.get("code") or ""
        return hmac.compare_digest(supplied.encode(), self._host.function_key.encode())

    async def _serve(self, request: web.Request, route: HttpRoute, route_params: dict[str, str]) -> web.Response:
        if not self._authorized(request, route):
            return web.Response(status=401)
        definition = route.definition
        http_request = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=_request_headers(request),
            params=dict(request.query),
            route_params=route_params,
            body=await request.read(),
        )
        invocation_id = str(uuid.uuid4())
        CURRENT_INVOCATION.set(Invocation(definition.name, invocation_id))
        fields = {"function": definition.name, "invocation_id": invocation_id, "trigger": "http"}
        outs = output_kwargs(definition)
        http_out = OutParam() if definition.http_output not in (None, "$return") else None
        kwargs: dict[str, Any] = {definition.trigger.param: http_request, **outs}
        if http_out is not None and definition.http_output:
            kwargs[definition.http_output] = http_out
        kwargs.update(context_kwargs(definition, invocation_id))
        started = time.monotonic()
        log.info("function started", extra=fields)
        self._host.http_in_flight += 1
        try:
            result = await self._host.invoker.invoke(definition, invocation_id, kwargs)
            await self._host.write_outputs(definition, outs, result)
            response = to_web_response(http_out.get() if http_out is not None else result)
        except Exception:
            log.exception("function failed", extra={**fields, "duration_ms": elapsed_ms(started)})
            return web.Response(status=500)
        finally:
            self._host.http_in_flight -= 1
        log.info("function succeeded", extra={**fields, "duration_ms": elapsed_ms(started)})
        return response
