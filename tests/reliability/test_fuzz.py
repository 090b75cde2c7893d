"""Property-based fuzzing of the request schema (docs/contract.md#request-message) with hypothesis.

- Valid requests, generated from the contract's rules, parse (plain and base64) into the same request,
  and survive the round trip through the ledger's JSON with the same payload hash.
- Broken requests, a valid request with exactly one rule broken (a wrong type, a missing field, a
  control character, a value too long, a malformed or a second identifier, not an object), are
  rejected with a message that never echoes the value.
- A bounded, deterministic sample of the broken ones goes through the queue and `POST /api/resets`
  of the running product: one `rejected`/`invalid_request` each (400 over HTTP), no Graph call, no
  poison, and valid requests in between complete.

Examples are derandomized and bounded so that CI is stable and fast.
"""

from __future__ import annotations

import base64
import json
import re
import string
from typing import Any

import aiohttp
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shared.core.contract import GUID_PATTERN, REQUEST_ID_PATTERN, InvalidRequest, ResetRequest, parse_request_message
from tests.plugins.product import ProductFactory
from tests.plugins.stack import TEST_FUNCTION_KEY
from tests.reliability.checks import (
    VALID_DEVICES,
    Expected,
    assert_graph_calls,
    assert_no_poison,
    assert_outcomes,
    valid_request,
    wait_for_outcomes,
)
from tests.reliability.corpus import MARKER, NO_SUCH_DEVICE

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=250,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
THROUGH_THE_PRODUCT = 40  # broken requests per channel in the end-to-end tests

CONTROL = "".join(map(chr, range(0x20))) + "\x7f"
# Text as the contract accepts it in audit fields: no control characters, no lone surrogates.
printable = st.text(st.characters(codec="utf-8", exclude_characters=CONTROL), min_size=1, max_size=40)
request_ids = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)
guids = st.uuids().map(str)
imeis = st.from_regex(r"[0-9]{14,16}", fullmatch=True)
serials = printable.filter(lambda s: any(not c.isspace() for c in s))
devices = st.one_of(
    guids.map(lambda v: {"intuneDeviceId": v}),
    guids.map(lambda v: {"azureAdDeviceId": v}),
    serials.map(lambda v: {"serialNumber": v}),
    imeis.map(lambda v: {"imei": v}),
)
valid_documents = st.fixed_dictionaries(
    {"requestId": request_ids, "device": devices, "requestedBy": printable},
    optional={
        "expectedUserPrincipalName": printable,
        "reason": st.text(st.characters(codec="utf-8"), max_size=500),
        "ticketId": printable,
        "correlationId": printable,
        "allowRemoteLock": st.booleans(),
        "dryRun": st.booleans(),
        "unknownField": st.recursive(st.none() | st.integers() | printable, lambda inner: st.lists(inner, max_size=3)),
    },
)

STRING_FIELDS = ("requestId", "requestedBy", "reason", "ticketId", "correlationId", "expectedUserPrincipalName")
BOOLEAN_FIELDS = ("allowRemoteLock", "dryRun")
LIMITS = {"requestId": 128, "requestedBy": 256, "reason": 500, "ticketId": 128, "correlationId": 128,
          "expectedUserPrincipalName": 256}
PRINTABLE_FIELDS = ("requestId", "requestedBy", "ticketId", "correlationId", "expectedUserPrincipalName")
not_a_string = st.one_of(
    st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["a", "intuneDeviceId"]), st.integers(), max_size=2),
)
not_a_boolean = st.one_of(
    st.integers(), st.sampled_from(["true", "false", "1", ""]), st.none(), st.lists(st.booleans(), max_size=2)
)


def base_document(request_id: str) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "device": {"intuneDeviceId": NO_SUCH_DEVICE},
        "requestedBy": "fuzz@contoso.com",
        "ticketId": "INC-FUZZ",
    }


@st.composite
def broken_documents(draw: st.DrawFn, *, request_id_required: bool = True) -> Any:
    """A valid request (or the HTTP variant, where requestId may be absent) with one rule broken."""
    document = base_document(draw(request_ids))
    mutation = draw(st.sampled_from([
        "wrong-type", "wrong-boolean", "missing", "control-character", "too-long", "bad-guid", "bad-imei",
        "bad-serial", "two-identifiers", "no-identifier", "device-not-object", "not-an-object",
    ]))
    if mutation == "wrong-type":
        field = draw(st.sampled_from([*STRING_FIELDS, "device"]))
        document[field] = draw(not_a_string)
    elif mutation == "wrong-boolean":
        document[draw(st.sampled_from(BOOLEAN_FIELDS))] = draw(not_a_boolean)
    elif mutation == "missing":
        del document[draw(st.sampled_from(["requestId", "device", "requestedBy"] if request_id_required else
                                          ["device", "requestedBy"]))]
    elif mutation == "control-character":
        field = draw(st.sampled_from(PRINTABLE_FIELDS))
        text = MARKER + draw(st.text(max_size=10))
        at = draw(st.integers(0, len(text)))
        document[field] = text[:at] + draw(st.sampled_from(CONTROL)) + text[at:]
    elif mutation == "too-long":
        field = draw(st.sampled_from(list(LIMITS)))
        document[field] = (MARKER * (LIMITS[field] // len(MARKER) + 2))[: LIMITS[field] + draw(st.integers(1, 50))]
    elif mutation == "bad-guid":
        value = draw(st.text(max_size=40).filter(lambda s: not re.fullmatch(GUID_PATTERN, s)))
        document["device"] = {draw(st.sampled_from(["intuneDeviceId", "azureAdDeviceId"])): MARKER + value}
    elif mutation == "bad-imei":
        value = draw(st.one_of(
            st.from_regex(r"[0-9]{1,13}", fullmatch=True),
            st.from_regex(r"[0-9]{17,30}", fullmatch=True),
            st.text(min_size=14, max_size=16).filter(lambda s: not re.fullmatch(r"[0-9]{14,16}", s)),
        ))
        document["device"] = {"imei": value}
    elif mutation == "bad-serial":
        document["device"] = {"serialNumber": draw(st.one_of(
            st.text(st.sampled_from(" \t\u3000\u00a0"), max_size=5),
            st.just(MARKER * 20),
            st.builds(lambda a, c: MARKER + a + c, st.text(max_size=5), st.sampled_from(CONTROL)),
        ))}
    elif mutation == "two-identifiers":
        kinds = draw(st.lists(st.sampled_from(["intuneDeviceId", "azureAdDeviceId", "serialNumber", "imei"]),
                              min_size=2, max_size=4, unique=True))
        values = {"intuneDeviceId": NO_SUCH_DEVICE, "azureAdDeviceId": NO_SUCH_DEVICE, "serialNumber": "NOPE-1",
                  "imei": "490154203237518"}
        document["device"] = {kind: values[kind] for kind in kinds}
    elif mutation == "no-identifier":
        document["device"] = draw(st.sampled_from([{}, {"intuneDeviceId": None}, {"deviceName": "x"}]))
    elif mutation == "device-not-object":
        document["device"] = draw(st.one_of(st.text(max_size=10), st.integers(), st.lists(st.integers(), max_size=2)))
    else:
        return draw(st.one_of(st.lists(st.just(document), max_size=2), st.none(), st.integers(), printable))
    return document


def draw(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """`count` deterministic examples of `strategy` (for the end-to-end runs, which are async)."""
    found: list[Any] = []

    @settings(FUZZ, max_examples=count, phases=[Phase.generate])
    @given(strategy)
    def collect(value: Any) -> None:
        found.append(value)

    collect()
    return found


# ---------------------------------------------------------------------------------------------- the parser


@FUZZ
@given(valid_documents)
def test_valid_requests_parse_the_same_plain_and_base64(document: dict[str, Any]) -> None:
    plain = json.dumps(document).encode()
    parsed = parse_request_message(plain)
    assert isinstance(parsed, ResetRequest), parsed
    assert parse_request_message(base64.b64encode(plain)) == parsed
    assert parsed.requestId == document["requestId"] and parsed.device.kind in document["device"]
    assert parsed.device.value == next(iter(document["device"].values()))
    again = parse_request_message(parsed.to_json())  # what the ledger stores and the HTTP API enqueues
    assert again == parsed and isinstance(again, ResetRequest) and again.payload_hash() == parsed.payload_hash()


@FUZZ
@given(broken_documents())
def test_broken_requests_are_rejected_without_echoing_the_value(document: Any) -> None:
    parsed = parse_request_message(json.dumps(document).encode())
    assert isinstance(parsed, InvalidRequest), document
    assert MARKER not in parsed.message
    assert parsed.request_id is None or (isinstance(document, dict) and parsed.request_id == document["requestId"])


@FUZZ
@given(broken_documents(request_id_required=False))
def test_broken_requests_are_rejected_over_http_too(document: Any) -> None:
    parsed = parse_request_message(json.dumps(document).encode(), require_request_id=False)
    assert isinstance(parsed, InvalidRequest), document


@FUZZ
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_parser(body: bytes) -> None:
    parsed = parse_request_message(body)
    assert isinstance(parsed, InvalidRequest | ResetRequest)


@FUZZ
@given(st.text(string.printable, max_size=200).map(lambda s: base64.b64encode(s.encode())))
def test_base64_of_arbitrary_text_never_crashes_the_parser(body: bytes) -> None:
    assert isinstance(parse_request_message(body), InvalidRequest | ResetRequest)


# ---------------------------------------------------------------------------------------------- end to end


def _expect(body: bytes, expected: Expected) -> None:
    parsed = parse_request_message(body)
    assert isinstance(parsed, InvalidRequest)
    expected.add(parsed.request_id, "rejected", "invalid_request")


async def test_broken_requests_through_the_queue(product_stack: ProductFactory) -> None:
    documents = draw(broken_documents(), THROUGH_THE_PRODUCT)
    expected = Expected()
    acting = set()
    async with product_stack() as stack:
        for number, document in enumerate(documents):
            request_id = document.get("requestId") if isinstance(document, dict) else None
            if isinstance(request_id, str) and re.fullmatch(REQUEST_ID_PATTERN, request_id):
                document["requestId"] = f"FZQ-{number}"  # unique, so that each event maps to its message
            body = json.dumps(document).encode()
            await stack.send(body)
            _expect(body, expected)
            if number % 20 == 10:
                device = list(VALID_DEVICES)[len(acting)]
                await stack.send(valid_request(f"GOOD-FZQ-{number}", device))
                expected.add(f"GOOD-FZQ-{number}", "completed", None)
                acting.add(device)
        await wait_for_outcomes(stack, expected)
        assert_outcomes(stack, expected)
        assert all(MARKER not in str(event) for event in stack.events)
        await assert_graph_calls(stack, device_reads=set(), filters=set(), acting=acting)
        await assert_no_poison(stack)


async def test_broken_requests_through_post_api_resets(product_stack: ProductFactory) -> None:
    documents = draw(broken_documents(request_id_required=False), THROUGH_THE_PRODUCT)
    headers = {"x-functions-key": TEST_FUNCTION_KEY, "Content-Type": "application/json"}
    expected = Expected()
    acting = set()
    async with product_stack() as stack, aiohttp.ClientSession() as session:
        url = f"{stack.host.url}/api/resets"
        for number, document in enumerate(documents):
            async with session.post(url, data=json.dumps(document).encode(), headers=headers) as response:
                problem = await response.json(content_type=None)
                assert response.status == 400, (document, problem)
                assert problem["type"] == "urn:intune-passcode-reset:problem:invalid-request"
                assert MARKER not in json.dumps(problem, ensure_ascii=False)
            if number % 20 == 10:
                device = list(VALID_DEVICES)[len(acting)]
                async with session.post(url, json=valid_request(f"GOOD-FZH-{number}", device), headers=headers) as ok:
                    assert ok.status == 202
                expected.add(f"GOOD-FZH-{number}", "completed", None)
                acting.add(device)
        await wait_for_outcomes(stack, expected)
        assert_outcomes(stack, expected)  # the valid ones, and not a single event for a rejected POST
        await assert_graph_calls(stack, device_reads=set(), filters=set(), acting=acting)
        await assert_no_poison(stack)
