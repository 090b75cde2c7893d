"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis), against the
devstack host: valid and invalid inputs for every operation, and no answer may be a 5xx or stray
from what the document promises."""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.plugins.product import ProductFactory
from tests.plugins.stack import TEST_FUNCTION_KEY

EXAMPLES_PER_OPERATION = 30
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def checks_for(response: requests.Response) -> list[Any]:
    """Every check for the app's own answers (always JSON); answers of the host itself (the empty 401
    of a missing key, the web server's plain-text 404 for a path it cannot route) are only checked
    for being documented and not a server error."""
    media_type = response.headers.get("Content-Type", "").split(";")[0]
    if media_type in ("application/json", "application/problem+json"):
        return CHECKS
    return [not_a_server_error, status_code_conformance]


def fuzz(document: dict[str, Any], base_url: str) -> collections.Counter[str]:
    """Run every operation with positive and negative examples; returns "METHOD path status" counts."""
    schema = schemathesis.openapi.from_dict(document)
    seen: collections.Counter[str] = collections.Counter()
    with requests.Session() as session:
        session.headers["x-functions-key"] = TEST_FUNCTION_KEY
        for result in schema.get_all_operations():
            operation = result.ok()
            modes = [schemathesis.GenerationMode.POSITIVE]
            if any(True for _ in operation.iter_parameters()) or operation.body:
                modes.append(schemathesis.GenerationMode.NEGATIVE)  # nothing to break without inputs
            for mode in modes:

                @settings(
                    max_examples=EXAMPLES_PER_OPERATION,
                    derandomize=True,
                    database=None,
                    deadline=None,
                    phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case: schemathesis.Case) -> None:
                    headers = {"x-functions-key": TEST_FUNCTION_KEY}
                    response = case.call(base_url=base_url, session=session, headers=headers, timeout=15)
                    seen[f"{case.operation.method.upper()} {case.operation.path} {response.status_code}"] += 1
                    case.validate_response(response, checks=checks_for(response), headers=headers)

                run()
    return seen


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")  # schemathesis internals
async def test_fuzzing_the_openapi_document_finds_no_server_error(product_stack: ProductFactory) -> None:
    async with product_stack(ALLOW_PASSCODE_REVEAL="true") as stack, aiohttp.ClientSession() as session:
        async with session.get(f"{stack.host.url}/api/openapi.json") as response:
            document = json.loads(await response.text())
        # schemathesis is synchronous: run it in a thread so the host keeps serving on this loop.
        seen = await asyncio.to_thread(fuzz, document, f"{stack.host.url}{document['basePath']}")
        statuses = {key.rsplit(" ", 1)[1] for key in seen}
        assert {"202", "400", "404"} <= statuses, seen  # the fuzzer got past validation, too
        assert not [status for status in statuses if status.startswith("5")], seen
