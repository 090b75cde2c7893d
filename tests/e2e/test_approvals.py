"""docs/contract.md#approvals-guardrails-and-requesters end to end: requests on the queue and over
HTTP -> devstack host -> function_app.py -> Intune simulator, with the ledger and the guardrail
counter on Azurite; decisions through `POST /api/resets/{requestId}/approval`."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.plugins.product import ProductFactory, ProductStack
from tests.plugins.stack import TEST_FUNCTION_KEY

IOS = {"serialNumber": "G6TZK2XQ0D"}
MAC = {"intuneDeviceId": "2df67db0-0c7d-4179-a7ed-3513a8e03864"}
ADELE = {"intuneDeviceId": "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"}  # Android work profile
JOHANNA = {"intuneDeviceId": "359f491b-f7ff-414f-b598-c0e02c1915cd"}  # Android fully managed
AOSP = {"serialNumber": "2G0YC5ZF8K01WX"}
DEDICATED = {"imei": "352178922061591"}
REQUESTER = "servicedesk@contoso.com"


def request(request_id: str, device: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {"requestId": request_id, "device": device, "requestedBy": REQUESTER, **fields}


def principal(*roles: str, name: str) -> str:
    claims = [{"typ": "preferred_username", "val": name}, *({"typ": "roles", "val": role} for role in roles)]
    document = {"auth_typ": "aad", "claims": claims, "name_typ": "preferred_username", "role_typ": "roles"}
    return base64.b64encode(json.dumps(document).encode()).decode()


@dataclass
class Answer:
    status: int
    body: Any


class Api:
    def __init__(self, stack: ProductStack, session: aiohttp.ClientSession) -> None:
        self.stack = stack
        self._session = session

    async def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Answer:
        sent = {"x-functions-key": TEST_FUNCTION_KEY, "Content-Type": "application/json", **(headers or {})}
        data = json.dumps(body).encode() if body is not None else None
        async with self._session.request(method, self.stack.host.url + path, data=data, headers=sent) as response:
            text = await response.text()
            return Answer(response.status, json.loads(text) if text else None)

    async def decide(self, request_id: str, decision: str, **fields: Any) -> Answer:
        headers = fields.pop("headers", None)
        return await self.call(
            "POST", f"/api/resets/{request_id}/approval", {"decision": decision, **fields}, headers=headers
        )


@contextlib.asynccontextmanager
async def running(product_stack: ProductFactory, **settings: str) -> AsyncIterator[Api]:
    async with product_stack(**settings) as stack, aiohttp.ClientSession() as session:
        yield Api(stack, session)


async def wait_status(stack: ProductStack, request_id: str, *statuses: str, timeout: float = 20) -> dict[str, Any]:
    """The first event of `request_id` with one of `statuses` (its `data`)."""
    for _ in range(int(timeout / 0.1)):
        await stack.collect()
        found = [e["data"] for e in stack.of(request_id) if e["data"]["status"] in statuses]
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{request_id} never reached {statuses}: {[e['data'] for e in stack.of(request_id)]}")


async def posts(stack: ProductStack) -> int:
    return len(await stack.sim.control.calls(method="POST"))


async def test_rules_hold_before_any_action_and_decisions_follow_the_contract(product_stack: ProductFactory) -> None:
    async with running(product_stack, APPROVAL_REQUIRED="macos,removePasscode") as api:
        stack = api.stack
        await stack.send(request("MAC-1", MAC, allowRemoteLock=True))  # platform row rule
        await stack.send(request("IOS-1", IOS))  # action rule
        await stack.send(request("AND-1", ADELE))  # no rule: acts
        mac = await wait_status(stack, "MAC-1", "awaiting_approval")
        ios = await wait_status(stack, "IOS-1", "awaiting_approval")
        await wait_status(stack, "AND-1", "submitted")
        assert (mac["reason"]["code"], mac["action"], mac["attempt"]) == ("approval_required", "remoteLock", 0)
        assert "macos" in mac["reason"]["message"] and "removePasscode" in ios["reason"]["message"]
        assert await posts(stack) == 1  # only the Android request called an action

        status = await api.call("GET", "/api/resets/IOS-1")
        assert (status.status, status.body["status"]) == (200, "awaiting_approval")

        same = await api.decide("IOS-1", "approve", approver="ServiceDesk@Contoso.com")
        assert same.status == 403 and same.body["type"].endswith("same-person")
        assert (await api.decide("NOPE-1", "approve", approver="boss@contoso.com")).status == 404
        no_approver = await api.decide("IOS-1", "approve")
        assert no_approver.status == 400 and no_approver.body["errors"][0]["field"] == "approver"

        approved = await api.decide("IOS-1", "approve", approver="boss@contoso.com", comment="ticket checked")
        assert (approved.status, approved.body["status"]) == (200, "processing")
        done = await wait_status(stack, "IOS-1", "completed")
        assert done["approval"] == {
            "decision": "approve",
            "by": "boss@contoso.com",
            "at": done["approval"]["at"],
            "comment": "ticket checked",
        }
        assert done["attempt"] == 1

        denied = await api.decide("MAC-1", "deny", approver="boss@contoso.com", comment="no")
        assert (denied.status, denied.body["status"], denied.body["reason"]["code"]) == (
            200,
            "rejected",
            "approval_denied",
        )
        again = await api.decide("MAC-1", "approve", approver="other@contoso.com")
        assert again.status == 409 and again.body["type"].endswith("not-awaiting-approval")
        await stack.settle(0.5)
        assert [e["data"]["status"] for e in stack.of("MAC-1")] == ["awaiting_approval", "rejected"]
        assert await posts(stack) == 2  # Android and the approved iOS: the denied Mac never acted


async def test_star_holds_everything_and_an_unanswered_hold_expires(product_stack: ProductFactory) -> None:
    async with running(product_stack, APPROVAL_REQUIRED="*", APPROVAL_TIMEOUT_SECONDS="2") as api:
        stack = api.stack
        await stack.send(request("AND-1", JOHANNA))
        await stack.send(request("DRY-1", ADELE, dryRun=True))
        held = await wait_status(stack, "AND-1", "awaiting_approval")
        assert held["reason"]["code"] == "approval_required"
        assert (await wait_status(stack, "DRY-1", "dry_run"))["reason"]["code"] == "would_run"  # never held
        expired = await wait_status(stack, "AND-1", "rejected", timeout=15)
        assert expired["reason"]["code"] == "approval_expired"
        assert await posts(stack) == 0
        late = await api.decide("AND-1", "approve", approver="boss@contoso.com")
        assert late.status == 409


async def test_requester_allow_list_rejects_over_http_before_any_graph_call(product_stack: ProductFactory) -> None:
    async with running(product_stack, ALLOWED_REQUESTERS="@contoso.com") as api:
        stack = api.stack
        answer = await api.call("POST", "/api/resets", {**request("EVIL-1", ADELE), "requestedBy": "m@evil.example"})
        assert answer.status == 202
        rejected = await wait_status(stack, "EVIL-1", "rejected")
        assert (rejected["reason"]["code"], rejected["device"]) == ("requester_not_allowed", None)
        assert await stack.sim.control.calls() == []  # zero Graph calls of any kind
        await stack.send(request("OK-1", ADELE))
        await wait_status(stack, "OK-1", "submitted")


async def test_guardrail_trips_holds_the_rest_and_an_approval_releases_one(product_stack: ProductFactory) -> None:
    async with running(product_stack, GUARDRAIL_MAX_ACTIONS_PER_HOUR="2") as api:
        stack = api.stack
        devices = {"G-1": ADELE, "G-2": JOHANNA, "G-3": AOSP, "G-4": DEDICATED}
        for request_id, device in devices.items():
            await stack.send(request(request_id, device))
        outcomes = {rid: await wait_status(stack, rid, "submitted", "awaiting_approval") for rid in devices}
        held = [rid for rid, data in outcomes.items() if data["status"] == "awaiting_approval"]
        assert len(held) == 2 and await posts(stack) == 2
        assert all(outcomes[rid]["reason"]["code"] == "guardrail_tripped" for rid in held)

        assert (await api.decide(held[0], "approve", approver="boss@contoso.com")).status == 200
        await wait_status(stack, held[0], "submitted")
        await stack.settle(0.5)
        assert await posts(stack) == 3
        assert [e["data"]["status"] for e in stack.of(held[1])] == ["awaiting_approval"]


async def test_roles_mode_records_the_caller_and_the_approver_is_the_principal(product_stack: ProductFactory) -> None:
    async with running(product_stack, AUTH_REQUIRE_ROLES="true", APPROVAL_REQUIRED="*") as api:
        stack = api.stack
        flow = {
            "x-ms-client-principal": principal("PasscodeReset.Submit", "PasscodeReset.Approve", name="flow@contoso.com")
        }
        answer = await api.call("POST", "/api/resets", request("R-1", ADELE), headers=flow)
        assert answer.status == 202
        held = await wait_status(stack, "R-1", "awaiting_approval")
        assert (held["submittedBy"], held["requestedBy"]) == ("flow@contoso.com", REQUESTER)

        forged = await api.decide(
            "R-1", "approve", approver="boss@contoso.com", headers={"x-ms-client-principal": "e30="}
        )
        assert forged.status == 401
        no_role = {"x-ms-client-principal": principal("PasscodeReset.Submit", name="boss@contoso.com")}
        assert (await api.decide("R-1", "approve", headers=no_role)).status == 403
        # The submitter may not approve, whatever approver the body names.
        same = await api.decide("R-1", "approve", approver="boss@contoso.com", headers=flow)
        assert same.status == 403 and same.body["type"].endswith("same-person")

        boss = {"x-ms-client-principal": principal("PasscodeReset.Approve", name="boss@contoso.com")}
        approved = await api.decide("R-1", "approve", approver="someone-else@contoso.com", headers=boss)
        assert approved.status == 200
        submitted = await wait_status(stack, "R-1", "submitted")
        assert submitted["approval"]["by"] == "boss@contoso.com" and submitted["submittedBy"] == "flow@contoso.com"


async def run_ops(stack: ProductStack, *argv: str) -> tuple[int, str, str]:
    """`python -m ops ...` in-process (in a thread: it runs its own event loop) with the stack's settings."""
    import io

    import ops

    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(ops.main, [*argv, "--settings", ""], env=stack.settings, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


async def test_ops_shows_the_full_guardrail_and_approves_from_the_command_line(product_stack: ProductFactory) -> None:
    async with running(product_stack, GUARDRAIL_MAX_ACTIONS_PER_HOUR="1") as api:
        stack = api.stack
        await stack.send(request("O-1", ADELE))
        await wait_status(stack, "O-1", "submitted")
        await stack.send(request("O-2", JOHANNA))
        await wait_status(stack, "O-2", "awaiting_approval")

        code, out, _ = await run_ops(stack, "approvals", "--json")
        listed = json.loads(out)
        assert code == 0
        assert listed["guardrail"] == {"actionsLastHour": 1, "limit": 1, "full": True}
        assert [(r["requestId"], r["reasonCode"]) for r in listed["awaiting"]] == [("O-2", "guardrail_tripped")]

        code, _, err = await run_ops(stack, "approve", "O-2", "--approver", REQUESTER.upper())
        assert code == 3 and "four eyes" in err
        code, out, _ = await run_ops(stack, "approve", "O-2", "--approver", "oncall@contoso.com", "--comment", "INC42")
        assert code == 0, out
        approved = await wait_status(stack, "O-2", "submitted")
        assert approved["approval"]["by"] == "oncall@contoso.com" and approved["approval"]["comment"] == "INC42"
        assert (await run_ops(stack, "deny", "O-2", "--approver", "oncall@contoso.com"))[0] == 3
        assert await posts(stack) == 2
        code, out, _ = await run_ops(stack, "audit", "--since", "1h", "--format", "jsonl")
        audit = {row["requestId"]: row for row in map(json.loads, out.splitlines())}
        assert (audit["O-2"]["approvalDecision"], audit["O-2"]["approvedBy"]) == ("approve", "oncall@contoso.com")
        assert audit["O-1"]["approvedBy"] is None and audit["O-1"]["submittedBy"] is None  # queue: no submitter
