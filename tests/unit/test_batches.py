"""docs/contract.md#batches, the pure rules: reading a batch row by row, its items, pacing, progress."""

from __future__ import annotations

import json

import pytest

from shared.core.batches import (
    MAX_ITEMS,
    Batch,
    BatchState,
    GroupMember,
    Pacing,
    TooLarge,
    UserDevice,
    group_items,
    item_number,
    item_request,
    new_batch_record,
    progress,
    read_batch_csv,
    read_batch_json,
)
from shared.core.batches import ItemRow as Row
from shared.core.clock import utcnow

GUID = "5c1f9a3e-0d7b-4a63-9d2e-8f1e7b6c4a21"


def body(**fields: object) -> bytes:
    return json.dumps({"requestedBy": "ops@contoso.com", **fields}).encode()


def test_every_invalid_json_row_is_named_by_its_item_number() -> None:
    errors = read_batch_json(
        body(devices=[{"serialNumber": "OK"}, {"imei": "12"}, {}, "x", {"imei": "123456789012345"}])
    )
    assert isinstance(errors, list)
    assert [(e.row, e.field) for e in errors] == [(2, "imei"), (3, ""), (4, "")]


def test_csv_rows_need_exactly_one_cell_and_booleans_are_exactly_true_or_false() -> None:
    text = b"serialNumber,imei\r\nA,\r\n,\r\nB,123456789012345\r\n\r\n"
    errors = read_batch_csv(text, {"requestedBy": "ops", "dryRun": "1"})
    assert isinstance(errors, list)
    assert {(e.row, e.field) for e in errors} == {(None, "dryRun"), (2, ""), (3, "")}
    assert isinstance(read_batch_csv(b"color\r\nred\r\n", {"requestedBy": "ops"}), list)


def test_the_same_list_as_json_or_csv_is_the_same_batch() -> None:
    csv_batch = read_batch_csv(f"intuneDeviceId,serialNumber\r\n{GUID},\r\n,S-1\r\n".encode(), {"requestedBy": "ops"})
    json_batch = read_batch_json(
        json.dumps({"requestedBy": "ops", "devices": [{"intuneDeviceId": GUID}, {"serialNumber": "S-1"}]}).encode()
    )
    assert isinstance(csv_batch, Batch) and isinstance(json_batch, Batch)
    assert csv_batch.payload_hash() == json_batch.payload_hash()
    other = read_batch_json(body(devices=[{"serialNumber": "S-1"}]))
    assert isinstance(other, Batch) and other.payload_hash() != json_batch.payload_hash()


def test_limits_and_exactly_one_source() -> None:
    assert isinstance(read_batch_json(body(devices=[{"serialNumber": "x"}] * (MAX_ITEMS + 1))), TooLarge)
    both = read_batch_json(body(devices=[{"serialNumber": "x"}], entraGroupId=GUID))
    assert isinstance(both, list) and both[0].field == "devices"
    group = read_batch_json(body(entraGroupId="not-a-guid"))
    assert isinstance(group, list) and group[0].field == "entraGroupId"


def test_item_n_is_the_request_batchid_dot_n_with_the_batch_fields() -> None:
    batch = read_batch_json(body(batchId="B.1", ticketId="CHG1", dryRun=True, devices=[{"serialNumber": "S"}]))
    assert isinstance(batch, Batch) and batch.devices is not None
    record = new_batch_record(batch, utcnow())
    assert record.state is BatchState.RUNNING and record.items == 1
    request = item_request(record, 1, batch.devices[0])
    assert (request.requestId, request.ticketId, request.dryRun) == ("B.1.1", "CHG1", True)
    assert item_number("B.1", "B.1.1") == 1
    assert item_number("B", "B.1.1") is None  # batch "B.1"'s item, not batch "B"'s
    assert item_number("B", "B.01") is None


def test_a_group_yields_each_managed_device_once_and_orphans_by_entra_id() -> None:
    members = [
        GroupMember("#microsoft.graph.device", "o1", "11111111-0000-4000-8000-000000000001"),
        GroupMember(
            "#microsoft.graph.device", "o2", "11111111-0000-4000-8000-000000000001"
        ),  # same device again (case)
        GroupMember("#microsoft.graph.user", "u1"),
        GroupMember("#microsoft.graph.group", "g1"),
        GroupMember("#microsoft.graph.servicePrincipal", "s1"),
    ]
    devices = {
        "u1": [
            UserDevice("22222222-0000-4000-8000-000000000001", "11111111-0000-4000-8000-000000000001"),
            UserDevice("22222222-0000-4000-8000-000000000002", None),
            UserDevice("22222222-0000-4000-8000-000000000002", None),
        ]
    }
    refs = group_items(members, devices)
    assert [(r.kind, r.value) for r in refs] == [
        ("azureAdDeviceId", "11111111-0000-4000-8000-000000000001"),
        ("intuneDeviceId", "22222222-0000-4000-8000-000000000002"),
    ]


@pytest.mark.parametrize(
    ("depth", "released", "expected"), [(0, 0, 30), (10, 0, 20), (30, 0, 0), (40, 0, 0), (0, 95, 5)]
)
def test_release_tops_the_request_queue_up_to_its_target_depth(depth: int, released: int, expected: int) -> None:
    batch = read_batch_json(body(devices=[{"serialNumber": f"S{n}"} for n in range(100)]))
    assert isinstance(batch, Batch)
    record = new_batch_record(batch.with_id("B"), utcnow())
    record = record.__class__(**{**record.__dict__, "cursor": released})
    assert Pacing(rate_per_second=10).release_count(record, depth) == expected


def test_progress_counts_items_without_a_record_as_pending() -> None:
    rows = [Row(1, "B.1", "completed"), Row(2, "B.2", "submitted"), Row(3, "B.3", "rejected")]
    done = progress(5, rows)
    assert done.counts == {"completed": 1, "pending": 2, "rejected": 1, "submitted": 1}
    assert (done.final, done.complete) == (2, False)
    assert progress(0, []).complete
