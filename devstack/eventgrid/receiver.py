"""A local stand-in for an Azure Event Grid custom topic with the CloudEvents 1.0 input schema.

It checks every publish the way Event Grid's topic endpoint does (sources in docs/devstack.md,
"Event Grid receiver") and records what it accepted:

- `POST /api/events?api-version=...`; `aeg-sas-key: <key>` (the local key; Entra tokens and SAS
  tokens are answered 401, there is no Entra ID here);
- `Content-Type: application/cloudevents-batch+json; charset=utf-8` with a JSON array of events,
  or `application/cloudevents+json` with one event;
- each event: an object with the CloudEvents 1.0 required attributes `id`, `source`, `type`
  (non-empty strings) and `specversion` "1.0", extension attribute names of lowercase letters and
  digits, not both `data` and `data_base64`;
- at most 1 MB per event and per request, at most 5,000 events per request.

Answers as Event Grid does: 200 with an empty body; 400 / 401 / 413 with
`{"error": {"code", "message"}}`. Faults (`POST /_eg/faults`) answer a status (500, 503, 403, ...)
for some seconds or some requests, before anything is checked or recorded.

Control API (no key): `GET /_eg/events` (accepted events, in order, duplicates included),
`GET /_eg/attempts` (every publish: status, events, time), `POST /_eg/faults`
`{"status": 500, "seconds": 5}` or `{"status": 403, "count": 3}`, `DELETE /_eg/faults`,
`DELETE /_eg/events` (forget everything), `GET /_eg/health`.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

MAX_EVENT_BYTES: Final = 1024 * 1024  # "Event size: 1 MB" (Event Grid quotas and limits)
MAX_REQUEST_BYTES: Final = 1024 * 1024  # a publish request (the batch) is limited to 1 MB too
MAX_EVENTS_PER_REQUEST: Final = 5000  # "Number of incoming events per batch: 5,000"
BATCH_TYPE: Final = "application/cloudevents-batch+json"
SINGLE_TYPE: Final = "application/cloudevents+json"
REQUIRED: Final = ("id", "source", "type")
CONTEXT_ATTRIBUTES: Final = frozenset(
    {"id", "source", "type", "specversion", "time", "subject", "datacontenttype", "dataschema", "data", "data_base64"}
)
_EXTENSION_NAME: Final = re.compile(r"^[a-z0-9]{1,20}$")
STATE_KEY: Final = web.AppKey("eventgrid_state", "ReceiverState")


@dataclass
class Fault:
    status: int
    until: float | None  # monotonic deadline, or None
    remaining: int | None  # requests left, or None


@dataclass
class ReceiverState:
    key: str
    events: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    fault: Fault | None = None

    def active_fault(self) -> Fault | None:
        fault = self.fault
        if fault is None:
            return None
        if fault.until is not None and time.monotonic() >= fault.until:
            self.fault = None
            return None
        if fault.remaining is not None:
            if fault.remaining <= 0:
                self.fault = None
                return None
            fault.remaining -= 1
        return fault

    def reset(self) -> None:
        self.events.clear()
        self.attempts.clear()
        self.fault = None


class PublishRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _error(status: int, code: str, message: str) -> web.Response:
    body = {"error": {"code": code, "message": message}}
    return web.json_response(body, status=status)


def check_headers(request: web.Request, key: str) -> bool:
    """True for a batch, False for a single event; raises PublishRefused otherwise."""
    if not request.query.get("api-version"):
        raise PublishRefused(400, "BadRequest", "The request is missing the api-version query parameter.")
    if request.headers.get("aeg-sas-key") != key:
        has_other = "aeg-sas-token" in request.headers or "Authorization" in request.headers
        detail = "only aeg-sas-key is accepted locally" if has_other else "aeg-sas-key is missing or wrong"
        raise PublishRefused(401, "Unauthorized", f"The request authorization is not valid: {detail}.")
    content_type = request.headers.get("Content-Type", "")
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    charset = params.strip().lower()
    if charset and charset.replace(" ", "") != "charset=utf-8":
        raise PublishRefused(400, "BadRequest", f"Unsupported charset in Content-Type {content_type!r}.")
    if media == BATCH_TYPE:
        return True
    if media == SINGLE_TYPE:
        return False
    raise PublishRefused(
        400, "BadRequest", f"Content-Type {content_type!r} is not {BATCH_TYPE} or {SINGLE_TYPE} (CloudEvents topic)."
    )


def check_events(body: bytes, batch: bool) -> list[dict[str, Any]]:
    """The events of a publish, or PublishRefused naming the first problem (and its index)."""
    if len(body) > MAX_REQUEST_BYTES:
        raise PublishRefused(413, "PayloadTooLarge", f"The request is {len(body)} bytes; the limit is 1 MB.")
    try:
        document = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PublishRefused(400, "BadRequest", f"The body is not UTF-8 JSON: {exc}") from exc
    if batch and not isinstance(document, list):
        raise PublishRefused(400, "BadRequest", f"A {BATCH_TYPE} body must be a JSON array of events.")
    events = document if batch else [document]
    if not events:
        raise PublishRefused(400, "BadRequest", "The batch holds no event.")
    if len(events) > MAX_EVENTS_PER_REQUEST:
        raise PublishRefused(413, "PayloadTooLarge", f"{len(events)} events; at most 5,000 per request.")
    for index, event in enumerate(events):
        _check_event(index, event)
    return events


def _check_event(index: int, event: Any) -> None:
    where = f"event [{index}]"
    if not isinstance(event, dict):
        raise PublishRefused(400, "BadRequest", f"{where} is not a JSON object.")
    size = len(json.dumps(event, separators=(",", ":")).encode())
    if size > MAX_EVENT_BYTES:
        raise PublishRefused(413, "PayloadTooLarge", f"{where} is {size} bytes; the limit is 1 MB per event.")
    if event.get("specversion") != "1.0":
        raise PublishRefused(400, "BadRequest", f"{where}: specversion must be '1.0'.")
    for name in REQUIRED:
        if not isinstance(event.get(name), str) or not event[name]:
            raise PublishRefused(400, "BadRequest", f"{where}: required attribute '{name}' is missing or empty.")
    if "data" in event and "data_base64" in event:
        raise PublishRefused(400, "BadRequest", f"{where}: 'data' and 'data_base64' are exclusive.")
    for name in event.keys() - CONTEXT_ATTRIBUTES:
        if not _EXTENSION_NAME.match(name):
            raise PublishRefused(
                400, "BadRequest", f"{where}: attribute name {name!r} is not lowercase letters and digits."
            )


async def publish(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body = await request.read()
    attempt: dict[str, Any] = {"at": time.time(), "bytes": len(body)}
    state.attempts.append(attempt)
    fault = state.active_fault()
    if fault is not None:
        attempt["status"] = fault.status
        return _error(fault.status, "InjectedFault", "Injected by the devstack Event Grid receiver.")
    try:
        events = check_events(body, check_headers(request, state.key))
    except PublishRefused as refused:
        attempt.update(status=refused.status, error=str(refused))
        return _error(refused.status, refused.code, str(refused))
    attempt.update(status=200, events=len(events), ids=[e["id"] for e in events])
    received = time.time()
    state.events.extend({"receivedAt": received, "event": event} for event in events)
    for event in events:
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        print(
            f"eventgrid: accepted {event['id']} {event['type']} subject={event.get('subject')} "
            f"status={(data or {}).get('status')}",
            flush=True,
        )
    return web.Response(status=200)


async def get_events(request: web.Request) -> web.Response:
    return web.json_response({"events": request.app[STATE_KEY].events})


async def get_attempts(request: web.Request) -> web.Response:
    return web.json_response({"attempts": request.app[STATE_KEY].attempts})


async def reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return web.json_response({"status": "reset"})


async def add_fault(request: web.Request) -> web.Response:
    try:
        spec = await request.json()
        status = int(spec["status"])
        seconds = spec.get("seconds")
        count = spec.get("count")
        if not 400 <= status <= 599 or (seconds is None) == (count is None):
            raise ValueError("give a status 400-599 and exactly one of seconds, count")
    except (ValueError, KeyError, TypeError) as exc:
        return _error(400, "BadRequest", f"fault: {exc}")
    until = time.monotonic() + float(seconds) if seconds is not None else None
    request.app[STATE_KEY].fault = Fault(status, until, int(count) if count is not None else None)
    return web.json_response({"status": status, "seconds": seconds, "count": count})


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE_KEY].fault = None
    return web.json_response({"status": "cleared"})


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    return web.json_response({"status": "ok", "events": len(state.events), "attempts": len(state.attempts)})


def create_app(key: str) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST_BYTES + 64 * 1024)
    app[STATE_KEY] = ReceiverState(key)
    app.router.add_post("/api/events", publish)
    app.router.add_get("/_eg/events", get_events)
    app.router.add_delete("/_eg/events", reset)
    app.router.add_get("/_eg/attempts", get_attempts)
    app.router.add_post("/_eg/faults", add_fault)
    app.router.add_delete("/_eg/faults", clear_faults)
    app.router.add_get("/_eg/health", health)
    return app


@dataclass
class RunningReceiver:
    url: str  # the topic endpoint: http://127.0.0.1:PORT/api/events
    key: str
    state: ReceiverState

    @property
    def root(self) -> str:
        return self.url.rsplit("/api/events", 1)[0]


@asynccontextmanager
async def start_receiver(key: str, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[RunningReceiver]:
    """Serve the receiver on loopback in the running event loop (tests, in-process use)."""
    app = create_app(key)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    site = web.SockSite(runner, sock)
    await site.start()
    bound_port = sock.getsockname()[1]
    try:
        yield RunningReceiver(f"http://{host}:{bound_port}/api/events", key, app[STATE_KEY])
    finally:
        await runner.cleanup()
