"""docs/contract.md#batches end to end: HTTP client and the batch queue -> devstack host ->
function_app.py -> batch records on Azurite blobs, items through the request pipeline -> the
Intune simulator (groups too), and back: states, counts, item rows, events, one done event."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from devstack.simulator.directory import ORPHAN_DEVICE_ID, STORE_GROUP_ID
from tests.e2e.test_http_api import Answer, Api, api, assert_problem
from tests.plugins.product import FINAL_STATUSES, ProductFactory, ProductStack

ADELE = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"  # Android work profile
ALEX_IPHONE_SERIAL = "G6TZK2XQ0D"
JOHANNA_AAD = "168b6b65-6d11-489d-a3f9-a9af2041f40a"  # Android, by Entra device id
WINDOWS_PC = "62a9255c-bdb8-47c5-a8af-e9d1387777ee"  # Windows: unsupported
MIXED_CSV = (
    "intuneDeviceId,serialNumber,azureAdDeviceId\r\n"
    f"{ADELE},,\r\n"
    f",{ALEX_IPHONE_SERIAL},\r\n"
    f",,{JOHANNA_AAD}\r\n"
    f"{WINDOWS_PC},,\r\n"
    ",NO-SUCH-SERIAL,\r\n"
)
BATCH_DONE = "intune.passcode-reset-batch.done"


async def post_csv(client: Api, text: str, query: str) -> Answer:
    return await client.call("POST", f"/api/batches?{query}", raw=text.encode(), headers={"Content-Type": "text/csv"})


async def wait_done(client: Api, batch_id: str, timeout: float = 40.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = await client.call("GET", f"/api/batches/{batch_id}?until=done")
        if answer.status == 200:
            body: dict[str, Any] = answer.body
            return body
        assert answer.status == 202, answer
        assert answer.headers["Retry-After"] and answer.headers["Location"].endswith(
            f"/api/batches/{batch_id}?until=done"
        )
        await asyncio.sleep(0.5)
    raise TimeoutError(f"batch {batch_id} not done")


async def wait_batch_event(stack: ProductStack, batch_id: str, timeout: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await stack.collect()
        done = [e for e in stack.events if e["type"] == BATCH_DONE and e["subject"] == batch_id]
        if done:
            await stack.settle(1.5)  # nothing more may come
            return [e for e in stack.events if e["type"] == BATCH_DONE and e["subject"] == batch_id]
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no done event for {batch_id}")


def item_finals(stack: ProductStack, batch_id: str) -> dict[str, dict[str, Any]]:
    """Each item's final event; a republished event (same id) is the same event."""
    finals: dict[str, tuple[str, dict[str, Any]]] = {}
    for event in stack.events:
        data = event["data"]
        if event["type"].startswith("intune.passcode-reset.") and data.get("batchId") == batch_id:
            if data["status"] in FINAL_STATUSES:
                earlier = finals.setdefault(data["requestId"], (event["id"], data))
                assert earlier[0] == event["id"], f"two final events for {data['requestId']}"
    return {request_id: data for request_id, (_, data) in finals.items()}


async def test_a_csv_batch_runs_every_item_and_reports_counts_rows_and_one_done_event(
    product_stack: ProductFactory,
) -> None:
    async with api(product_stack) as client:
        query = "batchId=STORE-42&requestedBy=ops%40contoso.com&ticketId=CHG0042&allowRemoteLock=false"
        first = await post_csv(client, MIXED_CSV, query)
        assert first.status == 202, first
        assert first.body == {
            "batchId": "STORE-42",
            "status": "accepted",
            "statusUrl": first.headers["Location"],
            "items": 5,
        }
        assert first.headers["Location"].startswith(client.url + "/api/batches/STORE-42")
        assert int(first.headers["Retry-After"]) > 0
        repeat = await post_csv(client, MIXED_CSV, query)
        assert (repeat.status, repeat.body) == (202, first.body)

        state = await wait_done(client, "STORE-42")
        assert state["state"] == "done" and state["items"] == 5 and state["final"] == 5
        assert state["counts"] == {"completed": 3, "rejected": 1, "unsupported": 1}

        done = await wait_batch_event(client.stack, "STORE-42")
        assert len({e["id"] for e in done}) == 1
        assert done[0]["data"] == {"batchId": "STORE-42", "items": 5, "counts": state["counts"]}

        finals = item_finals(client.stack, "STORE-42")
        assert sorted(finals) == [f"STORE-42.{n}" for n in range(1, 6)]  # no second set of items
        assert finals["STORE-42.5"]["reason"]["code"] == "device_not_found"
        assert finals["STORE-42.4"]["status"] == "unsupported"
        assert all(
            data["ticketId"] == "CHG0042" and data["requestedBy"] == "ops@contoso.com" for data in finals.values()
        )

        rows = await client.call("GET", "/api/batches/STORE-42/items")
        assert rows.status == 200 and rows.body["batchId"] == "STORE-42"
        by_n = {row["n"]: row for row in rows.body["items"]}
        assert by_n[1] == {
            "n": 1,
            "identifierKind": "intuneDeviceId",
            "identifierValue": ADELE,
            "requestId": "STORE-42.1",
            "status": "completed",
            "reasonCode": None,
            "deviceId": ADELE,
            "platform": "android-work-profile",
            "action": "resetPasscode",
        }
        assert by_n[5]["status"] == "rejected" and by_n[5]["reasonCode"] == "device_not_found"
        as_csv = await client.call("GET", "/api/batches/STORE-42/items?format=csv")
        assert as_csv.headers["Content-Type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(as_csv.body)))
        assert list(table[0]) == [
            "n",
            "identifierKind",
            "identifierValue",
            "requestId",
            "status",
            "reasonCode",
            "deviceId",
            "platform",
            "action",
        ]
        assert [row["status"] for row in table] == [by_n[n]["status"] for n in range(1, 6)]


async def test_invalid_rows_are_all_named_and_nothing_is_accepted(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        text = "serialNumber,imei\r\nOK-1,\r\n,12\r\n,\r\nA,123456789012345\r\n"
        answer = await post_csv(client, text, "batchId=BAD-1&requestedBy=ops&dryRun=yes")
        body = assert_problem(answer, 400, "invalid-batch")
        named = {(error["row"], error["field"]) for error in body["errors"]}
        assert {(2, "imei"), (3, ""), (4, ""), (None, "dryRun")} <= named
        assert 1 not in {error["row"] for error in body["errors"]}
        assert (await client.call("GET", "/api/batches/BAD-1")).status == 404

        json_answer = await client.call(
            "POST", "/api/batches", body={"batchId": "BAD-2", "requestedBy": "ops", "devices": [{"imei": "1"}, {}]}
        )
        assert [e["row"] for e in assert_problem(json_answer, 400, "invalid-batch")["errors"]] == [1, 2]

        unknown_group = await client.call(
            "POST",
            "/api/batches",
            body={"requestedBy": "ops", "entraGroupId": "00000000-1111-2222-3333-444444444444"},
        )
        errors = assert_problem(unknown_group, 400, "invalid-batch")["errors"]
        assert [e["field"] for e in errors] == ["entraGroupId"]

        too_many = {"requestedBy": "ops", "devices": [{"serialNumber": f"S{n}"} for n in range(10_001)]}
        assert_problem(await client.call("POST", "/api/batches", body=too_many), 413, "payload-too-large")


async def test_a_reused_batch_id_with_another_payload_is_409_and_an_unknown_batch_404(
    product_stack: ProductFactory,
) -> None:
    async with api(product_stack) as client:
        body = {"batchId": "DUP-1", "requestedBy": "ops", "dryRun": True, "devices": [{"intuneDeviceId": ADELE}]}
        assert (await client.call("POST", "/api/batches", body=body)).status == 202
        other = {**body, "devices": [{"intuneDeviceId": WINDOWS_PC}]}
        assert_problem(await client.call("POST", "/api/batches", body=other), 409, "batch-conflict")
        assert_problem(await client.call("GET", "/api/batches/NOPE"), 404, "unknown-batch")
        state = await wait_done(client, "DUP-1")
        assert state["counts"] == {"dry_run": 1}


async def test_a_group_batch_resets_each_managed_device_of_its_members_once(product_stack: ProductFactory) -> None:
    async with api(product_stack) as client:
        body = {"batchId": "GROUP-1", "requestedBy": "ops", "entraGroupId": STORE_GROUP_ID, "dryRun": True}
        accepted = await client.call("POST", "/api/batches", body=body)
        assert accepted.status == 202 and accepted.body["items"] is None  # known once expanded
        state = await wait_done(client, "GROUP-1")
        rows = (await client.call("GET", "/api/batches/GROUP-1/items")).body["items"]
        identifiers = [(row["identifierKind"], row["identifierValue"]) for row in rows]
        # Device members by Entra deviceId (the nested group's too), then the user's devices that are
        # not already items: Johanna's Pixel is both, and is one item.
        assert identifiers == [
            ("azureAdDeviceId", "c23200a4-e69b-4e79-a004-861c7e82afc1"),
            ("azureAdDeviceId", JOHANNA_AAD),
            ("azureAdDeviceId", ORPHAN_DEVICE_ID),
            ("azureAdDeviceId", "5d8e6ddf-db87-4ed9-8381-97f0344e7650"),
            ("intuneDeviceId", WINDOWS_PC),
        ]
        assert state["counts"] == {"dry_run": 3, "rejected": 1, "unsupported": 1}
        assert rows[2]["reasonCode"] == "device_not_found"
        graph_reads = [call["route"] for call in client.stack.sim.state.calls]
        assert {"group", "groupMembers", "userDevices"} <= set(graph_reads)  # through Graph, as Intune


async def test_the_batch_queue_takes_batches_from_upstream_and_rejects_invalid_ones(
    product_stack: ProductFactory,
) -> None:
    async with product_stack() as stack:
        queue = stack.settings["RESET_BATCHES_QUEUE"]
        batch = {
            "batchId": "Q-1",
            "requestedBy": "itsm",
            "dryRun": True,
            "devices": [{"intuneDeviceId": ADELE}, {"serialNumber": ALEX_IPHONE_SERIAL}],
        }
        await stack.send(batch, queue=queue)
        await stack.send({"batchId": "Q-2", "requestedBy": "itsm", "devices": [{"imei": "x"}]}, queue=queue)
        await wait_batch_event(stack, "Q-1")
        finals = item_finals(stack, "Q-1")
        assert {data["status"] for data in finals.values()} == {"dry_run"} and len(finals) == 2
        rejected = [e for e in stack.events if e["type"] == "intune.passcode-reset-batch.rejected"]
        assert [e["subject"] for e in rejected] == ["Q-2"]
        assert rejected[0]["data"]["errors"][0]["row"] == 1
        items_of_q2 = [
            e
            for e in stack.events
            if e["type"].startswith("intune.passcode-reset.") and e["data"].get("batchId") == "Q-2"
        ]
        assert not items_of_q2


async def test_a_host_killed_while_releasing_neither_loses_nor_duplicates_an_item(
    azurite: Any, sim: Any, tmp_path: Path
) -> None:
    """A host process SIGKILLed in the middle of releasing a batch, then a new one: every item once."""
    from azure.storage.blob.aio import ContainerClient
    from azure.storage.queue.aio import QueueServiceClient

    from bench.stack import host_environment, launch, write_host_json
    from shared.adapters.batch_store import BATCH_CONTAINER, BlobBatchStore

    items = 150  # released about 30 at a time (3 s of Intune's 10 actions/s): several rounds
    suffix = uuid.uuid4().hex[:8]
    env = host_environment(
        azurite,
        sim.url,
        GRAPH_TOKEN=sim.token,
        RESET_REQUESTS_QUEUE=f"kreq-{suffix}",
        RESET_RESULTS_QUEUE=f"kres-{suffix}",
        RESET_FOLLOWUPS_QUEUE=f"kfup-{suffix}",
        RESET_BATCHES_QUEUE=f"kbat-{suffix}",
        RESET_LEDGER_TABLE=f"Kill{suffix}",
    )
    host_json = write_host_json(tmp_path / "host.json", maxPollingInterval="00:00:00.200")
    command = ["-m", "bench.soak_host", "--host-json", str(host_json), "--lease-seconds", "3"]
    ready = r"host listening on (\S+)"
    first = await asyncio.to_thread(launch, command, env, ready, tmp_path / "host-1.log")
    conn = azurite.connection_string
    devices = [{"serialNumber": f"GONE-{n:04d}"} for n in range(items)]  # each ends device_not_found
    body = {"batchId": "CRASH-1", "requestedBy": "ops", "dryRun": True, "devices": devices}
    headers = {"x-functions-key": env["DEVSTACK_FUNCTION_KEY"]}
    second = None
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.post(f"{first.url}/api/batches", json=body) as answer:
                assert answer.status == 202
            async with ContainerClient.from_connection_string(conn, BATCH_CONTAINER) as container:
                store = BlobBatchStore(container)
                for _ in range(400):
                    record = await store.get("CRASH-1")
                    if record is not None and record.cursor > 0:
                        break
                    await asyncio.sleep(0.02)
                first.process.kill()  # SIGKILL: no shutdown, leases left to expire
                await asyncio.to_thread(first.process.wait)
                at_crash = await store.get("CRASH-1")
                assert at_crash is not None and 0 < at_crash.cursor < items, at_crash
            second = await asyncio.to_thread(launch, command, env, ready, tmp_path / "host-2.log")
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                async with http.get(f"{second.url}/api/batches/CRASH-1") as answer:
                    state = await answer.json()
                if state["state"] == "done":
                    break
                await asyncio.sleep(0.5)
        assert state["counts"] == {"rejected": items} and state["final"] == items
        events: list[dict[str, Any]] = []
        async with QueueServiceClient.from_connection_string(conn) as service:
            results = service.get_queue_client(env["RESET_RESULTS_QUEUE"])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not any(e["type"] == BATCH_DONE for e in events):
                page = [m async for m in results.receive_messages(messages_per_page=32, max_messages=32)]
                for message in page:
                    events.append(json.loads(message.content))
                    await results.delete_message(message)
                if not page:
                    await asyncio.sleep(0.3)
        finals: dict[str, set[str]] = {}
        for event in events:
            if event["type"].startswith("intune.passcode-reset.") and event["data"]["status"] in FINAL_STATUSES:
                finals.setdefault(event["data"]["requestId"], set()).add(event["id"])
        assert sorted(finals) == sorted(f"CRASH-1.{n}" for n in range(1, items + 1))  # none lost
        assert all(len(ids) == 1 for ids in finals.values())  # none twice (a republication keeps its id)
        assert len({e["id"] for e in events if e["type"] == BATCH_DONE}) == 1
    finally:
        for host in (first, second):
            if host is not None:
                await asyncio.to_thread(host.stop)


async def test_a_batch_waits_for_one_approval_which_releases_its_items_past_rules_and_guardrails(
    product_stack: ProductFactory,
) -> None:
    held = {"APPROVAL_REQUIRED": "batch", "GUARDRAIL_MAX_ACTIONS_PER_HOUR": "1"}
    async with api(product_stack, **held) as client:
        devices = [{"intuneDeviceId": ADELE}, {"serialNumber": ALEX_IPHONE_SERIAL}, {"intuneDeviceId": WINDOWS_PC}]
        body = {"batchId": "APPROVE-1", "requestedBy": "lead@contoso.com", "devices": devices}
        assert (await client.call("POST", "/api/batches", body=body)).status == 202
        await client.stack.settle(2.0)
        waiting = await client.call("GET", "/api/batches/APPROVE-1")
        assert (waiting.body["state"], waiting.body["counts"]) == ("awaiting_approval", {"pending": 3})
        assert not [e for e in client.stack.events if e["data"].get("batchId") == "APPROVE-1"]  # nothing ran

        path = "/api/batches/APPROVE-1/approval"
        same = await client.call("POST", path, body={"decision": "approve", "approver": "LEAD@contoso.com"})
        assert_problem(same, 403, "same-person")
        approved = await client.call("POST", path, body={"decision": "approve", "approver": "cab@contoso.com"})
        assert approved.status == 200 and approved.body["state"] == "running"
        again = await client.call("POST", path, body={"decision": "deny", "approver": "cab@contoso.com"})
        assert_problem(again, 409, "not-awaiting-approval")

        state = await wait_done(client, "APPROVE-1")
        # Two actions with a guardrail of one per hour: an approved batch's items are not held.
        assert state["counts"] == {"completed": 2, "unsupported": 1}
        await wait_batch_event(client.stack, "APPROVE-1")
        finals = item_finals(client.stack, "APPROVE-1")
        assert {data["approval"]["by"] for data in finals.values()} == {"cab@contoso.com"}
        assert_problem(
            await client.call("POST", "/api/batches/NOPE/approval", body={"decision": "approve", "approver": "x"}),
            404,
            "unknown-batch",
        )


async def test_a_denied_batch_ends_every_item_rejected_without_a_graph_call(product_stack: ProductFactory) -> None:
    async with api(product_stack, APPROVAL_REQUIRED="batch") as client:
        devices = [{"intuneDeviceId": ADELE}, {"serialNumber": "ANY-SERIAL"}]
        body = {"batchId": "DENY-1", "requestedBy": "lead@contoso.com", "devices": devices}
        assert (await client.call("POST", "/api/batches", body=body)).status == 202
        calls_before = len(client.stack.sim.state.calls)
        denial = {"decision": "deny", "approver": "cab@contoso.com", "comment": "not in the change window"}
        assert (await client.call("POST", "/api/batches/DENY-1/approval", body=denial)).status == 200
        state = await wait_done(client, "DENY-1")
        assert state["counts"] == {"rejected": 2}
        await wait_batch_event(client.stack, "DENY-1")
        finals = item_finals(client.stack, "DENY-1")
        assert {data["reason"]["code"] for data in finals.values()} == {"approval_denied"}
        assert all("not in the change window" in data["reason"]["message"] for data in finals.values())
        assert len(client.stack.sim.state.calls) == calls_before  # no device was read or reset
