"""IntuneGateway over the real msgraph-sdk client against the Intune simulator
(docs/contract.md#device-resolution and #graph-traffic-and-permissions)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from devstack.simulator.server import RunningSimulator
from shared.adapters.graph import MsGraphIntuneGateway
from shared.core.errors import ActionOutcomeUnknown, GraphPermanentError, GraphTransientError
from shared.core.platforms import Action, Platform, classify

ADELE = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"  # personal work profile, Android 14
KIOSK = "00e958d3-baee-4e0f-8544-e8144f9672c4"  # Android Enterprise dedicated
LAPTOP = "62a9255c-bdb8-47c5-a8af-e9d1387777ee"  # Windows desktop


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(sim: RunningSimulator) -> AsyncIterator[MsGraphIntuneGateway]:
    gw = MsGraphIntuneGateway.with_static_token(sim.url, sim.token)
    yield gw
    await gw.aclose()


async def test_device_is_read_from_beta_with_android_enterprise_properties(
    gateway: MsGraphIntuneGateway, sim: RunningSimulator
) -> None:
    device = await gateway.get_device(KIOSK)
    assert device is not None
    assert device.enrollment_type == "androidEnterpriseDedicatedDevice" and device.device_type == "androidEnterprise"
    assert classify(device.traits) is Platform.ANDROID_DEDICATED
    [call] = await sim.control.calls(device_id=KIOSK)
    assert call["path"].startswith("/beta/") and "$select" in call["query"]


async def test_unknown_device_id_is_none(gateway: MsGraphIntuneGateway) -> None:
    assert await gateway.get_device("00000000-0000-4000-8000-000000000000") is None


async def test_serial_number_with_a_quote_is_found_through_odata_escaping(gateway: MsGraphIntuneGateway) -> None:
    [device] = await gateway.find_devices("serialNumber", "C02'QUOTE1")
    assert device.name == "Megan's MacBook Air"


async def test_shared_serial_number_returns_both_devices(gateway: MsGraphIntuneGateway) -> None:
    devices = await gateway.find_devices("serialNumber", "DX3PQ7Y2N72J")
    assert len(devices) == 2


@pytest.mark.parametrize(
    "value", ["x' or serialNumber ne '", "G6TZK2XQ0D' or '1' eq '1", "*", "' or true or '", "G6TZK2XQ0D%27"]
)
async def test_injection_shaped_serial_numbers_match_nothing(gateway: MsGraphIntuneGateway, value: str) -> None:
    assert await gateway.find_devices("serialNumber", value) == []


async def test_imei_and_azure_ad_device_id_lookups(gateway: MsGraphIntuneGateway) -> None:
    [by_imei] = await gateway.find_devices("imei", "352178922061591")
    assert by_imei.id == KIOSK
    [by_aad] = await gateway.find_devices("azureAdDeviceId", "77c9fbb3-b1d8-4117-b10c-00768cb75683")
    assert by_aad.name == "Lynne's Pixel 8"


async def test_ignored_filter_is_verified_client_side(gateway: MsGraphIntuneGateway, sim: RunningSimulator) -> None:
    # Graph ignores filters it does not support and returns every device: the gateway must page
    # through them and keep only real matches. The simulator ignores `imei` filters here.
    await sim.control.add_device({"deviceName": "no-imei", "operatingSystem": "Android", "imei": ""})
    devices = await gateway.find_devices("imei", "000000000000000")
    assert devices == []


async def test_reset_passcode_is_recorded_and_readable(gateway: MsGraphIntuneGateway, sim: RunningSimulator) -> None:
    await gateway.perform(ADELE, Action.RESET_PASSCODE)
    results = await gateway.action_results(ADELE)
    [result] = [r for r in results if r.action_name == "resetPasscode"]
    assert result.state in ("pending", "done") and result.started_at is not None
    assert result.passcode  # Android resets carry the new passcode ...
    assert result.passcode not in repr(result)  # ... which never shows in a repr or log line
    assert await sim.control.applied_count(ADELE, "resetPasscode") == 1


async def test_unsupported_action_is_a_permanent_400(gateway: MsGraphIntuneGateway, sim: RunningSimulator) -> None:
    with pytest.raises(GraphPermanentError) as info:
        await gateway.perform(LAPTOP, Action.RESET_PASSCODE)
    assert info.value.status == 400
    assert await sim.control.applied_count(LAPTOP) == 0


async def test_throttled_action_is_transient_with_retry_after_and_not_retried_by_the_sdk(
    gateway: MsGraphIntuneGateway, sim: RunningSimulator
) -> None:
    await sim.control.add_fault("429", method="POST", device_id=ADELE, retry_after=7)
    with pytest.raises(GraphTransientError) as info:
        await gateway.perform(ADELE, Action.RESET_PASSCODE)
    assert info.value.status == 429 and info.value.retry_after == 7
    assert len(await sim.control.calls(method="POST", device_id=ADELE)) == 1


async def test_504_after_apply_is_an_unknown_outcome_with_a_single_post(
    gateway: MsGraphIntuneGateway, sim: RunningSimulator
) -> None:
    await sim.control.add_fault("504_after_apply", method="POST", device_id=ADELE)
    with pytest.raises(ActionOutcomeUnknown):
        await gateway.perform(ADELE, Action.RESET_PASSCODE)
    assert len(await sim.control.calls(method="POST", device_id=ADELE)) == 1
    assert await sim.control.applied_count(ADELE) == 1


async def test_dropped_connection_on_an_action_is_an_unknown_outcome(
    gateway: MsGraphIntuneGateway, sim: RunningSimulator
) -> None:
    await sim.control.add_fault("drop", method="POST", device_id=ADELE)
    with pytest.raises(ActionOutcomeUnknown):
        await gateway.perform(ADELE, Action.RESET_PASSCODE)


async def test_read_errors_are_transient(gateway: MsGraphIntuneGateway, sim: RunningSimulator) -> None:
    await sim.control.add_fault("503", method="GET", device_id=KIOSK)
    with pytest.raises(GraphTransientError):
        await gateway.get_device(KIOSK)
    await sim.control.add_fault("drop", method="GET", device_id=KIOSK)
    with pytest.raises(GraphTransientError):
        await gateway.get_device(KIOSK)
    assert await gateway.get_device(KIOSK) is not None


async def test_wrong_token_is_a_permanent_401(sim: RunningSimulator) -> None:
    gw = MsGraphIntuneGateway.with_static_token(sim.url, "wrong-token")
    try:
        with pytest.raises(GraphPermanentError) as info:
            await gw.get_device(KIOSK)
        assert info.value.status == 401
        assert "wrong-token" not in str(info.value)
    finally:
        await gw.aclose()
