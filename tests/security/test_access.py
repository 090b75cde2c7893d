"""Who may call the HTTP API (docs/contract.md#http-api): the function key on every keyed route, and the app
roles of `X-MS-CLIENT-PRINCIPAL`, which is trusted only when App Service Authentication is on.

The keyed routes are read from the app itself, so a route added later is covered without editing
this file."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import pytest

from devstack.host import HttpTriggerBinding
from shared.api.auth import Role
from tests.plugins.product import ProductFactory, ProductStack
from tests.plugins.stack import TEST_FUNCTION_KEY

KEY = {"x-functions-key": TEST_FUNCTION_KEY}
ADELE = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"
BODY = {"requestId": "SEC-1", "device": {"intuneDeviceId": ADELE}, "requestedBy": "sec@contoso.com", "dryRun": True}
# The role each keyed route needs when roles are on (docs/contract.md#http-api).
ROUTE_ROLES = {
    "submit_reset": Role.SUBMIT,
    "get_reset_status": Role.READ,
    "reveal_passcode": Role.REVEAL_PASSCODE,
}


@dataclass(frozen=True)
class Route:
    function: str
    method: str
    path: str
    keyed: bool


def routes(stack: ProductStack) -> list[Route]:
    """Every HTTP route of the app with its parameters filled in (requestId = SEC-1)."""
    found = []
    for definition in stack.host.functions:
        trigger = definition.trigger
        if not isinstance(trigger, HttpTriggerBinding):
            continue
        path = "/api/" + re.sub(r"\{[^}]+\}", "SEC-1", trigger.route)
        for method in sorted(trigger.methods or {"GET"}):
            found.append(Route(definition.name, method, path, trigger.auth_level != "anonymous"))
    return found


def principal(*roles: str, name: str = "mallory@contoso.com") -> str:
    claims = [{"typ": "name", "val": name}, *({"typ": "roles", "val": role} for role in roles)]
    document = {"auth_typ": "aad", "claims": claims, "name_typ": "name", "role_typ": "roles"}
    return base64.b64encode(json.dumps(document).encode()).decode()


@asynccontextmanager
async def client(
    product_stack: ProductFactory, **settings: str
) -> AsyncIterator[tuple[ProductStack, aiohttp.ClientSession]]:
    async with product_stack(**settings) as stack, aiohttp.ClientSession() as session:
        yield stack, session


async def call(
    session: aiohttp.ClientSession, stack: ProductStack, route: Route, headers: dict[str, str], query: str = ""
) -> tuple[int, str]:
    body = json.dumps(BODY).encode() if route.method == "POST" else None
    url = f"{stack.host.url}{route.path}{query}"
    async with session.request(route.method, url, data=body, headers=headers) as response:
        return response.status, await response.text()


async def test_every_keyed_route_needs_the_function_key(product_stack: ProductFactory) -> None:
    async with client(product_stack) as (stack, session):
        keyed = [route for route in routes(stack) if route.keyed]
        assert {route.function for route in keyed} >= set(ROUTE_ROLES), "keyed routes went missing"
        for route in keyed:
            for headers, query in [
                ({}, ""),
                ({"x-functions-key": "not-the-key"}, ""),
                ({"x-functions-key": TEST_FUNCTION_KEY[:-1]}, ""),
                ({"x-functions-key": TEST_FUNCTION_KEY + "x"}, ""),
                ({"Authorization": f"Bearer {TEST_FUNCTION_KEY}"}, ""),
                ({"x-ms-client-principal": principal(*Role)}, ""),
                ({}, "?code=not-the-key"),
            ]:
                status, text = await call(session, stack, route, headers, query)
                assert (status, text) == (401, ""), (route, headers, query)
        # Nothing got through: no request was recorded, queued or acted on.
        status, _ = await call(session, stack, Route("get_reset_status", "GET", "/api/resets/SEC-1", True), KEY)
        assert status == 404
        assert await stack.sim.control.calls() == []
        for route in keyed:  # the key is accepted in the header and in `code`
            status, _ = await call(session, stack, route, {}, f"?code={TEST_FUNCTION_KEY}")
            assert status != 401, route
        for route in routes(stack):
            if not route.keyed:  # openapi.json and health are anonymous by design
                status, _ = await call(session, stack, route, {})
                assert status in (200, 503), route


async def test_a_spoofed_principal_is_ignored_when_roles_are_off(
    product_stack: ProductFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="passcode_reset.audit")
    spoofed = {**KEY, "X-MS-CLIENT-PRINCIPAL": principal(name="admin@contoso.com")}  # no role at all
    async with client(product_stack, ALLOW_PASSCODE_REVEAL="true") as (stack, session):
        by_function = {route.function: route for route in routes(stack)}
        status, _ = await call(session, stack, by_function["submit_reset"], spoofed)
        assert status == 202
        await stack.wait_final("SEC-1")
        for garbage in ("%%%", "e30=", base64.b64encode(b"[1]").decode(), "x" * 4000):
            headers = {**KEY, "X-MS-CLIENT-PRINCIPAL": garbage}
            status, _ = await call(session, stack, by_function["get_reset_status"], headers)
            assert status == 200
        status, _ = await call(session, stack, by_function["reveal_passcode"], spoofed)
        assert status == 404  # a dry run has no passcode; the route was reached all the same
    audits = [r for r in caplog.records if getattr(r, "event", None) == "passcode_reveal"]
    assert [getattr(r, "principal", None) for r in audits] == ["function-key caller"], "the header was trusted"


@pytest.mark.parametrize("function", sorted(ROUTE_ROLES))
async def test_with_roles_on_each_route_needs_its_own_role(product_stack: ProductFactory, function: str) -> None:
    needed = ROUTE_ROLES[function]
    async with client(product_stack, AUTH_REQUIRE_ROLES="true", ALLOW_PASSCODE_REVEAL="true") as (stack, session):
        route = next(route for route in routes(stack) if route.function == function)
        other_roles = [role for role in Role if role is not needed]
        cases = [
            ({}, 401),
            ({"X-MS-CLIENT-PRINCIPAL": "not base64 %%"}, 401),
            ({"X-MS-CLIENT-PRINCIPAL": base64.b64encode(b'{"claims": "roles"}').decode()}, 401),
            ({"X-MS-CLIENT-PRINCIPAL": principal()}, 403),
            ({"X-MS-CLIENT-PRINCIPAL": principal(*other_roles)}, 403),
            ({"X-MS-CLIENT-PRINCIPAL": principal(needed.value.lower())}, 403),  # role values are case-sensitive
            ({"X-MS-CLIENT-PRINCIPAL": _principal_with_claim("groups", needed.value)}, 403),
        ]
        for headers, expected in cases:
            status, text = await call(session, stack, route, {**KEY, **headers})
            assert status == expected, (headers, status, text)
            problem = json.loads(text)
            assert problem["status"] == expected and "mallory" not in text
        status, _ = await call(session, stack, route, {**KEY, "X-MS-CLIENT-PRINCIPAL": principal(needed.value)})
        assert status not in (401, 403)
        # Without the function key the role does not help: the host answers first.
        status, _ = await call(session, stack, route, {"X-MS-CLIENT-PRINCIPAL": principal(*Role)})
        assert status == 401


def _principal_with_claim(claim_type: str, value: str) -> str:
    document = {"auth_typ": "aad", "claims": [{"typ": claim_type, "val": value}], "role_typ": "roles"}
    return base64.b64encode(json.dumps(document).encode()).decode()
