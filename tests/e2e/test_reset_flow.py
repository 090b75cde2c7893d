"""docs/contract.md#request-message to #outcome-events end to end: queue message -> devstack host
-> msgraph-sdk -> Intune simulator -> outcome events on the results queue, with the ledger on Azurite."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.plugins.product import ProductFactory

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
EVENT_SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas/outcome-event.schema.json").read_text())
ADELE = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"
JOHANNA = "359f491b-f7ff-414f-b598-c0e02c1915cd"
KIOSK = "00e958d3-baee-4e0f-8544-e8144f9672c4"

# sample file -> (final status, platform, action, scope, reason code)
EXPECTED = {
    "01-ios": ("completed", "ios", "removePasscode", "device", None),
    "02-ios-user-enrollment": ("unsupported", "ios-user-enrollment", None, None, "platform_unsupported"),
    "03-android-dedicated": ("completed", "android-dedicated", "resetPasscode", "device", None),
    "04-android-fully-managed": ("completed", "android-fully-managed", "resetPasscode", "workProfile", None),
    "05-android-corporate-work-profile": (
        "completed", "android-corporate-work-profile", "resetPasscode", "workProfile", None),
    "06-android-work-profile": ("completed", "android-work-profile", "resetPasscode", "workProfile", None),
    "07-android-work-profile-too-old": ("unsupported", "android-work-profile", None, None, "platform_unsupported"),
    "08-android-aosp": ("completed", "android-aosp", "resetPasscode", "device", None),
    "09-android-device-admin": ("completed", "android-device-admin", "resetPasscode", "device", None),
    "10-macos-remote-lock": ("completed", "macos", "remoteLock", "device", None),
    "11-windows-mobile": ("completed", "windows-mobile", "resetPasscode", "device", None),
    "12-windows": ("unsupported", "windows", None, None, "platform_unsupported"),
    "13-unknown-linux": ("unsupported", "unknown", None, None, "platform_unsupported"),
    "14-dry-run": ("dry_run", "android-corporate-work-profile", "resetPasscode", "workProfile", "would_run"),
    "15-ambiguous-serial": ("rejected", None, None, None, "ambiguous_device"),
    "16-device-not-found": ("rejected", None, None, None, "device_not_found"),
}


def request(request_id: str, device: dict[str, str] | None = None, **fields: Any) -> dict[str, Any]:
    return {"requestId": request_id, "device": device or {"intuneDeviceId": ADELE},
            "requestedBy": "servicedesk@contoso.com", "ticketId": "INC42", **fields}


async def post_count(stack: Any, device_id: str) -> int:
    return len(await stack.sim.control.calls(method="POST", device_id=device_id))


async def test_every_sample_reaches_its_final_outcome(product_stack: ProductFactory) -> None:
    async with product_stack() as stack:
        samples = {path.stem: json.loads(path.read_text()) for path in sorted(SAMPLES.glob("*.json"))}
        assert set(samples) == set(EXPECTED)
        for body in samples.values():
            await stack.send(body)
        finals = await stack.wait_final(*(s["requestId"] for s in samples.values()), timeout=45)

        for name, body in samples.items():
            status, platform, action, scope, code = EXPECTED[name]
            data = finals[body["requestId"]]["data"]
            assert data["status"] == status, (name, data)
            assert (data["device"] or {}).get("platform") == platform, name
            assert (data["action"], data["scope"]) == (action, scope), name
            assert (data["reason"] or {}).get("code") == code, name
            assert data["requestedBy"] == "servicedesk@contoso.com" and data["ticketId"] == body["ticketId"]
            if status == "completed":
                submitted = [e for e in stack.of(body["requestId"]) if e["data"]["status"] == "submitted"]
                assert len(submitted) == 1 and data["attempt"] == 1
        for event in stack.events:
            jsonschema.validate(event, EVENT_SCHEMA)
            assert event["type"] == f"intune.passcode-reset.{event['data']['status']}"
        assert finals["INC0010004-1"]["data"]["correlationId"] == "flow-run-4711"


async def test_unsupported_and_rejected_requests_never_call_an_action(product_stack: ProductFactory) -> None:
    async with product_stack() as stack:
        await stack.sim.control.clear_calls()
        for name in ("02-ios-user-enrollment", "07-android-work-profile-too-old", "12-windows", "13-unknown-linux",
                     "14-dry-run", "15-ambiguous-serial", "16-device-not-found"):
            await stack.send((SAMPLES / f"{name}.json").read_text())
        await stack.wait_final("INC0010002-1", "INC0010007-1", "INC0010012-1", "INC0010013-1", "INC0010014-1",
                               "INC0010015-1", "INC0010016-1")
        assert await stack.sim.control.calls(method="POST") == []


@pytest.mark.parametrize(
    "serial", ["x' or serialNumber ne '", "G6TZK2XQ0D' or '1' eq '1", "DX3PQ7Y2N72J') or (1 eq 1", "*"]
)
async def test_injection_shaped_identifiers_act_on_nothing(product_stack: ProductFactory, serial: str) -> None:
    async with product_stack() as stack:
        await stack.send(request("INJ-1", {"serialNumber": serial}))
        final = (await stack.wait_final("INJ-1"))["INJ-1"]["data"]
        assert final["status"] == "rejected" and final["reason"]["code"] == "device_not_found"
        assert await stack.sim.control.calls(method="POST") == []


async def test_each_rejected_reason(product_stack: ProductFactory) -> None:
    async with product_stack() as stack:
        await stack.send(request("UM-1", expectedUserPrincipalName="mallory@contoso.com"))
        await stack.send(request("CD-1", {"intuneDeviceId": KIOSK}))
        await stack.wait_final("UM-1", "CD-1")
        await stack.send(request("CD-2", {"imei": "352178922061591"}))  # same kiosk, inside the cooldown
        await stack.send(request("CD-1", {"intuneDeviceId": JOHANNA}))  # reused requestId, other payload
        await stack.send(b'{"requestId": "BAD-1", "device": {"imei": "12"}, "requestedBy": "desk"}')
        await stack.send("this is not a request")
        await stack.wait_final("CD-2", "BAD-1", None)
        await stack.settle(0.5)
        codes = {rid: stack.finals(rid)[-1]["data"]["reason"]["code"] for rid in ("UM-1", "CD-2", "BAD-1", None)}
        assert codes == {"UM-1": "user_mismatch", "CD-2": "cooldown", "BAD-1": "invalid_request",
                         None: "invalid_request"}
        conflict = [e for e in stack.finals("CD-1") if e["data"]["status"] == "rejected"]
        assert [e["data"]["reason"]["code"] for e in conflict] == ["request_conflict"]
        assert "device.imei" in stack.finals("BAD-1")[0]["data"]["reason"]["message"]
        assert await post_count(stack, KIOSK) == 1 and await post_count(stack, JOHANNA) == 0


async def test_base64_encoded_request_is_processed(product_stack: ProductFactory) -> None:
    async with product_stack() as stack:
        encoded = base64.b64encode(json.dumps(request("B64-1", dryRun=True)).encode()).decode()
        await stack.send(encoded)
        assert (await stack.wait_final("B64-1"))["B64-1"]["data"]["status"] == "dry_run"


async def test_same_message_three_times_makes_one_action(product_stack: ProductFactory) -> None:
    async with product_stack() as stack:
        for _ in range(3):
            await stack.send(request("DUP-1"))
        await stack.wait_final("DUP-1")
        await stack.settle(1.5)
        assert await stack.sim.control.applied_count(ADELE) == 1
        assert len({e["id"] for e in stack.finals("DUP-1")}) == 1
        assert {e["data"]["status"] for e in stack.finals("DUP-1")} == {"completed"}


async def test_throttled_action_honours_retry_after_and_runs_once(product_stack: ProductFactory) -> None:
    async with product_stack() as stack:
        await stack.sim.control.add_fault("429", method="POST", device_id=ADELE, retry_after=1)
        await stack.send(request("THR-1"))
        final = (await stack.wait_final("THR-1"))["THR-1"]["data"]
        assert final["status"] == "completed" and final["attempt"] == 2
        posts = await stack.sim.control.calls(method="POST", device_id=ADELE)
        assert [p["status"] for p in posts] == [429, 204]
        assert await stack.sim.control.applied_count(ADELE) == 1


async def test_504_after_the_action_was_applied_still_makes_one_action(product_stack: ProductFactory) -> None:
    async with product_stack() as stack:
        await stack.sim.control.add_fault("504_after_apply", method="POST", device_id=ADELE)
        await stack.send(request("GW-1"))
        final = (await stack.wait_final("GW-1"))["GW-1"]["data"]
        await stack.settle(1)
        assert final["status"] == "completed"
        assert len(await stack.sim.control.calls(method="POST", device_id=ADELE)) == 1
        assert await stack.sim.control.applied_count(ADELE) == 1


async def test_persistent_throttling_ends_in_one_failed_event(product_stack: ProductFactory) -> None:
    # A 429 is the one transient answer to an action POST that proves Intune did not take it, so it
    # is retried at once after Retry-After; a 5xx is reconciled first (tests/e2e/test_real_intune.py).
    async with product_stack() as stack:
        await stack.sim.control.add_fault("429", method="POST", device_id=ADELE, times=None, retry_after=1)
        await stack.send(request("S429-1"))
        final = (await stack.wait_final("S429-1", timeout=40))["S429-1"]["data"]
        await stack.settle(1)
        assert final["status"] == "failed" and final["reason"]["code"] == "retries_exhausted"
        assert len(stack.finals("S429-1")) == 1 and final["attempt"] == 5
        assert await stack.sim.control.applied_count(ADELE) == 0


async def test_poisoned_request_ends_in_retries_exhausted(product_stack: ProductFactory) -> None:
    async with product_stack() as stack:
        await stack.send(request("PSN-1"), queue=stack.requests_queue + "-poison")
        final = (await stack.wait_final("PSN-1"))["PSN-1"]["data"]
        assert final["status"] == "failed" and final["reason"]["code"] == "retries_exhausted"
        # The same request arriving again later republishes that outcome and acts on nothing.
        await stack.send(request("PSN-1"))
        await stack.settle(1.0)
        assert len({e["id"] for e in stack.finals("PSN-1")}) == 1
        assert await stack.sim.control.applied_count(ADELE) == 0


async def test_device_reporting_failure_ends_failed(product_stack: ProductFactory) -> None:
    async with product_stack() as stack:
        await stack.sim.control.script_device(ADELE, complete_after=0.5, final_state="failed")
        await stack.send(request("DF-1"))
        final = (await stack.wait_final("DF-1"))["DF-1"]["data"]
        assert final["status"] == "failed" and final["reason"]["code"] == "action_failed"


async def test_device_that_never_checks_in_times_out(product_stack: ProductFactory) -> None:
    async with product_stack(CONFIRM_TIMEOUT_SECONDS="3") as stack:
        await stack.sim.control.script_device(ADELE, complete_after=None)
        await stack.send(request("TO-1"))
        final = (await stack.wait_final("TO-1", timeout=20))["TO-1"]["data"]
        assert final["status"] == "timed_out" and final["reason"]["code"] == "confirmation_timeout"
        assert [e["data"]["status"] for e in stack.of("TO-1")] == ["submitted", "timed_out"]


async def test_no_passcode_in_any_event_or_log_line(
    product_stack: ProductFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with product_stack() as stack:
        await stack.send(request("PC-1"))
        await stack.send(request("PC-2", {"intuneDeviceId": JOHANNA}))
        await stack.wait_final("PC-1", "PC-2")
        passcodes = []
        for device_id in (ADELE, JOHANNA):
            results = (await stack.sim.control.device(device_id))["deviceActionResults"]
            passcodes += [r["passcode"] for r in results if r.get("passcode")]
        assert len(passcodes) == 2
        text = json.dumps(stack.events) + "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
        for passcode in passcodes:
            assert passcode not in text
        assert stack.settings["GRAPH_TOKEN"] not in text
