"""Telemetry and trace context without Azure: W3C trace context on messages and events, the log
context, the spans and counters with in-memory OpenTelemetry providers, and the start-up switch."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from shared.adapters import azure_monitor
from shared.adapters.graph_transport import GraphDependencyTransport
from shared.core.clock import utcnow
from shared.core.contract import (
    ReasonCode,
    ResetRequest,
    Status,
    parse_request_message,
    read_request_message,
    trace_members,
)
from shared.core.errors import GraphTransientError
from shared.core.events import build_event, event_json
from shared.observability import logs, telemetry
from shared.settings import SettingsError
from shared.workflow import handle_followup, handle_request
from tests.fakes import Harness, device, harness
from tests.plugins.telemetry import Captured

ROOT = Path(__file__).resolve().parents[2]
DEV = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
HOST_TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def request_document(**extra: Any) -> dict[str, Any]:
    return {"requestId": "TR-1", "device": {"intuneDeviceId": DEV}, "requestedBy": "desk@contoso.com", **extra}


def trace_id_of(traceparent: str) -> str:
    return traceparent.split("-")[1]


# ====================================================================== trace context on the contract


def test_trace_members_in_a_message_do_not_change_the_request_or_its_payload_hash() -> None:
    plain = parse_request_message(json.dumps(request_document()))
    traced = read_request_message(json.dumps(request_document(traceparent=TRACEPARENT, tracestate="congo=t61")))
    assert isinstance(plain, ResetRequest) and isinstance(traced.request, ResetRequest)
    assert traced.request == plain
    assert traced.request.payload_hash() == plain.payload_hash()
    assert traced.trace_context == {"traceparent": TRACEPARENT, "tracestate": "congo=t61"}
    assert "traceparent" not in traced.request.to_json()  # hence not in the ledger's copy either


def test_a_request_message_round_trips_with_its_trace_context() -> None:
    request = parse_request_message(json.dumps(request_document(correlationId="c-1")))
    assert isinstance(request, ResetRequest)
    message = request.to_message({"traceparent": TRACEPARENT})
    read = read_request_message(message)
    assert read.request == request and read.trace_context == {"traceparent": TRACEPARENT}
    assert json.loads(request.to_message()) == json.loads(request.to_json())


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        f"00-{TRACE_ID}-0000000000000000-01",  # all-zero parent id
        f"ff-{TRACE_ID}-{CALLER_SPAN}-01",  # forbidden version
        f"00-{TRACE_ID}-{CALLER_SPAN}",  # no flags
        f"00-{TRACE_ID}x-{CALLER_SPAN}-01",
        42,
        None,
    ],
)
def test_malformed_traceparent_is_dropped_with_its_tracestate(traceparent: Any) -> None:
    assert trace_members({"traceparent": traceparent, "tracestate": "a=b"}) == {}


def test_traceparent_is_normalised_and_an_oversized_tracestate_dropped() -> None:
    assert trace_members({"traceparent": f" {TRACEPARENT.upper()} "}) == {"traceparent": TRACEPARENT}
    assert trace_members({"traceparent": TRACEPARENT, "tracestate": "a=" + "b" * 600}) == {"traceparent": TRACEPARENT}


def test_outcome_event_carries_traceparent_only_when_there_is_one() -> None:
    schema = json.loads((ROOT / "schemas/outcome-event.schema.json").read_text())
    common: dict[str, Any] = {
        "event_id": "e1", "now": utcnow(), "status": Status.REJECTED, "request": None, "request_id": "TR-1",
        "reason": (ReasonCode.INVALID_REQUEST, "x"),
    }
    without = json.loads(event_json(build_event(**common)))
    assert "traceparent" not in without and "tracestate" not in without
    traced = json.loads(event_json(build_event(**common, trace_context={"traceparent": TRACEPARENT})))
    assert traced["traceparent"] == TRACEPARENT and "tracestate" not in traced
    for event in (without, traced):
        jsonschema.validate(event, schema)


# ====================================================================== settings and the start-up switch


def test_telemetry_settings_parse_the_entra_authentication_string() -> None:
    assert not telemetry.telemetry_settings({}).enabled
    settings = telemetry.telemetry_settings(
        {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=abc;IngestionEndpoint=https://x/",
            "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=1234;Authorization=AAD",
        }
    )
    assert settings.enabled and settings.entra_auth and settings.client_id == "1234"
    system_assigned = telemetry.telemetry_settings({"APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "Authorization=AAD"})
    assert system_assigned.entra_auth and system_assigned.client_id is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("APPLICATIONINSIGHTS_CONNECTION_STRING", "https://example.invalid/"),
        ("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "ClientId=1234"),
        ("APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "Authorization=Key;ClientId=1"),
    ],
)
def test_malformed_telemetry_settings_fail_naming_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        telemetry.telemetry_settings({name: value})


def test_without_a_connection_string_the_app_configures_nothing_and_never_imports_azure_monitor() -> None:
    script = (
        "import sys, function_app\n"
        "from shared.observability import telemetry\n"
        "assert not telemetry.is_enabled()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('azure.monitor', 'opentelemetry.sdk')))\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLICATIONINSIGHTS_")}
    env["AzureWebJobsStorage"] = "UseDevelopmentStorage=true"
    result = subprocess.run(  # noqa: S603 - the test's own interpreter
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_with_a_connection_string_azure_monitor_is_configured_with_the_managed_identity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[dict[str, Any]] = []
    fake = types.ModuleType("azure.monitor.opentelemetry")
    fake.configure_azure_monitor = lambda **kwargs: calls.append(kwargs)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", fake)

    class RecordingCredential:
        def __init__(self, *, client_id: str | None = None) -> None:
            self.client_id = client_id

    import azure.identity

    monkeypatch.setattr(azure.identity, "ManagedIdentityCredential", RecordingCredential)
    env = {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "ClientId=11111111-2222-3333-4444-555555555555;Authorization=AAD",
    }
    try:
        assert azure_monitor.configure_from_environment(env) is True
        assert telemetry.is_enabled()
        assert azure_monitor.configure_from_environment(env) is True  # once per process
    finally:
        telemetry.disable()
    assert len(calls) == 1
    options = calls[0]
    assert options["connection_string"] == env["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    assert isinstance(options["credential"], RecordingCredential)
    assert options["credential"].client_id == "11111111-2222-3333-4444-555555555555"
    assert options["logger_name"] == "passcode_reset"
    assert options["instrumentation_options"]["httpx"] == {"enabled": False}


def test_the_real_distro_configures_with_kiota_spans_off_and_the_app_logger_exported(tmp_path: Path) -> None:
    script = (
        "import logging, sys\n"
        "from shared.adapters import azure_monitor\n"
        "assert azure_monitor.configure_from_environment()\n"
        "from opentelemetry import trace\n"
        "assert type(trace.get_tracer_provider()).__module__.startswith('opentelemetry.sdk')\n"
        # Disabled tracers give invalid span contexts; ours valid ones (sampled or not: rate-limited).
        "assert not trace.get_tracer('microsoft-kiota-http-httpx').start_span('x').get_span_context().is_valid\n"
        "assert trace.get_tracer('passcode_reset').start_span('y').get_span_context().is_valid\n"
        "handlers = [type(h).__name__ for h in logging.getLogger('passcode_reset').handlers]\n"
        "assert 'LoggingHandler' in handlers, handlers\n"
        "import httpx\n"
        "assert not hasattr(httpx.AsyncHTTPTransport.handle_async_request, '__wrapped__')\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLICATIONINSIGHTS_")}
    env.update(
        APPLICATIONINSIGHTS_CONNECTION_STRING=(
            "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
            "IngestionEndpoint=http://127.0.0.1:9/;LiveEndpoint=http://127.0.0.1:9/"
        ),
        APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL="true",
        TMPDIR=str(tmp_path),
    )
    result = subprocess.run(  # noqa: S603 - the test's own interpreter
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


# ====================================================================== log context


def test_log_context_stamps_app_records_without_overriding_their_own_fields(caplog: pytest.LogCaptureFixture) -> None:
    logs.install()
    caplog.set_level(logging.INFO)
    with telemetry.invocation(invocation_id="inv-1", function_name="reset_request"):
        logs.bind(requestId="REQ-1", correlationId="corr-1")
        logging.getLogger("passcode_reset").info("one")
        logging.getLogger("passcode_reset.audit").info("two", extra={"requestId": "explicit"})
    logging.getLogger("passcode_reset").info("after")
    one, two, after = caplog.records
    assert (one.invocationId, one.functionName, one.requestId, one.correlationId) == (
        "inv-1", "reset_request", "REQ-1", "corr-1")
    assert two.invocationId == "inv-1" and two.requestId == "explicit"
    assert not hasattr(after, "invocationId")


# ====================================================================== trace context with telemetry off


def test_off_a_request_passes_the_incoming_trace_context_on_unchanged() -> None:
    assert not telemetry.is_enabled()
    with telemetry.request_span("x", kind="consumer", incoming={"traceparent": TRACEPARENT, "tracestate": "a=b"}):
        assert telemetry.current_trace_context() == {"traceparent": TRACEPARENT, "tracestate": "a=b"}
    assert telemetry.current_trace_context() == {}
    with telemetry.invocation(invocation_id="i", function_name="f", trace_context={"traceparent": HOST_TRACEPARENT}):
        with telemetry.request_span("x", kind="consumer"):
            assert telemetry.current_trace_context() == {"traceparent": HOST_TRACEPARENT}
        with telemetry.request_span("x", kind="server", incoming={"traceparent": TRACEPARENT}):
            assert telemetry.current_trace_context() == {"traceparent": TRACEPARENT}
    with telemetry.request_span("x", kind="consumer"):
        fresh = telemetry.current_trace_context()["traceparent"]
        assert trace_members({"traceparent": fresh})


def test_the_host_context_wins_when_it_already_continues_the_callers_trace() -> None:
    host_child = f"00-{TRACE_ID}-b7ad6b7169203331-01"  # Azure: the host's request span under the caller
    with (
        telemetry.invocation(invocation_id="i", function_name="f", trace_context={"traceparent": host_child}),
        telemetry.request_span("x", kind="server", incoming={"traceparent": TRACEPARENT}),
    ):
        assert telemetry.current_trace_context() == {"traceparent": host_child}


async def test_off_the_trace_context_travels_through_deferrals_followups_and_events() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    h.gateway.perform_failures.append((GraphTransientError("429", status=429, retry_after=5), False))
    await handle_request(json.dumps(request_document(traceparent=TRACEPARENT)).encode(), h.services, message_id="m1")
    requeued, _ = h.scheduler.requeued[-1]
    assert json.loads(requeued)["traceparent"] == TRACEPARENT
    await handle_request(requeued.encode(), h.services, message_id="m2")
    followup, _ = h.scheduler.followups[-1]
    assert json.loads(followup)["traceparent"] == TRACEPARENT
    h.gateway.set_state(DEV, "done")
    await handle_followup(followup.encode(), h.services)
    assert [e["data"]["status"] for e in h.publisher.events] == ["submitted", "completed"]
    assert {e["traceparent"] for e in h.publisher.events} == {TRACEPARENT}


# ====================================================================== spans and counters (in memory)




async def run_to_completion(h: Harness, body: bytes) -> None:
    await handle_request(body, h.services, message_id="m1")
    while h.scheduler.requeued:
        requeued, _ = h.scheduler.requeued.pop(0)
        await handle_request(requeued.encode(), h.services, message_id="m2")
    h.gateway.set_state(DEV, "done")
    while h.scheduler.followups:
        followup, _ = h.scheduler.followups.pop(0)
        await handle_followup(followup.encode(), h.services)


async def test_on_every_span_and_event_of_a_request_share_the_callers_trace(captured: Captured) -> None:
    h = harness()
    h.gateway.add(device(DEV))
    h.gateway.perform_failures.append((GraphTransientError("429", status=429, retry_after=5), False))
    await run_to_completion(h, json.dumps(request_document(traceparent=TRACEPARENT)).encode())

    spans = captured.spans()
    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}
    names = [s.name for s in spans]
    for step in ("resolve", "classify", "act", "publish", "confirm"):
        assert step in names, names
    first, retry = [s for s in spans if s.name == "process reset request"]
    assert first.kind is SpanKind.CONSUMER and first.parent is not None and first.parent.span_id == int(CALLER_SPAN, 16)
    assert retry.parent is not None and retry.parent.span_id != int(CALLER_SPAN, 16)  # continued from the deferral
    by_id = {s.context.span_id: s for s in spans}
    for event in h.publisher.events:
        _, trace_id, span_id, _ = event["traceparent"].split("-")
        assert trace_id == TRACE_ID and by_id[int(span_id, 16)].name == "publish"
    assert [e["data"]["status"] for e in h.publisher.events] == ["submitted", "completed"]


async def test_on_outcomes_and_deferrals_are_counted(captured: Captured) -> None:
    h = harness()
    h.gateway.add(device(DEV))
    h.gateway.perform_failures.append((GraphTransientError("429", status=429, retry_after=5), False))
    await run_to_completion(h, json.dumps(request_document()).encode())
    await handle_request(b"not json", h.services, message_id="m9")

    outcomes = captured.counts(telemetry.OUTCOMES_COUNTER)
    platform = h.publisher.events[0]["data"]["device"]["platform"]
    assert outcomes == {
        frozenset({("status", "submitted"), ("platform", platform)}): 1,
        frozenset({("status", "completed"), ("platform", platform)}): 1,
        frozenset({("status", "rejected"), ("reason", "invalid_request")}): 1,
    }
    assert captured.counts(telemetry.DEFERRALS_COUNTER) == {frozenset({("cause", "graph_throttled")}): 1}


async def test_graph_calls_are_client_spans_with_the_status_code_and_429s_are_counted(captured: Captured) -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(204)])
    transport = GraphDependencyTransport(httpx.MockTransport(lambda request: next(answers)))
    graph = "https://graph.microsoft.com"
    find = f"{graph}/beta/deviceManagement/managedDevices?$filter=serialNumber eq 'SECRET-SN'"
    act = f"{graph}/v1.0/deviceManagement/managedDevices/{DEV}/resetPasscode"
    async with httpx.AsyncClient(transport=transport) as client:
        with telemetry.request_span("x", kind="consumer", incoming={"traceparent": TRACEPARENT}):
            assert (await client.get(find)).status_code == 429
            assert (await client.post(act)).status_code == 204

    throttled, action = [s for s in captured.spans() if s.kind is SpanKind.CLIENT]
    assert throttled.attributes is not None and action.attributes is not None
    assert throttled.attributes["http.response.status_code"] == 429
    assert throttled.status.status_code is StatusCode.ERROR
    assert throttled.attributes["url.full"] == "https://graph.microsoft.com/beta/deviceManagement/managedDevices"
    assert throttled.attributes["server.address"] == "graph.microsoft.com"
    assert "SECRET-SN" not in json.dumps(dict(throttled.attributes)) + throttled.name
    assert action.name == "POST /v1.0/deviceManagement/managedDevices/{id}/resetPasscode"
    assert action.attributes["http.response.status_code"] == 204 and action.status.status_code is not StatusCode.ERROR
    assert all(format(s.context.trace_id, "032x") == TRACE_ID for s in (throttled, action))
    assert captured.counts(telemetry.GRAPH_THROTTLED_COUNTER) == {frozenset({("http.request.method", "GET")}): 1}


def test_kiota_tracers_are_quieted_on_an_sdk_provider() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert telemetry.quiet_library_tracers(provider)
    provider.get_tracer("com.microsoft.com:microsoft-kiota-http-httpx").start_span("kiota").end()
    provider.get_tracer("passcode_reset").start_span("ours").end()
    assert [s.name for s in exporter.get_finished_spans()] == ["ours"]


async def test_application_insights_sees_graph_calls_as_http_dependencies_with_result_code(captured: Captured) -> None:
    """The alert and KQL contract (infra/app/alerts.bicep): dependencies with target graph.microsoft.com
    and resultCode 429; requests without the query string (the function key)."""
    from azure.monitor.opentelemetry.exporter.export.trace._exporter import _convert_span_to_envelope

    transport = GraphDependencyTransport(httpx.MockTransport(lambda request: httpx.Response(429)))
    async with httpx.AsyncClient(transport=transport) as client:
        with telemetry.http_request_span(
            "POST", "https://func.example.net/api/resets?code=FUNCTION-KEY", "resets", {"traceparent": TRACEPARENT}
        ) as span:
            await client.post(f"https://graph.microsoft.com/v1.0/deviceManagement/managedDevices/{DEV}/resetPasscode")
            span.http_status(202)

    dependency, request = (_convert_span_to_envelope(s) for s in captured.spans())
    assert dependency.name == "Microsoft.ApplicationInsights.RemoteDependency"
    data = dependency.data.base_data  # type: ignore[union-attr]
    assert (data.type, data.result_code, data.success) == ("HTTP", "429", False)
    assert "graph.microsoft.com" in data.target
    assert request.name == "Microsoft.ApplicationInsights.Request"
    served = request.data.base_data  # type: ignore[union-attr]
    assert (served.name, served.response_code, served.url) == ("POST /api/resets", "202", "https://func.example.net/api/resets")
    assert dependency.tags["ai.operation.id"] == request.tags["ai.operation.id"] == TRACE_ID  # type: ignore[index]
