"""The HTTP API as an OpenAPI 2.0 (Swagger) document, generated from the same pydantic models that
validate requests and build responses. OpenAPI 2.0 because Power Platform custom connectors import
only that version.

Pydantic emits JSON Schema 2020-12; Swagger 2.0 schemas are an older subset, so the definitions are
converted: `anyOf [X, null]` becomes X with `x-nullable: true`, `oneOf` becomes prose, null defaults
and generated titles go, and Power Platform's `x-ms-summary` / `x-ms-visibility` are added.

`python -m tools.openapi` rewrites openapi/apiDefinition.swagger.json (placeholder host); a test
keeps that committed copy current. The served copy (`GET /api/openapi.json`) names the real host.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from shared.api.approvals import ApprovalDecision
from shared.api.batches import ITEM_COLUMNS
from shared.api.http import PROBLEM_JSON, PROBLEM_TYPE_PREFIX, HttpAnswer, HttpCall, base_path, json_answer
from shared.api.models import HealthReport, PasscodeReveal, Problem, ResetAccepted
from shared.api.resets import IN_PROGRESS_RETRY_AFTER
from shared.core.batches import BATCH_ID_PATTERN, MAX_BODY_BYTES, MAX_ITEMS, BatchSubmission
from shared.core.contract import IDENTIFIER_KINDS, MAX_MESSAGE_BYTES, REQUEST_ID_PATTERN, OutcomeData, ResetRequest

PLACEHOLDER_HOST = "your-function-app.azurewebsites.net"
API_VERSION = "1.0.0"

# Friendly names shown by Power Automate for fields and parameters (x-ms-summary).
SUMMARIES = {
    "requestId": "Request ID",
    "device": "Device",
    "intuneDeviceId": "Intune device ID",
    "azureAdDeviceId": "Entra ID device ID",
    "serialNumber": "Serial number",
    "imei": "IMEI",
    "expectedUserPrincipalName": "Expected user (UPN)",
    "requestedBy": "Requested by",
    "reason": "Reason",
    "ticketId": "Ticket ID",
    "correlationId": "Correlation ID",
    "allowRemoteLock": "Allow remote lock (macOS)",
    "dryRun": "Dry run",
    "requestReason": "Request reason",
    "deviceId": "Device ID",
    "osVersion": "OS version",
    "userPrincipalName": "User principal name",
    "statusUrl": "Status URL",
    "actionState": "Action state",
    "startedAt": "Started at",
    "until": "Wait until",
}
# Where Power Automate shows a field: important = always, advanced = behind "Show advanced options".
VISIBILITY = {
    "device": "important",
    "intuneDeviceId": "important",
    "requestedBy": "important",
    "requestId": "important",
    "reason": "important",
    "ticketId": "important",
    "azureAdDeviceId": "advanced",
    "serialNumber": "advanced",
    "imei": "advanced",
    "expectedUserPrincipalName": "advanced",
    "correlationId": "advanced",
    "allowRemoteLock": "advanced",
    "dryRun": "advanced",
}
_MODELS: list[tuple[type[BaseModel], JsonSchemaMode]] = [
    (ResetRequest, "validation"),
    (OutcomeData, "serialization"),
    (ResetAccepted, "serialization"),
    (Problem, "serialization"),
    (PasscodeReveal, "serialization"),
    (HealthReport, "serialization"),
    (ApprovalDecision, "validation"),
    (BatchSubmission, "validation"),
]
# JSON Schema keywords that Swagger 2.0's Schema Object does not have.
_UNSUPPORTED = {"anyOf", "oneOf", "not", "const", "$defs", "prefixItems", "if", "then", "else", "examples"}


def definitions() -> dict[str, dict[str, Any]]:
    """Swagger 2.0 definitions of every model the API reads or writes, named by model title.

    Enumerations are inlined where they are used (Power Platform shows inline enums as choices)."""
    _, top = models_json_schema(_MODELS, ref_template="#/definitions/{model}")
    raw: dict[str, dict[str, Any]] = top["$defs"]
    names = {key: str(schema.get("title") or key) for key, schema in raw.items()}
    if len(set(names.values())) != len(names):
        raise ValueError(f"two models share a title: {sorted(names.values())}")
    converter = _Converter(raw, names)
    converted = {names[key]: converter.schema(schema) for key, schema in raw.items() if not _is_enum(schema)}
    _check_swagger2(converted, "definitions")
    return dict(sorted(converted.items()))


def _is_enum(schema: dict[str, Any]) -> bool:
    return "enum" in schema and "properties" not in schema


class _Converter:
    def __init__(self, raw: dict[str, dict[str, Any]], names: dict[str, str]) -> None:
        self._raw = raw
        self._names = names

    def schema(self, schema: dict[str, Any], prop: str | None = None) -> dict[str, Any]:
        schema = copy.deepcopy(schema)
        nullable = False
        if "anyOf" in schema:
            variants = [v for v in schema.pop("anyOf") if v != {"type": "null"}]
            if len(variants) != 1:
                raise ValueError(f"cannot express anyOf {variants} in Swagger 2.0")
            nullable = True
            inner = variants[0]
            schema = {**inner, **{k: v for k, v in schema.items() if k != "description"}, **_description(schema, inner)}
        if schema.pop("oneOf", None) is not None and schema.get("properties"):
            note = "Give exactly one of " + ", ".join(schema["properties"]) + "."
            schema["description"] = f"{schema.get('description', '')} {note}".strip()
        if schema.get("default", 0) is None:
            del schema["default"]
        if "$ref" in schema:
            target = schema["$ref"].rsplit("/", 1)[1]
            if _is_enum(self._raw[target]):
                enum = {k: v for k, v in self._raw[target].items() if k not in ("title", "description")}
                schema = {**enum, **{k: v for k, v in schema.items() if k != "$ref"}}
        if prop is not None:
            schema.pop("title", None)
            schema["x-ms-summary"] = SUMMARIES.get(prop, _words(prop))
            if prop in VISIBILITY:
                schema["x-ms-visibility"] = VISIBILITY[prop]
        if nullable:
            schema["x-nullable"] = True
        if "$ref" in schema:
            ref: dict[str, Any] = {"$ref": "#/definitions/" + self._names[schema.pop("$ref").rsplit("/", 1)[1]]}
            # Swagger 2.0 ignores the siblings of $ref: wrap it when something must travel with it.
            schema = {"allOf": [ref], **schema} if schema else ref
        if "properties" in schema:
            schema["properties"] = {name: self.schema(sub, name) for name, sub in schema["properties"].items()}
        if isinstance(schema.get("items"), dict):
            schema["items"] = self.schema(schema["items"])
        return schema


def _description(outer: dict[str, Any], inner: dict[str, Any]) -> dict[str, Any]:
    text = outer.get("description") or inner.get("description")
    return {"description": text} if text else {}


def _words(name: str) -> str:
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).lower()
    return words[:1].upper() + words[1:]


def _check_swagger2(schemas: dict[str, Any], where: str) -> None:
    """Fail generation (and its test) on any keyword a Swagger 2.0 schema cannot carry."""
    for name, schema in schemas.items():
        found = _UNSUPPORTED & schema.keys()
        if found:
            raise ValueError(f"{where}/{name}: {sorted(found)} is not Swagger 2.0")
        _check_swagger2(schema.get("properties", {}), f"{where}/{name}/properties")
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                _check_swagger2({key: schema[key]}, f"{where}/{name}")
        for index, item in enumerate(schema.get("allOf", [])):
            _check_swagger2({str(index): item}, f"{where}/{name}/allOf")


# ====================================================================== the document


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/definitions/{name}"}


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "schema": _ref("Problem")}
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {"type": "integer", "description": "Seconds to wait before polling Location again"}
_POLLING_HEADERS = {
    "Location": {"type": "string", "description": "Absolute URL to poll (GET) for the outcome"},
    "Retry-After": _RETRY_AFTER,
}
_UNAVAILABLE = _problem(
    "A dependency (storage or Graph) did not answer; retry after Retry-After seconds",
    {"Retry-After": {"type": "integer", "description": "Seconds to wait before trying again"}},
)
# The Functions host itself answers a missing or wrong key with an empty 401; the app answers a
# missing principal (App Service Authentication mode) with a problem.
_UNAUTHORIZED = {
    "description": "No or wrong function key (empty body, from the Functions host), or, with App Service "
    "Authentication, no signed-in caller (a problem)"
}
_FORBIDDEN = _problem("App Service Authentication is on and the caller lacks the route's app role")

_REQUEST_ID_PARAMETER = {
    "name": "requestId",
    "in": "path",
    "required": True,
    "type": "string",
    "pattern": REQUEST_ID_PATTERN,
    "description": "The request's idempotency key, as given or generated at submission",
    "x-ms-summary": SUMMARIES["requestId"],
    "x-ms-url-encoding": "single",
}


def _until_parameter(action: str) -> dict[str, Any]:
    return {
        "name": "until",
        "in": "query",
        "required": False,
        "type": "string",
        "enum": ["final"],
        "description": f"final: {action} 202 until the request reaches a final status (completed, failed, "
        "unsupported, rejected, dry_run, timed_out) instead of stopping at submitted",
        "x-ms-summary": SUMMARIES["until"],
        "x-ms-visibility": "advanced",
    }


def _paths() -> dict[str, Any]:
    produces = ["application/json", PROBLEM_JSON]
    return {
        "/resets": {
            "post": {
                "operationId": "SubmitPasscodeReset",
                "summary": "Reset a device passcode",
                "description": (
                    "Validates the request and queues it. Answers 202 with Location and Retry-After: poll "
                    "Location (GET) until the answer is not 202 (the asynchronous pattern). Idempotent per "
                    "requestId: the same payload again returns the existing request (202 while in progress, "
                    "200 with its outcome after that); a different payload under the same requestId is 409. "
                    "Without a requestId one is generated (http-<uuid>) and every call is a new request."
                ),
                "x-ms-visibility": "important",
                "consumes": ["application/json"],
                "produces": produces,
                "parameters": [
                    {
                        "name": "body",
                        "in": "body",
                        "required": True,
                        "description": "The reset request (the same message the request queue takes)",
                        "schema": _ref("PasscodeResetRequest"),
                    },
                    _until_parameter("the Location returned keeps answering"),
                ],
                "responses": {
                    "202": {
                        "description": "Accepted: queued or in progress; poll Location",
                        "schema": _ref("PasscodeResetAccepted"),
                        "headers": _POLLING_HEADERS,
                    },
                    "200": {
                        "description": "A repeat of an earlier request that already has an outcome: that outcome",
                        "schema": _ref("PasscodeResetOutcome"),
                    },
                    "400": _problem("The body is not a valid request; errors names each field at fault"),
                    "401": _UNAUTHORIZED,
                    "403": _FORBIDDEN,
                    "409": _problem("This requestId was already used for a different request"),
                    "413": _problem(f"The body is larger than {MAX_MESSAGE_BYTES} bytes"),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/resets/{requestId}": {
            "get": {
                "operationId": "GetPasscodeReset",
                "summary": "Get the status or outcome of a reset",
                "description": (
                    "202 with Location and Retry-After while the request is queued or processing; 200 with "
                    "the latest outcome event's data once there is one (submitted counts, unless until=final)."
                ),
                "x-ms-visibility": "important",
                "produces": produces,
                "parameters": [_REQUEST_ID_PARAMETER, _until_parameter("keep answering")],
                "responses": {
                    "200": {"description": "The latest outcome", "schema": _ref("PasscodeResetOutcome")},
                    "202": {
                        "description": "Still in progress; poll Location again after Retry-After seconds",
                        "schema": _ref("PasscodeResetAccepted"),
                        "headers": _POLLING_HEADERS,
                    },
                    "400": _problem("The requestId or until parameter is not valid"),
                    "401": _UNAUTHORIZED,
                    "403": _FORBIDDEN,
                    "404": _problem("No request has this requestId"),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/resets/{requestId}/passcode": {
            "get": {
                "operationId": "RevealPasscode",
                "summary": "Reveal the new passcode or unlock PIN of a reset",
                "description": (
                    "Only when the app setting ALLOW_PASSCODE_REVEAL is true (otherwise 404). Reads the "
                    "secret Intune generated for this request's action live from the device's "
                    "deviceActionResults: kind passcode for an Android passcode reset, kind unlockPin for a "
                    "macOS remote lock (the Mac's 6-digit recovery PIN, shown by Intune for 30 days or until "
                    "the next action on the Mac); iOS removes the passcode instead. Never stored; every "
                    "call is audit-logged without the secret. Do not log or store the response."
                ),
                "x-ms-visibility": "advanced",
                "produces": produces,
                "parameters": [_REQUEST_ID_PARAMETER],
                "responses": {
                    "200": {
                        "description": "The passcode or unlock PIN (Cache-Control: no-store)",
                        "schema": _ref("PasscodeReveal"),
                        "headers": {"Cache-Control": {"type": "string", "description": "no-store"}},
                    },
                    "400": _problem("The requestId is not valid"),
                    "401": _UNAUTHORIZED,
                    "403": _FORBIDDEN,
                    "404": _problem("Passcode reveal is disabled, the request is unknown, or there is no passcode"),
                    "502": _problem("Microsoft Graph refused to read the device"),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/resets/{requestId}/approval": {
            "post": {
                "operationId": "DecidePasscodeResetApproval",
                "summary": "Approve or deny a reset awaiting approval",
                "description": (
                    "For a request whose status is awaiting_approval (an APPROVAL_REQUIRED rule or a guardrail "
                    "held it). approve: the request goes on; deny: it ends rejected / approval_denied. With App "
                    "Service Authentication the approver is the signed-in caller (app role PasscodeReset.Approve) "
                    "and a body approver is ignored; with a function key only, the body must name the approver "
                    "(self-asserted). Four eyes: the approver may be neither requestedBy nor submittedBy (403). "
                    "Answers 200 with what GET /resets/{requestId} answers at that moment."
                ),
                "x-ms-visibility": "important",
                "consumes": ["application/json"],
                "produces": produces,
                "parameters": [
                    _REQUEST_ID_PARAMETER,
                    {
                        "name": "body",
                        "in": "body",
                        "required": True,
                        "description": "The decision",
                        "schema": _ref("ApprovalDecision"),
                    },
                ],
                "responses": {
                    "200": {
                        "description": "Recorded: the outcome (denied) or the status (approved, processing)",
                        "schema": _ref("PasscodeResetOutcome"),
                    },
                    "400": _problem("The body or the requestId is not valid, or the approver is missing"),
                    "401": _UNAUTHORIZED,
                    "403": _problem(
                        "The caller lacks PasscodeReset.Approve, or is the requester or submitter (same-person)"
                    ),
                    "404": _problem("No request has this requestId"),
                    "409": _problem("The request is not awaiting approval; nothing changed"),
                    "413": _problem("The body is too large"),
                    "503": _UNAVAILABLE,
                },
            }
        },
        **_batch_paths(produces),
        "/openapi.json": {
            "get": {
                "operationId": "GetOpenApiDocument",
                "summary": "Get this OpenAPI document",
                "description": "The OpenAPI 2.0 document of this API, for importing as a custom connector.",
                "x-ms-visibility": "internal",
                "security": [],
                "produces": ["application/json"],
                "responses": {"200": {"description": "OpenAPI 2.0 (Swagger) document", "schema": {"type": "object"}}},
            }
        },
        "/health": {
            "get": {
                "operationId": "GetHealth",
                "summary": "Check the service's dependencies",
                "description": "Storage (ledger table, request queue) and Microsoft Graph reachability.",
                "x-ms-visibility": "internal",
                "security": [],
                "produces": ["application/json"],
                "responses": {
                    "200": {"description": "Every dependency answers", "schema": _ref("HealthReport")},
                    "503": {"description": "A dependency does not answer", "schema": _ref("HealthReport")},
                },
            }
        },
    }


_BATCH_ID_PARAMETER = {
    "name": "batchId",
    "in": "path",
    "required": True,
    "type": "string",
    "pattern": BATCH_ID_PATTERN,
    "description": "The batch's idempotency key, as given or generated at submission",
    "x-ms-summary": "Batch ID",
    "x-ms-url-encoding": "single",
}
_BATCH_STATE = {
    "type": "object",
    "properties": {
        "batchId": {"type": "string"},
        "state": {"type": "string", "enum": ["expanding", "awaiting_approval", "running", "done"]},
        "items": {"type": "integer", "description": "Items of the batch (null while a group is expanded)"},
        "counts": {
            "type": "object",
            "additionalProperties": {"type": "integer"},
            "description": "Items by status of their latest event; pending: no event yet",
        },
        "final": {"type": "integer", "description": "Items with a final status"},
    },
}


def _batch_paths(produces: list[str]) -> dict[str, Any]:
    """docs/contract.md#batches."""
    row_errors = _problem(
        "The batch is invalid: errors lists each problem as {row, field, detail} (row: the 1-based item "
        "number, null for the batch's own fields); nothing was accepted. An unknown group names entraGroupId"
    )
    return {
        "/batches": {
            "post": {
                "operationId": "SubmitPasscodeResetBatch",
                "summary": "Reset the passcodes of many devices",
                "description": (
                    f"A list of 1 to {MAX_ITEMS} devices (JSON, or text/csv with a header row of identifier "
                    "columns and the batch's fields as query parameters) or an Entra group. Item n becomes the "
                    "request <batchId>.<n>. Answers 202 with Location and Retry-After; poll Location with "
                    "until=done. Idempotent per batchId: the same payload again gets the same answer; another "
                    "payload is 409."
                ),
                "x-ms-visibility": "important",
                "consumes": ["application/json", "text/csv"],
                "produces": produces,
                "parameters": [
                    {
                        "name": "body",
                        "in": "body",
                        "required": True,
                        "description": "The batch (JSON); or a CSV text with the fields as query parameters",
                        "schema": _ref("PasscodeResetBatch"),
                    },
                ],
                "responses": {
                    "202": {
                        "description": "Accepted; poll Location",
                        "schema": {
                            "type": "object",
                            "properties": {
                                "batchId": {"type": "string"},
                                "status": {"type": "string", "enum": ["accepted"]},
                                "statusUrl": {"type": "string"},
                                "items": {"type": "integer", "description": "null for a group until expanded"},
                            },
                        },
                        "headers": _POLLING_HEADERS,
                    },
                    "400": row_errors,
                    "401": _UNAUTHORIZED,
                    "403": _FORBIDDEN,
                    "409": _problem("This batchId was already used for a different batch"),
                    "413": _problem(f"More than {MAX_ITEMS} devices, or a body larger than {MAX_BODY_BYTES} bytes"),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/batches/{batchId}": {
            "get": {
                "operationId": "GetPasscodeResetBatch",
                "summary": "Get a batch's state and counts",
                "description": "200: the state and counts; with until=done, 202 + Location + Retry-After until done",
                "x-ms-visibility": "important",
                "produces": produces,
                "parameters": [
                    _BATCH_ID_PARAMETER,
                    {
                        "name": "until",
                        "in": "query",
                        "required": False,
                        "type": "string",
                        "enum": ["done"],
                        "description": "done: answer 202 until every item is final",
                        "x-ms-summary": "Wait until",
                    },
                ],
                "responses": {
                    "200": {"description": "The batch", "schema": _BATCH_STATE},
                    "202": {
                        "description": "Not done yet; poll Location",
                        "schema": _BATCH_STATE,
                        "headers": _POLLING_HEADERS,
                    },
                    "400": _problem("The batchId or until parameter is not valid"),
                    "401": _UNAUTHORIZED,
                    "403": _FORBIDDEN,
                    "404": _problem("No batch has this batchId"),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/batches/{batchId}/approval": {
            "post": {
                "operationId": "DecidePasscodeResetBatchApproval",
                "summary": "Approve or deny a whole batch",
                "description": (
                    "For a batch awaiting approval (APPROVAL_REQUIRED has batch), or with items awaiting approval. "
                    "approve: its items run, never held by rules or guardrails; deny: every item ends rejected / "
                    "approval_denied. The approver is named as for a request's approval and may not be the "
                    "batch's requestedBy (403). Answers 200 with the batch's state and counts."
                ),
                "x-ms-visibility": "advanced",
                "consumes": ["application/json"],
                "produces": produces,
                "parameters": [
                    _BATCH_ID_PARAMETER,
                    {
                        "name": "body",
                        "in": "body",
                        "required": True,
                        "description": "The decision",
                        "schema": _ref("ApprovalDecision"),
                    },
                ],
                "responses": {
                    "200": {"description": "Recorded: the batch now", "schema": _BATCH_STATE},
                    "400": _problem("The body or the batchId is not valid, or the approver is missing"),
                    "401": _UNAUTHORIZED,
                    "403": _problem("The caller lacks PasscodeReset.Approve, or is the batch's requester"),
                    "404": _problem("No batch has this batchId"),
                    "409": _problem("Neither the batch nor any item is awaiting approval; nothing changed"),
                    "413": _problem("The body is too large"),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/batches/{batchId}/items": {
            "get": {
                "operationId": "GetPasscodeResetBatchItems",
                "summary": "Get a batch's items and their outcomes",
                "description": "One row per item: " + ", ".join(ITEM_COLUMNS) + " (CSV with format=csv).",
                "x-ms-visibility": "advanced",
                "produces": ["application/json", "text/csv", PROBLEM_JSON],
                "parameters": [
                    _BATCH_ID_PARAMETER,
                    {
                        "name": "format",
                        "in": "query",
                        "required": False,
                        "type": "string",
                        "enum": ["json", "csv"],
                        "x-ms-summary": "Format",
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The items",
                        "schema": {
                            "type": "object",
                            "properties": {
                                "batchId": {"type": "string"},
                                "items": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {k: {"type": "string"} for k in ITEM_COLUMNS},
                                    },
                                },
                            },
                        },
                    },
                    "400": _problem("The batchId or format parameter is not valid"),
                    "401": _UNAUTHORIZED,
                    "403": _FORBIDDEN,
                    "404": _problem("No batch has this batchId"),
                    "503": _UNAVAILABLE,
                },
            }
        },
    }


def openapi_document(host: str = PLACEHOLDER_HOST, scheme: str = "https", base_path: str = "/api") -> dict[str, Any]:
    identifiers = ", ".join(IDENTIFIER_KINDS)
    return {
        "swagger": "2.0",
        "info": {
            "title": "Intune Passcode Reset",
            "version": API_VERSION,
            "description": (
                "Reset the passcode of an Intune-managed device (Android Enterprise, AOSP, device "
                f"administrator, iOS/iPadOS, Windows Mobile; macOS remote lock on request). Name the device by "
                f"one of {identifiers}. Submitting answers 202 Accepted with a Location to poll: this is the "
                f"asynchronous pattern that Power Automate's HTTP action and custom connectors follow by "
                f"themselves (Retry-After is {IN_PROGRESS_RETRY_AFTER} s while the request is being worked on). "
                f"Errors are RFC 9457 problem details ({PROBLEM_TYPE_PREFIX}...)."
            ),
        },
        "host": host,
        "basePath": base_path,
        "schemes": [scheme],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {
            "functionKey": {
                "type": "apiKey",
                "in": "header",
                "name": "x-functions-key",
                "description": "A function key (or the host key) of the Function App",
            }
        },
        "security": [{"functionKey": []}],
        "paths": _paths(),
        "definitions": definitions(),
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def openapi_answer(call: HttpCall) -> HttpAnswer:
    """The OpenAPI 2.0 document with `host`, `schemes` and `basePath` of the URL it was served at."""
    parts = urlsplit(call.url)
    prefix = base_path(parts.path, trailing_segments=1)
    document = openapi_document(host=parts.netloc, scheme=parts.scheme or "https", base_path=prefix or "/")
    return json_answer(200, document)
