"""Issue 12 at the Graph adapter: the real msgraph-sdk against the simulator's real-Intune behaviours
(docs/simulator.md, "Real-world behaviours"): untyped action results, actionName casing, 5xx after
apply, IMEI forms and their cost in Graph calls, unknown enum members."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import pytest_asyncio

from devstack.simulator.server import RunningSimulator
from shared.adapters.graph import MsGraphIntuneGateway
from shared.core.clock import utcnow
from shared.core.device import our_action_result, revealable_secret
from shared.core.errors import ActionOutcomeUnknown, GraphTransientError
from shared.core.platforms import Action, Platform, choose_action

ADELE = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"  # Android work profile 14
MAC = "2df67db0-0c7d-4179-a7ed-3513a8e03864"  # Alex's MacBook Pro
FLEET = "8e3f5a21-6c4d-4b7e-9f10-2a3b4c5d6e0"
INES_IPHONE, WANJIRU, OSKAR, LOBBY_KIOSK, PRIYA_MAC, SHARED_WARD = (FLEET + n for n in "123457")


@pytest_asyncio.fixture(loop_scope="session")
async def gateway(sim: RunningSimulator) -> AsyncIterator[MsGraphIntuneGateway]:
    gw = MsGraphIntuneGateway.with_static_token(sim.url, sim.token)
    yield gw
    await gw.aclose()


async def our_secret(gateway: MsGraphIntuneGateway, device_id: str, action: Action) -> tuple[str, str] | None:
    since = utcnow()
    await gateway.perform(device_id, action)
    found = our_action_result(await gateway.action_results(device_id), action, since, timedelta(seconds=30))
    assert found is not None, "the action's own result, whatever its actionName casing"
    return revealable_secret(found)


# ------------------------------------------------------------------------ untyped results, casing


@pytest.mark.parametrize("form", ["prefixed", "bare", "absent"])
@pytest.mark.parametrize("case", ["camel", "pascal", "lower"])
async def test_passcode_is_read_whatever_the_result_type_and_action_name_case(
    gateway: MsGraphIntuneGateway, sim: RunningSimulator, form: str, case: str
) -> None:
    await sim.control.set_behaviour(ADELE, result_type=form, action_name_case=case)
    secret = await our_secret(gateway, ADELE, Action.RESET_PASSCODE)
    raw = [r for r in (await sim.control.device(ADELE))["deviceActionResults"] if r.get("passcode")]
    assert secret == ("passcode", raw[0]["passcode"])


@pytest.mark.parametrize("form", ["prefixed", "bare", "absent"])
async def test_macos_unlock_pin_is_read_whatever_the_result_type(
    gateway: MsGraphIntuneGateway, sim: RunningSimulator, form: str
) -> None:
    await sim.control.set_behaviour(MAC, result_type=form)
    secret = await our_secret(gateway, MAC, Action.REMOTE_LOCK)
    assert secret is not None and secret[0] == "unlockPin"
    assert len(secret[1]) == 6 and secret[1].isdigit()


async def test_fleet_devices_with_untyped_results(gateway: MsGraphIntuneGateway) -> None:
    assert (await our_secret(gateway, OSKAR, Action.RESET_PASSCODE) or ("", ""))[0] == "passcode"  # bare, Pascal
    assert (await our_secret(gateway, LOBBY_KIOSK, Action.RESET_PASSCODE) or ("", ""))[0] == "passcode"  # absent
    assert (await our_secret(gateway, PRIYA_MAC, Action.REMOTE_LOCK) or ("", ""))[0] == "unlockPin"  # bare


# ------------------------------------------------------------------------ answers to an action POST


@pytest.mark.parametrize(
    ("fault", "body", "applied"),
    [
        ("500", "graph", 0), ("502", "graph", 0), ("500_after_apply", "graph", 1), ("502_after_apply", "graph", 1),
        ("500_after_apply", "empty", 1), ("502_after_apply", "html", 1), ("503", "graph", 0),
    ],
)
async def test_5xx_on_an_action_post_is_an_unknown_outcome_after_one_post(
    gateway: MsGraphIntuneGateway, sim: RunningSimulator, fault: str, body: str, applied: int
) -> None:
    await sim.control.add_fault(fault, method="POST", device_id=ADELE, body=body)
    with pytest.raises(ActionOutcomeUnknown) as info:
        await gateway.perform(ADELE, Action.RESET_PASSCODE)
    assert info.value.status == int(fault[:3])
    assert len(await sim.control.calls(method="POST", device_id=ADELE)) == 1
    assert await sim.control.applied_count(ADELE) == applied


async def test_503_with_retry_after_on_an_action_post_is_still_unknown(
    gateway: MsGraphIntuneGateway, sim: RunningSimulator
) -> None:
    await sim.control.add_fault("503", method="POST", device_id=ADELE, retry_after=3)
    with pytest.raises(ActionOutcomeUnknown) as info:
        await gateway.perform(ADELE, Action.RESET_PASSCODE)
    assert info.value.retry_after == 3  # kept: the reconciliation waits at least that long


async def test_429_without_retry_after_is_transient_with_no_delay_given(
    gateway: MsGraphIntuneGateway, sim: RunningSimulator
) -> None:
    await sim.control.add_fault("429", method="POST", device_id=ADELE)
    with pytest.raises(GraphTransientError) as info:
        await gateway.perform(ADELE, Action.RESET_PASSCODE)
    assert not isinstance(info.value, ActionOutcomeUnknown)
    assert info.value.status == 429 and info.value.retry_after is None
    assert await sim.control.applied_count(ADELE) == 0


@pytest.mark.parametrize("fault", ["500", "502", "503"])
async def test_5xx_on_reads_stays_transient(gateway: MsGraphIntuneGateway, sim: RunningSimulator, fault: str) -> None:
    await sim.control.add_fault(fault, method="GET", device_id=ADELE)
    with pytest.raises(GraphTransientError) as info:
        await gateway.get_device(ADELE)
    assert not isinstance(info.value, ActionOutcomeUnknown)


# ------------------------------------------------------------------------ IMEI forms


async def imei_lookup(gateway: MsGraphIntuneGateway, sim: RunningSimulator, imei: str) -> tuple[list[str], int]:
    await sim.control.clear_calls()
    found = [d.id for d in await gateway.find_devices("imei", imei)]
    return found, len(await sim.control.calls(route="list"))


@pytest.mark.parametrize(
    ("imei", "device", "calls"),
    [
        ("353094184645589", INES_IPHONE, 2),  # stored with Apple's spaces: digits, then grouped
        ("35309418464558", None, 3),  # 14 digits vs a stored check digit that fails Luhn: not guessed
        ("35490211367520", WANJIRU, 1),  # stored 14 digits, asked as stored
        ("354902113675200", WANJIRU, 3),  # stored 14, asked with the check digit
        ("3549021136752012", WANJIRU, 4),  # IMEISV: its 14-digit body last
        ("352178922061591", "00e958d3-baee-4e0f-8544-e8144f9672c4", 1),  # the usual case: 15 digits as stored
        ("35217892206159", "00e958d3-baee-4e0f-8544-e8144f9672c4", 2),  # 14 asked, 15 stored (valid Luhn)
        ("353094184645580", None, 3),  # not found: every form asked once
    ],
)
async def test_imei_forms_are_found_and_what_each_costs(
    gateway: MsGraphIntuneGateway, sim: RunningSimulator, imei: str, device: str | None, calls: int
) -> None:
    found, made = await imei_lookup(gateway, sim, imei)
    assert found == ([device] if device else [])
    assert made == calls


async def test_imei_spaced_and_14_digit_forms_with_a_valid_check_digit(
    gateway: MsGraphIntuneGateway, sim: RunningSimulator
) -> None:
    # A real IMEI's check digit is valid: asked with 14 digits, the grouped 15-digit form is found.
    added = await sim.control.add_device(
        {"deviceName": "grouped", "operatingSystem": "iOS", "imei": "49 015420 323751 8"}
    )
    found, made = await imei_lookup(gateway, sim, "49015420323751")
    assert (found, made) == ([added["id"]], 3)


# ------------------------------------------------------------------------ unknown enum members


async def test_new_enrollment_type_arrives_by_name_and_is_unknown_not_device_admin(
    gateway: MsGraphIntuneGateway,
) -> None:
    by_id = await gateway.get_device(SHARED_WARD)
    [by_imei] = await gateway.find_devices("imei", "352601101234579")
    for device in (by_id, by_imei):
        assert device is not None
        assert device.enrollment_type == "androidEnterpriseDedicatedDeviceWithAzureADSharedMode"
        decision = choose_action(device.traits, allow_remote_lock=False)
        assert decision.platform is Platform.UNKNOWN and decision.action is None
        assert "androidEnterpriseDedicatedDeviceWithAzureADSharedMode" in (decision.why_not or "")
