"""The OpenAPI 2.0 document is generated from the contract models, importable as a Power Platform
custom connector, and the committed copy under openapi/ is current."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV2SpecValidator

from shared.api.http import HttpCall
from shared.api.openapi import PLACEHOLDER_HOST, openapi_answer, openapi_document, render
from tools.openapi import OPENAPI_DIR, OPENAPI_FILE

OPERATIONS = {
    "SubmitPasscodeReset",
    "GetPasscodeReset",
    "RevealPasscode",
    "DecidePasscodeResetApproval",
    "SubmitPasscodeResetBatch",
    "GetPasscodeResetBatch",
    "GetPasscodeResetBatchItems",
    "DecidePasscodeResetBatchApproval",
    "GetOpenApiDocument",
    "GetHealth",
}


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def test_committed_openapi_document_matches_the_models() -> None:
    committed = (OPENAPI_DIR / OPENAPI_FILE).read_text(encoding="utf-8")
    assert committed == render(openapi_document()), f"openapi/{OPENAPI_FILE} is stale: run python -m tools.openapi"


def test_document_is_valid_swagger_2() -> None:
    document = openapi_document()
    validate(document, cls=OpenAPIV2SpecValidator)
    assert document["swagger"] == "2.0" and document["host"] == PLACEHOLDER_HOST


def test_no_json_schema_keyword_that_swagger_2_lacks() -> None:
    for node in walk(openapi_document()["definitions"]):
        assert not {"anyOf", "oneOf", "const", "$defs", "not"} & node.keys(), node
        if "$ref" in node:
            assert set(node) == {"$ref"}, f"siblings of $ref are ignored in Swagger 2.0: {node}"


def test_nullable_fields_are_marked_x_nullable() -> None:
    request = openapi_document()["definitions"]["PasscodeResetRequest"]["properties"]
    assert request["ticketId"]["x-nullable"] is True and "x-nullable" not in request["requestedBy"]
    outcome = openapi_document()["definitions"]["PasscodeResetOutcome"]["properties"]
    assert outcome["device"] == {
        "allOf": [{"$ref": "#/definitions/EventDevice"}],
        "x-ms-summary": "Device",
        "x-ms-visibility": "important",
        "x-nullable": True,
    }


def test_every_operation_has_an_id_summary_and_description() -> None:
    document = openapi_document()
    found = {operation["operationId"] for _, _, operation in operations(document)}
    assert found == OPERATIONS
    for _, _, operation in operations(document):
        assert operation["summary"] and len(operation["summary"]) <= 80 and not operation["summary"].endswith(".")
        assert operation["description"] and operation["x-ms-visibility"] in ("important", "advanced", "internal")


def test_parameters_and_properties_carry_x_ms_summary() -> None:
    document = openapi_document()
    for _, _, operation in operations(document):
        for parameter in operation.get("parameters", []):
            assert parameter["in"] == "body" or parameter["x-ms-summary"], parameter
    for definition in document["definitions"].values():
        for name, prop in definition.get("properties", {}).items():
            assert prop.get("x-ms-summary"), name


def test_keyed_routes_use_the_function_key_and_two_are_anonymous() -> None:
    document = openapi_document()
    assert document["securityDefinitions"]["functionKey"]["in"] == "header"
    assert document["securityDefinitions"]["functionKey"]["name"] == "x-functions-key"
    assert document["security"] == [{"functionKey": []}]
    anonymous = {path for path, _, operation in operations(document) if operation.get("security") == []}
    assert anonymous == {"/openapi.json", "/health"}


def test_202_answers_describe_the_polling_headers() -> None:
    document = openapi_document()
    for path in ("/resets", "/resets/{requestId}"):
        method = "post" if path == "/resets" else "get"
        accepted = document["paths"][path][method]["responses"]["202"]
        assert set(accepted["headers"]) == {"Location", "Retry-After"}
        assert accepted["schema"] == {"$ref": "#/definitions/PasscodeResetAccepted"}


def test_request_definition_accepts_the_samples() -> None:
    document = openapi_document()
    schema = {**document["definitions"]["PasscodeResetRequest"], "definitions": document["definitions"]}
    for path in sorted((OPENAPI_DIR.parent / "samples").glob("*.json")):
        jsonschema.Draft4Validator(schema).validate(json.loads(path.read_text()))


def test_served_document_names_the_host_it_was_called_on() -> None:
    answer = openapi_answer(HttpCall.of("GET", "http://localhost:7071/api/openapi.json"))
    document = json.loads(answer.body)
    assert (document["host"], document["schemes"], document["basePath"]) == ("localhost:7071", ["http"], "/api")
    assert document["paths"] == openapi_document()["paths"]
