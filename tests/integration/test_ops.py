"""The operations CLI (`python -m ops`) against Azurite: show, list, replay, audit.

Ledger records are written by the real workflow (shared.workflow) on a real table; only Microsoft
Graph is the in-memory fake gateway. The CLI runs in-process through `ops.main` (in a thread,
since it runs its own event loop), with its settings passed as the environment.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest_asyncio
from azure.data.tables.aio import TableServiceClient
from azure.storage.queue.aio import QueueServiceClient

import ops
from devstack.azurite import ACCOUNT_KEY, Azurite
from shared.adapters.ledger import TableLedger
from shared.core.clock import iso, utcnow
from shared.core.errors import GraphTransientError
from shared.core.lifecycle import Policy
from shared.workflow import Services, handle_followup, handle_request, handle_request_poison
from tests.fakes import FakeGateway, ListPublisher, ListScheduler, ManualClock, device

ADELE = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"
KIOSK = "00e958d3-baee-4e0f-8544-e8144f9672c4"
LOST = "11111111-2222-4333-8444-555555555555"
PASSCODE = "secret-1234"  # what the fake gateway reports as the new passcode: must never be exported


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Deployment:
    """One app deployment on Azurite (own table and queues) with records made by the workflow."""

    env: dict[str, str]
    service: QueueServiceClient
    ledger: TableLedger
    services: Services
    clock: ManualClock
    gateway: FakeGateway
    t0: datetime  # the workflow clock when the first record was written; each step adds a minute

    @property
    def start(self) -> str:
        return iso(self.t0)

    def at(self, seconds: int) -> str:
        return iso(self.t0 + timedelta(seconds=seconds))

    async def cli(self, *argv: str, stdin: str = "", env: dict[str, str] | None = None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = await asyncio.to_thread(
            ops.main,
            [*argv, "--settings", ""],
            env=self.env if env is None else env,
            stdin=io.StringIO(stdin),
            stdout=out,
            stderr=err,
        )
        return Result(code, out.getvalue(), err.getvalue())

    def queue(self, setting: str) -> Any:
        return self.service.get_queue_client(self.env[setting])

    async def messages(self, name: str) -> list[str]:
        client = self.service.get_queue_client(name)
        return [m.content for m in await client.peek_messages(max_messages=32)]

    async def submit(self, request_id: str, device_id: str = ADELE, **fields: Any) -> None:
        body = {"requestId": request_id, "device": {"intuneDeviceId": device_id},
                "requestedBy": "servicedesk@contoso.com", "ticketId": f"T-{request_id}",
                "reason": "forgot PIN", "correlationId": f"corr-{request_id}", **fields}
        await handle_request(json.dumps(body).encode(), self.services, message_id=request_id)
        self.clock.advance(60)

    async def confirm(self, request_id: str, device_id: str, state: str) -> None:
        self.gateway.set_state(device_id, state)
        await handle_followup(json.dumps({"requestId": request_id, "check": 1}).encode(), self.services)
        self.clock.advance(60)

    async def poison(self, request_id: str, device_id: str = LOST) -> None:
        """A request whose Graph lookups failed until its message went to the poison queue."""
        self.gateway.read_failures.append(GraphTransientError("503 Service Unavailable", status=503))
        body = json.dumps({"requestId": request_id, "device": {"intuneDeviceId": device_id},
                           "requestedBy": "itsm@contoso.com", "correlationId": f"corr-{request_id}"}).encode()
        await handle_request(body, self.services, message_id=request_id)
        self.clock.advance(60)
        await handle_request_poison(body, self.services, message_id=request_id)
        self.clock.advance(60)


@pytest_asyncio.fixture(loop_scope="session")
async def deployment(azurite: Azurite) -> AsyncIterator[Deployment]:
    suffix = uuid.uuid4().hex[:8]
    env = {
        "AzureWebJobsStorage": azurite.connection_string,
        "RESET_REQUESTS_QUEUE": f"ops-req-{suffix}",
        "RESET_RESULTS_QUEUE": f"ops-res-{suffix}",
        "RESET_FOLLOWUPS_QUEUE": f"ops-fup-{suffix}",
        "RESET_LEDGER_TABLE": f"Ops{suffix}",
        "USER": "ops-test",
    }
    queue_names = [env["RESET_REQUESTS_QUEUE"], env["RESET_FOLLOWUPS_QUEUE"],
                   env["RESET_REQUESTS_QUEUE"] + "-poison", env["RESET_FOLLOWUPS_QUEUE"] + "-poison"]
    async with (
        QueueServiceClient.from_connection_string(azurite.connection_string) as service,
        TableServiceClient.from_connection_string(azurite.connection_string) as tables,
    ):
        for name in queue_names:
            await service.create_queue(name)
        await tables.create_table(env["RESET_LEDGER_TABLE"])
        clock = ManualClock(utcnow().replace(microsecond=0) - timedelta(hours=3))
        gateway = FakeGateway(clock)
        gateway.add(device(ADELE))
        gateway.add(device(KIOSK, enrollment="androidEnterpriseDedicatedDevice"))
        gateway.add(device(LOST))
        ledger = TableLedger(tables.get_table_client(env["RESET_LEDGER_TABLE"]))
        services = Services(gateway=gateway, ledger=ledger, publisher=ListPublisher(), scheduler=ListScheduler(),
                            clock=clock, policy=Policy())
        stack = Deployment(env, service, ledger, services, clock, gateway, clock.now)

        # request                                                     created  last updated (t0 + s)
        await stack.submit("OK-1")  # completed                                   0        60
        await stack.confirm("OK-1", ADELE, "done")
        await stack.poison("POISON-1")  # failed/retries_exhausted, never acted      120      180
        await stack.submit("DEVFAIL-1", KIOSK)  # failed/action_failed, submitted     240      300
        await stack.confirm("DEVFAIL-1", KIOSK, "failed")
        await stack.submit("MISSING-1", "99999999-9999-4999-8999-999999999999")  # 360      360 rejected
        await stack.submit("DRY-1", ADELE, dryRun=True)  # dry_run/would_run         420      420
        gateway.read_failures.append(GraphTransientError("429 Too Many Requests", status=429, retry_after=30))
        await stack.submit("OPEN-1", ADELE)  # deferred: still processing            480      480
        yield stack

        for name in queue_names:
            await service.delete_queue(name)
        await tables.delete_table(env["RESET_LEDGER_TABLE"])


# ====================================================================== show


async def test_show_prints_the_whole_history_of_a_request(deployment: Deployment) -> None:
    result = await deployment.cli("show", "OK-1")
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "Status:" in result.out and "completed (final)" in result.out
    assert any(line.startswith("Device:") and ADELE in line and '"dev-5c1f9a3e"' in line for line in lines)
    for expected in ("android-fully-managed", "resetPasscode (workProfile)", "1 action call(s)",
                     "servicedesk@contoso.com", "T-OK-1", "corr-OK-1", "intune.passcode-reset.completed"):
        assert expected in result.out, expected
    history = result.out.split("History:\n", 1)[1]
    assert [line.split()[1] for line in history.splitlines()] == ["processing", "acting", "submitted", "completed"]


async def test_show_json_carries_request_device_history_and_last_event(deployment: Deployment) -> None:
    result = await deployment.cli("show", "POISON-1", "--json")
    assert result.code == 0, result.err
    detail = result.json()
    assert (detail["status"], detail["final"], detail["reasonCode"]) == ("failed", True, "retries_exhausted")
    assert detail["request"]["device"] == {"intuneDeviceId": LOST}
    assert detail["lastEvent"]["type"] == "intune.passcode-reset.failed"
    assert detail["submittedAt"] is None and detail["deferrals"] == 1
    assert detail["history"][-1]["state"] == "failed"


async def test_show_of_an_unknown_request_exits_1(deployment: Deployment) -> None:
    result = await deployment.cli("show", "NOPE-1")
    assert result.code == 1 and "no request 'NOPE-1'" in result.err


# ====================================================================== list


def request_ids(table: str) -> list[str]:
    return [line.split()[1] for line in table.splitlines()[1:]]


async def test_list_shows_newest_first_and_filters_by_status(deployment: Deployment) -> None:
    everything = await deployment.cli("list")
    assert everything.code == 0, everything.err
    assert everything.out.splitlines()[0].split()[:4] == ["UPDATED", "(UTC)", "REQUEST", "ID"]
    assert request_ids(everything.out) == ["OPEN-1", "DRY-1", "MISSING-1", "DEVFAIL-1", "POISON-1", "OK-1"]

    failed = await deployment.cli("list", "--status", "failed")
    assert request_ids(failed.out) == ["DEVFAIL-1", "POISON-1"]
    open_ = await deployment.cli("list", "--status", "open")
    assert request_ids(open_.out) == ["OPEN-1"]
    several = await deployment.cli("list", "--status", "rejected,dry_run")
    assert request_ids(several.out) == ["DRY-1", "MISSING-1"]


async def test_list_filters_by_reason_code(deployment: Deployment) -> None:
    result = await deployment.cli("list", "--reason", "retries_exhausted", "--json")
    assert result.code == 0, result.err
    rows = result.json()
    assert [row["requestId"] for row in rows] == ["POISON-1"]
    assert rows[0]["reasonCode"] == "retries_exhausted" and rows[0]["status"] == "failed"


async def test_list_time_window_and_limit(deployment: Deployment) -> None:
    window = await deployment.cli("list", "--since", deployment.at(150), "--until", deployment.at(360), "--json")
    assert [row["requestId"] for row in window.json()] == ["DEVFAIL-1", "POISON-1"]  # --until is exclusive
    limited = await deployment.cli("list", "--limit", "2")
    assert request_ids(limited.out) == ["OPEN-1", "DRY-1"] and "2 of 6 matching requests shown" in limited.err
    recent = await deployment.cli("list", "--since", "1h")
    assert recent.code == 1 and "no matching requests" in recent.err  # records are 2-3 hours old
    last_day = await deployment.cli("list", "--since", "1d", "--status", "completed", "--json")
    assert [row["requestId"] for row in last_day.json()] == ["OK-1"]


async def test_list_without_matches_exits_1(deployment: Deployment) -> None:
    result = await deployment.cli("list", "--status", "timed_out")
    assert result.code == 1 and result.out == "" and "no matching requests" in result.err


# ====================================================================== usage and settings


async def test_usage_and_configuration_errors_exit_2_naming_the_culprit(deployment: Deployment) -> None:
    bad_time = await deployment.cli("list", "--since", "yesterday")
    assert bad_time.code == 2 and "--since" in bad_time.err
    bad_status = await deployment.cli("list", "--status", "done")
    assert bad_status.code == 2 and "unknown status 'done'" in bad_status.err
    bad_reason = await deployment.cli("replay", "--since", "1d", "--reason", "oops")
    assert bad_reason.code == 2 and "unknown reason code 'oops'" in bad_reason.err
    no_target = await deployment.cli("replay")
    assert no_target.code == 2 and "REQUEST_ID" in no_target.err
    unknown_command = await deployment.cli("purge")
    assert unknown_command.code == 2 and "invalid choice" in unknown_command.err
    no_storage = await deployment.cli("list", env={"RESET_LEDGER_TABLE": "Ledger"})
    assert no_storage.code == 2 and "AzureWebJobsStorage" in no_storage.err
    bad_table = await deployment.cli("list", env={**deployment.env, "RESET_LEDGER_TABLE": "bad-name"})
    assert bad_table.code == 2 and "RESET_LEDGER_TABLE" in bad_table.err
    missing_table = await deployment.cli("show", "OK-1", env={**deployment.env, "RESET_LEDGER_TABLE": "NoSuchTable"})
    assert missing_table.code == 2 and "TableNotFound" in missing_table.err and "NoSuchTable" in missing_table.err


async def test_settings_fall_back_to_local_settings_json(deployment: Deployment, tmp_path: Path) -> None:
    settings_file = tmp_path / "local.settings.json"
    settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": deployment.env}))
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(
        ops.main, ["show", "OK-1", "--json", "--settings", str(settings_file)], env={}, stdout=out, stderr=err
    )
    assert code == 0, err.getvalue()
    assert json.loads(out.getvalue())["status"] == "completed"


# ====================================================================== replay


async def test_replay_dry_run_shows_the_plan_and_changes_nothing(deployment: Deployment) -> None:
    result = await deployment.cli("replay", "--since", deployment.start)
    assert result.code == 0, result.err
    plan = {line.split()[0]: line for line in result.out.splitlines()[1:]}
    assert set(plan) == {"POISON-1", "DEVFAIL-1"}  # only failed and timed_out are candidates
    assert "POISON-1-r1" in plan["POISON-1"] and plan["POISON-1"].rstrip().endswith("replay")
    assert "skip: the action reached Intune" in plan["DEVFAIL-1"] and "--repeat-action" in plan["DEVFAIL-1"]
    assert "dry run: nothing changed" in result.err
    assert await deployment.messages(deployment.env["RESET_REQUESTS_QUEUE"]) == []
    assert await deployment.ledger.get("POISON-1-r1") is None


async def test_replay_resubmits_a_failed_request_as_a_new_request_that_then_runs(deployment: Deployment) -> None:
    result = await deployment.cli("replay", "POISON-1", "--execute", "--yes")
    assert result.code == 0, result.err
    assert "POISON-1: replayed as POISON-1-r1" in result.out

    [message] = await deployment.messages(deployment.env["RESET_REQUESTS_QUEUE"])
    body = json.loads(message)
    assert body["requestId"] == "POISON-1-r1" and body["correlationId"] == "corr-POISON-1"
    assert body["device"] == {"intuneDeviceId": LOST} and body["requestedBy"] == "itsm@contoso.com"
    queued = await deployment.ledger.get("POISON-1-r1")
    assert queued is not None and queued.state == "queued"
    assert queued.history[0]["note"] == "replay of POISON-1 by ops-test"

    # The app picks the message up like any request; Graph works again after the fix.
    await handle_request(message.encode(), deployment.services, message_id="replayed")
    await deployment.confirm("POISON-1-r1", LOST, "done")
    replayed = await deployment.ledger.get("POISON-1-r1")
    original = await deployment.ledger.get("POISON-1")
    assert replayed is not None and replayed.state == "completed"
    assert original is not None and original.state == "failed"  # its one final outcome stays as it was

    shown = await deployment.cli("show", "POISON-1", "--json")
    assert shown.json()["replayedAs"] == {"requestId": "POISON-1-r1", "status": "completed"}
    assert (await deployment.cli("show", "POISON-1-r1", "--json")).json()["replayOf"] == "POISON-1"


async def test_replaying_the_same_request_twice_replays_it_once(deployment: Deployment) -> None:
    first = await deployment.cli("replay", "POISON-1", "--execute", "--yes")
    assert first.code == 0
    # A queued replay whose message may have been lost is sent again, never recreated.
    resend = await deployment.cli("replay", "POISON-1")
    assert resend.code == 0 and "resend" in resend.out
    requests_queue = deployment.queue("RESET_REQUESTS_QUEUE")
    [message] = [m async for m in requests_queue.receive_messages()]
    await handle_request(message.content.encode(), deployment.services, message_id="replayed")
    await requests_queue.delete_message(message)

    again = await deployment.cli("replay", "POISON-1", "--execute", "--yes")
    assert again.code == 1 and "already replayed as POISON-1-r1" in again.out
    assert await deployment.messages(deployment.env["RESET_REQUESTS_QUEUE"]) == []


async def test_replay_asks_before_acting_and_a_no_changes_nothing(deployment: Deployment) -> None:
    result = await deployment.cli("replay", "POISON-1", "--execute", stdin="n\n")
    assert result.code == 1 and "[y/N]" in result.err and "declined" in result.err
    assert await deployment.messages(deployment.env["RESET_REQUESTS_QUEUE"]) == []
    assert await deployment.ledger.get("POISON-1-r1") is None

    accepted = await deployment.cli("replay", "POISON-1", "--execute", stdin="yes\n")
    assert accepted.code == 0 and len(await deployment.messages(deployment.env["RESET_REQUESTS_QUEUE"])) == 1


async def test_replay_of_a_request_that_reached_the_device_needs_repeat_action(deployment: Deployment) -> None:
    refused = await deployment.cli("replay", "DEVFAIL-1", "--execute", "--yes")
    assert refused.code == 1 and "the action reached Intune" in refused.out
    assert await deployment.messages(deployment.env["RESET_REQUESTS_QUEUE"]) == []

    planned = await deployment.cli("replay", "DEVFAIL-1", "--repeat-action", "--json")
    assert planned.code == 0
    [item] = planned.json()["items"]
    assert (item["verdict"], item["newRequestId"], item["reasonCode"]) == ("replay", "DEVFAIL-1-r1", "action_failed")


async def test_replay_skips_what_is_not_failed_and_reports_unknown_ids(deployment: Deployment) -> None:
    result = await deployment.cli("replay", "OK-1", "OPEN-1", "GHOST-1", "--json")
    assert result.code == 1
    document = result.json()
    assert [(i["requestId"], i["verdict"]) for i in document["items"]] == [("OK-1", "skip"), ("OPEN-1", "skip")]
    assert document["notFound"] == ["GHOST-1"] and document["executed"] is False


async def test_replay_selects_by_reason_code(deployment: Deployment) -> None:
    result = await deployment.cli("replay", "--since", "1d", "--reason", "action_failed", "--repeat-action", "--json")
    assert [(i["requestId"], i["verdict"]) for i in result.json()["items"]] == [("DEVFAIL-1", "replay")]


async def test_replay_poison_moves_parked_messages_back_to_their_queues(deployment: Deployment) -> None:
    request_poison = deployment.env["RESET_REQUESTS_QUEUE"] + "-poison"
    followup_poison = deployment.env["RESET_FOLLOWUPS_QUEUE"] + "-poison"
    parked = json.dumps({"requestId": "PARKED-1", "device": {"intuneDeviceId": ADELE}, "requestedBy": "itsm"})
    followup = json.dumps({"requestId": "OK-1", "check": 3})
    await deployment.service.get_queue_client(request_poison).send_message(parked)
    await deployment.service.get_queue_client(followup_poison).send_message(followup)

    dry = await deployment.cli("replay", "--poison")
    assert dry.code == 0, dry.err
    assert f"{request_poison} -> {deployment.env['RESET_REQUESTS_QUEUE']}: about 1 message(s)" in dry.out
    assert "requestId=PARKED-1" in dry.out and "requestId=OK-1" in dry.out and "dry run" in dry.err
    assert await deployment.messages(request_poison) == [parked]

    moved = await deployment.cli("replay", "--poison", "--execute", "--yes")
    assert moved.code == 0, moved.err
    assert await deployment.messages(request_poison) == [] and await deployment.messages(followup_poison) == []
    assert await deployment.messages(deployment.env["RESET_REQUESTS_QUEUE"]) == [parked]
    assert await deployment.messages(deployment.env["RESET_FOLLOWUPS_QUEUE"]) == [followup]

    empty = await deployment.cli("replay", "--poison", "--execute", "--yes")
    assert empty.code == 1 and "poison queues are empty" in empty.err


# ====================================================================== audit


async def test_audit_csv_has_one_row_per_request_created_in_the_range(deployment: Deployment) -> None:
    result = await deployment.cli("audit", "--since", deployment.start, "--format", "csv")
    assert result.code == 0, result.err
    rows = list(csv.DictReader(io.StringIO(result.out)))
    assert [row["requestId"] for row in rows] == ["OK-1", "POISON-1", "DEVFAIL-1", "MISSING-1", "DRY-1", "OPEN-1"]
    ok = rows[0]
    assert ok["requestedBy"] == "servicedesk@contoso.com" and ok["ticketId"] == "T-OK-1"
    assert (ok["deviceId"], ok["deviceName"], ok["platform"]) == (ADELE, "dev-5c1f9a3e", "android-fully-managed")
    assert (ok["action"], ok["status"], ok["reasonCode"], ok["final"]) == ("resetPasscode", "completed", "", "true")
    assert ok["createdAt"] <= ok["submittedAt"] < ok["updatedAt"]
    missing = rows[3]
    assert (missing["status"], missing["reasonCode"]) == ("rejected", "device_not_found")
    assert missing["requestedDevice"] == "intuneDeviceId=99999999-9999-4999-8999-999999999999"
    assert "6 request(s) created in" in result.err
    assert PASSCODE not in result.out and ACCOUNT_KEY not in result.out and ACCOUNT_KEY not in result.err


async def test_audit_time_range_is_by_creation_time(deployment: Deployment) -> None:
    result = await deployment.cli("audit", "--since", deployment.start, "--until", deployment.at(200))
    assert [row["requestId"] for row in csv.DictReader(io.StringIO(result.out))] == ["OK-1", "POISON-1"]
    nothing = await deployment.cli("audit", "--since", "10m")
    assert nothing.code == 1 and nothing.out.startswith("createdAt,updatedAt,requestId")


async def test_audit_jsonl_to_a_file(deployment: Deployment, tmp_path: Path) -> None:
    target = tmp_path / "audit.jsonl"
    result = await deployment.cli("audit", "--since", "1d", "--format", "jsonl", "--output", str(target))
    assert result.code == 0 and result.out == "" and str(target) in result.err
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert len(records) == 6
    devfail = next(r for r in records if r["requestId"] == "DEVFAIL-1")
    assert (devfail["status"], devfail["reasonCode"], devfail["platform"]) == (
        "failed", "action_failed", "android-dedicated")
    assert devfail["attempts"] == 1 and devfail["final"] is True and devfail["correlationId"] == "corr-DEVFAIL-1"
    assert PASSCODE not in target.read_text()


async def test_audit_csv_cells_cannot_run_as_spreadsheet_formulas(deployment: Deployment) -> None:
    await deployment.submit("FORMULA-1", KIOSK, requestedBy="=HYPERLINK(\"http://evil\")", dryRun=True)
    result = await deployment.cli("audit", "--since", "1d")
    row = next(r for r in csv.DictReader(io.StringIO(result.out)) if r["requestId"] == "FORMULA-1")
    assert row["requestedBy"] == "'=HYPERLINK(\"http://evil\")"
    jsonl = await deployment.cli("audit", "--since", "1d", "--format", "jsonl")
    assert '"requestedBy":"=HYPERLINK(\\"http://evil\\")"' in jsonl.out  # JSON Lines keep the value as it is
