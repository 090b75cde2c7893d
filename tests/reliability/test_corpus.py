"""The bad-input corpus (tests/reliability/corpus.py) through the request queue and through
`POST /api/resets`: every message ends in exactly one final event with its classified outcome, the
invalid ones without any Graph call, nothing lands in a poison queue, and valid requests sent in
between complete as if nothing happened."""

from __future__ import annotations

import collections
import json
import logging
from typing import Any

import aiohttp
import pytest

from shared.core.contract import InvalidRequest, parse_request_message
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
from tests.reliability.corpus import (
    CORPUS,
    MARKER,
    REASON_CODE,
    Item,
    expected_device_reads,
    expected_filters,
)

KEY = {"x-functions-key": TEST_FUNCTION_KEY}
EVERY_VALID_EVERY = 20  # a valid request after this many corpus items, and one at the end


def test_the_corpus_covers_every_kind_of_bad_input() -> None:
    assert len(CORPUS) >= 50
    assert len({item.name for item in CORPUS}) == len(CORPUS)
    kinds = collections.Counter(item.expect for item in CORPUS)
    assert kinds["invalid"] >= 50 and kinds["not_found"] and kinds["ambiguous"] and kinds["user_mismatch"]
    assert {"queue", "http"} == {channel for item in CORPUS for channel in item.channels}


@pytest.mark.parametrize("item", CORPUS, ids=lambda item: item.name)
def test_the_contract_parser_agrees_with_the_classification(item: Item) -> None:
    parsed = parse_request_message(item.body)
    if item.expect == "invalid":
        assert isinstance(parsed, InvalidRequest), "accepted"
        assert parsed.request_id == item.request_id
        assert MARKER not in parsed.message, "a rejected value is echoed"
    else:
        assert not isinstance(parsed, InvalidRequest), parsed.message
        assert parsed.requestId == item.request_id
    over_http = parse_request_message(item.body, require_request_id=False)
    assert isinstance(over_http, InvalidRequest) == (item.expect_http == "invalid")


def _outcome(expect: str) -> tuple[str, str]:
    return "rejected", REASON_CODE[expect]  # type: ignore[index]


async def test_corpus_through_the_queue(product_stack: ProductFactory, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="devstack.host")
    items = [item for item in CORPUS if "queue" in item.channels]
    expected = Expected()
    acting: set[str] = set()
    async with product_stack() as stack:
        valid = iter(VALID_DEVICES)
        for number, item in enumerate(items, start=1):
            await stack.send(item.queue_text())
            expected.add(item.request_id, *_outcome(item.expect))
            if number % EVERY_VALID_EVERY == 0 or number == len(items):
                device = next(valid)
                await stack.send(valid_request(f"GOOD-Q-{number}", device))
                expected.add(f"GOOD-Q-{number}", "completed", None)
                acting.add(device)
        await wait_for_outcomes(stack, expected)

        assert_outcomes(stack, expected)
        assert all(MARKER not in str(event) for event in stack.events), "a rejected value reached an event"
        await assert_graph_calls(
            stack, device_reads=expected_device_reads(), filters=expected_filters(), acting=acting
        )
        await assert_no_poison(stack)
    assert not [r for r in caplog.records if r.getMessage() in ("function failed", "message moved to poison queue")]


async def _post(session: aiohttp.ClientSession, url: str, body: bytes) -> tuple[int, dict[str, Any] | None, str]:
    async with session.post(f"{url}/api/resets", data=body, headers=KEY) as response:
        media = response.headers.get("Content-Type", "").split(";")[0]
        return response.status, (await response.json(content_type=None) if "json" in media else None), media


async def test_corpus_through_post_api_resets(product_stack: ProductFactory) -> None:
    items = [item for item in CORPUS if "http" in item.channels]
    expected = Expected()
    acting: set[str] = set()
    async with product_stack() as stack, aiohttp.ClientSession() as session:
        valid = iter(VALID_DEVICES)
        for number, item in enumerate(items, start=1):
            status, body, media = await _post(session, stack.host.url, item.body)
            assert status == item.http_status, (item.name, status, body)
            if status == 202:
                assert body is not None
                expected.add(body["requestId"], *_outcome(item.expect_http))
            else:
                assert media == "application/problem+json" and body is not None, item.name
                kind = "payload-too-large" if status == 413 else "invalid-request"
                assert body["type"] == f"urn:intune-passcode-reset:problem:{kind}", (item.name, body)
                assert MARKER not in str(body), f"{item.name}: the problem echoes a rejected value"
            if number % EVERY_VALID_EVERY == 0 or number == len(items):
                device = next(valid)
                good = json.dumps(valid_request(f"GOOD-H-{number}", device)).encode()
                status, body, _ = await _post(session, stack.host.url, good)
                assert status == 202, body
                expected.add(f"GOOD-H-{number}", "completed", None)
                acting.add(device)
        await wait_for_outcomes(stack, expected)

        assert_outcomes(stack, expected)
        await assert_graph_calls(
            stack, device_reads=expected_device_reads(), filters=expected_filters(), acting=acting
        )
        await assert_no_poison(stack)
        # A rejected POST leaves nothing behind: no ledger record (404), no message, no event.
        for item in items:
            if item.http_status != 202 and item.request_id:
                async with session.get(f"{stack.host.url}/api/resets/{item.request_id}", headers=KEY) as response:
                    assert response.status == 404, item.name
        async with session.get(f"{stack.host.url}/api/health") as response:
            assert response.status == 200
