"""The Intune Graph simulator: an aiohttp app serving the managedDevices routes of Microsoft
Graph (v1.0 and beta) plus a control API under /_sim/ for tests and the local demo.

    async with start_simulator(complete_after=None) as sim:
        sim.url        # http://127.0.0.1:PORT (Graph root; append /v1.0 or /beta)
        sim.token      # the bearer token Graph routes require
        sim.control    # SimulatorControl (HTTP client of the control API)
        sim.state      # SimulatorState (direct, in-process access)
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import math
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web

from . import odata, platforms, schema
from .control import SimulatorControl
from .directory import DirectoryError, select_member
from .state import (
    DEFAULT_TOKEN,
    FaultRule,
    SimulatorConfig,
    SimulatorError,
    SimulatorState,
    ThrottleConfig,
    iso,
)

__all__ = [
    "DEFAULT_TOKEN",
    "RunningSimulator",
    "SimulatorConfig",
    "SimulatorState",
    "ThrottleConfig",
    "create_app",
    "is_loopback",
    "start_simulator",
]

GRAPH_JSON: Final = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
STATE_KEY: Final = web.AppKey("simulator_state", SimulatorState)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class _Call:
    """Per-request context: ids echoed in headers/bodies and the call-log entry."""

    request_id: str
    client_request_id: str
    entry: dict[str, Any]


@dataclass(frozen=True)
class _Route:
    kind: str | None  # "device" | "list" | "action" | None (not a simulated route)
    device_id: str | None = None
    action: str | None = None
    segment: str | None = None  # first segment Graph would not recognise


def _route(tail: str) -> _Route:
    parts = [p for p in tail.split("/") if p]
    lowered = [p.lower() for p in parts]
    # Entra groups and users (devstack/simulator/directory.py); `device_id` carries the object id.
    if lowered[:1] == ["groups"] and len(parts) == 2:
        return _Route("group", device_id=parts[1])
    if lowered[:1] == ["groups"] and len(parts) == 3 and lowered[2] == "transitivemembers":
        return _Route("groupMembers", device_id=parts[1])
    if lowered[:1] == ["users"] and len(parts) == 3 and lowered[2] == "manageddevices":
        return _Route("userDevices", device_id=parts[1])
    if lowered[:2] != ["devicemanagement", "manageddevices"]:
        for part, wanted in zip(parts, ("devicemanagement", "manageddevices"), strict=False):
            if part.lower() != wanted:
                return _Route(None, segment=part)
        return _Route(None, segment=parts[-1] if parts else "")
    if len(parts) == 2:
        return _Route("list")
    if len(parts) == 3:
        return _Route("device", device_id=parts[2])
    if len(parts) == 4:
        action = {a.lower(): a for a in platforms.ACTIONS}.get(lowered[3])
        if action is None:
            return _Route(None, device_id=parts[2], segment=parts[3])
        return _Route("action", device_id=parts[2], action=action)
    return _Route(None, device_id=parts[2], segment=parts[4])


class GraphSimulator:
    """Request handlers bound to one SimulatorState."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    # -- Graph responses ---------------------------------------------------------------------

    @staticmethod
    def _headers(call: _Call) -> dict[str, str]:
        return {
            "request-id": call.request_id,
            "client-request-id": call.client_request_id,
            "x-ms-ags-diagnostic": json.dumps(
                {
                    "ServerInfo": {
                        "DataCenter": "Local",
                        "Slice": "E",
                        "Ring": "0",
                        "ScaleUnit": "000",
                        "RoleInstance": "devstack-simulator",
                    }
                },
                separators=(",", ":"),
            ),
        }

    def _json(
        self, call: _Call, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> web.Response:
        all_headers = {**self._headers(call), "Content-Type": GRAPH_JSON, **(headers or {})}
        return web.Response(status=status, body=json.dumps(body).encode(), headers=all_headers)

    def _error(
        self, call: _Call, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> web.Response:
        body = {
            "error": {
                "code": code,
                "message": message,
                "innerError": {
                    "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": call.request_id,
                    "client-request-id": call.client_request_id,
                },
            }
        }
        return self._json(call, status, body, headers)

    @staticmethod
    def _intune_message(call: _Call, path: str, text: str) -> str:
        """Intune's opaque message format: a JSON document serialised into the message string."""
        service_path = "/" + path.split("/", 2)[2] if path.count("/") >= 2 else path  # drop /v1.0
        inner = {
            "_version": 3,
            "Message": f"{text} - Operation ID (for customer support): 00000000-0000-0000-0000-000000000000"
            f" - Activity ID: {call.request_id} - Url: https://fef.msua01.manage.microsoft.com"
            f"/DeviceFE/StatelessDeviceFEService{service_path}?api-version=2025-10-01",
            "CustomApiErrorPhrase": "",
            "RetryAfter": None,
            "ErrorSourceService": "",
            "HttpHeaders": "{}",
        }
        return json.dumps(inner, indent=2).replace("\n", "\r\n")

    def _fault_response(self, call: _Call, rule: FaultRule, status: int, code: str, message: str) -> web.Response:
        headers: dict[str, str] = {}
        if rule.retry_after is not None and status in (429, 503):
            headers["Retry-After"] = str(math.ceil(rule.retry_after))
        if rule.body == "empty":
            return web.Response(status=status, headers={**self._headers(call), **headers})
        if rule.body == "html":
            html = f"<html><head><title>{status}</title></head><body><h1>{message}</h1></body></html>"
            return web.Response(
                status=status, text=html, content_type="text/html", headers={**self._headers(call), **headers}
            )
        return self._error(call, status, code, message, headers)

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        """Close the connection without answering."""
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=500)  # never reaches the client

    # -- Graph entry point -------------------------------------------------------------------

    async def graph(self, request: web.Request) -> web.StreamResponse:
        version = schema.V1 if request.path.startswith("/v1.0") else schema.BETA
        tail = request.match_info.get("tail", "")
        method = request.method.upper()
        route = _route(tail)
        now = time.time()
        call = _Call(
            request_id=str(uuid.uuid4()),
            client_request_id=request.headers.get("client-request-id") or str(uuid.uuid4()),
            entry={},
        )
        call.entry = self.state.log_call(
            {
                "time": iso(now),
                "method": method,
                "path": request.path,
                "query": dict(request.query),
                "version": version,
                "route": route.kind,
                "deviceId": route.device_id,
                "action": route.action,
                "status": None,
                "fault": None,
                "requestId": call.request_id,
                "clientRequestId": call.client_request_id,
            }
        )
        response = await self._process(request, call, version, method, route)
        if call.entry["fault"] not in ("drop", "drop_after_apply"):
            call.entry["status"] = response.status
        return response

    async def _process(
        self, request: web.Request, call: _Call, version: str, method: str, route: _Route
    ) -> web.StreamResponse:
        config = self.state.config
        auth = request.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if not auth:
            return self._error(
                call,
                401,
                "InvalidAuthenticationToken",
                "Access token is empty.",
                {"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
            )
        if scheme.lower() != "bearer" or token.strip() != config.token:
            return self._error(
                call,
                401,
                "InvalidAuthenticationToken",
                "IDX14100: JWT is not well formed, there are no dots (.).",
                {"WWW-Authenticate": 'Bearer realm="", error="invalid_token"'},
            )

        if config.latency_ms:
            await asyncio.sleep(config.latency_ms / 1000)

        retry_after = self.state.throttle.admit(method)
        if retry_after is not None:
            call.entry["fault"] = "throttled"
            return self._error(
                call,
                429,
                "TooManyRequests",
                self._intune_message(call, request.path, "Too many requests, retry later."),
                {"Retry-After": str(retry_after)} if config.throttle.retry_after else None,
            )

        latency, rule = self.state.pick_faults(method, route.kind, route.device_id, route.action)
        if rule is not None:
            latency += rule.latency_ms
        if latency:
            await asyncio.sleep(latency / 1000)
        if rule is not None:
            call.entry["fault"] = rule.fault
            if rule.fault == "429":
                return self._fault_response(call, rule, 429, "TooManyRequests", "Too many requests, retry later.")
            if rule.fault in self._STATUS_FAULTS:
                return self._status_fault(request, call, rule, rule.fault)
            if rule.fault == "drop":
                return self._drop(request)

        response = self._dispatch(request, call, version, method, route)
        if rule is not None and rule.applies_action:
            kind = rule.fault.removesuffix("_after_apply")
            if kind == "drop":
                return self._drop(request)
            return self._status_fault(request, call, rule, kind)
        return response

    # status, Graph error code, message (500: Intune's opaque message; the others Graph gateway's)
    _STATUS_FAULTS: Final = {
        "500": (500, "InternalServerError", None),
        "502": (502, "BadGateway", "Bad Gateway"),
        "503": (503, "ServiceUnavailable", "The service is temporarily unavailable."),
        "504": (504, "GatewayTimeout", "Gateway Timeout"),
    }

    def _status_fault(self, request: web.Request, call: _Call, rule: FaultRule, kind: str) -> web.Response:
        status, code, message = self._STATUS_FAULTS[kind]
        if message is None:
            message = self._intune_message(call, request.path, "An internal server error has occurred")
        return self._fault_response(call, rule, status, code, message)

    def _dispatch(self, request: web.Request, call: _Call, version: str, method: str, route: _Route) -> web.Response:
        if route.kind is None:
            return self._error(call, 400, "BadRequest", f"Resource not found for the segment '{route.segment}'.")
        expected = "POST" if route.kind == "action" else "GET"
        if method != expected:
            return self._error(
                call,
                405,
                "BadRequest",
                f"No OData route exists that match template ~/singleton/navigation with http verb "
                f"{method} for request {request.path}.",
            )
        query = dict(request.query)
        if route.kind in ("group", "groupMembers", "userDevices"):
            return self._directory(request, call, version, route, query)
        try:
            select = odata.parse_select(odata.query_option(query, "select"), version)
            if route.kind == "list":
                return self._list(request, call, version, query, select)
        except odata.ODataError as exc:
            return self._error(call, 400, "BadRequest", str(exc))
        assert route.device_id is not None
        device_id = self.state.find_device(route.device_id)
        if device_id is None:
            return self._error(
                call,
                404,
                "ResourceNotFound",
                self._intune_message(call, request.path, "Resource not found"),
            )
        if route.kind == "device":
            body = {"@odata.context": self._context(request, version, select, entity=True)}
            body.update(self._render(device_id, version, select, in_list=False, unknown=self._unknown(request)))
            return self._json(call, 200, body, self._preference_applied(request, version))
        assert route.action is not None
        device = self.state.devices[device_id]
        supported = platforms.supports(device, route.action)
        if not supported and self.state.behaviour_of(device_id).unsupported_action != "notSupportedLater":
            return self._error(
                call,
                400,
                "BadRequest",
                self._intune_message(call, request.path, "An error has occurred"),
            )
        self.state.apply_action(
            device_id,
            route.action,
            request_id=call.request_id,
            client_request_id=call.client_request_id,
            not_supported=not supported,
        )
        return web.Response(status=204, headers=self._headers(call))

    # -- Entra groups and users ----------------------------------------------------------------

    def _directory(
        self, request: web.Request, call: _Call, version: str, route: _Route, query: dict[str, str]
    ) -> web.Response:
        assert route.device_id is not None
        root = f"{self._root(request)}/{version}/$metadata"
        directory, devices = self.state.directory, self.state.devices
        not_found = self._error(
            call,
            404,
            "Request_ResourceNotFound",
            f"Resource '{route.device_id}' does not exist or one of its queried reference-property objects "
            "are not present.",
        )
        select_text = odata.query_option(query, "select")
        select = [name.strip() for name in select_text.split(",") if name.strip()] if select_text else None
        if route.kind == "group":
            group = directory.group(route.device_id)
            if group is None:
                return not_found
            body = {"@odata.context": f"{root}#groups/$entity", "id": group["id"], "displayName": group["displayName"]}
            return self._json(call, 200, body)
        if route.kind == "groupMembers":
            if directory.group(route.device_id) is None:
                return not_found
            members = [select_member(m, select) for m in directory.transitive_members(route.device_id, devices)]
            return self._page(request, call, query, f"{root}#directoryObjects", members, maximum=999)
        if directory.user(route.device_id, devices) is None:
            return not_found
        try:
            device_select = odata.parse_select(select_text, version)
        except odata.ODataError as exc:
            return self._error(call, 400, "BadRequest", str(exc))
        ids = directory.user_devices(route.device_id, devices)
        rendered = [self._render(i, version, device_select, in_list=True) for i in ids]
        context = f"{root}#users('{route.device_id}')/managedDevices"
        return self._page(request, call, query, context, rendered, maximum=1000)

    def _page(
        self,
        request: web.Request,
        call: _Call,
        query: dict[str, str],
        context: str,
        values: list[dict[str, Any]],
        *,
        maximum: int,
    ) -> web.Response:
        """One page of a collection: `$top` (default 100, at most `maximum`), `$skiptoken` links."""
        try:
            top = odata.parse_top(odata.query_option(query, "top"))
            token = odata.query_option(query, "skiptoken")
            offset = odata.decode_skiptoken(token) if token is not None else 0
        except odata.ODataError as exc:
            return self._error(call, 400, "BadRequest", str(exc))
        size = min(top or 100, maximum)
        body: dict[str, Any] = {"@odata.context": context, "value": values[offset : offset + size]}
        if offset + size < len(values):
            kept = [(k, v) for k, v in query.items() if k.lower() not in ("$skiptoken", "skiptoken")]
            kept.append(("$skiptoken", odata.encode_skiptoken(offset + size)))
            encoded = "&".join(f"{quote(k, safe='$')}={quote(v, safe='')}" for k, v in kept)
            body["@odata.nextLink"] = f"{self._root(request)}{request.path}?{encoded}"
        return self._json(call, 200, body)

    # -- reads -------------------------------------------------------------------------------

    @staticmethod
    def _root(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def _context(self, request: web.Request, version: str, select: list[str] | None, *, entity: bool) -> str:
        context = f"{self._root(request)}/{version}/$metadata#deviceManagement/managedDevices"
        if select:
            context += f"({','.join(select)})"
        return context + ("/$entity" if entity else "")

    @staticmethod
    def _unknown(request: web.Request) -> bool:
        """`Prefer: include-unknown-enum-members` on the request."""
        return schema.prefers_unknown_enum_members(request.headers.getall("Prefer", []))

    def _preference_applied(self, request: web.Request, version: str) -> dict[str, str] | None:
        if version == schema.BETA and self._unknown(request):
            return {"Preference-Applied": schema.PREFER_UNKNOWN_ENUM_MEMBERS}
        return None

    def _render(
        self, device_id: str, version: str, select: list[str] | None, *, in_list: bool, unknown: bool = False
    ) -> dict[str, Any]:
        device = {**schema.DEVICE_DEFAULTS, **self.state.devices[device_id]}
        navigation = schema.V1_NAVIGATION if version == schema.V1 else schema.BETA_NAVIGATION
        body: dict[str, Any] = {}
        if select is None:
            body["@odata.type"] = schema.ENTITY_TYPE
        for prop in select or schema.properties(version):
            if prop in navigation:
                continue
            if prop == "deviceActionResults":
                # Graph quirk: list calls always return an empty deviceActionResults.
                body[prop] = [] if in_list else self.state.action_results(device_id)
                continue
            value = device.get(prop)
            if version == schema.V1:
                body[prop] = schema.downgrade_enum(prop, value)
            elif not unknown:
                body[prop] = schema.hide_unknown_enum_member(prop, value, self.state.config.unknown_enum_members)
            else:
                body[prop] = value
        return body

    def _list(
        self, request: web.Request, call: _Call, version: str, query: dict[str, str], select: list[str] | None
    ) -> web.Response:
        top = odata.parse_top(odata.query_option(query, "top"))
        skiptoken = odata.query_option(query, "skiptoken")
        offset = odata.decode_skiptoken(skiptoken) if skiptoken is not None else 0
        ids = list(self.state.devices)
        filter_text = odata.query_option(query, "filter")
        condition = odata.parse_eq_filter(filter_text)
        if condition is not None:
            prop, literal = condition
            wanted = literal.lower()
            ids = [i for i in ids if str(self.state.devices[i].get(prop) or "").lower() == wanted]
        prefix = odata.parse_startswith_filter(filter_text)
        mode = self.state.config.startswith
        if prefix is not None and mode != "ignore":
            prop, literal = prefix
            wanted = literal.lower()

            def hit(value: str) -> bool:
                return value.startswith(wanted) if mode == "prefix" else wanted in value

            ids = [i for i in ids if hit(str(self.state.devices[i].get(prop) or "").lower())]
        size = top or self.state.config.page_size
        page = ids[offset : offset + size]
        body: dict[str, Any] = {"@odata.context": self._context(request, version, select, entity=False)}
        count = odata.query_option(query, "count")
        if count is not None and count.lower() == "true":
            body["@odata.count"] = len(ids)
        if offset + size < len(ids):
            kept = [(k, v) for k, v in query.items() if k.lower() not in ("$skiptoken", "skiptoken")]
            kept.append(("$skiptoken", odata.encode_skiptoken(offset + size)))
            encoded = "&".join(f"{quote(k, safe='$')}={quote(v, safe='')}" for k, v in kept)
            body["@odata.nextLink"] = f"{self._root(request)}{request.path}?{encoded}"
        unknown = self._unknown(request)
        body["value"] = [self._render(i, version, select, in_list=True, unknown=unknown) for i in page]
        return self._json(call, 200, body, self._preference_applied(request, version))


# --------------------------------------------------------------------------------------------
# control API (/_sim/...)


class ControlApi:
    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    @staticmethod
    async def _body(request: web.Request) -> Any:
        if not request.can_read_body:
            return {}
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SimulatorError(f"invalid JSON body: {exc}") from exc

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "devices": len(self.state.devices)})

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        return web.json_response({"status": "reset", "devices": len(self.state.devices)})

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.config.to_json())

    async def put_config(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.configure(await self._body(request)))

    async def get_faults(self, request: web.Request) -> web.Response:
        return web.json_response([rule.to_json() for rule in self.state.faults])

    async def post_faults(self, request: web.Request) -> web.Response:
        rules = self.state.add_faults(await self._body(request))
        return web.json_response([rule.to_json() for rule in rules], status=201)

    async def delete_faults(self, request: web.Request) -> web.Response:
        self.state.faults.clear()
        return web.Response(status=204)

    async def get_calls(self, request: web.Request) -> web.Response:
        calls = self.state.calls
        for key in ("method", "deviceId", "action", "route", "version"):
            wanted = request.query.get(key)
            if wanted is not None:
                calls = [c for c in calls if str(c.get(key) or "").lower() == wanted.lower()]
        return web.json_response(calls)

    async def delete_calls(self, request: web.Request) -> web.Response:
        self.state.calls.clear()
        return web.Response(status=204)

    async def get_actions(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.applied)

    async def get_throttle(self, request: web.Request) -> web.Response:
        return web.json_response({**self.state.throttle.usage(), **self.state.config.throttle.to_json()})

    async def list_groups(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.state.directory.groups.values()))

    async def add_group(self, request: web.Request) -> web.Response:
        try:
            group = self.state.directory.add_group(await self._body(request))
        except DirectoryError as exc:
            raise SimulatorError(str(exc)) from exc
        return web.json_response(group, status=201)

    async def list_devices(self, request: web.Request) -> web.Response:
        return web.json_response([self.state.device_view(i) for i in self.state.devices])

    async def add_device(self, request: web.Request) -> web.Response:
        device = self.state.add_device(await self._body(request))
        return web.json_response(self.state.device_view(device["id"]), status=201)

    async def get_device(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.device_view(request.match_info["id"]))

    async def script_device(self, request: web.Request) -> web.Response:
        script = self.state.script_device(request.match_info["id"], await self._body(request))
        return web.json_response(script.to_json())

    async def patch_device(self, request: web.Request) -> web.Response:
        device = self.state.update_device(request.match_info["id"], await self._body(request))
        return web.json_response(self.state.device_view(device["id"]))

    async def get_behaviour(self, request: web.Request) -> web.Response:
        found = self.state.require_device(request.match_info["id"])
        return web.json_response(self.state.behaviour_of(found).to_json())

    async def put_behaviour(self, request: web.Request) -> web.Response:
        behaviour = self.state.set_behaviour(request.match_info["id"], await self._body(request))
        return web.json_response(behaviour.to_json())

    async def delete_behaviour(self, request: web.Request) -> web.Response:
        self.state.clear_behaviour(request.match_info["id"])
        return web.Response(status=204)

    async def delete_device(self, request: web.Request) -> web.Response:
        self.state.remove_device(request.match_info["id"])
        return web.Response(status=204)

    async def complete(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise SimulatorError("body must be an object")
        result = self.state.complete(request.match_info["id"], body.get("state", "done"), body.get("action"))
        return web.json_response(result)


@web.middleware
async def _control_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/_sim/"):
        return await handler(request)
    if not is_loopback(request.remote or ""):
        return web.json_response({"error": "the control API is loopback-only"}, status=403)
    try:
        return await handler(request)
    except SimulatorError as exc:
        return web.json_response({"error": str(exc)}, status=exc.status)


def create_app(state: SimulatorState) -> web.Application:
    app = web.Application(middlewares=[_control_guard])
    app[STATE_KEY] = state
    graph = GraphSimulator(state)
    control = ControlApi(state)
    for version in schema.VERSIONS:
        app.router.add_route("*", f"/{version}/{{tail:.*}}", graph.graph)
    add = app.router.add_route
    add("GET", "/_sim/health", control.health)
    add("POST", "/_sim/reset", control.reset)
    add("GET", "/_sim/config", control.get_config)
    add("PUT", "/_sim/config", control.put_config)
    add("GET", "/_sim/faults", control.get_faults)
    add("POST", "/_sim/faults", control.post_faults)
    add("DELETE", "/_sim/faults", control.delete_faults)
    add("GET", "/_sim/calls", control.get_calls)
    add("DELETE", "/_sim/calls", control.delete_calls)
    add("GET", "/_sim/actions", control.get_actions)
    add("GET", "/_sim/throttle", control.get_throttle)
    add("GET", "/_sim/groups", control.list_groups)
    add("POST", "/_sim/groups", control.add_group)
    add("GET", "/_sim/devices", control.list_devices)
    add("POST", "/_sim/devices", control.add_device)
    add("GET", "/_sim/devices/{id}", control.get_device)
    add("PUT", "/_sim/devices/{id}", control.script_device)
    add("PATCH", "/_sim/devices/{id}", control.patch_device)
    add("DELETE", "/_sim/devices/{id}", control.delete_device)
    add("POST", "/_sim/devices/{id}/complete", control.complete)
    add("GET", "/_sim/devices/{id}/behaviour", control.get_behaviour)
    add("PUT", "/_sim/devices/{id}/behaviour", control.put_behaviour)
    add("DELETE", "/_sim/devices/{id}/behaviour", control.delete_behaviour)
    return app


# --------------------------------------------------------------------------------------------
# running it


@dataclass
class RunningSimulator:
    url: str  # Graph root, no trailing slash: f"{url}/v1.0", f"{url}/beta"
    token: str
    state: SimulatorState
    control: SimulatorControl
    host: str
    port: int

    @property
    def v1_url(self) -> str:
        return f"{self.url}/v1.0"

    @property
    def beta_url(self) -> str:
        return f"{self.url}/beta"

    def reset(self) -> None:
        """In-process reset (same effect as `await control.reset()`)."""
        self.state.reset()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


@asynccontextmanager
async def start_simulator(
    config: SimulatorConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    **overrides: Any,
) -> AsyncIterator[RunningSimulator]:
    """Serve the simulator on loopback (port 0 = a free port) in the running event loop.

    `overrides` are SimulatorConfig fields, e.g. `complete_after=None`, `latency_ms=50`,
    `throttle=ThrottleConfig(post_limit=5, window_seconds=2)`, `token="..."`, `fleet_path=...`.
    """
    if not is_loopback(host):
        raise ValueError(f"the simulator serves loopback only, not {host!r}")
    config = dataclasses.replace(config or SimulatorConfig(), **overrides)
    state = SimulatorState(config)
    runner = web.AppRunner(create_app(state), handle_signals=False, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    sock = _bind("localhost" if host == "localhost" else host, port)
    try:
        site = web.SockSite(runner, sock)
        await site.start()
        real_port = sock.getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        url = f"http://{url_host}:{real_port}"
        control = SimulatorControl(url)
        try:
            yield RunningSimulator(url=url, token=config.token, state=state, control=control, host=host, port=real_port)
        finally:
            await control.aclose()
    finally:
        await runner.cleanup()
        sock.close()
