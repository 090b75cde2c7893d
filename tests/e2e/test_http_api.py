"""docs/contract.md#http-api end to end: HTTP client -> devstack host (function keys, routes) -> function_app.py
-> ledger on Azurite and the request queue -> the reset engine -> Intune simulator, and back."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from azure.core import AsyncPipelineClient
from azure.core.pipeline.policies import HeadersPolicy, RequestIdPolicy
from azure.core.polling import AsyncLROPoller
from azure.core.polling.async_base_polling import AsyncLROBasePolling
from azure.core.rest import HttpRequest
from azure.data.tables.aio import TableClient
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV2SpecValidator

from shared.adapters.ledger import TableLedger
from shared.core.clock import utcnow
from shared.core.contract import ResetRequest
from shared.core.lifecycle import LedgerRecord, State
from tests.plugins.product import ProductFactory, ProductStack
from tests.plugins.stack import TEST_FUNCTION_KEY

ADELE = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"  # Android work profile: completes after 2 s, has a passcode
JOHANNA = "359f491b-f7ff-414f-b598-c0e02c1915cd"
KEY = {"x-functions-key": TEST_FUNCTION_KEY}


def reset(request_id: str | None = "HTTP-1", device: str = ADELE, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"device": {"intuneDeviceId": device}, "requestedBy": "flow@contoso.com", **fields}
    if request_id is not None:
        body["requestId"] = request_id
    return body


def principal(*roles: str, name: str = "helpdesk@contoso.com") -> str:
    claims = [{"typ": "name", "val": name}, *({"typ": "roles", "val": role} for role in roles)]
    document = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(document).encode()).decode()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any

    @property
    def media_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0]


class Api:
    def __init__(self, stack: ProductStack, session: aiohttp.ClientSession) -> None:
        self.stack = stack
        self.url = stack.host.url
        self._session = session

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        key: bool = True,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        sent = {**(KEY if key else {}), **(headers or {})}
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        async with self._session.request(method, self.url + path, data=data, headers=sent) as response:
            text = await response.text()
            parsed = json.loads(text) if text and "json" in response.headers.get("Content-Type", "") else text
            return Answer(response.status, dict(response.headers), parsed)

    async def submit(self, body: Any, **kwargs: Any) -> Answer:
        return await self.call("POST", "/api/resets", body=body, **kwargs)

    async def status(self, request_id: str, query: str = "", **kwargs: Any) -> Answer:
        return await self.call("GET", f"/api/resets/{request_id}{query}", **kwargs)


@contextlib.asynccontextmanager
async def ledger(stack: ProductStack) -> AsyncIterator[TableLedger]:
    conn, table = stack.settings["AzureWebJobsStorage"], stack.settings["RESET_LEDGER_TABLE"]
    async with TableClient.from_connection_string(conn, table) as client:
        yield TableLedger(client)


async def wait_for_status(stack: ProductStack, request_id: str, status: str) -> None:
    for _ in range(300):
        await stack.collect()
        if any(e["data"]["status"] == status for e in stack.of(request_id)):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{request_id} never reached {status}")


@contextlib.asynccontextmanager
async def api(product_stack: ProductFactory, **settings: str) -> AsyncIterator[Api]:
    async with product_stack(**settings) as stack, aiohttp.ClientSession() as session:
        yield Api(stack, session)


def assert_problem(answer: Answer, status: int, kind: str) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.media_type == "application/problem+json"
    body: dict[str, Any] = answer.body
    assert body["status"] == status and body["type"] == f"urn:intune-passcode-reset:problem:{kind}"
    assert body["title"] and body["detail"]
    return body


async def test_keyed_routes_answer_401_without_the_function_key(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        assert (await client.submit(reset(), key=False)).status == 401
        assert (await client.status("HTTP-1", key=False)).status == 401
        assert (await client.call("GET", "/api/resets/HTTP-1/passcode", key=False)).status == 401
        wrong = await client.submit(reset(), key=False, headers={"x-functions-key": "not-the-key"})
        assert wrong.status == 401
        assert (await client.call("GET", "/api/openapi.json", key=False)).status == 200
        assert (await client.call("GET", "/api/health", key=False)).status == 200
        async with ledger(client.stack) as records:
            assert await records.get("HTTP-1") is None


async def test_submit_answers_202_with_location_and_retry_after(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        answer = await client.submit(reset("HTTP-202", dryRun=True))
        assert answer.status == 202
        status_url = f"{client.url}/api/resets/HTTP-202"
        assert answer.body == {"requestId": "HTTP-202", "status": "queued", "statusUrl": status_url}
        assert answer.headers["Location"] == status_url
        assert int(answer.headers["Retry-After"]) >= 1
        final = (await client.stack.wait_final("HTTP-202"))["HTTP-202"]["data"]
        assert final["status"] == "dry_run"


async def test_status_is_202_until_an_outcome_then_200_with_the_event_data(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        await client.stack.sim.control.configure(complete_after=None)  # stays submitted
        await client.submit(reset("HTTP-ST"))
        await wait_for_status(client.stack, "HTTP-ST", "submitted")
        submitted = await client.status("HTTP-ST")
        assert submitted.status == 200 and submitted.body["status"] == "submitted"
        assert submitted.body["action"] == "resetPasscode" and submitted.body["device"]["id"] == ADELE
        waiting = await client.status("HTTP-ST", "?until=final")
        assert waiting.status == 202 and waiting.body["status"] == "submitted"
        assert waiting.headers["Location"] == f"{client.url}/api/resets/HTTP-ST?until=final"
        assert int(waiting.headers["Retry-After"]) >= 1


async def test_azure_core_lro_poller_follows_location_to_the_final_outcome(product_stack: ProductFactory) -> None:
    async with product_stack() as stack:
        client: AsyncPipelineClient[HttpRequest, Any] = AsyncPipelineClient(
            base_url=stack.host.url, policies=[RequestIdPolicy(), HeadersPolicy(KEY)]
        )
        async with client:
            request = HttpRequest("POST", f"{stack.host.url}/api/resets?until=final", json=reset("HTTP-LRO"))
            initial = await client.send_request(request, _return_pipeline_response=True)  # type: ignore[call-overload]
            assert initial.http_response.status_code == 202
            poller: AsyncLROPoller[dict[str, Any]] = AsyncLROPoller(
                client,
                initial,
                lambda response: json.loads(response.http_response.text()),
                AsyncLROBasePolling(timeout=0.2),
            )
            outcome = await poller.result()
        assert outcome["requestId"] == "HTTP-LRO" and outcome["status"] == "completed"
        assert outcome["device"]["platform"] == "android-work-profile" and outcome["attempt"] == 1
        assert await stack.sim.control.applied_count(ADELE) == 1


async def test_same_payload_again_returns_the_existing_request(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        first = await client.submit(reset("HTTP-DUP"))
        again = await client.submit(reset("HTTP-DUP"))
        assert first.status == again.status == 202 and again.body["requestId"] == "HTTP-DUP"
        await client.stack.wait_final("HTTP-DUP")
        repeated = await client.submit(reset("HTTP-DUP"))
        assert repeated.status == 200 and repeated.body["status"] == "completed"
        await client.stack.settle(0.5)
        assert await client.stack.sim.control.applied_count(ADELE) == 1
        assert {e["data"]["status"] for e in client.stack.finals("HTTP-DUP")} == {"completed"}


async def test_repeat_of_a_request_still_queued_enqueues_it_again(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        # A first POST that died after the ledger write: the record exists, the message does not.
        assert (await client.status("HTTP-LOST")).status == 404  # the app has created its table
        request = ResetRequest.model_validate(reset("HTTP-LOST", dryRun=True))
        now = utcnow()
        async with ledger(client.stack) as records:
            lost = LedgerRecord("HTTP-LOST", request.payload_hash(), request.to_json(), State.QUEUED, now, now)
            await records.create(lost)
        await client.stack.settle(0.5)
        assert client.stack.of("HTTP-LOST") == []
        answer = await client.submit(reset("HTTP-LOST", dryRun=True))
        assert answer.status == 202 and answer.body["status"] == "queued"
        assert (await client.stack.wait_final("HTTP-LOST"))["HTTP-LOST"]["data"]["status"] == "dry_run"


async def test_different_payload_under_the_same_request_id_is_409(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        assert (await client.submit(reset("HTTP-409", dryRun=True))).status == 202
        conflict = await client.submit(reset("HTTP-409", device=JOHANNA, dryRun=True))
        assert assert_problem(conflict, 409, "request-conflict")["requestId"] == "HTTP-409"


async def test_request_without_request_id_gets_a_generated_one(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        answer = await client.submit(reset(None, dryRun=True))
        request_id = answer.body["requestId"]
        assert answer.status == 202 and request_id.startswith("http-")
        assert answer.headers["Location"].endswith(f"/api/resets/{request_id}")
        assert (await client.stack.wait_final(request_id))[request_id]["data"]["status"] == "dry_run"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (reset(device="not-a-guid"), ["device.intuneDeviceId"]),
        ({"requestId": "HTTP-400", "device": {"imei": "12"}, "requestedBy": "x"}, ["device.imei"]),
        ({"requestId": "HTTP-400", "device": {}, "requestedBy": "x"}, ["device"]),
        ({"requestId": "HTTP-400", "device": {"intuneDeviceId": ADELE}}, ["requestedBy"]),
        (reset(dryRun="false"), ["dryRun"]),
        (reset("bad id with spaces"), ["requestId"]),
        ([1, 2], [""]),
    ],
)
async def test_invalid_bodies_are_400_problems_naming_each_field(
    product_stack: ProductFactory, body: Any, fields: list[str]
) -> None:
    async with api(product_stack) as client:
        answer = await client.submit(body)
        problem = assert_problem(answer, 400, "invalid-request")
        assert [error["field"] for error in problem["errors"]] == fields
        assert all(error["detail"] and error["pointer"].startswith("#") for error in problem["errors"])


async def test_problems_never_echo_the_values_sent(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        secret = "hunter2-top-secret-value"
        answer = await client.submit(reset(requestedBy=["x"], ticketId=secret * 10, correlationId=secret * 10))
        problem = assert_problem(answer, 400, "invalid-request")
        assert {e["field"] for e in problem["errors"]} == {"requestedBy", "ticketId", "correlationId"}
        assert secret not in json.dumps(problem)
        not_json = await client.submit(None, raw=b'{"requestId": "' + secret.encode() + b'", ')
        assert secret not in json.dumps(assert_problem(not_json, 400, "invalid-request"))


async def test_body_over_64_kib_is_413(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        answer = await client.submit(reset(reason="x" * (64 * 1024)))
        assert_problem(answer, 413, "payload-too-large")


async def test_unknown_request_is_404_and_an_invalid_request_id_400(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        assert_problem(await client.status("NEVER-SEEN"), 404, "unknown-request")
        assert_problem(await client.status("bad%20id"), 400, "invalid-parameter")
        assert_problem(await client.status("NEVER-SEEN", "?until=later"), 400, "invalid-parameter")


async def test_spoofed_principal_header_is_ignored_when_roles_are_off(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        spoofed = {"X-MS-CLIENT-PRINCIPAL": principal()}  # a principal with no roles at all
        assert (await client.submit(reset("HTTP-SPOOF", dryRun=True), headers=spoofed)).status == 202
        assert (await client.status("HTTP-SPOOF", headers={"X-MS-CLIENT-PRINCIPAL": "garbage"})).status in (200, 202)


async def test_roles_are_required_when_app_service_authentication_is_on(product_stack: ProductFactory) -> None:
    async with api(product_stack, AUTH_REQUIRE_ROLES="true") as client:
        body = reset("HTTP-ROLES", dryRun=True)
        assert_problem(await client.submit(body), 401, "unauthenticated")
        assert_problem(await client.submit(body, headers={"X-MS-CLIENT-PRINCIPAL": "%%%"}), 401, "unauthenticated")
        reader = {"X-MS-CLIENT-PRINCIPAL": principal("PasscodeReset.Read")}
        assert_problem(await client.submit(body, headers=reader), 403, "forbidden")
        submitter = {"X-MS-CLIENT-PRINCIPAL": principal("PasscodeReset.Submit")}
        assert (await client.submit(body, headers=submitter)).status == 202
        assert_problem(await client.status("HTTP-ROLES", headers=submitter), 403, "forbidden")
        assert (await client.status("HTTP-ROLES", headers=reader)).status in (200, 202)
        passcode = await client.call("GET", "/api/resets/HTTP-ROLES/passcode", headers=reader)
        assert_problem(passcode, 403, "forbidden")


async def test_passcode_route_is_off_by_default(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        await client.submit(reset("HTTP-PC-OFF", dryRun=True))
        answer = await client.call("GET", "/api/resets/HTTP-PC-OFF/passcode")
        assert_problem(answer, 404, "passcode-reveal-disabled")
        assert "passcode" not in answer.body


async def test_passcode_route_reveals_the_new_passcode_without_logging_it(
    product_stack: ProductFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with api(product_stack, ALLOW_PASSCODE_REVEAL="true") as client:
        await client.submit(reset("HTTP-PC"))
        await client.stack.wait_final("HTTP-PC")
        answer = await client.call("GET", "/api/resets/HTTP-PC/passcode")
        results = (await client.stack.sim.control.device(ADELE))["deviceActionResults"]
        expected = next(r["passcode"] for r in results if r["actionName"] == "resetPasscode")
        assert answer.status == 200 and answer.headers["Cache-Control"] == "no-store"
        assert answer.body["passcode"] == expected and answer.body["deviceId"] == ADELE
        assert_problem(await client.call("GET", "/api/resets/NEVER-SEEN/passcode"), 404, "unknown-request")
        await client.stack.settle(0.3)
        logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
        assert expected not in logged
        assert expected not in json.dumps(client.stack.events)
        audits = [r for r in caplog.records if getattr(r, "event", None) == "passcode_reveal"]
        assert [(r.requestId, r.deviceId, r.passcodeReturned, r.principal) for r in audits[:1]] == [  # type: ignore[attr-defined]
            ("HTTP-PC", ADELE, True, "function-key caller")
        ]
        assert len(audits) == 2 and audits[1].passcodeReturned is False  # type: ignore[attr-defined]


async def test_passcode_route_is_404_when_the_action_left_no_passcode(product_stack: ProductFactory) -> None:
    async with api(product_stack, ALLOW_PASSCODE_REVEAL="true") as client:
        await client.submit(reset("HTTP-NOPC", dryRun=True))  # a dry run never acts
        await client.stack.wait_final("HTTP-NOPC")
        assert_problem(await client.call("GET", "/api/resets/HTTP-NOPC/passcode"), 404, "no-passcode")


async def test_health_reports_each_dependency(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        answer = await client.call("GET", "/api/health", key=False)
        assert answer.status == 200
        assert answer.body == {"status": "healthy", "checks": {"storage": "ok", "graph": "ok"}}


async def test_health_is_degraded_without_leaking_details(product_stack: ProductFactory) -> None:
    async with api(product_stack, GRAPH_TOKEN="a-token-graph-refuses") as client:
        answer = await client.call("GET", "/api/health", key=False)
        assert answer.status == 503
        assert answer.body == {"status": "degraded", "checks": {"storage": "ok", "graph": "unauthorized"}}
        text = json.dumps(answer.body) + json.dumps(answer.headers)
        for secret in ("a-token-graph-refuses", "127.0.0.1", "AccountKey", "devstoreaccount1"):
            assert secret not in text


async def test_openapi_document_is_served_anonymously_for_the_host_it_was_called_on(
    product_stack: ProductFactory,
) -> None:
    async with api(product_stack) as client:
        answer = await client.call("GET", "/api/openapi.json", key=False)
        assert answer.status == 200
        document = answer.body
        validate(document, cls=OpenAPIV2SpecValidator)
        assert document["host"] == urlsplit(client.url).netloc and document["schemes"] == ["http"]
        assert document["basePath"] == "/api"
        assert document["securityDefinitions"]["functionKey"] == {
            "type": "apiKey",
            "in": "header",
            "name": "x-functions-key",
            "description": document["securityDefinitions"]["functionKey"]["description"],
        }
