"""Every keyed HTTP route answers in bounded time (docs/contract.md#storage-outages,
docs/decisions/0023-storage-retry-budget.md): `serve` turns a dependency that fails, or does not
answer before the deadline, into 503 `dependency-unavailable` with `Retry-After`."""

from __future__ import annotations

import asyncio
import time

from shared.api.http import HttpAnswer, HttpCall, json_answer, serve
from shared.core.errors import StorageUnavailable

CALL = HttpCall.of("POST", "https://app.example/api/resets/REQ-1", route_params={"requestId": "REQ-1"})


async def services() -> str:
    return "services"


def assert_unavailable(answer: HttpAnswer, request_id: str | None) -> None:
    assert answer.status == 503
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert int(answer.headers["Retry-After"]) > 0
    body = answer.json()
    assert body["type"].endswith(":dependency-unavailable")
    assert body.get("requestId") == request_id


async def test_a_use_case_that_does_not_answer_in_time_is_503() -> None:
    async def hangs(call: HttpCall, services: str) -> HttpAnswer:
        await asyncio.sleep(60)
        return json_answer(200, {})

    started = time.monotonic()
    answer = await serve(hangs, CALL, services, deadline=0.2)
    assert time.monotonic() - started < 2
    assert_unavailable(answer, "REQ-1")


async def test_storage_unavailable_while_building_the_services_is_503() -> None:
    async def storage_down() -> str:
        raise StorageUnavailable("storage unavailable (create queues and tables: ServiceRequestError)")

    async def never_called(call: HttpCall, services: str) -> HttpAnswer:
        raise AssertionError("the use case ran without its services")

    assert_unavailable(await serve(never_called, CALL, storage_down), "REQ-1")


async def test_an_answer_in_time_is_passed_through_and_a_bad_route_id_is_not_echoed() -> None:
    async def answers(call: HttpCall, services: str) -> HttpAnswer:
        return json_answer(202, {"services": services})

    assert (await serve(answers, CALL, services)).json() == {"services": "services"}

    async def fails(call: HttpCall, services: str) -> HttpAnswer:
        raise StorageUnavailable("storage unavailable (ledger read: ServiceRequestError)")

    hostile = HttpCall.of("GET", "https://app.example/api/resets/x", route_params={"requestId": "<script>"})
    assert_unavailable(await serve(fails, hostile, services), None)
