"""docs/contract.md#request-message: what a valid request is, and how an invalid one is explained."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from shared.core.contract import MAX_MESSAGE_BYTES, InvalidRequest, ResetRequest, parse_request_message

GUID = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"


def body(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "requestId": "INC0012345-1",
        "device": {"intuneDeviceId": GUID},
        "requestedBy": "servicedesk@contoso.com",
        "reason": "User forgot work profile PIN",
        "ticketId": "INC0012345",
    }
    document.update(overrides)
    return {k: v for k, v in document.items() if v is not ...}


def parse(document: Any) -> ResetRequest | InvalidRequest:
    return parse_request_message(json.dumps(document).encode())


def test_plain_json_request_is_accepted() -> None:
    request = parse(body())
    assert isinstance(request, ResetRequest)
    assert request.device.kind == "intuneDeviceId" and request.device.value == GUID
    assert request.allowRemoteLock is False and request.dryRun is False


def test_base64_encoded_request_is_accepted() -> None:
    encoded = base64.b64encode(json.dumps(body()).encode())
    assert isinstance(parse_request_message(encoded), ResetRequest)


@pytest.mark.parametrize(
    "device",
    [{"azureAdDeviceId": GUID}, {"serialNumber": "C02XK1JHJGH5"}, {"imei": "356938035643809"},
     {"serialNumber": "O'Brien-1"}],
)
def test_each_identifier_kind_is_accepted(device: dict[str, str]) -> None:
    request = parse(body(device=device))
    assert isinstance(request, ResetRequest)
    assert request.device.kind == next(iter(device))


def test_unknown_fields_are_ignored() -> None:
    assert isinstance(parse(body(priority="high", device={"imei": "356938035643809", "color": "red"})), ResetRequest)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (body(requestId=...), "requestId: field required"),
        (body(requestId="has space"), "requestId"),
        (body(requestId="x" * 129), "requestId"),
        (body(requestedBy=...), "requestedBy: field required"),
        (body(device={}), "exactly one of"),
        (body(device={"imei": "356938035643809", "serialNumber": "ABC"}), "found: serialNumber, imei"),
        (body(device={"intuneDeviceId": "not-a-guid"}), "device.intuneDeviceId"),
        (body(device={"imei": "35693803564"}), "device.imei"),
        (body(device={"serialNumber": "ABC\n"}), "device.serialNumber"),
        (body(device={"serialNumber": "   "}), "device.serialNumber"),
        (body(dryRun="false"), "dryRun: Input should be a valid boolean"),
        (body(allowRemoteLock=1), "allowRemoteLock"),
        (body(requestedBy=42), "requestedBy: Input should be a valid string"),
        (body(reason="x" * 501), "reason"),
        (body(ticketId="t" * 129), "ticketId"),
        (body(device="5c1f9a3e"), "device"),
        ([body()], "must be a JSON object"),
    ],
)
def test_invalid_requests_name_the_field(document: Any, expected: str) -> None:
    result = parse(document)
    assert isinstance(result, InvalidRequest)
    assert expected in result.message


def test_invalid_request_keeps_a_readable_request_id_for_the_event() -> None:
    result = parse(body(requestedBy=...))
    assert isinstance(result, InvalidRequest) and result.request_id == "INC0012345-1"


def test_invalid_request_id_is_not_echoed() -> None:
    result = parse(body(requestId="bad id", requestedBy=...))
    assert isinstance(result, InvalidRequest) and result.request_id is None


def test_error_messages_do_not_echo_input_values() -> None:
    result = parse(body(requestedBy="p@ssw0rd-\x07", device={"serialNumber": "SECRET\x00VALUE"}))
    assert isinstance(result, InvalidRequest)
    assert "p@ssw0rd" not in result.message and "SECRET" not in result.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"not json at all", "neither JSON nor base64"),
        (b"{\"requestId\": ", "not valid JSON"),
        (b"\xff\xfe{}", "neither UTF-8 JSON nor base64"),
        (base64.b64encode(b"\x00\x01garbage"), "neither JSON nor base64"),
        (base64.b64encode(b'{"requestId": 1'), "not valid JSON"),
        (b'{"requestId": "a", "requestId": "b"}', "duplicate JSON member"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"[1, 2]", "must be a JSON object"),
        (b"", "message is empty"),
    ],
)
def test_broken_messages_are_explained(raw: bytes, expected: str) -> None:
    result = parse_request_message(raw)
    assert isinstance(result, InvalidRequest)
    assert expected in result.message


def test_deeply_nested_json_is_rejected_without_crashing() -> None:
    nested = b'{"requestId": "deep-1", "device": ' + b'{"a": ' * 20000 + b"1" + b"}" * 20000 + b"}"
    result = parse_request_message(nested[:MAX_MESSAGE_BYTES])
    assert isinstance(result, InvalidRequest)


def test_message_over_64_kib_is_rejected() -> None:
    big = json.dumps(body(padding="x" * MAX_MESSAGE_BYTES)).encode()
    result = parse_request_message(big)
    assert isinstance(result, InvalidRequest) and "limit is 65536" in result.message


def test_payload_hash_ignores_unknown_fields_and_explicit_defaults() -> None:
    a = parse(body())
    b = parse(body(dryRun=False, extra="ignored"))
    c = parse(body(dryRun=True))
    assert isinstance(a, ResetRequest) and isinstance(b, ResetRequest) and isinstance(c, ResetRequest)
    assert a.payload_hash() == b.payload_hash() != c.payload_hash()


def test_http_bodies_may_omit_the_request_id() -> None:
    result = parse_request_message(json.dumps(body(requestId=...)).encode(), require_request_id=False)
    assert isinstance(result, ResetRequest) and result.requestId is None
