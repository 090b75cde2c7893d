"""The use cases when storage fails (docs/contract.md#storage-outages), with plain fakes of our own
ports: StorageUnavailable is never swallowed by a delivery (the queue retries it), an action called
just before storage failed is reconciled on the next delivery and not called again, and a poison
handler that meets storage still failing hands the message back to its queue instead of failing
into `<queue>-poison-poison`."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from shared.core.errors import StorageUnavailable
from shared.core.lifecycle import DeviceClaim, LedgerRecord
from shared.core.platforms import Action
from shared.workflow import handle_followup, handle_followup_poison, handle_request, handle_request_poison
from shared.workflow.request import STORAGE_RETRY_SECONDS
from tests.fakes import Harness, InMemoryLedger, device, harness

DEV = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"


class FailingLedger(InMemoryLedger):
    """The in-memory ledger whose writes (or every call) fail while `down`."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.fail_next_replace = False

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailable("storage unavailable (ledger: ServiceRequestError)")

    async def get(self, request_id: str) -> LedgerRecord | None:
        self._check()
        return await super().get(request_id)

    async def create(self, record: LedgerRecord) -> LedgerRecord:
        self._check()
        return await super().create(record)

    async def replace(self, record: LedgerRecord) -> LedgerRecord:
        self._check()
        if self.fail_next_replace and record.state.value == "submitted":
            self.fail_next_replace = False
            self.down = True  # storage dies right after the action call
            self._check()
        return await super().replace(record)

    async def claim_device(self, device_id: str, request_id: str, now: datetime, window: timedelta) -> DeviceClaim:
        self._check()
        return await super().claim_device(device_id, request_id, now, window)


def storage_harness() -> tuple[Harness, FailingLedger]:
    h = harness()
    ledger = FailingLedger()
    h.services = dataclasses.replace(h.services, ledger=ledger)
    h.ledger = ledger
    h.gateway.add(device(DEV))
    return h, ledger


def request(request_id: str = "REQ-1") -> bytes:
    document: dict[str, Any] = {"requestId": request_id, "device": {"intuneDeviceId": DEV}, "requestedBy": "sd"}
    return json.dumps(document).encode()


async def test_a_delivery_while_storage_is_down_fails_and_does_nothing() -> None:
    h, ledger = storage_harness()
    ledger.down = True
    with pytest.raises(StorageUnavailable):
        await handle_request(request(), h.services, message_id="m1")
    assert h.gateway.action_calls == [] and h.publisher.events == [] and h.scheduler.requeued == []


async def test_an_action_called_just_before_storage_failed_is_reconciled_not_repeated() -> None:
    h, ledger = storage_harness()
    ledger.fail_next_replace = True
    with pytest.raises(StorageUnavailable):
        await handle_request(request(), h.services, message_id="m1")
    assert h.gateway.action_calls == [(DEV, Action.RESET_PASSCODE)]
    assert h.publisher.events == []

    h.clock.advance(30)  # the host delivers the message again once storage answers
    ledger.down = False
    await handle_request(request(), h.services, message_id="m1")
    assert h.gateway.action_calls == [(DEV, Action.RESET_PASSCODE)]  # not called again
    assert h.publisher.statuses("REQ-1") == ["submitted"]
    assert h.publisher.events[0]["data"]["attempt"] == 1


async def test_a_poisoned_request_meeting_storage_down_goes_back_to_the_request_queue() -> None:
    h, ledger = storage_harness()
    ledger.down = True
    await handle_request_poison(request(), h.services, message_id="p1")  # does not fail
    assert h.scheduler.requeued == [(request().decode(), STORAGE_RETRY_SECONDS)]
    assert h.publisher.events == []

    ledger.down = False
    body, delay = h.scheduler.requeued.pop()
    h.clock.advance(delay)
    await handle_request(body.encode(), h.services, message_id="m2")
    assert h.publisher.statuses("REQ-1") == ["submitted"]


async def test_a_poisoned_follow_up_meeting_storage_down_goes_back_to_the_follow_up_queue() -> None:
    h, ledger = storage_harness()
    await handle_request(request(), h.services, message_id="m1")
    check, _ = h.scheduler.followups.pop()
    ledger.down = True
    await handle_followup_poison(check.encode(), h.services)  # does not fail
    assert h.scheduler.followups == [(check, STORAGE_RETRY_SECONDS)]

    ledger.down = False
    h.gateway.set_state(DEV, "done")
    h.clock.advance(STORAGE_RETRY_SECONDS)
    await handle_followup(h.scheduler.followups.pop()[0].encode(), h.services)
    assert h.publisher.statuses("REQ-1") == ["submitted", "completed"]
