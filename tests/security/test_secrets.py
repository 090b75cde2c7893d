"""Secrets never leave where they belong (docs/contract.md#outcome-events, decision 0004, issue 7): the Graph token,
the function key, the storage key and the passcodes Intune generates appear in no log record, no
outcome event, no exception and no problem body, also when Graph fails in every way the simulator
can fail. (The short soak, tests/reliability/test_soak_short.py, scans every log line and event of a
run with a host kill the same way.)"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
import pytest

from bench.soak import find_leaks
from devstack.azurite import ACCOUNT_KEY
from devstack.host import JsonFormatter
from shared.adapters.graph import MsGraphIntuneGateway
from shared.core.errors import GraphError
from shared.core.platforms import Action
from shared.settings import load_settings
from tests.plugins.product import ProductFactory
from tests.plugins.stack import TEST_FUNCTION_KEY

KEY = {"x-functions-key": TEST_FUNCTION_KEY}
ADELE = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"  # Android work profile: resetPasscode leaves a passcode
LYNNE = "b7c3cd1e-b588-4dc9-b2b2-0f9448112e09"
KIOSK = "00e958d3-baee-4e0f-8544-e8144f9672c4"
APP_LOGGERS = ("passcode_reset", "devstack.host", "shared")


def request(request_id: str, device: str, **fields: Any) -> dict[str, Any]:
    return {"requestId": request_id, "device": {"intuneDeviceId": device}, "requestedBy": "sec@contoso.com", **fields}


async def test_no_secret_in_logs_events_or_problems_through_failures(
    product_stack: ProductFactory, caplog: pytest.LogCaptureFixture
) -> None:
    for name in APP_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    answers: list[str] = []
    async with product_stack(ALLOW_PASSCODE_REVEAL="true") as stack, aiohttp.ClientSession() as session:
        control = stack.sim.control
        # Every kind of Graph failure once, on the devices these requests act on. (A 5xx that left the
        # action unapplied would hold the request for the 60 s action lease: docs/decisions/0011.)
        for fault in ("429", "500_after_apply", "504_after_apply", "drop", "drop_after_apply"):
            await control.add_fault(fault, method="POST", device_id=LYNNE, retry_after=1)
        await control.add_fault("503", method="GET", device_id=KIOSK, times=2, retry_after=1)
        url = f"{stack.host.url}/api/resets"
        for body in (request("SEC-A", ADELE), request("SEC-L", LYNNE), request("SEC-K", KIOSK)):
            async with session.post(url, json=body, headers=KEY) as response:
                answers.append(await response.text())
                assert response.status == 202
        await stack.wait_final("SEC-A", "SEC-L", "SEC-K", timeout=60)
        for path, status in [
            ("/api/resets/SEC-A/passcode", 200),  # the passcode itself: the only place it may appear
            ("/api/resets/SEC-L/passcode", 200),
            ("/api/resets/NOPE/passcode", 404),
            ("/api/resets/bad%20id", 400),
        ]:
            async with session.get(stack.host.url + path, headers=KEY) as response:
                assert response.status == status, path
                if status != 200:
                    answers.append(await response.text())
        conflict = request("SEC-A", KIOSK)  # the same requestId, another payload
        for body in (b"{not json", json.dumps(conflict).encode()):
            async with session.post(url, data=body, headers=KEY) as response:
                assert response.status in (400, 409)
                answers.append(await response.text())
        await stack.settle(0.5)

        passcodes = {
            str(result["passcode"])
            for device in (ADELE, LYNNE)
            for result in (await control.device(device))["deviceActionResults"]
            if result.get("passcode")
        }
        assert len(passcodes) == 2
        secrets = {
            "GRAPH_TOKEN": {stack.sim.token},
            "function key": {TEST_FUNCTION_KEY},
            "storage account key": {ACCOUNT_KEY},
            "passcode": passcodes,
        }
        formatter = JsonFormatter()
        texts = {
            "log records": "\n".join(formatter.format(record) for record in caplog.records),
            "events": json.dumps(stack.events),
            "problem bodies and answers": "\n".join(answers),
        }
        assert find_leaks(secrets, texts) == []
        assert len(caplog.records) > 20 and any(r.levelno >= logging.WARNING for r in caplog.records)


async def test_graph_errors_never_carry_the_token(sim: Any) -> None:
    """The messages of the error taxonomy name Graph's status, code and request id, nothing else."""
    wrong = "wr0ng-T0KEN-value"
    gateway = MsGraphIntuneGateway.with_static_token(sim.url, wrong)
    right = MsGraphIntuneGateway.with_static_token(sim.url, sim.token)
    await sim.control.add_fault("503", device_id=ADELE, times=1, retry_after=1)
    await sim.control.add_fault("504_after_apply", method="POST", device_id=ADELE, times=1)
    errors: list[GraphError] = []
    try:
        for call in (
            lambda: gateway.get_device(ADELE),  # 401 InvalidAuthenticationToken
            lambda: right.get_device(ADELE),  # 503
            lambda: right.perform(ADELE, Action.RESET_PASSCODE),  # 504 after applying
        ):
            with pytest.raises(GraphError) as raised:
                await call()
            errors.append(raised.value)
    finally:
        await gateway.aclose()
        await right.aclose()
    assert [e.status for e in errors] == [401, 503, 504]
    for error in errors:
        text = f"{error} {error!r} {error.args} {error.__cause__!r} {error.__context__!r}"
        assert wrong not in text and sim.token not in text


def test_settings_never_print_the_token_or_the_storage_key() -> None:
    settings = load_settings(
        {
            "AzureWebJobsStorage": f"DefaultEndpointsProtocol=http;AccountName=a;AccountKey={ACCOUNT_KEY};",
            "GRAPH_BASE_URL": "http://127.0.0.1:8950",
            "GRAPH_TOKEN": "t0ken-in-settings",
        }
    )
    for text in (repr(settings), str(settings), f"{settings}"):
        assert ACCOUNT_KEY not in text and "t0ken-in-settings" not in text


async def test_request_values_are_not_logged_even_at_info(
    product_stack: ProductFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """README: "tokens, passcodes and request values are never logged". Identifiers travel to Graph
    in URLs (`$filter=serialNumber eq '...'`), so no log line may carry a Graph URL either."""
    caplog.set_level(logging.INFO)  # what the Functions host forwards with "Function": "Information"
    values = {
        "serial": "G6TZK2XQ0D",  # Alex's iPhone
        "imei": "352178922061591",  # the kiosk
        "upn": "alex@contoso.com",
        "free text": "Marker-reason-7f3a",
    }
    async with product_stack() as stack:
        await stack.send({**request("SEC-SN", ADELE), "device": {"serialNumber": values["serial"]},
                          "expectedUserPrincipalName": values["upn"], "reason": values["free text"], "dryRun": True})
        await stack.send({**request("SEC-IMEI", ADELE), "device": {"imei": values["imei"]}, "dryRun": True})
        await stack.wait_final("SEC-SN", "SEC-IMEI")
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records if not r.name.startswith("azure"))
    assert [name for name, value in values.items() if value in logged] == []
