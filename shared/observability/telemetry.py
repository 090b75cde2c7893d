"""Telemetry: OpenTelemetry traces and metrics, and the W3C trace context that makes one request one trace.

Off by default. `shared.adapters.azure_monitor.configure_from_environment` turns it on only when
APPLICATIONINSIGHTS_CONNECTION_STRING is set, and only then imports azure-monitor-opentelemetry (about 0.6 s
and 50 MB at start-up):
traces, metrics and the app's log records (with their `extra=` fields as customDimensions) go to
Application Insights, ingested with the managed identity named by APPLICATIONINSIGHTS_AUTHENTICATION_STRING.
Tests turn it on with their own providers (`enable`), e.g. in-memory exporters.

What is recorded (docs/decisions/0009-trace-context.md):
- one span per invocation: SERVER for HTTP routes, CONSUMER for queue messages (App Insights `requests`);
- INTERNAL spans for the workflow steps: resolve, classify, act, publish, confirm;
- one CLIENT span per Graph HTTP call (shared/adapters/graph_transport.py), so App Insights lists it under
  `dependencies` with the HTTP status as `resultCode`;
- counters: `passcode_reset.outcomes` (status, platform, reason), `passcode_reset.graph.throttled`
  (Graph 429 answers), `passcode_reset.deferrals` (cause), `passcode_reset.eventgrid.deliveries` (result).

The trace context travels whether telemetry is on or off: from the HTTP request (its `traceparent`
header, or the host's trace context, or a new trace) into the request queue message, the deferral
copies and the follow-up messages (`traceparent`/`tracestate` members), and onto the outcome events
(CloudEvents distributed tracing extension). When off, nothing is recorded and the context is
passed on unchanged.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from shared.core.contract import trace_members
from shared.observability import logs
from shared.settings import SettingsError

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
AUTHENTICATION_STRING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
INSTRUMENTATION_SCOPE = "passcode_reset"
OUTCOMES_COUNTER = "passcode_reset.outcomes"
GRAPH_THROTTLED_COUNTER = "passcode_reset.graph.throttled"
DEFERRALS_COUNTER = "passcode_reset.deferrals"
EVENTGRID_COUNTER = "passcode_reset.eventgrid.deliveries"
GUARDRAIL_COUNTER = "passcode_reset.guardrail.tripped"
# msgraph-sdk's kiota layer opens about ten internal spans per Graph call; they would all become
# "InProc" dependencies in Application Insights. Tracers whose scope name contains this are disabled.
_QUIET_SCOPE_MARKER = "kiota"

TraceContext = dict[str, str]  # {"traceparent": ..., "tracestate": ...}; tracestate is optional
SpanKindName = Literal["server", "consumer", "client", "internal"]


# ====================================================================== settings


@dataclass(frozen=True)
class TelemetrySettings:
    connection_string: str | None
    entra_auth: bool
    client_id: str | None

    @property
    def enabled(self) -> bool:
        return self.connection_string is not None


def telemetry_settings(env: Mapping[str, str]) -> TelemetrySettings:
    """Parse the two App Insights settings; a malformed one fails start-up naming the setting."""
    connection = (env.get(CONNECTION_STRING) or "").strip() or None
    if connection is not None and "instrumentationkey=" not in connection.lower():
        raise SettingsError(f"invalid settings: {CONNECTION_STRING}: not an Application Insights connection string")
    raw = (env.get(AUTHENTICATION_STRING) or "").strip()
    if not raw:
        return TelemetrySettings(connection, entra_auth=False, client_id=None)
    pairs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in raw.split(";"))):
        key, sep, value = part.partition("=")
        pairs[key.strip().lower()] = value.strip() if sep else ""
    if pairs.get("authorization", "").upper() != "AAD" or set(pairs) - {"authorization", "clientid"}:
        raise SettingsError(
            f"invalid settings: {AUTHENTICATION_STRING}: expected 'Authorization=AAD' or "
            "'ClientId=<managed identity client id>;Authorization=AAD'"
        )
    return TelemetrySettings(connection, entra_auth=True, client_id=pairs.get("clientid") or None)


# ====================================================================== switching it on


class _Instruments:
    """The tracer, counters and propagator in use while telemetry is on."""

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.tracer = tracer_provider.get_tracer(INSTRUMENTATION_SCOPE)
        meter = meter_provider.get_meter(INSTRUMENTATION_SCOPE)
        self.outcomes = meter.create_counter(
            OUTCOMES_COUNTER, unit="{outcome}", description="Published outcome events by status, platform, reason"
        )
        self.graph_throttled = meter.create_counter(
            GRAPH_THROTTLED_COUNTER, unit="{response}", description="Microsoft Graph answers with status 429"
        )
        self.deferrals = meter.create_counter(
            DEFERRALS_COUNTER, unit="{deferral}", description="Requests put back on the queue to try again later"
        )
        self.eventgrid = meter.create_counter(
            EVENTGRID_COUNTER,
            unit="{event}",
            description="Outbox events by result: delivered, failed (an attempt), undelivered (poisoned), invalid",
        )
        self.guardrail = meter.create_counter(
            GUARDRAIL_COUNTER, unit="{request}", description="Requests held because a guardrail's hourly limit is full"
        )
        self.propagator = TraceContextTextMapPropagator()


@dataclass
class _State:
    instruments: _Instruments | None = None


_state = _State()


def enable(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    """Record spans and metrics with these providers (shared/adapters/azure_monitor.py, tests)."""
    _state.instruments = _Instruments(tracer_provider, meter_provider)


def disable() -> None:
    _state.instruments = None


def is_enabled() -> bool:
    return _state.instruments is not None


def quiet_library_tracers(tracer_provider: Any) -> bool:
    """Disable the kiota tracers (OpenTelemetry SDK tracer configurator); False if unsupported."""
    configure = getattr(tracer_provider, "_set_tracer_configurator", None)
    if configure is None:
        return False
    try:
        from opentelemetry.sdk.trace import _TracerConfig
    except ImportError:
        return False

    def configurator(scope: Any) -> Any:
        return _TracerConfig(is_enabled=_QUIET_SCOPE_MARKER not in (scope.name or ""))

    configure(tracer_configurator=configurator)
    return True


# ====================================================================== spans


class SpanHandle:
    """What the code may do with a span; does nothing when telemetry is off."""

    __slots__ = ("_kind", "_span")

    def __init__(self, span: Span | None, kind: SpanKindName) -> None:
        self._span = span
        self._kind = kind

    def set(self, key: str, value: str | int | float | bool | None) -> None:
        if self._span is not None and value is not None:
            self._span.set_attribute(key, value)

    def http_status(self, status: int) -> None:
        """The HTTP status of the call; an error is 5xx for a server span, 4xx or 5xx for a client."""
        if self._span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("http.response.status_code", status)
        if status >= 500 or (self._kind == "client" and status >= 400):
            self._span.set_attribute("error.type", str(status))
            self._span.set_status(Status(StatusCode.ERROR))


_NO_SPAN = SpanHandle(None, "internal")
# The host's trace context of the current invocation (func.Context.trace_context).
_HOST_CONTEXT: ContextVar[TraceContext | None] = ContextVar("passcode_reset_host_trace", default=None)
# Telemetry off: the trace context the current request passes on.
_PASSED_ON: ContextVar[TraceContext | None] = ContextVar("passcode_reset_trace", default=None)


@contextlib.contextmanager
def invocation(
    *, invocation_id: str | None, function_name: str | None, trace_context: Mapping[str, Any] | None = None
) -> Iterator[None]:
    """One function invocation: its log fields and the trace context the Functions host gave it."""
    logs.install()
    token = _HOST_CONTEXT.set(trace_members(trace_context or {}) or None)
    try:
        with logs.log_context(invocationId=invocation_id, functionName=function_name):
            yield
    finally:
        _HOST_CONTEXT.reset(token)


@contextlib.contextmanager
def request_span(
    name: str,
    *,
    kind: Literal["server", "consumer"],
    incoming: Mapping[str, Any] | None = None,
    attributes: Mapping[str, str | int | bool | None] | None = None,
) -> Iterator[SpanHandle]:
    """The span of one request or message, continuing `incoming` (headers or message members).

    Parent: the incoming trace context, except that the host's own context wins when it already
    continues the same trace (an HTTP trigger in Azure: the host's request span is the caller's
    child); without an incoming context, the host's; without either, a new trace."""
    parent, host = _choose_parent(trace_members(incoming or {}), _HOST_CONTEXT.get())
    instruments = _state.instruments
    if instruments is None:
        passed_on = parent or _new_trace_context()
        token = _PASSED_ON.set(passed_on)
        try:
            with logs.log_context(traceId=passed_on["traceparent"][3:35]):
                yield _NO_SPAN
        finally:
            _PASSED_ON.reset(token)
        return

    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanKind

    links = []
    if host is not None and host is not parent:
        linked = trace.get_current_span(instruments.propagator.extract(host)).get_span_context()
        links.append(Link(linked, {"link.reason": "functions host invocation"}))
    span = instruments.tracer.start_span(
        name,
        context=instruments.propagator.extract(parent or {}),
        kind=SpanKind.SERVER if kind == "server" else SpanKind.CONSUMER,
        attributes=_present(attributes or {}),
        links=links,
    )
    with (
        trace.use_span(span, end_on_exit=True),
        logs.log_context(traceId=format(span.get_span_context().trace_id, "032x")),
    ):
        yield SpanHandle(span, kind)


def http_request_span(
    method: str, url: str, route: str, headers: Mapping[str, str]
) -> contextlib.AbstractContextManager[SpanHandle]:
    """The SERVER span of an HTTP route. Never the query string: `code=` is the function key."""
    parts = urlsplit(url)
    template = f"/api/{route}"
    return request_span(
        f"{method} {template}",
        kind="server",
        incoming=headers,
        attributes={
            "http.request.method": method,
            "http.route": template,
            "url.scheme": parts.scheme or None,
            "url.path": parts.path or "/",
            "server.address": parts.hostname,
        },
    )


@contextlib.contextmanager
def step(name: str, **attributes: str | int | bool | None) -> Iterator[SpanHandle]:
    """A workflow step (resolve, classify, act, publish, confirm) as a child span."""
    instruments = _state.instruments
    if instruments is None:
        yield _NO_SPAN
        return
    with instruments.tracer.start_as_current_span(name, attributes=_present(attributes)) as span:
        yield SpanHandle(span, "internal")


@contextlib.contextmanager
def dependency_span(method: str, url: str) -> Iterator[SpanHandle]:
    """An outgoing HTTP call (Graph) as a CLIENT span with the stable HTTP semantic conventions.

    The query string is left out: a `$filter` carries the request's serial number or IMEI."""
    instruments = _state.instruments
    if instruments is None:
        yield _NO_SPAN
        return
    from opentelemetry.trace import SpanKind

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    attributes: dict[str, str | int] = {
        "http.request.method": method,
        "url.full": f"{parts.scheme}://{parts.netloc}{parts.path}",
        "server.address": parts.hostname or "",
        "server.port": port,
    }
    with instruments.tracer.start_as_current_span(
        f"{method} {_id_free(parts.path)}", kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield SpanHandle(span, "client")


def current_trace_context() -> TraceContext:
    """The trace context to put on a message or event produced here ({} outside any request)."""
    instruments = _state.instruments
    if instruments is None:
        return dict(_PASSED_ON.get() or {})
    carrier: dict[str, str] = {}
    instruments.propagator.inject(carrier)
    return trace_members(carrier)


def _choose_parent(
    incoming: TraceContext, host: TraceContext | None
) -> tuple[TraceContext | None, TraceContext | None]:
    if incoming and host and _trace_id(incoming) == _trace_id(host):
        return host, host
    return (incoming or host or None), host


def _trace_id(context: TraceContext) -> str:
    return context["traceparent"][3:35]


def _new_trace_context() -> TraceContext:
    return {"traceparent": f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"}


_ID_SEGMENT = re.compile(r"/(?:[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}|\d{6,})(?=/|$)")


def _id_free(path: str) -> str:
    """A span name without device ids (low cardinality)."""
    return _ID_SEGMENT.sub("/{id}", path) or "/"


def _present(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in attributes.items() if value is not None}


# ====================================================================== counters


def count_outcome(status: str | None, platform: str | None, reason: str | None) -> None:
    instruments = _state.instruments
    if instruments is not None:
        instruments.outcomes.add(1, _present({"status": status, "platform": platform, "reason": reason}))


def count_graph_throttled(method: str) -> None:
    instruments = _state.instruments
    if instruments is not None:
        instruments.graph_throttled.add(1, {"http.request.method": method})


def count_deferral(cause: str) -> None:
    instruments = _state.instruments
    if instruments is not None:
        instruments.deferrals.add(1, {"cause": cause})


def count_eventgrid(result: str) -> None:
    """Event Grid forwarding (docs/contract.md#event-grid-delivery), by result."""
    instruments = _state.instruments
    if instruments is not None:
        instruments.eventgrid.add(1, {"result": result})


def count_guardrail_trip() -> None:
    """A request held by a guardrail (docs/contract.md#guardrails); the alert in infra/app/alerts.bicep."""
    instruments = _state.instruments
    if instruments is not None:
        instruments.guardrail.add(1)
