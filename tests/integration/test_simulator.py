"""The Intune Graph simulator's own tests: Graph fidelity through the real msgraph-sdk client,
OData quirks, errors, throttling, fault injection, action completion and the CLI."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kiota_abstractions.api_error import APIError
from kiota_abstractions.authentication import (
    AccessTokenProvider,
    AllowedHostsValidator,
    BaseBearerTokenAuthenticationProvider,
)
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_http.middleware.options import RetryHandlerOption
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.device_management.managed_devices.item.managed_device_item_request_builder import (
    ManagedDeviceItemRequestBuilder,
)
from msgraph.generated.device_management.managed_devices.managed_devices_request_builder import (
    ManagedDevicesRequestBuilder,
)
from msgraph.generated.models.managed_device import ManagedDevice
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.remote_lock_action_result import RemoteLockActionResult
from msgraph.generated.models.reset_passcode_action_result import ResetPasscodeActionResult

from devstack import simulator as simulator_cli
from devstack.simulator import schema
from devstack.simulator.server import RunningSimulator

ROOT = Path(__file__).resolve().parents[2]
FLEET_FILE = ROOT / "devstack" / "simulator" / "fleet.json"

# Fleet device per docs/contract.md#platform-and-action-matrix row (docs/simulator.md has the same table).
IOS = "5394dbe7-8b41-4b84-b95b-f02793f69c0d"
IPADOS = "f4e029cb-9e39-44fb-a224-f1eaacaff851"
IOS_BYOD = "1077bb5d-455c-4d18-b850-5211ed53b291"
VISIONOS = "6d5d4f7b-6ff9-4e6d-bf08-5917aae795d4"
IOS_UE_CLASSIC = "17d9e92f-c2cf-4dc1-914c-a9cf14c7f75f"
IOS_UE_ACCOUNT = "0f710289-50b9-4949-9f93-3a2b8c3b8353"
ANDROID_DEDICATED = "00e958d3-baee-4e0f-8544-e8144f9672c4"
ANDROID_FULLY_MANAGED = "359f491b-f7ff-414f-b598-c0e02c1915cd"
ANDROID_COPE = "b7c3cd1e-b588-4dc9-b2b2-0f9448112e09"
ANDROID_WP_71 = "965c30be-1674-42e6-b43e-18f7153c1543"
ANDROID_WP_80 = "d0d4ab4c-6206-42dd-a855-5b89649f41c8"
ANDROID_WP_14 = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"
ANDROID_WP_BADVER = "c46a72ac-53cc-4ba6-b133-9ddf8dcb56a7"
AOSP_USER = "13bc73a2-22c3-499c-9c6a-9c0da7468317"
AOSP_USERLESS = "404e8909-1d5e-45d0-b0a8-734387bb1956"
AOSP_AGENT_ONLY = "d6dc9b10-60ea-49d7-b453-b8f6a695a793"
ANDROID_DA_60 = "46763180-3cec-4a00-b3b1-963bc73db894"
ANDROID_DA_10 = "a4e367f6-eaf5-444d-a760-747fd6e41d5c"
MACOS = "2df67db0-0c7d-4179-a7ed-3513a8e03864"
MACOS_QUOTE = "de62dc30-1dda-402c-98f4-b5b2d569aa1b"
WINDOWS_PHONE = "337f0b0a-76df-47f1-8504-643a0b476a69"
WINDOWS_WINMO6 = "9c0af1d5-e617-4577-859e-887027b395f2"
WINDOWS_DESKTOP = "62a9255c-bdb8-47c5-a8af-e9d1387777ee"
WINDOWS_HYBRID = "a6fa74bd-6ebb-4c01-8cf8-ce13ecf64834"
LINUX = "a6f64922-f9bc-4371-9694-f382fcbfdb53"
CHROMEOS = "55da1007-83ef-45f8-a3fd-2261c58d0def"
DUP_OLD = "29c8bf42-a279-4ddc-89cb-b5b962557881"
DUP_NEW = "32916b04-63e5-4afd-9194-d64996ad66d8"
DUP_SERIAL = "DX3PQ7Y2N72J"
# Devices added for the real-world behaviours (test_simulator_fidelity.py, docs/simulator.md).
IOS_SPACED_IMEI = "8e3f5a21-6c4d-4b7e-9f10-2a3b4c5d6e01"
ANDROID_IMEI_14 = "8e3f5a21-6c4d-4b7e-9f10-2a3b4c5d6e02"
ANDROID_BARE_PASCAL = "8e3f5a21-6c4d-4b7e-9f10-2a3b4c5d6e03"
ANDROID_UNTYPED_LOWER = "8e3f5a21-6c4d-4b7e-9f10-2a3b4c5d6e04"
MACOS_BARE = "8e3f5a21-6c4d-4b7e-9f10-2a3b4c5d6e05"
ANDROID_WP_NOT_SUPPORTED_LATER = "8e3f5a21-6c4d-4b7e-9f10-2a3b4c5d6e06"
ANDROID_NEW_ENROLLMENT = "8e3f5a21-6c4d-4b7e-9f10-2a3b4c5d6e07"

# device -> (matrix row, resetPasscode accepted by Intune, remoteLock accepted by Intune)
MATRIX: dict[str, tuple[str, bool, bool]] = {
    IOS: ("ios", True, True),
    IPADOS: ("ios", True, True),
    IOS_BYOD: ("ios", True, True),
    VISIONOS: ("ios", True, True),
    DUP_OLD: ("ios", True, True),
    DUP_NEW: ("ios", True, True),
    IOS_UE_CLASSIC: ("ios-user-enrollment", False, False),
    IOS_UE_ACCOUNT: ("ios-user-enrollment", False, False),
    ANDROID_DEDICATED: ("android-dedicated", True, True),
    ANDROID_FULLY_MANAGED: ("android-fully-managed", True, True),
    ANDROID_COPE: ("android-corporate-work-profile", True, True),
    ANDROID_WP_71: ("android-work-profile", False, True),
    ANDROID_WP_80: ("android-work-profile", True, True),
    ANDROID_WP_14: ("android-work-profile", True, True),
    ANDROID_WP_BADVER: ("android-work-profile", False, True),
    AOSP_USER: ("android-aosp", True, True),
    AOSP_USERLESS: ("android-aosp", True, True),
    AOSP_AGENT_ONLY: ("android-aosp", True, True),
    ANDROID_DA_60: ("android-device-admin", True, True),
    ANDROID_DA_10: ("android-device-admin", False, True),
    MACOS: ("macos", False, True),
    MACOS_QUOTE: ("macos", False, True),
    WINDOWS_PHONE: ("windows-mobile", True, True),
    WINDOWS_WINMO6: ("windows-mobile", True, True),
    WINDOWS_DESKTOP: ("windows", False, False),
    WINDOWS_HYBRID: ("windows", False, False),
    LINUX: ("unknown", False, False),
    CHROMEOS: ("unknown", False, False),
    IOS_SPACED_IMEI: ("ios", True, True),
    ANDROID_IMEI_14: ("android-fully-managed", True, True),
    ANDROID_BARE_PASCAL: ("android-corporate-work-profile", True, True),
    ANDROID_UNTYPED_LOWER: ("android-dedicated", True, True),
    MACOS_BARE: ("macos", False, True),
    # 204 with its `notSupportedLater` behaviour (fleet "behaviours"); the matrix test resets it.
    ANDROID_WP_NOT_SUPPORTED_LATER: ("android-work-profile", False, True),
    # Simulator-side platform only (Intune's answer to a new enrollment type is not documented);
    # docs/contract.md#platform-and-action-matrix classifies it as `unknown`.
    ANDROID_NEW_ENROLLMENT: ("android-device-admin", False, True),
}


# --------------------------------------------------------------------------------------------
# helpers


class StaticTokenProvider(AccessTokenProvider):
    def __init__(self, token: str, hosts: list[str]) -> None:
        self._token = token
        self._hosts = AllowedHostsValidator(hosts)

    async def get_authorization_token(
        self, uri: str, additional_authentication_context: dict[str, Any] | None = None
    ) -> str:
        return self._token if self._hosts.is_url_host_valid(uri) else ""

    def get_allowed_hosts_validator(self) -> AllowedHostsValidator:
        return self._hosts


def graph_client(sim: RunningSimulator, version: str = "v1.0") -> GraphServiceClient:
    auth = BaseBearerTokenAuthenticationProvider(StaticTokenProvider(sim.token, [sim.host]))
    adapter = GraphRequestAdapter(auth)
    adapter.base_url = f"{sim.url}/{version}"
    return GraphServiceClient(request_adapter=adapter)


def device_query(*select: str, retries: int | None = None) -> RequestConfiguration[Any]:
    params = ManagedDeviceItemRequestBuilder.ManagedDeviceItemRequestBuilderGetQueryParameters(
        select=list(select) or None
    )
    options = [RetryHandlerOption(max_retries=retries)] if retries is not None else []
    return RequestConfiguration(query_parameters=params, options=options)


def list_query(filter: str | None = None, select: list[str] | None = None) -> RequestConfiguration[Any]:
    params = ManagedDevicesRequestBuilder.ManagedDevicesRequestBuilderGetQueryParameters(filter=filter, select=select)
    return RequestConfiguration(query_parameters=params)


async def list_all(client: GraphServiceClient, config: RequestConfiguration[Any]) -> tuple[list[ManagedDevice], int]:
    """Every device across pages (following @odata.nextLink with with_url) and the page count."""
    builder = client.device_management.managed_devices
    page = await builder.get(request_configuration=config)
    assert page is not None
    devices, pages = list(page.value or []), 1
    while page.odata_next_link:
        page = await builder.with_url(page.odata_next_link).get()
        assert page is not None
        devices.extend(page.value or [])
        pages += 1
    return devices, pages


def fleet() -> list[dict[str, Any]]:
    data: dict[str, Any] = json.loads(FLEET_FILE.read_text(encoding="utf-8"))
    return list(data["value"])


@pytest_asyncio.fixture(loop_scope="session")
async def http(sim: RunningSimulator) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {sim.token}"}) as session:
        yield session


def devices_url(sim: RunningSimulator, version: str = "beta", device_id: str | None = None, action: str = "") -> str:
    url = f"{sim.url}/{version}/deviceManagement/managedDevices"
    if device_id:
        url += f"/{device_id}"
    if action:
        url += f"/{action}"
    return url


async def get_json(session: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, dict[str, Any]]:
    async with session.get(url, params=params or None) as response:
        return response.status, await response.json(content_type=None)


async def post_action(
    session: aiohttp.ClientSession, sim: RunningSimulator, device_id: str, action: str = "resetPasscode"
) -> aiohttp.ClientResponse:
    async with session.post(devices_url(sim, "v1.0", device_id, action)) as response:
        await response.read()
        return response


async def list_raw(
    session: aiohttp.ClientSession, sim: RunningSimulator, version: str = "beta", **params: str
) -> list[dict[str, Any]]:
    status, page = await get_json(session, devices_url(sim, version), **params)
    assert status == 200, page
    devices = list(page["value"])
    while "@odata.nextLink" in page:
        status, page = await get_json(session, page["@odata.nextLink"])
        assert status == 200, page
        devices.extend(page["value"])
    return devices


async def results_of(session: aiohttp.ClientSession, sim: RunningSimulator, device_id: str) -> list[dict[str, Any]]:
    status, body = await get_json(session, devices_url(sim, "beta", device_id), **{"$select": "deviceActionResults"})
    assert status == 200, body
    return list(body["deviceActionResults"])


def assert_graph_error(body: dict[str, Any], code: str) -> None:
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}


# --------------------------------------------------------------------------------------------
# shape and msgraph-sdk fidelity


def test_v1_schema_matches_installed_msgraph_sdk() -> None:
    fields = set(ManagedDevice().get_field_deserializers()) - {"@odata.type"}
    assert set(schema.V1_PROPERTIES) | schema.V1_NAVIGATION == fields
    from msgraph.generated.models import (
        compliance_state,
        device_enrollment_type,
        device_management_exchange_access_state,
        device_management_exchange_access_state_reason,
        device_registration_state,
        managed_device_owner_type,
        managed_device_partner_reported_health_state,
        management_agent_type,
        management_state,
    )

    enums = {
        "deviceEnrollmentType": device_enrollment_type.DeviceEnrollmentType,
        "managementAgent": management_agent_type.ManagementAgentType,
        "managedDeviceOwnerType": managed_device_owner_type.ManagedDeviceOwnerType,
        "complianceState": compliance_state.ComplianceState,
        "managementState": management_state.ManagementState,
        "deviceRegistrationState": device_registration_state.DeviceRegistrationState,
        "exchangeAccessState": device_management_exchange_access_state.DeviceManagementExchangeAccessState,
        "exchangeAccessStateReason": (
            device_management_exchange_access_state_reason.DeviceManagementExchangeAccessStateReason
        ),
        "partnerReportedThreatState": (
            managed_device_partner_reported_health_state.ManagedDevicePartnerReportedHealthState
        ),
    }
    for prop, enum in enums.items():
        assert {member.value for member in enum} == schema.V1_ENUMS[prop], prop


def test_fleet_is_graph_shaped_and_covers_every_spec_row() -> None:
    devices = fleet()
    assert 30 <= len(devices) <= 50  # two server pages of 25
    ids = [d["id"] for d in devices]
    assert len(set(ids)) == len(ids)
    assert set(ids) == set(MATRIX)
    for device in devices:
        assert set(device) - {"@odata.type"} <= set(schema.BETA_PROPERTIES), device["id"]
        imei = device["imei"]
        if device["id"] == IOS_SPACED_IMEI:
            assert imei == "35 309418 464558 9"  # Apple's grouping
        elif device["id"] == ANDROID_IMEI_14:
            assert imei.isdigit() and len(imei) == 14  # without the Luhn check digit
        else:
            assert imei == "" or (imei.isdigit() and len(imei) == 15)
    from devstack.simulator import platforms

    rows = {platforms.platform_of(d) for d in devices}
    assert rows == {row for row, _, _ in MATRIX.values()}
    assert all(platforms.platform_of(d) == MATRIX[d["id"]][0] for d in devices)
    serials = [d["serialNumber"] for d in devices]
    assert serials.count(DUP_SERIAL) == 2 and "C02'QUOTE1" in serials


async def test_msgraph_round_trip(sim: RunningSimulator) -> None:
    client = graph_client(sim)
    items = client.device_management.managed_devices

    device = await items.by_managed_device_id(ANDROID_WP_14).get(
        request_configuration=device_query("id", "deviceName", "operatingSystem", "osVersion", "userPrincipalName")
    )
    assert device is not None
    assert (device.id, device.device_name, device.operating_system, device.os_version) == (
        ANDROID_WP_14,
        "Adele's Pixel 7",
        "Android",
        "14",
    )
    assert device.user_principal_name == "adele@contoso.com"
    assert device.serial_number is None  # not selected

    matches, pages = await list_all(client, list_query(f"serialNumber eq '{DUP_SERIAL}'", ["id", "serialNumber"]))
    assert pages == 1 and {d.id for d in matches} == {DUP_OLD, DUP_NEW}

    everything, pages = await list_all(client, list_query("operatingSystem eq 'Android'", ["id", "operatingSystem"]))
    assert pages == 2 and len(everything) == len(fleet())  # ignored filter: every device, paged

    assert await items.by_managed_device_id(ANDROID_WP_14).reset_passcode.post() is None

    device = await items.by_managed_device_id(ANDROID_WP_14).get(
        request_configuration=device_query("deviceActionResults")
    )
    assert device is not None and device.device_action_results is not None
    [result] = device.device_action_results
    assert isinstance(result, ResetPasscodeActionResult)
    assert result.action_name == "resetPasscode"
    assert result.action_state is not None and result.action_state.value == "pending"
    assert result.passcode and result.start_date_time is not None and result.start_date_time.tzinfo is not None

    assert await items.by_managed_device_id(MACOS).remote_lock.post() is None
    device = await items.by_managed_device_id(MACOS).get(request_configuration=device_query("deviceActionResults"))
    assert device is not None and device.device_action_results is not None
    [lock] = device.device_action_results
    assert isinstance(lock, RemoteLockActionResult)
    assert lock.unlock_pin is not None and len(lock.unlock_pin) == 6 and lock.unlock_pin.isdigit()

    calls = await sim.control.calls(method="POST")
    assert [(c["deviceId"], c["action"], c["status"]) for c in calls] == [
        (ANDROID_WP_14, "resetPasscode", 204),
        (MACOS, "remoteLock", 204),
    ]


async def test_every_v1_device_deserializes_without_losing_enums(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    client = graph_client(sim)
    raw = {d["id"]: d for d in await list_raw(http, sim, "v1.0")}
    parsed, _ = await list_all(client, list_query())
    assert {d.id for d in parsed} == set(raw) == set(MATRIX)
    attrs = {
        "deviceEnrollmentType": "device_enrollment_type",
        "managementAgent": "management_agent",
        "managedDeviceOwnerType": "managed_device_owner_type",
        "complianceState": "compliance_state",
        "managementState": "management_state",
        "deviceRegistrationState": "device_registration_state",
        "exchangeAccessState": "exchange_access_state",
        "exchangeAccessStateReason": "exchange_access_state_reason",
        "partnerReportedThreatState": "partner_reported_threat_state",
    }
    for device in parsed:
        assert device.device_action_results == []  # Graph quirk: empty in list calls
        for prop, attr in attrs.items():
            if raw[device.id or ""][prop] is not None:
                assert getattr(device, attr) is not None, (device.id, prop)
    for device_id in MATRIX:  # single GETs carry deviceActionResults, seeded ones included
        one = await client.device_management.managed_devices.by_managed_device_id(device_id).get()
        assert one is not None and one.id == device_id and one.device_enrollment_type is not None
    seeded = await client.device_management.managed_devices.by_managed_device_id(ANDROID_FULLY_MANAGED).get()
    assert seeded is not None and seeded.device_action_results
    assert seeded.device_action_results[0].action_state is not None
    assert seeded.device_action_results[0].action_state.value == "done"


async def test_beta_serves_beta_shape_and_v1_downgrades(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    status, beta = await get_json(http, devices_url(sim, "beta", ANDROID_DEDICATED))
    assert status == 200
    assert beta["deviceType"] == "androidEnterprise"
    assert beta["deviceEnrollmentType"] == "androidEnterpriseDedicatedDevice"
    assert beta["@odata.context"].endswith("/beta/$metadata#deviceManagement/managedDevices/$entity")
    status, v1 = await get_json(http, devices_url(sim, "v1.0", ANDROID_DEDICATED))
    assert status == 200 and "deviceType" not in v1 and "joinType" not in v1
    assert v1["deviceEnrollmentType"] == "unknownFutureValue"

    by_id = {d["id"]: d for d in await list_raw(http, sim, "beta", **{"$select": "id,deviceType,deviceEnrollmentType"})}
    assert by_id[ANDROID_COPE]["deviceEnrollmentType"] == "androidEnterpriseCorporateWorkProfile"
    assert by_id[ANDROID_WP_14]["deviceType"] == "androidForWork"
    assert by_id[AOSP_USERLESS]["deviceEnrollmentType"] == "androidAOSPUserlessDeviceEnrollment"
    assert by_id[IOS_UE_ACCOUNT]["deviceEnrollmentType"] == "appleAccountDrivenUserEnrollment"
    assert by_id[WINDOWS_PHONE]["deviceType"] == "windowsPhone"

    status, aosp = await get_json(http, devices_url(sim, "v1.0", AOSP_AGENT_ONLY), **{"$select": "managementAgent"})
    assert status == 200 and aosp == {"@odata.context": aosp["@odata.context"], "managementAgent": "unknown"}

    status, error = await get_json(http, devices_url(sim, "v1.0", IOS), **{"$select": "id,deviceType"})
    assert status == 400
    assert_graph_error(error, "BadRequest")


async def test_list_pages_and_hides_action_results(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    status, first = await get_json(http, devices_url(sim, "v1.0"), **{"$select": "id,deviceActionResults"})
    assert status == 200 and len(first["value"]) == 25
    assert (
        first["@odata.context"] == f"{sim.url}/v1.0/$metadata#deviceManagement/managedDevices(id,deviceActionResults)"
    )
    next_link = first["@odata.nextLink"]
    assert next_link.startswith(f"{sim.url}/v1.0/deviceManagement/managedDevices?") and "$skiptoken=" in next_link
    status, second = await get_json(http, next_link)
    assert status == 200 and "@odata.nextLink" not in second
    everything = first["value"] + second["value"]
    assert len(everything) == len(fleet())
    assert all(d["deviceActionResults"] == [] for d in everything)
    assert await results_of(http, sim, ANDROID_FULLY_MANAGED)  # seeded result: only single GETs show it

    status, top = await get_json(http, devices_url(sim, "beta"), **{"$top": "10", "$select": "id"})
    assert status == 200 and len(top["value"]) == 10 and "$top=10" in top["@odata.nextLink"]
    status, bad = await get_json(http, devices_url(sim, "beta"), **{"$skiptoken": "garbage"})
    assert status == 400
    assert_graph_error(bad, "BadRequest")


# --------------------------------------------------------------------------------------------
# $filter


@pytest.mark.parametrize(
    "expression",
    [
        "operatingSystem eq 'iOS'",  # unsupported property
        "serialNumber eq 'x' or true",  # injection attempt
        "serialNumber eq 'x' and imei eq '1'",
        "startswith(serialNumber, 'C02')",
        "serialNumber eq 'unterminated",
        "serialNumber eq 'it's'",
        "",
    ],
)
async def test_unsupported_filter_is_ignored(
    sim: RunningSimulator, http: aiohttp.ClientSession, expression: str
) -> None:
    devices = await list_raw(http, sim, "beta", **{"$filter": expression, "$select": "id"})
    assert len(devices) == len(fleet())


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("serialNumber eq 'C02''QUOTE1'", {MACOS_QUOTE}),
        (f"serialNumber eq '{DUP_SERIAL}'", {DUP_OLD, DUP_NEW}),
        ("serialNumber eq 'NO-SUCH-SERIAL'", set()),
        ("imei eq '358030521084389'", {ANDROID_WP_14}),
        ("azureADDeviceId eq 'c23200a4-e69b-4e79-a004-861c7e82afc1'", {ANDROID_WP_14}),
        ("azureADDeviceId eq '00000000-0000-0000-0000-000000000000'", {ANDROID_DEDICATED, AOSP_USERLESS}),
        ("userPrincipalName eq 'ADELE@contoso.com'", {ANDROID_WP_14}),
        ("deviceName eq 'KIOSK-WH2-014'", {ANDROID_DEDICATED}),
        ("  serialnumber   EQ  'c02''quote1'  ", {MACOS_QUOTE}),
    ],
)
async def test_eq_filter(
    sim: RunningSimulator, http: aiohttp.ClientSession, expression: str, expected: set[str]
) -> None:
    devices = await list_raw(http, sim, "beta", **{"$filter": expression, "$select": "id"})
    assert {d["id"] for d in devices} == expected


async def test_filter_with_quote_through_msgraph(sim: RunningSimulator) -> None:
    devices, _ = await list_all(
        graph_client(sim, "beta"), list_query("serialNumber eq 'C02''QUOTE1'", ["id", "serialNumber"])
    )
    assert [(d.id, d.serial_number) for d in devices] == [(MACOS_QUOTE, "C02'QUOTE1")]
    [call] = await sim.control.calls(route="list")
    assert call["query"]["$filter"] == "serialNumber eq 'C02''QUOTE1'"


# --------------------------------------------------------------------------------------------
# errors and platform support


async def test_authentication_is_required(sim: RunningSimulator) -> None:
    async with aiohttp.ClientSession() as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {sim.token}"}):
            async with anonymous.get(devices_url(sim, "v1.0", IOS), headers=headers) as response:
                assert response.status == 401
                assert_graph_error(await response.json(content_type=None), "InvalidAuthenticationToken")
            async with anonymous.post(devices_url(sim, "v1.0", IOS, "resetPasscode"), headers=headers) as response:
                assert response.status == 401
    assert (await sim.control.actions()) == {}


async def test_unknown_device_is_a_graph_404(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    missing = "11111111-2222-4333-8444-555555555555"
    async with http.get(devices_url(sim, "beta", missing), headers={"client-request-id": "my-correlation"}) as response:
        assert response.status == 404
        body = await response.json(content_type=None)
        assert_graph_error(body, "ResourceNotFound")
        assert response.headers["client-request-id"] == "my-correlation"
        assert body["error"]["innerError"]["client-request-id"] == "my-correlation"
        assert body["error"]["innerError"]["request-id"] == response.headers["request-id"]
    assert (await post_action(http, sim, missing)).status == 404

    client = graph_client(sim)
    with pytest.raises(ODataError) as caught:
        await client.device_management.managed_devices.by_managed_device_id(missing).get()
    assert caught.value.response_status_code == 404
    assert caught.value.error is not None and caught.value.error.code == "ResourceNotFound"
    assert caught.value.error.inner_error is not None and caught.value.error.inner_error.request_id


@pytest.mark.parametrize("device_id", list(MATRIX))
async def test_action_support_follows_the_platform_matrix(
    sim: RunningSimulator, http: aiohttp.ClientSession, device_id: str
) -> None:
    _, reset_ok, lock_ok = MATRIX[device_id]
    await sim.control.clear_behaviour(device_id)  # the 400 answer (a fleet behaviour may say 204)
    for action, ok in (("resetPasscode", reset_ok), ("remoteLock", lock_ok)):
        response = await post_action(http, sim, device_id, action)
        assert response.status == (204 if ok else 400), action
    applied = (await sim.control.actions()).get(device_id, [])
    assert [a["action"] for a in applied] == [
        a for a, ok in (("resetPasscode", reset_ok), ("remoteLock", lock_ok)) if ok
    ]


async def test_unsupported_action_is_an_opaque_400_and_not_recorded(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(devices_url(sim, "v1.0", WINDOWS_DESKTOP, "resetPasscode")) as response:
        assert response.status == 400
        assert_graph_error(await response.json(content_type=None), "BadRequest")
    assert await results_of(http, sim, WINDOWS_DESKTOP) == []
    assert await sim.control.actions() == {}
    with pytest.raises(ODataError) as caught:
        await graph_client(sim).device_management.managed_devices.by_managed_device_id(MACOS).reset_passcode.post()
    assert caught.value.response_status_code == 400


# --------------------------------------------------------------------------------------------
# throttling


async def test_throttling_budget_for_writes(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    await sim.control.set_throttle(post_limit=3, any_limit=100, window_seconds=1.0)
    for _ in range(3):
        assert (await post_action(http, sim, IOS)).status == 204
    started = time.monotonic()
    async with http.post(devices_url(sim, "v1.0", IOS, "resetPasscode")) as response:
        assert response.status == 429
        assert_graph_error(await response.json(content_type=None), "TooManyRequests")
        retry_after = int(response.headers["Retry-After"])
    assert retry_after == 1
    assert (await post_action(http, sim, IOS)).status == 429  # still inside the window; not counted either
    status, _ = await get_json(http, devices_url(sim, "beta", IOS))
    assert status == 200  # reads have their own (larger) budget
    assert len((await sim.control.actions())[IOS]) == 3
    await asyncio.sleep(max(0.0, retry_after - (time.monotonic() - started)) + 0.05)
    assert (await post_action(http, sim, IOS)).status == 204


async def test_throttling_budget_for_all_requests(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    await sim.control.set_throttle(post_limit=50, any_limit=4, window_seconds=5.0)
    statuses = [(await get_json(http, devices_url(sim, "beta", IOS)))[0] for _ in range(4)]
    assert statuses == [200] * 4
    async with http.get(devices_url(sim, "beta", IOS)) as response:
        assert response.status == 429 and 1 <= int(response.headers["Retry-After"]) <= 5
    assert (await post_action(http, sim, IOS)).status == 429
    await sim.control.set_throttle(enabled=False)
    assert (await post_action(http, sim, IOS)).status == 204
    throttled = [c for c in await sim.control.calls() if c["status"] == 429]
    assert len(throttled) == 2 and all(c["fault"] == "throttled" for c in throttled)


# --------------------------------------------------------------------------------------------
# fault injection


@pytest.mark.parametrize(("fault", "retry_after"), [("429", 7), ("429", None), ("503", 2), ("503", None)])
async def test_status_faults_with_and_without_retry_after(
    sim: RunningSimulator, http: aiohttp.ClientSession, fault: str, retry_after: int | None
) -> None:
    await sim.control.add_fault(fault, method="POST", action="resetPasscode", retry_after=retry_after)
    async with http.post(devices_url(sim, "v1.0", ANDROID_WP_14, "resetPasscode")) as response:
        assert response.status == int(fault)
        assert_graph_error(
            await response.json(content_type=None), "TooManyRequests" if fault == "429" else "ServiceUnavailable"
        )
        assert response.headers.get("Retry-After") == (None if retry_after is None else str(retry_after))
    assert await sim.control.actions() == {}
    assert (await post_action(http, sim, ANDROID_WP_14)).status == 204  # times=1: next call passes
    [rule] = await sim.control.faults()
    assert rule["fired"] == 1


async def test_gateway_timeouts(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    await sim.control.add_faults(
        [
            {"match": {"deviceId": IOS, "action": "resetPasscode"}, "fault": "504"},
            {"match": {"deviceId": ANDROID_WP_14, "route": "action"}, "fault": "504_after_apply"},
        ]
    )
    async with http.post(devices_url(sim, "v1.0", IOS, "resetPasscode")) as response:
        assert response.status == 504
        assert_graph_error(await response.json(content_type=None), "GatewayTimeout")
    async with http.post(devices_url(sim, "v1.0", ANDROID_WP_14, "resetPasscode")) as response:
        assert response.status == 504
    applied = await sim.control.actions()
    assert IOS not in applied and [a["action"] for a in applied[ANDROID_WP_14]] == ["resetPasscode"]
    [result] = await results_of(http, sim, ANDROID_WP_14)
    assert result["actionState"] == "pending"
    posts = await sim.control.calls(method="POST")
    assert [(c["deviceId"], c["status"], c["fault"]) for c in posts] == [
        (IOS, 504, "504"),
        (ANDROID_WP_14, 504, "504_after_apply"),
    ]


async def test_gateway_timeout_with_empty_body_through_msgraph(sim: RunningSimulator) -> None:
    await sim.control.add_fault("504", action="resetPasscode", body="empty")
    client = graph_client(sim)
    with pytest.raises(APIError) as caught:
        await client.device_management.managed_devices.by_managed_device_id(IOS).reset_passcode.post(
            request_configuration=RequestConfiguration(options=[RetryHandlerOption(max_retries=0)])
        )
    assert not isinstance(caught.value, ODataError) and caught.value.response_status_code == 504


@pytest.mark.parametrize(("fault", "applied"), [("drop", False), ("drop_after_apply", True)])
async def test_dropped_connections(
    sim: RunningSimulator, http: aiohttp.ClientSession, fault: str, applied: bool
) -> None:
    await sim.control.add_fault(fault, method="POST", device_id=ANDROID_WP_14)
    with pytest.raises(aiohttp.ClientConnectionError):
        await post_action(http, sim, ANDROID_WP_14)
    assert (ANDROID_WP_14 in await sim.control.actions()) is applied
    assert bool(await results_of(http, sim, ANDROID_WP_14)) is applied
    [call] = await sim.control.calls(method="POST")
    assert call["status"] is None and call["fault"] == fault
    assert (await post_action(http, sim, ANDROID_WP_14)).status == 204


async def test_dropped_connection_through_msgraph(sim: RunningSimulator) -> None:
    await sim.control.add_fault("drop", method="POST")
    client = graph_client(sim)
    with pytest.raises(Exception) as caught:  # httpx transport error, not an APIError
        await client.device_management.managed_devices.by_managed_device_id(IOS).reset_passcode.post()
    assert not isinstance(caught.value, APIError)
    assert await sim.control.actions() == {}


async def test_latency_fault_and_global_latency(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    await sim.control.add_fault("latency", route="device", device_id=IOS, latency_ms=300)
    started = time.monotonic()
    status, _ = await get_json(http, devices_url(sim, "beta", IOS))
    assert status == 200 and time.monotonic() - started >= 0.29
    started = time.monotonic()
    await get_json(http, devices_url(sim, "beta", IOS))  # times=1: spent
    assert time.monotonic() - started < 0.25
    await sim.control.configure(latency_ms=200)
    started = time.monotonic()
    await get_json(http, devices_url(sim, "beta", IOS))
    assert time.monotonic() - started >= 0.19


async def test_probability_is_seeded_and_reproducible(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    async def run() -> list[int]:
        await sim.control.clear_faults()
        await sim.control.configure(seed=7)
        await sim.control.add_fault("503", route="device", times=None, probability=0.5)
        return [(await get_json(http, devices_url(sim, "beta", IOS)))[0] for _ in range(20)]

    first = await run()
    assert set(first) == {200, 503}
    assert await run() == first


async def test_faults_match_selectively(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    await sim.control.add_fault("503", method="GET", route="list", times=None)
    status, _ = await get_json(http, devices_url(sim, "beta"))
    assert status == 503
    status, _ = await get_json(http, devices_url(sim, "beta", IOS))
    assert status == 200
    assert (await post_action(http, sim, IOS)).status == 204
    await sim.control.clear_faults()
    status, _ = await get_json(http, devices_url(sim, "beta"))
    assert status == 200


async def test_msgraph_retry_handler_honours_retry_after(sim: RunningSimulator) -> None:
    await sim.control.add_fault("429", route="device", retry_after=1)
    client = graph_client(sim)
    started = time.monotonic()
    device = await client.device_management.managed_devices.by_managed_device_id(IOS).get(
        request_configuration=device_query("id")
    )
    assert device is not None and device.id == IOS and time.monotonic() - started >= 0.95
    assert [c["status"] for c in await sim.control.calls()] == [429, 200]


# --------------------------------------------------------------------------------------------
# device action results


async def test_action_completes_on_schedule(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    await sim.control.configure(complete_after=0.3)
    await sim.control.script_device(ANDROID_COPE, complete_after=0.2, final_state="failed")
    assert (await post_action(http, sim, ANDROID_WP_14)).status == 204
    assert (await post_action(http, sim, ANDROID_COPE)).status == 204
    [pending] = await results_of(http, sim, ANDROID_WP_14)
    assert pending["actionState"] == "pending"
    assert pending["startDateTime"] == pending["lastUpdatedDateTime"]
    await asyncio.sleep(0.35)
    [done] = await results_of(http, sim, ANDROID_WP_14)
    [failed] = await results_of(http, sim, ANDROID_COPE)
    assert (done["actionState"], failed["actionState"]) == ("done", "failed")
    assert done["lastUpdatedDateTime"] > done["startDateTime"]
    assert done["passcode"] == pending["passcode"]


async def test_action_completes_on_command(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    await sim.control.configure(complete_after=None)
    assert (await post_action(http, sim, IOS)).status == 204
    assert (await post_action(http, sim, IPADOS)).status == 204
    await asyncio.sleep(0.05)
    assert [r["actionState"] for r in await results_of(http, sim, IOS)] == ["pending"]
    completed = await sim.control.complete(IOS)
    assert completed["actionState"] == "done"
    assert [r["actionState"] for r in await results_of(http, sim, IOS)] == ["done"]
    await sim.control.complete(IPADOS, "notSupported", action="resetPasscode")
    assert [r["actionState"] for r in await results_of(http, sim, IPADOS)] == ["notSupported"]


async def test_passcodes_and_pins_by_platform(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    for device_id in (ANDROID_WP_14, ANDROID_DEDICATED, IOS):
        assert (await post_action(http, sim, device_id)).status == 204
    for device_id in (MACOS_QUOTE, IOS):
        assert (await post_action(http, sim, device_id, "remoteLock")).status == 204
    [android] = await results_of(http, sim, ANDROID_WP_14)
    assert android["@odata.type"] == "#microsoft.graph.resetPasscodeActionResult"
    assert isinstance(android["passcode"], str) and len(android["passcode"]) >= 6
    [dedicated] = await results_of(http, sim, ANDROID_DEDICATED)
    assert dedicated["passcode"] and dedicated["passcode"] != android["passcode"]
    [mac] = await results_of(http, sim, MACOS_QUOTE)
    assert mac["@odata.type"] == "#microsoft.graph.remoteLockActionResult"
    assert mac["unlockPin"].isdigit() and len(mac["unlockPin"]) == 6
    ios = {r["actionName"]: r for r in await results_of(http, sim, IOS)}
    assert ios["resetPasscode"]["passcode"] is None and ios["remoteLock"]["unlockPin"] is None


async def test_one_result_per_action_name(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    await sim.control.configure(complete_after=None)
    [seeded] = await results_of(http, sim, ANDROID_FULLY_MANAGED)
    assert (seeded["actionName"], seeded["actionState"]) == ("resetPasscode", "done")
    assert (await post_action(http, sim, ANDROID_FULLY_MANAGED)).status == 204
    [first] = await results_of(http, sim, ANDROID_FULLY_MANAGED)
    assert first["actionState"] == "pending" and first["startDateTime"] > seeded["startDateTime"]
    assert (await post_action(http, sim, ANDROID_FULLY_MANAGED)).status == 204
    assert (await post_action(http, sim, ANDROID_FULLY_MANAGED, "remoteLock")).status == 204
    results = await results_of(http, sim, ANDROID_FULLY_MANAGED)
    assert sorted(r["actionName"] for r in results) == ["remoteLock", "resetPasscode"]
    reset = next(r for r in results if r["actionName"] == "resetPasscode")
    assert reset["startDateTime"] > first["startDateTime"] and reset["passcode"] != first["passcode"]
    assert await sim.control.applied_count(ANDROID_FULLY_MANAGED, "resetPasscode") == 2


# --------------------------------------------------------------------------------------------
# control API


async def test_control_devices_and_reset(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    from devstack.simulator.control import SimulatorControlError

    added = await sim.control.add_device(
        {"deviceName": "DUP-1", "operatingSystem": "iOS", "osVersion": "18.0", "serialNumber": "C02'QUOTE1"}
    )
    new_id = added["id"]
    devices = await list_raw(http, sim, "beta", **{"$filter": "serialNumber eq 'C02''QUOTE1'", "$select": "id"})
    assert {d["id"] for d in devices} == {MACOS_QUOTE, new_id}
    with pytest.raises(SimulatorControlError) as caught:
        await sim.control.add_device({"id": new_id})
    assert caught.value.status == 409
    with pytest.raises(SimulatorControlError) as caught:
        await sim.control.add_device({"notAProperty": 1})
    assert caught.value.status == 400
    await sim.control.update_device(IOS, {"osVersion": "18.2"})
    assert (await sim.control.device(IOS))["osVersion"] == "18.2"
    await sim.control.remove_device(IPADOS)
    status, _ = await get_json(http, devices_url(sim, "beta", IPADOS))
    assert status == 404
    await sim.control.add_fault("503", times=None)
    await sim.control.configure(latency_ms=5, throttle={"postLimit": 1})

    await sim.control.reset()
    assert len(await sim.control.devices()) == len(fleet())
    assert (await sim.control.device(IOS))["osVersion"] == "17.6.1"
    assert await sim.control.faults() == [] and await sim.control.calls() == []
    config = await sim.control.get_config()
    assert config["latencyMs"] == 0 and config["throttle"]["postLimit"] == 200
    status, _ = await get_json(http, devices_url(sim, "beta", IPADOS))
    assert status == 200


async def test_control_rejects_bad_fault_rules(sim: RunningSimulator) -> None:
    from devstack.simulator.control import SimulatorControlError

    for rule in (
        {"fault": "418"},
        {"fault": "429", "probability": 2},
        {"fault": "503", "match": {"route": "x"}},
        {"fault": "503", "times": 0},
    ):
        with pytest.raises(SimulatorControlError) as caught:
            await sim.control.add_faults([rule])
        assert caught.value.status == 400
    assert await sim.control.faults() == []


# --------------------------------------------------------------------------------------------
# CLI


async def test_cli_prints_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    script = (
        "import argparse, sys\n"
        "from devstack import simulator\n"
        "parser = argparse.ArgumentParser()\n"
        "simulator.configure(parser)\n"
        "sys.exit(simulator.main(parser.parse_args(sys.argv[1:])))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        "--port",
        "0",
        "--token",
        "cli-token",
        "--complete-after",
        "never",
        "--no-throttle",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 10)).decode().strip()
        assert line.startswith("simulator listening on http://127.0.0.1:")
        url = line.removeprefix("simulator listening on ")
        port = int(url.rsplit(":", 1)[1])
        assert port > 0
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer cli-token"}) as session:
            async with session.get(f"{url}/beta/deviceManagement/managedDevices/{IOS}") as response:
                assert response.status == 200
            async with session.get(f"{url}/_sim/config") as response:
                config = await response.json()
        assert config["completeAfter"] is None and config["throttle"]["enabled"] is False
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_cli_refuses_non_loopback_host(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    simulator_cli.configure(parser)
    assert simulator_cli.main(parser.parse_args(["--host", "192.0.2.10"])) == 2
    assert "loopback" in capsys.readouterr().err
    assert math.isclose(parser.parse_args([]).complete_after, 2.0)


def test_the_simulators_command_line_reaches_its_parser_as_given() -> None:
    """`devstack.simulator.command`, which the benchmarks, the soak and `make run` start the
    simulator with: every option arrives with its value, a token that starts with "-" included."""
    import argparse

    from devstack.simulator import command, configure

    argv = command(port=0, token="-x1_Yz", latency_ms=150.0, complete_after="never", seed=7, no_throttle=True)
    assert argv[:3] == ["-m", "devstack", "simulator"]
    parser = argparse.ArgumentParser()
    configure(parser)
    parsed = parser.parse_args(argv[3:])
    assert (parsed.port, parsed.token, parsed.latency_ms) == (0, "-x1_Yz", 150.0)
    assert (parsed.complete_after, parsed.seed, parsed.no_throttle) == (None, 7, True)
    assert parser.parse_args(command(no_throttle=False, token=None)[3:]).no_throttle is False
