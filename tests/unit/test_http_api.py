"""The HTTP API's use cases (docs/contract.md#http-api) on in-memory fakes, together with the real workflow."""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError

from bench.leak_scan import found_in
from shared.adapters.health import graph_check_state
from shared.api.auth import FUNCTION_KEY_CALLER, Caller, Denied, Role, authorize, read_client_principal
from shared.api.health import check_health
from shared.api.http import HttpAnswer, HttpCall
from shared.api.resets import get_reset_status, reveal_passcode, submit_reset
from shared.api.services import ApiServices
from shared.core.contract import ResetRequest
from shared.core.errors import StorageUnavailable
from shared.core.lifecycle import State
from shared.ports import CheckState
from shared.workflow import handle_followup, handle_request
from tests.fakes import Harness, device, harness

DEV = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"
BASE = "https://passcode-reset.azurewebsites.net/api"


@dataclass
class ListQueue:
    messages: list[str] = field(default_factory=list)

    async def send_message(self, content: str) -> None:
        self.messages.append(content)


@dataclass
class FakeProbe:
    storage_state: CheckState = "ok"
    graph_state: CheckState = "ok"

    async def storage(self) -> CheckState:
        return self.storage_state

    async def graph(self) -> CheckState:
        return self.graph_state


@dataclass
class Api:
    h: Harness
    queue: ListQueue
    services: ApiServices

    async def post(self, body: Any, query: str = "", **call: Any) -> HttpAnswer:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await submit_reset(self.call("POST", f"{BASE}/resets{query}", body=raw, **call), self.services)

    async def get(self, request_id: str, query: str = "", **call: Any) -> HttpAnswer:
        url = f"{BASE}/resets/{request_id}{query}"
        return await get_reset_status(
            self.call("GET", url, route_params={"requestId": request_id}, **call), self.services
        )

    async def passcode_after_reset(self) -> Any:
        await self.post(reset("ANDROID-1"))
        await self.process_queue()
        answer = await self.passcode("ANDROID-1")
        assert answer.status == 200
        return answer.json()

    async def passcode(self, request_id: str, **call: Any) -> HttpAnswer:
        url = f"{BASE}/resets/{request_id}/passcode"
        return await reveal_passcode(
            self.call("GET", url, route_params={"requestId": request_id}, **call), self.services
        )

    @staticmethod
    def call(method: str, url: str, *, query: dict[str, str] | None = None, **kwargs: Any) -> HttpCall:
        parsed = dict(part.split("=", 1) for part in url.partition("?")[2].split("&") if part)
        return HttpCall.of(method, url, query={**parsed, **(query or {})}, **kwargs)

    async def process_queue(self) -> None:
        """What the queue trigger does with every message the API enqueued."""
        pending, self.queue.messages = self.queue.messages, []
        for index, body in enumerate(pending):
            await handle_request(body.encode(), self.h.services, message_id=f"m{index}")

    async def run_followups(self) -> None:
        pending, self.h.scheduler.followups = self.h.scheduler.followups, []
        for body, delay in pending:
            self.h.clock.advance(delay)
            await handle_followup(body.encode(), self.h.services)


def make_api(**options: Any) -> Api:
    h = harness()
    h.gateway.add(device(DEV, device_type="androidForWork", enrollment=None))
    queue = ListQueue()
    services = ApiServices(
        ledger=h.ledger,
        requests_queue=queue,
        gateway=h.gateway,
        clock=h.clock,
        policy=h.services.policy,
        health=options.pop("health", FakeProbe()),
        **options,
    )
    return Api(h, queue, services)


def reset(request_id: str | None = "REQ-1", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"device": {"intuneDeviceId": DEV}, "requestedBy": "flow@contoso.com", **fields}
    if request_id is not None:
        body["requestId"] = request_id
    return body


def principal(*roles: str, role_typ: str = "roles", name: str = "ana@contoso.com") -> dict[str, str]:
    claims = [{"typ": "name", "val": name}, *({"typ": role_typ, "val": role} for role in roles)]
    document = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": role_typ}
    return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(json.dumps(document).encode()).decode()}


def problem(answer: HttpAnswer, status: int, kind: str) -> dict[str, Any]:
    assert answer.status == status, answer.json()
    assert answer.content_type == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["type"] == f"urn:intune-passcode-reset:problem:{kind}" and body["status"] == status
    return body


# ---------------------------------------------------------------- POST /api/resets


async def test_submit_records_the_request_as_queued_and_enqueues_it() -> None:
    api = make_api()
    answer = await api.post(reset())
    assert answer.status == 202
    assert answer.json() == {"requestId": "REQ-1", "status": "queued", "statusUrl": f"{BASE}/resets/REQ-1"}
    assert answer.headers["Location"] == f"{BASE}/resets/REQ-1" and answer.headers["Retry-After"] == "2"
    record = api.h.ledger.records["REQ-1"]
    assert record.state is State.QUEUED and record.requested_by == "flow@contoso.com"
    assert [json.loads(m) for m in api.queue.messages] == [json.loads(record.request_json)]


async def test_generated_request_id_is_part_of_the_hash_the_queue_side_computes() -> None:
    api = make_api()
    answer = await api.post(reset(None, dryRun=True))
    request_id = answer.json()["requestId"]
    assert request_id.startswith("http-")
    queued = ResetRequest.model_validate_json(api.queue.messages[0])
    assert queued.requestId == request_id
    assert queued.payload_hash() == api.h.ledger.records[request_id].payload_hash
    await api.process_queue()
    assert api.h.publisher.statuses(request_id) == ["dry_run"]


async def test_queued_request_goes_through_the_workflow_to_its_outcome() -> None:
    api = make_api()
    await api.post(reset(), query="?until=final")
    assert (await api.get("REQ-1")).json()["status"] == "queued"
    await api.process_queue()
    submitted = await api.get("REQ-1")
    assert submitted.status == 200 and submitted.json()["status"] == "submitted"
    waiting = await api.get("REQ-1", "?until=final")
    assert waiting.status == 202 and waiting.json()["status"] == "submitted"
    assert waiting.headers["Location"] == f"{BASE}/resets/REQ-1?until=final"
    api.h.gateway.set_state(DEV, "done")
    await api.run_followups()
    final = await api.get("REQ-1", "?until=final")
    assert final.status == 200 and final.json() == api.h.publisher.events[-1]["data"]
    assert final.json()["status"] == "completed"


async def test_processing_and_acting_are_reported_as_processing() -> None:
    api = make_api()
    await api.post(reset())
    for state in ("processing", "acting"):
        record = api.h.ledger.records["REQ-1"]
        api.h.ledger.records["REQ-1"] = replace(record, state=State(state))
        answer = await api.get("REQ-1")
        assert answer.status == 202 and answer.json()["status"] == "processing"


async def test_location_keeps_until_and_a_key_given_in_the_url() -> None:
    api = make_api()
    answer = await api.post(reset(), query="?until=final&code=abc")
    assert answer.headers["Location"] == f"{BASE}/resets/REQ-1?until=final&code=abc"
    plain = await api.post(reset("REQ-2"))
    assert plain.headers["Location"] == f"{BASE}/resets/REQ-2"


async def test_location_follows_the_route_prefix_and_host_of_the_call() -> None:
    api = make_api()
    call = HttpCall.of("POST", "http://localhost:7071/custom/resets", body=json.dumps(reset()).encode())
    answer = await submit_reset(call, api.services)
    assert answer.headers["Location"] == "http://localhost:7071/custom/resets/REQ-1"


async def test_same_payload_again_while_queued_enqueues_again_and_answers_202() -> None:
    api = make_api()
    await api.post(reset())
    again = await api.post(reset())
    assert again.status == 202 and again.json()["status"] == "queued"
    assert len(api.queue.messages) == 2
    await api.process_queue()
    assert api.h.gateway.action_calls == [(DEV, api.h.gateway.action_calls[0][1])]


async def test_same_payload_again_after_pickup_is_not_enqueued_again() -> None:
    api = make_api()
    await api.post(reset())
    await api.process_queue()
    again = await api.post(reset())
    assert again.status == 200 and again.json()["status"] == "submitted"
    assert api.queue.messages == []


async def test_different_payload_under_the_same_request_id_is_409() -> None:
    api = make_api()
    await api.post(reset())
    conflict = await api.post(reset(dryRun=True))
    assert problem(conflict, 409, "request-conflict")["requestId"] == "REQ-1"
    assert len(api.queue.messages) == 1


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"device": {"imei": "12"}, "requestedBy": "x"}, ["device.imei"]),
        ({"device": {"imei": "356938035643809", "serialNumber": "A"}, "requestedBy": "x"}, ["device"]),
        ({"device": {"intuneDeviceId": DEV}}, ["requestedBy"]),
        (reset(allowRemoteLock="true", dryRun=1), ["allowRemoteLock", "dryRun"]),
        (reset("has space"), ["requestId"]),
        ("just a string", [""]),
        (b"{not json", [""]),
        (b"", [""]),
    ],
)
async def test_invalid_body_is_400_naming_each_field(body: Any, fields: list[str]) -> None:
    api = make_api()
    answer = problem(await api.post(body), 400, "invalid-request")
    assert [error["field"] for error in answer["errors"]] == fields
    assert api.queue.messages == [] and api.h.ledger.records == {}


async def test_problem_never_echoes_a_value() -> None:
    api = make_api()
    secret = "P@ssw0rd-do-not-echo"
    answer = await api.post(reset(requestedBy=secret * 20, expectedUserPrincipalName=["x"], ticketId=secret * 9))
    assert secret not in answer.body.decode()
    pointers = {e["field"]: e["pointer"] for e in problem(answer, 400, "invalid-request")["errors"]}
    assert pointers == {
        "requestedBy": "#/requestedBy",
        "expectedUserPrincipalName": "#/expectedUserPrincipalName",
        "ticketId": "#/ticketId",
    }


async def test_body_over_64_kib_is_413() -> None:
    api = make_api()
    problem(await api.post(b"{" + b" " * (64 * 1024) + b"}"), 413, "payload-too-large")


async def test_invalid_until_is_400() -> None:
    api = make_api()
    problem(await api.post(reset(), query="?until=soon"), 400, "invalid-parameter")
    problem(await api.get("REQ-1", "?until=1"), 400, "invalid-parameter")


async def test_storage_failure_is_a_503_without_details() -> None:
    api = make_api()

    async def broken(*_: Any) -> None:
        # The ledger port's failure (the table adapter wraps every Azure SDK error in it); its text
        # carries a host and a key, which the answer must not echo.
        raise StorageUnavailable("cannot reach http://10.0.0.7:10002/devstoreaccount1 AccountKey=abc")

    api.h.ledger.create = broken  # type: ignore[method-assign]
    answer = await api.post(reset())
    assert problem(answer, 503, "dependency-unavailable") and answer.headers["Retry-After"] == "10"
    assert "10.0.0.7" not in answer.body.decode() and "AccountKey" not in answer.body.decode()


# ---------------------------------------------------------------- GET /api/resets/{requestId}


async def test_unknown_request_is_404_and_a_malformed_id_400() -> None:
    api = make_api()
    problem(await api.get("NOPE"), 404, "unknown-request")
    errors = problem(await api.get("no spaces allowed"), 400, "invalid-parameter")["errors"]
    assert [e["field"] for e in errors] == ["requestId"]


# ---------------------------------------------------------------- roles


def test_client_principal_roles_come_from_role_typ_and_roles_claims() -> None:
    header = principal("PasscodeReset.Read", role_typ="http://schemas.microsoft.com/ws/2008/06/identity/claims/role")
    caller = read_client_principal(header["X-MS-CLIENT-PRINCIPAL"])
    assert caller == Caller("ana@contoso.com", frozenset({"PasscodeReset.Read"}))
    assert read_client_principal(principal("PasscodeReset.Submit")["X-MS-CLIENT-PRINCIPAL"]) == Caller(
        "ana@contoso.com", frozenset({"PasscodeReset.Submit"})
    )
    for unreadable in ("", "not base64!", base64.b64encode(b"[1]").decode(), base64.b64encode(b"{}").decode()):
        assert read_client_principal(unreadable) is None


def test_roles_off_ignores_the_principal_header_entirely() -> None:
    headers = {"x-ms-client-principal": "garbage"}
    assert authorize(headers, Role.REVEAL_PASSCODE, require_roles=False) == Caller(FUNCTION_KEY_CALLER)


def test_roles_on_needs_a_readable_principal_with_the_role() -> None:
    reader = {k.lower(): v for k, v in principal("PasscodeReset.Read").items()}
    missing = authorize({}, Role.READ, require_roles=True)
    assert isinstance(missing, Denied) and missing.status == 401
    denied = authorize(reader, Role.SUBMIT, require_roles=True)
    assert isinstance(denied, Denied) and denied.status == 403 and denied.caller is not None
    assert authorize(reader, Role.READ, require_roles=True) == Caller(
        "ana@contoso.com", frozenset({"PasscodeReset.Read"})
    )


async def test_each_route_needs_its_role_when_roles_are_on() -> None:
    api = make_api(require_roles=True, allow_passcode_reveal=True)
    problem(await api.post(reset()), 401, "unauthenticated")
    problem(await api.post(reset(), headers=principal("PasscodeReset.Read")), 403, "forbidden")
    assert (await api.post(reset(), headers=principal("PasscodeReset.Submit"))).status == 202
    problem(await api.get("REQ-1", headers=principal("PasscodeReset.Submit")), 403, "forbidden")
    assert (await api.get("REQ-1", headers=principal("PasscodeReset.Read"))).status == 202
    problem(await api.passcode("REQ-1", headers=principal("PasscodeReset.Read")), 403, "forbidden")
    answer = await api.passcode("REQ-1", headers=principal("PasscodeReset.RevealPasscode"))
    problem(answer, 404, "no-passcode")


# ---------------------------------------------------------------- passcode


async def test_passcode_reveal_is_404_while_disabled() -> None:
    api = make_api()
    await api.post(reset())
    await api.process_queue()
    body = problem(await api.passcode("REQ-1"), 404, "passcode-reveal-disabled")
    assert "secret-1234" not in json.dumps(body)


async def test_passcode_is_read_live_and_audited_without_the_passcode(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = make_api(allow_passcode_reveal=True)
    await api.post(reset())
    await api.process_queue()
    answer = await api.passcode("REQ-1")
    assert answer.status == 200 and answer.headers["Cache-Control"] == "no-store"
    assert answer.json()["passcode"] == "secret-1234" and answer.json()["deviceId"] == DEV
    assert "secret-1234" not in str(api.h.ledger.records["REQ-1"])
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert "secret-1234" not in logged
    audit = [r.__dict__ for r in caplog.records if r.__dict__.get("event") == "passcode_reveal"]
    assert [(a["principal"], a["requestId"], a["deviceId"], a["passcodeReturned"]) for a in audit] == [
        (FUNCTION_KEY_CALLER, "REQ-1", DEV, True)
    ]


async def test_macos_remote_lock_reveals_its_unlock_pin_as_kind_unlock_pin(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = make_api(allow_passcode_reveal=True)
    mac = "0d6b2a43-8f7e-4c1d-b2a9-5e6f7a8b9c0d"
    api.h.gateway.add(device(mac, os="macOS", version="14.5", device_type="macMDM", enrollment="appleBulkWithUser"))
    await api.post({"requestId": "MAC-1", "device": {"intuneDeviceId": mac}, "requestedBy": "flow@contoso.com",
                    "allowRemoteLock": True})
    await api.process_queue()
    answer = await api.passcode("MAC-1")
    assert answer.status == 200 and answer.headers["Cache-Control"] == "no-store"
    assert (answer.json()["kind"], answer.json()["passcode"]) == ("unlockPin", "654321")
    android = await api.passcode_after_reset()
    assert (android["kind"], android["passcode"]) == ("passcode", "secret-1234")
    # as a whole token (bench/leak_scan.py): six digits also turn up by chance in a record's timestamps
    assert not found_in(["654321"], "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records))
    assert "654321" not in str(api.h.ledger.records["MAC-1"])


async def test_passcode_of_an_earlier_action_is_never_revealed() -> None:
    api = make_api(allow_passcode_reveal=True)
    await api.post(reset())
    await api.process_queue()
    [result] = api.h.gateway.results[DEV]
    assert result.started_at is not None
    api.h.gateway.results[DEV] = [replace(result, started_at=result.started_at - timedelta(hours=1))]
    problem(await api.passcode("REQ-1"), 404, "no-passcode")


async def test_passcode_of_an_unknown_or_unacted_request_is_404() -> None:
    api = make_api(allow_passcode_reveal=True)
    problem(await api.passcode("NOPE"), 404, "unknown-request")
    await api.post(reset("DRY", dryRun=True))
    await api.process_queue()
    problem(await api.passcode("DRY"), 404, "no-passcode")


# ---------------------------------------------------------------- health


async def test_health_is_200_when_every_dependency_answers() -> None:
    api = make_api()

    async def load() -> ApiServices:
        return api.services

    answer = await check_health(load)
    assert answer.status == 200 and answer.json() == {"status": "healthy", "checks": {"storage": "ok", "graph": "ok"}}


async def test_health_is_503_degraded_when_a_dependency_fails() -> None:
    api = make_api(health=FakeProbe(graph_state="unauthorized"))

    async def load() -> ApiServices:
        return api.services

    answer = await check_health(load)
    assert answer.status == 503 and answer.json()["checks"] == {"storage": "ok", "graph": "unauthorized"}

    async def no_runtime() -> ApiServices:
        raise ServiceRequestError("connection refused to secret-host.internal")

    broken = await check_health(no_runtime)
    assert broken.status == 503 and "secret-host" not in broken.body.decode()
    assert broken.json() == {"status": "degraded", "checks": {"storage": "unreachable", "graph": "unreachable"}}


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (None, "unreachable"),
        (401, "unauthorized"),
        (403, "unauthorized"),
        (404, "ok"),
        (429, "ok"),
        (503, "unavailable"),
    ],
)
def test_any_graph_answer_but_auth_failures_and_5xx_counts_as_reachable(status: int | None, state: str) -> None:
    assert graph_check_state(status) == state
