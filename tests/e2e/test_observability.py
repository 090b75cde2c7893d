"""Issue 8 items 1-2 end to end: function_app.py in the devstack host on Azurite and the Intune
simulator, with structured JSON log lines and in-memory OpenTelemetry providers instead of
Application Insights. One HTTP request is one trace: POST span -> queue message -> processing span
-> Graph dependency spans -> outcome events (CloudEvents traceparent)."""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from opentelemetry.trace import SpanKind, StatusCode

from devstack.host import JsonFormatter
from shared.observability import telemetry
from tests.plugins.product import ProductFactory, ProductStack
from tests.plugins.stack import TEST_FUNCTION_KEY
from tests.plugins.telemetry import Captured, hex_id

ADELE = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"  # Android work profile: completes after 2 s, has a passcode
WINDOWS = "62a9255c-bdb8-47c5-a8af-e9d1387777ee"  # unsupported
OUTCOME_FIELDS = {
    "requestId", "correlationId", "invocationId", "deviceId", "platform", "action", "status", "reasonCode", "attempt"
}


def reset(request_id: str, device: str = ADELE, **fields: Any) -> dict[str, Any]:
    return {"requestId": request_id, "device": {"intuneDeviceId": device}, "requestedBy": "flow@contoso.com", **fields}


async def post(stack: ProductStack, body: dict[str, Any], headers: dict[str, str] | None = None) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{stack.host.url}/api/resets", json=body, headers={"x-functions-key": TEST_FUNCTION_KEY, **(headers or {})}
        ) as response,
    ):
        return response.status


def trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]




async def test_one_http_request_is_one_trace_from_the_post_to_the_final_event(
    product_stack: ProductFactory, captured: Captured
) -> None:
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    headers = {"traceparent": f"00-{caller_trace}-{caller_span}-01", "tracestate": "contoso=flow-7"}
    async with product_stack() as stack:
        assert await post(stack, reset("TRACE-1", correlationId="flow-run-1"), headers) == 202
        await stack.wait_final("TRACE-1")

    spans = captured.spans(caller_trace)
    (submit,) = [s for s in spans if s.name == "POST /api/resets"]
    assert submit.kind is SpanKind.SERVER and submit.parent is not None
    assert hex_id(submit.parent.span_id, 16) == caller_span
    assert submit.attributes is not None and submit.attributes["http.response.status_code"] == 202
    (processing,) = [s for s in spans if s.name == "process reset request"]
    assert processing.kind is SpanKind.CONSUMER and processing.parent is not None
    assert processing.parent.span_id == submit.context.span_id  # the queue message carried the POST span
    confirmations = [s for s in spans if s.name == "confirm reset action"]  # pending at first, then done
    assert confirmations and all(s.kind is SpanKind.CONSUMER for s in confirmations)
    names = {s.name for s in spans}
    assert {"resolve", "classify", "act", "publish", "confirm"} <= names

    graph = [s for s in spans if s.kind is SpanKind.CLIENT]
    statuses = {(s.name, (s.attributes or {}).get("http.response.status_code")) for s in graph}
    assert ("GET /beta/deviceManagement/managedDevices/{id}", 200) in statuses
    assert ("POST /v1.0/deviceManagement/managedDevices/{id}/resetPasscode", 204) in statuses
    assert all((s.attributes or {}).get("server.address") == "127.0.0.1" for s in graph)
    # Every Graph call of this request is in its trace, none in another one.
    assert [s for s in captured.spans() if s.kind is SpanKind.CLIENT and s not in graph] == []

    events = stack.of("TRACE-1")
    assert [e["data"]["status"] for e in events] == ["submitted", "completed"]
    for event in events:
        assert trace_id(event["traceparent"]) == caller_trace
        assert event["tracestate"] == "contoso=flow-7"


async def test_counters_count_outcomes_graph_429s_and_deferrals(
    product_stack: ProductFactory, captured: Captured
) -> None:
    async with product_stack() as stack:
        await stack.sim.control.add_fault("429", method="POST", action="resetPasscode", retry_after=1)
        await stack.send(reset("COUNT-1"))
        await stack.send(reset("COUNT-2", WINDOWS))
        await stack.wait_final("COUNT-1", "COUNT-2")

    outcomes = captured.counts(telemetry.OUTCOMES_COUNTER)
    work_profile = ("platform", "android-work-profile")
    assert outcomes[frozenset({("status", "submitted"), work_profile})] == 1
    assert outcomes[frozenset({("status", "completed"), work_profile})] == 1
    unsupported = {("status", "unsupported"), ("platform", "windows"), ("reason", "platform_unsupported")}
    assert outcomes[frozenset(unsupported)] == 1
    assert sum(outcomes.values()) == 3
    assert captured.counts(telemetry.GRAPH_THROTTLED_COUNTER) == {frozenset({("http.request.method", "POST")}): 1}
    assert captured.counts(telemetry.DEFERRALS_COUNTER)[frozenset({("cause", "graph_throttled")})] == 1
    throttled = [s for s in captured.spans() if (s.attributes or {}).get("http.response.status_code") == 429]
    assert len(throttled) == 1 and throttled[0].kind is SpanKind.CLIENT
    assert throttled[0].status.status_code is StatusCode.ERROR


# ====================================================================== telemetry off (the default)


async def test_without_telemetry_the_trace_context_still_reaches_the_events(product_stack: ProductFactory) -> None:
    assert not telemetry.is_enabled()
    caller_trace = secrets.token_hex(16)
    async with product_stack() as stack:
        await stack.send({**reset("OFF-1"), "traceparent": f"00-{caller_trace}-{secrets.token_hex(8)}-01"})
        await stack.send(reset("OFF-2", WINDOWS))
        await stack.wait_final("OFF-1", "OFF-2")
    assert {trace_id(e["traceparent"]) for e in stack.of("OFF-1")} == {caller_trace}
    (unsupported,) = stack.of("OFF-2")  # no incoming context: the host's trace context
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", unsupported["traceparent"])


# ====================================================================== structured logs


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Every record (host and app) as the devstack host writes it: one JSON object per line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in ("passcode_reset", "devstack.host")]
    saved = [logger.level for logger in loggers]
    root.addHandler(handler)
    for logger in loggers:
        logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for logger, level in zip(loggers, saved, strict=True):
            logger.setLevel(level)


async def test_log_lines_are_json_with_request_fields_and_without_secrets(
    product_stack: ProductFactory, json_lines: io.StringIO
) -> None:
    async with product_stack(ALLOW_PASSCODE_REVEAL="true") as stack:
        assert await post(stack, reset("LOG-1", correlationId="flow-run-9")) == 202
        await stack.wait_final("LOG-1")
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"{stack.host.url}/api/resets/LOG-1/passcode", headers={"x-functions-key": TEST_FUNCTION_KEY}
            ) as response,
        ):
            passcode = (await response.json())["passcode"]
        await stack.settle(0.3)

    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    app = [r for r in lines if r["logger"].startswith("passcode_reset")]
    outcomes = [r for r in app if r.get("event") == "outcome" and r.get("requestId") == "LOG-1"]
    assert [r["status"] for r in outcomes] == ["submitted", "completed"]
    for record in outcomes:
        assert OUTCOME_FIELDS <= record.keys(), record
        assert (record["correlationId"], record["deviceId"]) == ("flow-run-9", ADELE)
        assert (record["platform"], record["action"], record["reasonCode"]) == (
            "android-work-profile", "resetPasscode", None)
        assert record["invocationId"] == record["invocation_id"]  # the host's own id for the invocation
    submitted, completed = outcomes
    assert submitted["functionName"] == "reset_request" and completed["functionName"] == "reset_followup"
    accepted = next(r for r in app if r.get("event") == "http_accepted")
    assert accepted["requestId"] == "LOG-1" and accepted["invocationId"] and accepted["traceId"]
    audit = next(r for r in app if r.get("event") == "passcode_reveal")
    assert audit["invocationId"] and audit["functionName"] == "reveal_passcode"
    # Every app record logged inside an invocation says which one and, once it is known, which request.
    inside = [r for r in app if "invocation_id" in r]
    assert inside and all(r["invocationId"] == r["invocation_id"] for r in inside)
    assert all(r["requestId"] == "LOG-1" for r in inside if r["message"] != "runtime ready"), inside

    text = json_lines.getvalue()
    account_key = stack.settings["AzureWebJobsStorage"].split("AccountKey=")[1].split(";")[0]
    for secret in (passcode, stack.settings["GRAPH_TOKEN"], TEST_FUNCTION_KEY, account_key):
        assert secret not in text
    assert "Bearer" not in text
