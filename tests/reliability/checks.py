"""What every bad-input test asserts about the product around it: one final event per message, the
Graph calls that were (not) made, no poison, and valid requests in between still completing."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from tests.plugins.product import FINAL_STATUSES, ProductStack

# Seeded fleet devices that complete a reset (devstack/simulator/fleet.json), one per platform row.
VALID_DEVICES = {
    "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21": "android-work-profile",  # Adele's Pixel 7
    "00e958d3-baee-4e0f-8544-e8144f9672c4": "android-dedicated",  # KIOSK-WH2-014
    "b7c3cd1e-b588-4dc9-b2b2-0f9448112e09": "android-corporate-work-profile",  # Lynne's Pixel 8
    "d0d4ab4c-6206-42dd-a855-5b89649f41c8": "android-work-profile",  # Pradeep's Galaxy S8 (8.0.0)
    "46763180-3cec-4a00-b3b1-963bc73db894": "android-device-admin",  # Henrietta's Galaxy S5 (6.0.1)
    "13bc73a2-22c3-499c-9c6a-9c0da7468317": "android-aosp",  # Miriam's Quest 3
    "337f0b0a-76df-47f1-8504-643a0b476a69": "windows-mobile",  # Lee's Lumia 950
}


def valid_request(request_id: str, device_id: str) -> dict[str, Any]:
    return {
        "requestId": request_id,
        "device": {"intuneDeviceId": device_id},
        "requestedBy": "servicedesk@contoso.com",
        "ticketId": "INC-GOOD",
    }


@dataclass
class Expected:
    """Final outcomes a test waits for: per requestId, plus a number of events with requestId null."""

    by_request: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # rid -> (status, code)
    anonymous_invalid: int = 0

    def add(self, request_id: str | None, status: str, code: str | None) -> None:
        if request_id is None:
            assert (status, code) == ("rejected", "invalid_request")
            self.anonymous_invalid += 1
            return
        assert request_id not in self.by_request, f"requestId {request_id} used twice in one test"
        self.by_request[request_id] = (status, code)


def finals_by_request(stack: ProductStack) -> dict[str | None, dict[str, dict[str, Any]]]:
    """Distinct final events (by CloudEvents id) per requestId."""
    result: dict[str | None, dict[str, dict[str, Any]]] = collections.defaultdict(dict)
    for event in stack.events:
        if event["data"]["status"] in FINAL_STATUSES:
            result[event["data"]["requestId"]][event["id"]] = event
    return result


async def wait_for_outcomes(stack: ProductStack, expected: Expected, timeout: float = 45.0) -> None:
    """Until every expected request and every anonymous message has a final event; then a short
    settle so that a second final event, if the product ever produced one, is seen too."""
    deadline = time.monotonic() + timeout
    while True:
        await stack.collect()
        finals = finals_by_request(stack)
        missing = [rid for rid in expected.by_request if not finals.get(rid)]
        anonymous = len(finals.get(None, {}))
        if not missing and anonymous >= expected.anonymous_invalid:
            break
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no final event for {missing[:20]}; anonymous finals {anonymous}/{expected.anonymous_invalid}"
            )
        await asyncio.sleep(0.2)
    await stack.settle(1.0)


def assert_outcomes(stack: ProductStack, expected: Expected) -> None:
    finals = finals_by_request(stack)
    wrong = {}
    for request_id, (status, code) in expected.by_request.items():
        events = list(finals.get(request_id, {}).values())
        assert len(events) == 1, f"{request_id}: {len(events)} distinct final events"
        data = events[0]["data"]
        got = (data["status"], (data["reason"] or {}).get("code"))
        if got != (status, code):
            wrong[request_id] = got
    assert not wrong, f"unexpected outcomes: {wrong}"
    anonymous = list(finals.get(None, {}).values())
    assert len(anonymous) == expected.anonymous_invalid, "one final event per unreadable message"
    assert {(e["data"]["status"], e["data"]["reason"]["code"]) for e in anonymous} <= {("rejected", "invalid_request")}
    strays = set(finals) - set(expected.by_request) - {None}
    assert not strays, f"final events for requests nobody sent: {strays}"


async def assert_graph_calls(
    stack: ProductStack, *, device_reads: set[str], filters: set[str], acting: set[str]
) -> None:
    """Graph saw only the calls the valid requests explain: reads of their devices, list calls with
    their filters, and exactly one action POST per device in `acting`."""
    calls = await stack.sim.control.calls()
    unexplained = []
    for call in calls:
        if call["route"] == "list":
            if call["query"].get("$filter") not in filters:
                unexplained.append(call)
        elif (call["deviceId"] or "").lower() not in device_reads | acting or call["route"] is None:
            unexplained.append(call)
    assert not unexplained, f"Graph calls no valid request explains: {unexplained[:5]}"
    posts = collections.Counter(call["deviceId"] for call in calls if call["method"] == "POST")
    assert posts == collections.Counter(dict.fromkeys(acting, 1)), posts


async def assert_no_poison(stack: ProductStack) -> None:
    for queue in (f"{stack.requests_queue}-poison", f"{stack.settings['RESET_FOLLOWUPS_QUEUE']}-poison"):
        try:
            properties = await stack.service.get_queue_client(queue).get_queue_properties()
        except ResourceNotFoundError:
            continue
        assert not properties.approximate_message_count, f"messages in {queue}"
