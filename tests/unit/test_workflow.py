"""The reset workflow's guarantees (docs/contract.md#outcome-events), with plain in-memory fakes of its adapters."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from shared.core.errors import ActionOutcomeUnknown, GraphPermanentError, GraphTransientError
from shared.core.lifecycle import Policy
from shared.core.platforms import Action
from shared.workflow import (
    handle_followup,
    handle_followup_poison,
    handle_request,
    handle_request_poison,
)
from tests.fakes import Harness, device, harness

DEV = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"
OTHER = "9f0c2b7d-1e4a-4b8c-8d3f-2a6e5c9b0d14"


def request(request_id: str = "REQ-1", **overrides: Any) -> bytes:
    document: dict[str, Any] = {
        "requestId": request_id,
        "device": {"intuneDeviceId": DEV},
        "requestedBy": "servicedesk@contoso.com",
        "ticketId": "INC1",
        "reason": "forgot PIN",
    }
    document.update(overrides)
    return json.dumps(document).encode()


async def submit(h: Harness, body: bytes, message_id: str = "m1") -> None:
    await handle_request(body, h.services, message_id=message_id)


async def run_followups(h: Harness) -> None:
    pending, h.scheduler.followups = h.scheduler.followups, []
    for body, delay in pending:
        h.clock.advance(delay)
        await handle_followup(body.encode(), h.services)


def finals(h: Harness, request_id: str = "REQ-1") -> list[dict[str, Any]]:
    return [e for e in h.publisher.events if e["subject"] == request_id and e["data"]["status"] != "submitted"]


async def test_supported_device_is_reset_once_and_confirmed_completed() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    await submit(h, request())
    assert h.gateway.action_calls == [(DEV, Action.RESET_PASSCODE)]
    submitted = h.publisher.events[-1]
    assert submitted["type"] == "intune.passcode-reset.submitted"
    assert submitted["data"]["action"] == "resetPasscode" and submitted["data"]["scope"] == "workProfile"
    assert submitted["data"]["device"]["platform"] == "android-fully-managed"
    assert submitted["data"]["reason"] is None and submitted["data"]["attempt"] == 1
    assert h.scheduler.followups[0][1] == 60

    h.gateway.set_state(DEV, "done")
    await run_followups(h)
    assert h.publisher.statuses() == ["submitted", "completed"]
    assert h.publisher.events[-1]["data"]["reason"] is None


async def test_redelivered_request_republishes_the_same_event_and_calls_nothing() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    await submit(h, request())
    h.gateway.set_state(DEV, "done")
    await run_followups(h)
    final_id = h.publisher.events[-1]["id"]
    for attempt in range(3):
        await submit(h, request(), message_id=f"dup-{attempt}")
    assert len(h.gateway.action_calls) == 1
    assert {e["id"] for e in finals(h)} == {final_id}


async def test_concurrent_deliveries_of_one_request_make_one_action_call() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    await asyncio.gather(*(submit(h, request(), message_id=f"m{n}") for n in range(4)))
    for body, _ in h.scheduler.requeued:  # the deliveries that stepped back retry later
        h.clock.advance(5)
        await submit(h, body.encode(), message_id="retry")
    assert h.gateway.action_calls == [(DEV, Action.RESET_PASSCODE)]
    assert len({e["id"] for e in h.publisher.events}) == 1
    assert h.publisher.statuses() and set(h.publisher.statuses()) == {"submitted"}


async def test_same_request_id_with_a_different_payload_is_a_conflict() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    await submit(h, request())
    await submit(h, request(device={"intuneDeviceId": OTHER}))
    conflict = h.publisher.events[-1]["data"]
    assert conflict["status"] == "rejected" and conflict["reason"]["code"] == "request_conflict"
    assert h.gateway.action_calls == [(DEV, Action.RESET_PASSCODE)]


async def test_unsupported_platform_never_calls_the_action() -> None:
    h = harness()
    h.gateway.add(device(DEV, os="Windows", version="10.0.22631",
                         device_type="desktop", enrollment="windowsAzureADJoin"))
    await submit(h, request())
    data = h.publisher.events[-1]["data"]
    assert data["status"] == "unsupported" and data["reason"]["code"] == "platform_unsupported"
    assert data["device"]["platform"] == "windows" and data["action"] is None
    assert h.gateway.action_calls == []


async def test_dry_run_reports_what_would_run_and_starts_no_cooldown() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    await submit(h, request("DRY-1", dryRun=True))
    data = h.publisher.events[-1]["data"]
    assert (data["status"], data["action"], data["scope"]) == ("dry_run", "resetPasscode", "workProfile")
    assert h.gateway.action_calls == []
    await submit(h, request("REAL-1"))
    assert h.publisher.events[-1]["data"]["status"] == "submitted"


async def test_macos_remote_lock_only_when_allowed() -> None:
    h = harness()
    h.gateway.add(device(DEV, os="macOS", version="14.5", device_type="macMDM", enrollment="appleBulkWithUser"))
    await submit(h, request("MAC-1"))
    assert h.publisher.events[-1]["data"]["status"] == "unsupported"
    await submit(h, request("MAC-2", allowRemoteLock=True))
    assert h.publisher.events[-1]["data"]["action"] == "remoteLock"
    assert h.gateway.action_calls == [(DEV, Action.REMOTE_LOCK)]


async def test_second_request_for_the_same_device_inside_the_cooldown_is_rejected() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    await submit(h, request("A-1"))
    h.clock.advance(899)
    await submit(h, request("B-1"))
    rejected = h.publisher.events[-1]["data"]
    assert rejected["status"] == "rejected" and rejected["reason"]["code"] == "cooldown"
    assert "A-1" in rejected["reason"]["message"]
    h.clock.advance(2)
    await submit(h, request("C-1"))
    assert h.publisher.events[-1]["data"]["status"] == "submitted"
    assert len(h.gateway.action_calls) == 2


async def test_device_not_found_and_user_mismatch_are_rejected() -> None:
    h = harness()
    h.gateway.add(device(DEV, upn="adele@contoso.com"))
    await submit(h, request("NF-1", device={"intuneDeviceId": OTHER}))
    assert h.publisher.events[-1]["data"]["reason"]["code"] == "device_not_found"
    await submit(h, request("UM-1", expectedUserPrincipalName="someone.else@contoso.com"))
    assert h.publisher.events[-1]["data"]["reason"]["code"] == "user_mismatch"
    await submit(h, request("UM-2", expectedUserPrincipalName="ADELE@contoso.com"))
    assert h.publisher.events[-1]["data"]["status"] == "submitted"


async def test_serial_number_shared_by_two_devices_is_ambiguous() -> None:
    h = harness()
    h.gateway.add(device(DEV, serial="SN-DUP"))
    h.gateway.add(device(OTHER, serial="sn-dup"))
    await submit(h, request(device={"serialNumber": "SN-DUP"}))
    assert h.publisher.events[-1]["data"]["reason"]["code"] == "ambiguous_device"
    assert h.gateway.action_calls == []


async def test_invalid_message_ends_in_one_rejected_event_with_a_stable_id() -> None:
    h = harness()
    await submit(h, b"{not json", message_id="msg-7")
    await submit(h, b"{not json", message_id="msg-7")
    events = h.publisher.events
    assert [e["data"]["status"] for e in events] == ["rejected", "rejected"]
    assert events[0]["id"] == events[1]["id"] and events[0]["data"]["requestId"] is None
    assert events[0]["data"]["reason"]["code"] == "invalid_request"


async def test_throttled_action_is_deferred_with_retry_after_then_runs_once() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    h.gateway.perform_failures.append((GraphTransientError("429", status=429, retry_after=17), False))
    await submit(h, request())
    assert h.publisher.events == []
    body, delay = h.scheduler.requeued[-1]
    assert delay == 17
    h.clock.advance(delay)
    await submit(h, body.encode(), message_id="m2")
    assert h.publisher.statuses() == ["submitted"]
    assert h.publisher.events[-1]["data"]["attempt"] == 2


async def test_unknown_result_that_reached_the_device_is_not_repeated() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    h.gateway.perform_failures.append((ActionOutcomeUnknown("504", status=504), True))
    await submit(h, request())
    assert h.publisher.statuses() == ["submitted"]
    await submit(h, request(), message_id="redelivered")
    assert len(h.gateway.action_calls) == 1


async def test_unknown_result_that_did_not_reach_the_device_is_retried_after_the_lease() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    h.gateway.perform_failures.append((ActionOutcomeUnknown("timeout"), False))
    await submit(h, request())
    assert h.publisher.events == [] and h.scheduler.requeued
    h.clock.advance(10)
    await submit(h, request(), message_id="m2")  # still inside the lease: wait, do not act
    assert len(h.gateway.action_calls) == 1
    h.clock.advance(60)
    await submit(h, request(), message_id="m3")
    assert len(h.gateway.action_calls) == 2
    assert h.publisher.statuses() == ["submitted"]


async def test_permanent_graph_refusal_fails_and_frees_the_device() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    h.gateway.perform_failures.append((GraphPermanentError("400 BadRequest", status=400), False))
    await submit(h, request("P-1"))
    data = h.publisher.events[-1]["data"]
    assert data["status"] == "failed" and data["reason"]["code"] == "action_not_supported"
    await submit(h, request("P-2"))
    assert h.publisher.events[-1]["data"]["status"] == "submitted"


async def test_persistent_transient_errors_end_in_one_failed_event() -> None:
    h = harness(Policy(max_action_attempts=3))
    h.gateway.add(device(DEV))
    for _ in range(5):
        h.gateway.perform_failures.append((GraphTransientError("429", status=429), False))  # throttled
    body = request()
    for n in range(5):
        await submit(h, body, message_id=f"m{n}")
        if not h.scheduler.requeued:
            break
        body = h.scheduler.requeued.pop()[0].encode()
        h.clock.advance(30)
    assert len(h.gateway.action_calls) == 3
    assert [e["data"]["status"] for e in finals(h)] == ["failed"]
    assert finals(h)[0]["data"]["reason"]["code"] == "retries_exhausted"


async def test_poison_request_ends_in_retries_exhausted_once() -> None:
    h = harness()
    await handle_request_poison(request(), h.services, message_id="p1")
    await handle_request_poison(request(), h.services, message_id="p2")
    events = finals(h)
    assert [e["data"]["reason"]["code"] for e in events] == ["retries_exhausted", "retries_exhausted"]
    assert events[0]["id"] == events[1]["id"]


async def test_poison_of_an_already_submitted_request_does_not_fail_it() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    await submit(h, request())
    await handle_request_poison(request(), h.services, message_id="p1")
    assert h.publisher.statuses() == ["submitted", "submitted"]


async def test_device_reporting_failure_ends_failed() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    await submit(h, request())
    h.gateway.set_state(DEV, "failed")
    await run_followups(h)
    assert h.publisher.events[-1]["data"]["reason"]["code"] == "action_failed"


async def test_confirmation_times_out_when_the_device_never_checks_in() -> None:
    h = harness(Policy(confirm_first_check_seconds=60, confirm_timeout_seconds=600))
    h.gateway.add(device(DEV))
    await submit(h, request())
    for _ in range(10):
        if not h.scheduler.followups:
            break
        await run_followups(h)
    assert h.publisher.statuses() == ["submitted", "timed_out"]
    assert h.publisher.events[-1]["data"]["reason"]["code"] == "confirmation_timeout"


async def test_followup_poison_fails_a_submitted_request_once() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    await submit(h, request())
    body = h.scheduler.followups[0][0].encode()
    await handle_followup_poison(body, h.services)
    await handle_followup_poison(body, h.services)
    first, second = finals(h)
    assert first["id"] == second["id"] and first["data"]["status"] == "failed"


async def test_transient_read_error_during_confirmation_reschedules() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    await submit(h, request())
    h.gateway.read_failures.append(GraphTransientError("429", status=429, retry_after=42))
    await run_followups(h)
    assert h.scheduler.followups[-1][1] == 42 and h.publisher.statuses() == ["submitted"]


async def test_no_passcode_in_any_event() -> None:
    h = harness()
    h.gateway.add(device(DEV))
    await submit(h, request())
    h.gateway.set_state(DEV, "done")
    await run_followups(h)
    assert "secret-1234" not in json.dumps(h.publisher.events)


async def test_a_batch_item_released_as_a_message_is_recorded_with_its_batch_once() -> None:
    """A batch releases an item as a message naming its batch (decision 0027): the request
    function records it with the batch, its events carry the batchId, and a repeated release of
    the same item (a release round done again after a crash) calls nothing a second time."""
    h = harness()
    h.gateway.add(device(DEV))
    body = request("B-7.3", batchId="B-7")
    await submit(h, body, message_id="b1")
    await submit(h, body, message_id="b2")
    assert h.gateway.action_calls == [(DEV, Action.RESET_PASSCODE)]
    record = h.ledger.records["B-7.3"]
    assert record.batch_id == "B-7" and record.history[0]["note"] == "batch item"
    assert {e["data"]["batchId"] for e in h.publisher.events} == {"B-7"}
    assert len({e["id"] for e in h.publisher.events}) == 1  # the repeat republishes the same event


async def test_a_batch_id_that_is_not_the_request_ids_own_batch_is_ignored() -> None:
    """Any writer of the request queue can add members; a `batchId` counts only when the request
    is that batch's item `<batchId>.<n>`, so a message cannot attach itself to another batch."""
    h = harness()
    h.gateway.add(device(DEV))
    for request_id, claimed in (("REQ-9", "B-7"), ("B-7.03", "B-7"), ("B-7.3", "B"), ("B-7.x", "B-7")):
        await submit(h, request(request_id, batchId=claimed), message_id=request_id)
        assert h.ledger.records[request_id].batch_id is None, request_id
        h.clock.advance(901)  # past the device's cooldown
    assert {e["data"]["batchId"] for e in h.publisher.events} == {None}
    await submit(h, request("B-8.1", batchId=["B-8"]), message_id="list")  # not a string: no batch id
    assert h.ledger.records["B-8.1"].batch_id is None
