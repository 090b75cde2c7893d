"""Hostile and broken request messages, each classified with the outcome that
docs/contract.md#request-message, #device-resolution and #outcome-events promise for it.

- `invalid`: `rejected` / `invalid_request` on the queue (the event's `requestId` is the message's
  when it could be read safely, else null), 400 on `POST /api/resets` (413 above 64 KiB), and no
  Graph call at all.
- `not_found`, `ambiguous`, `user_mismatch`: valid per the contract, yet they must act on nothing:
  `rejected` with that reason after the device lookup (OData-injection identifiers, look-alike
  characters, ...), 202 over HTTP, and never an action POST.

Items are bytes: exactly what arrives. On the queue a body that Azure Storage cannot carry as text
(control characters, invalid UTF-8) travels base64-encoded, which the app accepts (docs/contract.md#request-message).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.core.contract import MAX_MESSAGE_BYTES
from shared.core.device import imei_lookup_forms

Expect = Literal["invalid", "not_found", "ambiguous", "user_mismatch"]
REASON_CODE: dict[Expect, str] = {
    "invalid": "invalid_request",
    "not_found": "device_not_found",
    "ambiguous": "ambiguous_device",
    "user_mismatch": "user_mismatch",
}
QUEUE_LIMIT = 64 * 1024  # Azure Storage queue message, UTF-8 bytes
_XML_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

# Seeded fleet (devstack/simulator/fleet.json).
ALEX_IPHONE = "5394dbe7-8b41-4b84-b95b-f02793f69c0d"  # serial G6TZK2XQ0D, IMEI 358281312335155
ALEX_SERIAL = "G6TZK2XQ0D"
ALEX_IMEI = "358281312335155"
NO_SUCH_DEVICE = "7d3c2a6e-1111-4222-8333-944455556666"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"  # two fleet devices carry it as azureADDeviceId
MARKER = "3v1lM4rk"  # put into hostile values: it must never be echoed by a problem body


@dataclass(frozen=True)
class Item:
    name: str
    body: bytes
    expect: Expect
    request_id: str | None  # the requestId of the final event (None: unreadable, event carries null)
    http_expect: Expect | None = None  # over HTTP, when it differs (requestId is optional there)
    channels: frozenset[str] = field(default=frozenset({"queue", "http"}))

    @property
    def expect_http(self) -> Expect:
        return self.http_expect or self.expect

    @property
    def http_status(self) -> int:
        if len(self.body) > MAX_MESSAGE_BYTES:
            return 413
        return 400 if self.expect_http == "invalid" else 202

    def queue_text(self) -> str:
        """The message text: as is when Azure Storage can carry it, else base64 (docs/contract.md#request-message)."""
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None and not _XML_UNSAFE.search(text) and len(self.body) <= QUEUE_LIMIT:
            return text
        encoded = base64.b64encode(self.body).decode("ascii")
        if len(encoded) > QUEUE_LIMIT:
            raise ValueError(f"{self.name}: too large for a queue message")
        return encoded


def request(request_id: Any = None, device: Any = None, **fields: Any) -> dict[str, Any]:
    """A valid request for a device that does not exist, with `fields` changed (`...=DROP` removes one)."""
    document: dict[str, Any] = {
        "requestId": request_id,
        "device": {"intuneDeviceId": NO_SUCH_DEVICE} if device is None else device,
        "requestedBy": "servicedesk@contoso.com",
        "reason": "corpus",
        "ticketId": "INC-CORPUS",
    }
    document.update(fields)
    return {k: v for k, v in document.items() if v is not DROP}


DROP: Any = object()


def js(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8")


def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


def invalid(name: str, body: bytes | dict[str, Any] | list[Any], request_id: str | None = None, **kw: Any) -> Item:
    raw = js(body) if isinstance(body, dict | list) else body
    return Item(name, raw, "invalid", request_id, **kw)


def valid(name: str, expect: Expect, device: dict[str, Any], **fields: Any) -> Item:
    request_id = f"COR-{name}"[:128]
    return Item(name, js(request(request_id, device, **fields)), expect, request_id)


def _deep(depth: int, opener: str, closer: str) -> bytes:
    """A request with an unknown member nested `depth` levels deep (the parser's recursion limit)."""
    nested = opener * depth + "1" + closer * depth
    return _raw('{"requestId": "$RID", "device": {"intuneDeviceId": "$DEV"}, "requestedBy": "d", "x": ' + nested + "}",
                "COR-deep")


def _raw(template: str, request_id: str) -> bytes:
    """A request whose JSON text is written by hand (duplicate keys, non-standard JSON, ...)."""
    return template.replace("$RID", request_id).replace("$DEV", NO_SUCH_DEVICE).encode("utf-8")


def _urlsafe_base64_of_request() -> bytes:
    """base64url (with '-' or '_') of a request: not the base64 the contract accepts."""
    for n in range(200):
        raw = js(request("COR-urlsafe", reason="?>" * (n + 1) + "~~~"))
        encoded = base64.urlsafe_b64encode(raw)
        if b"-" in encoded or b"_" in encoded:
            return encoded
    raise AssertionError("no url-safe character produced")


# Look-alikes are written as escapes so that the source shows what they are.
FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}  # ASCII -> fullwidth forms (U+FF01..U+FF5E)
ARABIC_INDIC = {c: c - 0x30 + 0x0660 for c in range(0x30, 0x3A)}  # 0-9 -> U+0660..U+0669
CYRILLIC_ES, CYRILLIC_HA, CYRILLIC_A = "\u0421", "\u0425", "\u0430"  # look like C, X, a

CORPUS: list[Item] = [
    # --- not JSON, not an object, broken framing: nothing can be read, requestId is null
    invalid("empty", b""),
    invalid("whitespace-only", b" \n\t "),
    invalid("plain-text", b"please reset the passcode of my phone"),
    invalid("json-null", b"null"),
    invalid("json-true", b"true"),
    invalid("json-number", b"42"),
    invalid("json-string", b'"INC0012345"'),
    invalid("json-array-empty", b"[]"),
    invalid("json-array-of-request", [request("COR-array")]),
    invalid("truncated-object", b'{"requestId": "COR-trunc", "device": {"intuneDeviceId": "'),
    invalid("trailing-garbage", js(request("COR-trailing")) + b" and more"),
    invalid("two-objects", js(request("COR-two-1")) + js(request("COR-two-2"))),
    invalid("json-with-comment", _raw('{"requestId": "$RID", /* c */ "device": {"intuneDeviceId": "$DEV"}}', "COR-c")),
    invalid("single-quoted-pseudo-json", _raw("{'requestId': '$RID', 'device': {'intuneDeviceId': '$DEV'}}", "COR-sq")),
    invalid("xml-document", b'<?xml version="1.0"?><reset><requestId>COR-xml</requestId></reset>'),
    invalid("utf8-bom-prefixed", b"\xef\xbb\xbf" + js(request("COR-bom"))),
    invalid("nan-request-id", _raw('{"requestId": NaN, "device": {"intuneDeviceId": "$DEV"}, "requestedBy": "d"}', "")),
    invalid("huge-integer", _raw('{"requestId": "$RID", "x": 1' + "1" * 5000 + "}", "COR-bigint")),
    invalid("deeply-nested-arrays", _deep(20000, "[", "]")),
    invalid("deeply-nested-objects", _deep(10000, '{"a":', "}")),
    # --- base64 that is not base64 of a JSON request
    invalid("base64-of-garbage", b64(bytes(range(256)) * 3)),
    invalid("base64-of-text", b64(b"not json at all")),
    invalid("base64-of-array", b64(js([request("COR-b64-array")]))),
    invalid("base64-of-invalid-utf8", b64(b'{"requestId": "COR-b64-utf8", "requestedBy": "\xff\xfe"}')),
    invalid("base64-bad-padding", b"eyJyZXF1ZXN0SWQiOi==="),
    invalid("base64-twice", b64(b64(js(request("COR-b64-twice"))))),
    invalid("base64url-alphabet", _urlsafe_base64_of_request()),
    invalid("base64-with-junk-prefix", b"!!" + b64(js(request("COR-b64-junk")))),
    # --- invalid UTF-8 and other encodings
    invalid("invalid-utf8-byte", js(request("COR-utf8", requestedBy="desk")).replace(b"desk", b"desk\xff")),
    invalid("overlong-utf8", js(request("COR-overlong", requestedBy="desk")).replace(b"desk", b"\xc0\xaf")),
    invalid("utf16-encoded", json.dumps(request("COR-utf16")).encode("utf-16")),
    invalid("lone-surrogate-escape", _raw('{"requestId": "$RID", "device": {"intuneDeviceId": "$DEV"}, '
                                          '"requestedBy": "\\ud800desk"}', "COR-surrogate"), "COR-surrogate"),
    # --- wrong types (strict: no coercion)
    invalid("request-id-number", request(12345)),
    invalid("request-id-array", request(["COR-x"])),
    invalid("device-string", request("COR-device-string", ALEX_IPHONE), "COR-device-string"),
    invalid("device-array", request("COR-device-array", [{"intuneDeviceId": ALEX_IPHONE}]), "COR-device-array"),
    invalid("device-null", {**request("COR-device-null"), "device": None}, "COR-device-null"),
    invalid("allow-remote-lock-string", request("COR-lock-str", allowRemoteLock="false"), "COR-lock-str"),
    invalid("dry-run-integer", request("COR-dry-int", dryRun=0), "COR-dry-int"),
    invalid("dry-run-string", request("COR-dry-str", dryRun="true"), "COR-dry-str"),
    invalid("requested-by-number", request("COR-by-num", requestedBy=7), "COR-by-num"),
    invalid("requested-by-empty", request("COR-by-empty", requestedBy=""), "COR-by-empty"),
    invalid("requested-by-missing", request("COR-by-missing", requestedBy=DROP), "COR-by-missing"),
    invalid("requested-by-object", request("COR-by-obj", requestedBy={"name": "desk"}), "COR-by-obj"),
    invalid("reason-too-long", request("COR-reason-long", reason="r" * 501), "COR-reason-long"),
    invalid("reason-number", request("COR-reason-num", reason=1), "COR-reason-num"),
    invalid("ticket-id-too-long", request("COR-ticket-long", ticketId="T" * 129), "COR-ticket-long"),
    invalid("correlation-id-object", request("COR-corr-obj", correlationId={"id": 1}), "COR-corr-obj"),
    invalid("expected-upn-empty", request("COR-upn-empty", expectedUserPrincipalName=""), "COR-upn-empty"),
    invalid("huge-reason", request("COR-huge", reason=MARKER * 7000), "COR-huge"),
    invalid("over-64-kib", request("COR-over", reason="x" * MAX_MESSAGE_BYTES), channels=frozenset({"http"})),
    invalid("one-mebibyte", b"{" + b" " * (1024 * 1024) + b"}", channels=frozenset({"http"})),
    # --- identifiers that break the contract
    invalid("intune-id-not-a-guid", request("COR-id-text", {"intuneDeviceId": "not-a-guid"}), "COR-id-text"),
    invalid("intune-id-braced", request("COR-id-braced", {"intuneDeviceId": "{" + ALEX_IPHONE + "}"}), "COR-id-braced"),
    invalid("intune-id-with-path", request("COR-id-path", {"intuneDeviceId": ALEX_IPHONE + "/resetPasscode"}),
            "COR-id-path"),
    invalid("intune-id-number", request("COR-id-num", {"intuneDeviceId": 5394}), "COR-id-num"),
    invalid("intune-id-nested", request("COR-id-nested", {"intuneDeviceId": [[[[ALEX_IPHONE]]]]}), "COR-id-nested"),
    invalid("aad-id-path-traversal", request("COR-aad-path", {"azureAdDeviceId": "../../" + MARKER}), "COR-aad-path"),
    invalid("imei-13-digits", request("COR-imei-13", {"imei": ALEX_IMEI[:13]}), "COR-imei-13"),
    invalid("imei-letters", request("COR-imei-alpha", {"imei": ALEX_IMEI[:14] + "A"}), "COR-imei-alpha"),
    invalid("imei-fullwidth-digits", request("COR-imei-fw", {"imei": ALEX_IMEI.translate(FULLWIDTH)}), "COR-imei-fw"),
    invalid("imei-arabic-indic-digits", request("COR-imei-ar", {"imei": ALEX_IMEI.translate(ARABIC_INDIC)}),
            "COR-imei-ar"),
    invalid("imei-with-dashes", request("COR-imei-dash", {"imei": "35-828131-233515-5"}), "COR-imei-dash"),
    invalid("imei-number", request("COR-imei-num", {"imei": int(ALEX_IMEI)}), "COR-imei-num"),
    invalid("serial-empty", request("COR-serial-empty", {"serialNumber": ""}), "COR-serial-empty"),
    invalid("serial-whitespace", request("COR-serial-ws", {"serialNumber": "   "}), "COR-serial-ws"),
    invalid("serial-nul", request("COR-serial-nul", {"serialNumber": ALEX_SERIAL + "\x00"}), "COR-serial-nul"),
    invalid("serial-crlf", request("COR-serial-crlf", {"serialNumber": ALEX_SERIAL + "\r\n"}), "COR-serial-crlf"),
    invalid("serial-too-long", request("COR-serial-long", {"serialNumber": "S" * 129}), "COR-serial-long"),
    invalid("two-identifiers", request("COR-two-ids", {"intuneDeviceId": ALEX_IPHONE, "imei": ALEX_IMEI}),
            "COR-two-ids"),
    invalid("all-four-identifiers", request("COR-four-ids", {"intuneDeviceId": ALEX_IPHONE, "imei": ALEX_IMEI,
            "serialNumber": ALEX_SERIAL, "azureAdDeviceId": ZERO_GUID}), "COR-four-ids"),
    invalid("no-identifier", request("COR-no-id", {}), "COR-no-id"),
    invalid("identifier-null", request("COR-id-null", {"intuneDeviceId": None}), "COR-id-null"),
    invalid("device-wrapped-twice", request("COR-wrapped", {"device": {"intuneDeviceId": ALEX_IPHONE}}),
            "COR-wrapped"),
    invalid("duplicate-request-id-key", _raw('{"requestId": "$RID", "requestId": "COR-dup-2", "device": '
                                             '{"intuneDeviceId": "$DEV"}, "requestedBy": "d"}', "COR-dup-1")),
    invalid("duplicate-imei-key", _raw('{"requestId": "$RID", "device": {"imei": "358281312335155", '
                                       '"imei": "490154203237518"}, "requestedBy": "d"}', "COR-dup-imei")),
    invalid("duplicate-device-key", _raw('{"requestId": "$RID", "device": {"intuneDeviceId": "$DEV"}, '
                                         '"device": {"imei": "358281312335155"}, "requestedBy": "d"}', "COR-dup-dev")),
    # --- requestIds and audit fields that would smuggle something into a filter, a path or a log
    invalid("request-id-spaces", request("INC 0012345")),
    invalid("request-id-too-long", request("R" * 129)),
    invalid("request-id-cyrillic-lookalike", request("IN" + CYRILLIC_ES + "0012345")),
    invalid("request-id-path-traversal", request("../../" + MARKER)),
    invalid("request-id-odata-injection", request("X' or 1 eq 1")),
    invalid("request-id-crlf", request("COR-a\r\nCOR-b")),
    invalid("requested-by-log-injection", request("COR-log-inj", requestedBy='desk\n{"level": "ERROR", "m": "'
                                                  + MARKER + '"}'), "COR-log-inj"),
    invalid("requested-by-ansi-escape", request("COR-ansi", requestedBy="\x1b[31m" + MARKER), "COR-ansi"),
    invalid("correlation-id-control", request("COR-corr-ctl", correlationId="a\x07b"), "COR-corr-ctl"),
    invalid("ticket-id-nul", request("COR-ticket-nul", ticketId="INC\x00" + MARKER), "COR-ticket-nul"),
    Item("request-id-key-casing", js(request(DROP, RequestId="COR-casing")), "invalid", None,
         http_expect="not_found"),  # requestId is optional over HTTP: a generated one is used
    # --- valid per the contract, but they must act on nothing
    valid("odata-or-clause", "not_found", {"serialNumber": "x' or serialNumber ne '"}),
    valid("odata-real-serial-or-true", "not_found", {"serialNumber": ALEX_SERIAL + "' or '1' eq '1"}),
    valid("odata-wildcard", "not_found", {"serialNumber": "*"}),
    valid("odata-percent-encoded", "not_found", {"serialNumber": "%27%20or%201%20eq%201"}),
    valid("odata-paren-break", "not_found", {"serialNumber": "') or true or ('"}),
    valid("odata-query-smuggling", "not_found", {"serialNumber": ALEX_SERIAL + "&$filter=true&$top=999"}),
    valid("odata-path-traversal", "not_found",
          {"serialNumber": f"../../v1.0/deviceManagement/managedDevices/{ALEX_IPHONE}/resetPasscode"}),
    valid("odata-fragment", "not_found", {"serialNumber": ALEX_SERIAL + "#?$top=1"}),
    valid("serial-cyrillic-lookalike", "not_found", {"serialNumber": ALEX_SERIAL.replace("X", CYRILLIC_HA)}),
    valid("serial-fullwidth", "not_found", {"serialNumber": ALEX_SERIAL.translate(FULLWIDTH)}),
    valid("serial-zero-width-space", "not_found", {"serialNumber": "G6TZK2\u200bXQ0D"}),
    valid("serial-rtl-override", "not_found", {"serialNumber": "\u202e" + ALEX_SERIAL[::-1]}),
    valid("imei-unknown", "not_found", {"imei": "490154203237518"}),
    valid("intune-id-all-zero", "not_found", {"intuneDeviceId": ZERO_GUID}),
    valid("many-unknown-fields", "not_found", {"intuneDeviceId": NO_SUCH_DEVICE},
          **{f"x{n}": n for n in range(3000)}),
    valid("aad-id-all-zero", "ambiguous", {"azureAdDeviceId": ZERO_GUID}),
    valid("serial-shared-by-two", "ambiguous", {"serialNumber": "DX3PQ7Y2N72J"}),
    valid("upn-odata-injection", "user_mismatch", {"intuneDeviceId": ALEX_IPHONE},
          expectedUserPrincipalName="alex@contoso.com' or '1' eq '1"),
    valid("upn-cyrillic-lookalike", "user_mismatch", {"intuneDeviceId": ALEX_IPHONE},
          expectedUserPrincipalName=CYRILLIC_A + "lex@contoso.com"),
    valid("upn-fullwidth", "user_mismatch", {"intuneDeviceId": ALEX_IPHONE},
          expectedUserPrincipalName="alex".translate(FULLWIDTH) + "@contoso.com"),
    valid("upn-trailing-space", "user_mismatch", {"intuneDeviceId": ALEX_IPHONE},
          expectedUserPrincipalName="alex@contoso.com "),
    Item("request-id-json-escapes", _raw('{"requestId": "\\u0043OR-escapes", "device": {"intuneDeviceId": "$DEV"},'
                                         ' "requestedBy": "d"}', ""), "not_found", "COR-escapes"),
]


def expected_filters() -> set[str]:
    """The `$filter` of every list call the valid items may cause (quotes doubled:
    docs/contract.md#device-resolution). An IMEI is looked up in each stored form Intune may hold
    until one matches: as given, with or without the check digit, in Apple's grouping
    (docs/decisions/0010-imei-lookup.md)."""
    props = {"serialNumber": "serialNumber", "imei": "imei", "azureAdDeviceId": "azureADDeviceId"}
    filters = set()
    for item in CORPUS:
        if item.expect == "invalid":
            continue
        device = json.loads(item.body)["device"]
        for kind, value in device.items():
            if kind in props:
                for form in imei_lookup_forms(value) if kind == "imei" else [value]:
                    filters.add(f"{props[kind]} eq '{form.replace(chr(39), chr(39) * 2)}'")
    return filters


def expected_device_reads() -> set[str]:
    """Devices the valid items may read by id."""
    reads = set()
    for item in CORPUS:
        if item.expect != "invalid":
            document = json.loads(item.body)
            reads.update(v.lower() for k, v in document["device"].items() if k == "intuneDeviceId")
    return reads
