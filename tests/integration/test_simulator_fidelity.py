"""The simulator's switchable real-world behaviours (docs/simulator.md, "Real-world behaviours"):
untyped action results, actionName casing, the macOS unlock PIN, IMEI forms and startswith,
500/502 after apply, 429 without Retry-After, 204 then notSupported, and enum members newer than
the SDK's sentinel. Each is read through the real msgraph-sdk where that is what the product sees."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.middleware.options import RetryHandlerOption
from msgraph.generated.device_management.managed_devices.item.managed_device_item_request_builder import (
    ManagedDeviceItemRequestBuilder,
)
from msgraph.generated.models.device_action_result import DeviceActionResult
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.remote_lock_action_result import RemoteLockActionResult
from msgraph.generated.models.reset_passcode_action_result import ResetPasscodeActionResult

from bench.leak_scan import found_in
from devstack.simulator.control import SimulatorControlError
from devstack.simulator.server import RunningSimulator
from tests.integration.test_simulator import (
    ANDROID_BARE_PASCAL,
    ANDROID_IMEI_14,
    ANDROID_NEW_ENROLLMENT,
    ANDROID_UNTYPED_LOWER,
    ANDROID_WP_14,
    ANDROID_WP_NOT_SUPPORTED_LATER,
    IOS,
    IOS_SPACED_IMEI,
    IOS_UE_ACCOUNT,
    MACOS,
    MACOS_BARE,
    WINDOWS_DESKTOP,
    device_query,
    devices_url,
    get_json,
    graph_client,
    list_all,
    list_query,
    list_raw,
    post_action,
    results_of,
)

NEW_ENROLLMENT_TYPE = "androidEnterpriseDedicatedDeviceWithAzureADSharedMode"
PREFER = {"Prefer": "include-unknown-enum-members"}


@pytest_asyncio.fixture(loop_scope="session")
async def http(sim: RunningSimulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {sim.token}"}) as session:
        yield session


async def sdk_results(sim: RunningSimulator, device_id: str, version: str = "v1.0") -> list[DeviceActionResult]:
    device = await (
        graph_client(sim, version)
        .device_management.managed_devices.by_managed_device_id(device_id)
        .get(request_configuration=device_query("deviceActionResults"))
    )
    assert device is not None and device.device_action_results is not None
    return list(device.device_action_results)


# --------------------------------------------------------------------------------------------
# @odata.type forms and actionName casing


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ("prefixed", "#microsoft.graph.resetPasscodeActionResult"),
        ("bare", "microsoft.graph.resetPasscodeActionResult"),
        ("absent", None),
    ],
)
async def test_result_type_forms_and_what_msgraph_makes_of_them(
    sim: RunningSimulator, http: aiohttp.ClientSession, form: str, expected: str | None
) -> None:
    await sim.control.set_behaviour(ANDROID_WP_14, result_type=form)
    assert (await post_action(http, sim, ANDROID_WP_14)).status == 204
    [raw] = await results_of(http, sim, ANDROID_WP_14)
    assert raw.get("@odata.type") == expected
    passcode = raw["passcode"]
    assert isinstance(passcode, str) and len(passcode) == 8

    [parsed] = await sdk_results(sim, ANDROID_WP_14)
    if form == "prefixed":  # kiota picks the subtype only from a '#'-prefixed discriminator
        assert isinstance(parsed, ResetPasscodeActionResult) and parsed.passcode == passcode
    else:  # the base class; the passcode is only in additional_data
        assert type(parsed) is DeviceActionResult
        assert parsed.additional_data["passcode"] == passcode
    assert parsed.action_name == "resetPasscode"


@pytest.mark.parametrize(
    ("case", "expected"), [("camel", "resetPasscode"), ("pascal", "ResetPasscode"), ("lower", "resetpasscode")]
)
async def test_action_name_casing(sim: RunningSimulator, http: aiohttp.ClientSession, case: str, expected: str) -> None:
    await sim.control.configure(complete_after=None)
    await sim.control.set_behaviour(ANDROID_WP_14, action_name_case=case)
    assert (await post_action(http, sim, ANDROID_WP_14)).status == 204
    [raw] = await results_of(http, sim, ANDROID_WP_14)
    assert raw["actionName"] == expected
    assert (await sim.control.complete(ANDROID_WP_14, action="resetPasscode"))["actionName"] == expected
    [parsed] = await sdk_results(sim, ANDROID_WP_14)
    assert parsed.action_name == expected
    # The call log and the applied-actions list keep Graph's route name.
    assert [a["action"] for a in (await sim.control.actions())[ANDROID_WP_14]] == ["resetPasscode"]


async def test_fleet_devices_with_untyped_results(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    assert (await sim.control.behaviour(ANDROID_BARE_PASCAL))["resultType"] == "bare"
    for device_id in (ANDROID_BARE_PASCAL, ANDROID_UNTYPED_LOWER):
        assert (await post_action(http, sim, device_id)).status == 204
    [bare] = await results_of(http, sim, ANDROID_BARE_PASCAL)
    assert (bare["@odata.type"], bare["actionName"]) == ("microsoft.graph.resetPasscodeActionResult", "ResetPasscode")
    [untyped] = await results_of(http, sim, ANDROID_UNTYPED_LOWER)
    assert "@odata.type" not in untyped and untyped["actionName"] == "resetpasscode"
    assert untyped["passcode"] and bare["passcode"]
    # A behaviour changed at run time applies to results already there; reset restores the fleet's.
    await sim.control.set_behaviour(ANDROID_BARE_PASCAL)
    [typed] = await results_of(http, sim, ANDROID_BARE_PASCAL)
    assert (typed["@odata.type"], typed["actionName"]) == (
        "#microsoft.graph.resetPasscodeActionResult",
        "resetPasscode",
    )
    await sim.control.reset()
    assert (await sim.control.device(ANDROID_BARE_PASCAL))["_behaviour"]["actionNameCase"] == "pascal"


async def test_global_default_behaviour_and_per_device_override(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    await sim.control.configure(behaviour={"resultType": "absent"})
    await sim.control.set_behaviour(ANDROID_WP_14)  # its own: the defaults
    for device_id in (ANDROID_WP_14, IOS):
        assert (await post_action(http, sim, device_id)).status == 204
    assert "@odata.type" in (await results_of(http, sim, ANDROID_WP_14))[0]
    assert "@odata.type" not in (await results_of(http, sim, IOS))[0]
    await sim.control.clear_behaviour(ANDROID_WP_14)
    assert "@odata.type" not in (await results_of(http, sim, ANDROID_WP_14))[0]


async def test_behaviour_validation(sim: RunningSimulator) -> None:
    bodies: list[Any] = [{"resultType": "hash"}, {"actionNameCase": "UPPER"}, {"unsupported": "x"}, []]
    for body in bodies:
        with pytest.raises(SimulatorControlError) as caught:
            await sim.control._call("PUT", f"/devices/{ANDROID_WP_14}/behaviour", body)
        assert caught.value.status == 400
    with pytest.raises(SimulatorControlError) as caught:
        await sim.control.set_behaviour("7d3c2a6e-1111-4222-8333-944455556666")
    assert caught.value.status == 404
    with pytest.raises(SimulatorControlError):
        await sim.control.configure(startswith="sometimes")


# --------------------------------------------------------------------------------------------
# macOS unlock PIN


async def test_macos_remote_lock_pin_only_in_action_results(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    response = await post_action(http, sim, MACOS, "remoteLock")
    assert response.status == 204
    [lock] = await results_of(http, sim, MACOS)  # replaces the seeded, older remoteLock result
    pin = lock["unlockPin"]
    assert lock["@odata.type"] == "#microsoft.graph.remoteLockActionResult"
    assert pin.isdigit() and len(pin) == 6
    [parsed] = await sdk_results(sim, MACOS)
    assert isinstance(parsed, RemoteLockActionResult) and parsed.unlock_pin == pin
    # Nowhere else: not in the call log, the applied actions, list calls or the device's properties.
    observed = json.dumps([await sim.control.calls(), await sim.control.actions()])
    listed = await list_raw(http, sim, "beta", **{"$filter": "serialNumber eq 'C02FX3LPQ05D'"})
    # As a whole token (bench/leak_scan.py): six digits also turn up by chance in Graph's 7-digit timestamps.
    assert not found_in([pin], observed) and listed[0]["deviceActionResults"] == []
    device = {k: v for k, v in (await sim.control.device(MACOS)).items() if k != "deviceActionResults"}
    assert not found_in([pin], json.dumps(device))


async def test_macos_pin_with_bare_type_and_its_lifetime(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    assert (await post_action(http, sim, MACOS_BARE, "remoteLock")).status == 204
    [lock] = await results_of(http, sim, MACOS_BARE)
    assert lock["@odata.type"] == "microsoft.graph.remoteLockActionResult"
    [parsed] = await sdk_results(sim, MACOS_BARE)
    assert type(parsed) is DeviceActionResult and parsed.additional_data["unlockPin"] == lock["unlockPin"]
    # A second lock replaces the result: the first PIN is never shown again.
    assert (await post_action(http, sim, MACOS_BARE, "remoteLock")).status == 204
    [second] = await results_of(http, sim, MACOS_BARE)
    assert second["unlockPin"] != lock["unlockPin"] or second["startDateTime"] != lock["startDateTime"]
    # Any later action hides the PIN (here a reset Intune accepts and then reports notSupported).
    await sim.control.set_behaviour(MACOS_BARE, unsupported_action="notSupportedLater")
    assert (await post_action(http, sim, MACOS_BARE, "resetPasscode")).status == 204
    results = {r["actionName"]: r for r in await results_of(http, sim, MACOS_BARE)}
    assert results["remoteLock"]["unlockPin"] is None
    # After 30 days the PIN is gone too: the seeded 2026-06 lock on MACOS shows none.
    [old] = [r for r in (await sim.control.device(MACOS))["deviceActionResults"] if r["actionName"] == "remoteLock"]
    assert old["unlockPin"] is None


# --------------------------------------------------------------------------------------------
# IMEI forms and startswith


async def test_imei_filter_is_exact_equality_on_the_stored_form(sim: RunningSimulator) -> None:
    client = graph_client(sim)

    async def ids(filter_text: str) -> set[str | None]:
        devices, _ = await list_all(client, list_query(filter_text, ["id", "imei"]))
        return {d.id for d in devices}

    assert await ids("imei eq '35 309418 464558 9'") == {IOS_SPACED_IMEI}
    assert await ids("imei eq '353094184645589'") == set()  # digits only: not the stored form
    assert await ids("imei eq '35490211367520'") == {ANDROID_IMEI_14}
    assert await ids("imei eq '354902113675200'") == set()  # with its check digit: not stored that way
    [phone] = (await list_all(client, list_query("imei eq '35 309418 464558 9'", ["id", "imei"])))[0]
    assert phone.imei == "35 309418 464558 9"


@pytest.mark.parametrize(
    ("mode", "literal", "expected"),
    [
        ("ignore", "35490211367520", None),  # default: every device, like any unsupported filter
        ("prefix", "35490211367520", {ANDROID_IMEI_14}),
        ("prefix", "35 309418", {IOS_SPACED_IMEI}),
        ("prefix", "464558", set()),
        ("contains", "464558", {IOS_SPACED_IMEI}),
    ],
)
async def test_startswith_on_imei(
    sim: RunningSimulator, http: aiohttp.ClientSession, mode: str, literal: str, expected: set[str] | None
) -> None:
    if mode != "ignore":
        await sim.control.configure(startswith=mode)
    devices = await list_raw(http, sim, "beta", **{"$filter": f"startswith(imei,'{literal}')", "$select": "id"})
    if expected is None:
        assert len(devices) == len(await sim.control.devices())
    else:
        assert {d["id"] for d in devices} == expected


# --------------------------------------------------------------------------------------------
# 5xx after apply, 429 without Retry-After


@pytest.mark.parametrize(("fault", "status", "code"), [("500", 500, "InternalServerError"), ("502", 502, "BadGateway")])
async def test_5xx_before_and_after_apply(
    sim: RunningSimulator, http: aiohttp.ClientSession, fault: str, status: int, code: str
) -> None:
    await sim.control.add_fault(fault, method="POST", action="resetPasscode")
    response = await post_action(http, sim, ANDROID_WP_14)
    assert response.status == status
    assert await sim.control.applied_count(ANDROID_WP_14) == 0

    await sim.control.add_fault(f"{fault}_after_apply", method="POST", action="resetPasscode")
    client = graph_client(sim)
    with pytest.raises(ODataError) as caught:
        await client.device_management.managed_devices.by_managed_device_id(ANDROID_WP_14).reset_passcode.post()
    assert caught.value.response_status_code == status
    assert caught.value.error is not None and caught.value.error.code == code
    # Applied although the caller saw an error; msgraph's RetryHandler does not retry 500/502.
    assert await sim.control.applied_count(ANDROID_WP_14, "resetPasscode") == 1
    posts = await sim.control.calls(method="POST")
    assert [(c["status"], c["fault"]) for c in posts] == [(status, fault), (status, f"{fault}_after_apply")]
    [result] = await results_of(http, sim, ANDROID_WP_14)
    assert result["actionState"] == "pending" and result["passcode"]


async def test_drop_and_html_bodies_work_for_the_new_faults(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    await sim.control.add_fault("502_after_apply", action="remoteLock", body="html")
    async with http.post(devices_url(sim, "v1.0", IOS, "remoteLock")) as response:
        assert response.status == 502 and response.content_type == "text/html"
    assert await sim.control.applied_count(IOS, "remoteLock") == 1


async def test_429_without_retry_after(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    # A fault rule: 429 without retryAfter has no header.
    await sim.control.add_fault("429", method="POST", action="resetPasscode")
    client = graph_client(sim)
    builder = client.device_management.managed_devices.by_managed_device_id(ANDROID_WP_14).reset_passcode
    with pytest.raises(ODataError) as caught:
        await builder.post(request_configuration=RequestConfiguration(options=[RetryHandlerOption(max_retries=0)]))
    assert caught.value.response_status_code == 429
    headers = {k.lower() for k in (caught.value.response_headers or {})}
    assert "retry-after" not in headers and "request-id" in headers

    # The throttling budget, switched to leave the header out (the faulted POST above counted too).
    config = await sim.control.set_throttle(post_limit=2, window_seconds=30, retry_after=False)
    assert config["throttle"]["retryAfter"] is False
    assert (await post_action(http, sim, IOS)).status == 204
    response = await post_action(http, sim, IOS)
    assert response.status == 429 and "Retry-After" not in response.headers
    await sim.control.set_throttle(post_limit=2, window_seconds=30, retry_after=True)
    response = await post_action(http, sim, IOS)
    assert response.status == 429 and int(response.headers["Retry-After"]) >= 1


# --------------------------------------------------------------------------------------------
# unsupported: 400, or 204 then notSupported


async def test_unsupported_device_answered_204_then_not_supported(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    await sim.control.configure(complete_after=0.2)
    assert (await post_action(http, sim, ANDROID_WP_NOT_SUPPORTED_LATER)).status == 204  # fleet behaviour
    assert await sim.control.applied_count(ANDROID_WP_NOT_SUPPORTED_LATER, "resetPasscode") == 1
    [pending] = await results_of(http, sim, ANDROID_WP_NOT_SUPPORTED_LATER)
    assert pending["actionState"] == "pending" and pending["passcode"] is None
    await asyncio.sleep(0.3)
    [later] = await results_of(http, sim, ANDROID_WP_NOT_SUPPORTED_LATER)
    assert later["actionState"] == "notSupported" and later["passcode"] is None
    # Supported actions on the same device are unaffected.
    assert (await post_action(http, sim, ANDROID_WP_NOT_SUPPORTED_LATER, "remoteLock")).status == 204

    # Switched at run time on any device, and back.
    assert (await post_action(http, sim, WINDOWS_DESKTOP)).status == 400
    await sim.control.set_behaviour(WINDOWS_DESKTOP, unsupported_action="notSupportedLater")
    await sim.control.script_device(WINDOWS_DESKTOP, complete_after=0)
    assert (await post_action(http, sim, WINDOWS_DESKTOP)).status == 204
    [result] = await results_of(http, sim, WINDOWS_DESKTOP)
    assert result["actionState"] == "notSupported"
    await sim.control.clear_behaviour(WINDOWS_DESKTOP)
    assert (await post_action(http, sim, WINDOWS_DESKTOP)).status == 400


# --------------------------------------------------------------------------------------------
# enum members after the unknownFutureValue sentinel


async def test_new_enrollment_type_is_hidden_unless_prefer_asks(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    url = devices_url(sim, "beta", ANDROID_NEW_ENROLLMENT)
    status, body = await get_json(http, url)
    assert status == 200 and body["deviceEnrollmentType"] == "unknownFutureValue"
    assert body["deviceType"] == "androidEnterprise" and body["operatingSystem"] == "Android"

    for prefer in ("include-unknown-enum-members", "odata.maxpagesize=10, Include-Unknown-Enum-Members"):
        async with http.get(url, headers={"Prefer": prefer}) as response:
            body = await response.json(content_type=None)
            assert body["deviceEnrollmentType"] == NEW_ENROLLMENT_TYPE
            assert response.headers["Preference-Applied"] == "include-unknown-enum-members"

    params = {"$select": "id,deviceEnrollmentType", "$top": "100"}
    async with http.get(devices_url(sim, "beta"), params=params) as response:
        listed = {d["id"]: d for d in (await response.json())["value"]}
        assert "Preference-Applied" not in response.headers
    assert listed[ANDROID_NEW_ENROLLMENT]["deviceEnrollmentType"] == "unknownFutureValue"
    async with http.get(devices_url(sim, "beta"), params=params, headers=PREFER) as response:
        listed = {d["id"]: d for d in (await response.json())["value"]}
    assert listed[ANDROID_NEW_ENROLLMENT]["deviceEnrollmentType"] == NEW_ENROLLMENT_TYPE
    assert listed[IOS_UE_ACCOUNT]["deviceEnrollmentType"] == "appleAccountDrivenUserEnrollment"  # before the sentinel

    # v1.0 never has it: unknownFutureValue with or without the header (as before).
    async with http.get(devices_url(sim, "v1.0", ANDROID_NEW_ENROLLMENT), headers=PREFER) as response:
        assert (await response.json())["deviceEnrollmentType"] == "unknownFutureValue"
        assert "Preference-Applied" not in response.headers


async def test_prefer_header_through_msgraph(sim: RunningSimulator) -> None:
    client = graph_client(sim, "beta")
    item = client.device_management.managed_devices.by_managed_device_id(ANDROID_NEW_ENROLLMENT)
    params = ManagedDeviceItemRequestBuilder.ManagedDeviceItemRequestBuilderGetQueryParameters(
        select=["id", "deviceEnrollmentType"]
    )
    config: RequestConfiguration[Any] = RequestConfiguration(query_parameters=params)
    device = await item.get(request_configuration=config)
    assert device is not None and device.device_enrollment_type is not None
    assert device.device_enrollment_type.value == "unknownFutureValue"
    config.headers.add("Prefer", "include-unknown-enum-members")
    device = await item.get(request_configuration=config)
    # msgraph-sdk (v1.0 models) does not know the name: kiota turns it into None, silently.
    assert device is not None and device.device_enrollment_type is None


async def test_more_members_can_be_declared_newer_than_the_sentinel(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    await sim.control.configure(unknown_enum_members={"deviceEnrollmentType": ["appleAccountDrivenUserEnrollment"]})
    status, body = await get_json(http, devices_url(sim, "beta", IOS_UE_ACCOUNT))
    assert status == 200 and body["deviceEnrollmentType"] == "unknownFutureValue"
    async with http.get(devices_url(sim, "beta", IOS_UE_ACCOUNT), headers=PREFER) as response:
        assert (await response.json())["deviceEnrollmentType"] == "appleAccountDrivenUserEnrollment"
    await sim.control.reset()
    status, body = await get_json(http, devices_url(sim, "beta", IOS_UE_ACCOUNT))
    assert body["deviceEnrollmentType"] == "appleAccountDrivenUserEnrollment"
