"""What an operator reads: one request in detail, a table of requests, audit rows.

Everything comes from the ledger record (docs/contract.md#guarantees it holds the request, the
resolved device and the recorded outcome event); nothing here calls Graph. The ledger never holds
a passcode, and these views add no setting, token or connection string.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from ops.selection import FINAL_STATUSES, last_event_data
from shared.core.clock import iso
from shared.core.lifecycle import LedgerRecord

AUDIT_FIELDS = (
    "createdAt",
    "updatedAt",
    "requestId",
    "ticketId",
    "requestedBy",
    "requestReason",
    "correlationId",
    "requestedDevice",
    "deviceId",
    "deviceName",
    "userPrincipalName",
    "platform",
    "action",
    "scope",
    "dryRun",
    "status",
    "final",
    "reasonCode",
    "reasonMessage",
    "attempts",
    "submittedAt",
    "submittedBy",
    "approvalDecision",
    "approvedBy",
    "approvedAt",
)

# Spreadsheet applications run a cell that starts with one of these as a formula (CSV injection).
_FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class RequestView:
    """A ledger record with its JSON columns decoded."""

    record: LedgerRecord
    request: dict[str, Any]
    device: dict[str, Any]
    event: dict[str, Any] | None
    event_data: dict[str, Any]

    @classmethod
    def of(cls, record: LedgerRecord) -> RequestView:
        event = _json_object(record.last_event_json)
        return cls(
            record=record,
            request=_json_object(record.request_json) or {},
            device=_json_object(record.device_json) or {},
            event=event,
            event_data=last_event_data(record) or {},
        )

    @property
    def status(self) -> str:
        return self.record.state

    @property
    def reason(self) -> dict[str, Any]:
        reason = self.event_data.get("reason")
        return reason if isinstance(reason, dict) else {}

    @property
    def requested_device(self) -> str:
        """The identifier the caller gave, as `kind=value`."""
        ref = self.request.get("device")
        if not isinstance(ref, dict):
            return ""
        return ", ".join(f"{kind}={value}" for kind, value in ref.items() if value is not None)

    @property
    def device_label(self) -> str:
        return str(self.device.get("name") or self.record.device_id or "")

    def summary(self) -> dict[str, Any]:
        """One row: what `list --json` prints and the audit export writes."""
        record = self.record
        return {
            "createdAt": iso(record.created_at),
            "updatedAt": iso(record.updated_at),
            "requestId": record.request_id,
            "ticketId": record.ticket_id,
            "requestedBy": record.requested_by,
            "requestReason": self.request.get("reason"),
            "correlationId": self.request.get("correlationId"),
            "requestedDevice": self.requested_device or None,
            "deviceId": record.device_id,
            "deviceName": self.device.get("name"),
            "userPrincipalName": self.device.get("userPrincipalName"),
            "platform": record.platform,
            "action": record.action,
            "scope": record.scope,
            "dryRun": bool(self.request.get("dryRun", False)),
            "status": self.status,
            "final": record.final,
            "reasonCode": self.reason.get("code"),
            "reasonMessage": self.reason.get("message"),
            "attempts": record.attempt,
            "submittedAt": iso(record.submitted_at) if record.submitted_at else None,
            # Accountability (docs/contract.md#accountable-caller, #approval-api).
            "submittedBy": record.submitted_by,
            "approvalDecision": (record.approval or {}).get("decision"),
            "approvedBy": (record.approval or {}).get("by"),
            "approvedAt": (record.approval or {}).get("at"),
        }

    def detail(self, replay_of: str | None = None, replayed_as: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything the ledger knows about the request: what `show --json` prints."""
        record = self.record
        return {
            **self.summary(),
            "deferrals": record.deferrals,
            "actionStartedAt": iso(record.action_started_at) if record.action_started_at else None,
            "request": self.request,
            "device": self.device or None,
            "history": list(record.history),
            "lastEvent": self.event,
            "replayOf": replay_of,
            "replayedAs": replayed_as,
        }


def replay_origin(record: LedgerRecord) -> str | None:
    """The request this one replays, from the note the operations CLI writes on creation."""
    for entry in record.history[:1]:
        note = str(entry.get("note") or "")
        if note.startswith("replay of "):
            return note.removeprefix("replay of ").split(" ", 1)[0]
    return None


# ---------------------------------------------------------------- show


def render_detail(detail: dict[str, Any], out: TextIO) -> None:
    reason = f"{detail['reasonCode']}: {detail['reasonMessage']}" if detail["reasonCode"] else ""
    final = "final" if detail["final"] else ("in progress" if detail["status"] not in FINAL_STATUSES else "")
    device = detail["device"] or {}
    flags = [name for name in ("dryRun", "allowRemoteLock") if detail["request"].get(name)]
    lines: list[tuple[str, Any]] = [
        ("Request", detail["requestId"]),
        ("Status", f"{detail['status']} ({final})" if final else detail["status"]),
        ("Reason", reason),
        ("Requested by", detail["requestedBy"]),
        ("Ticket", detail["ticketId"]),
        ("Correlation id", detail["correlationId"]),
        ("Request reason", detail["requestReason"]),
        ("Asked for device", detail["requestedDevice"]),
        ("Expected user", detail["request"].get("expectedUserPrincipalName")),
        ("Options", ", ".join(flags)),
        ("Device", _device_line(detail["deviceId"], device)),
        ("Platform", detail["platform"]),
        ("Action", f"{detail['action']} ({detail['scope']})" if detail["action"] else ""),
        ("Attempts", f"{detail['attempts']} action call(s), {detail['deferrals']} deferral(s)"),
        ("Created", detail["createdAt"]),
        ("Action started", detail["actionStartedAt"]),
        ("Submitted", detail["submittedAt"]),
        ("Updated", detail["updatedAt"]),
        ("Replay of", detail["replayOf"]),
        ("Replayed as", _replayed_as_line(detail["replayedAs"])),
    ]
    event = detail["lastEvent"]
    if event:
        lines.append(("Last event", f"{event.get('type')} id {event.get('id')} at {event.get('time')}"))
    width = max(len(label) for label, _ in lines) + 2
    for label, value in lines:
        if value not in (None, ""):
            out.write(f"{label + ':':<{width}}{value}\n")
    out.write("History:\n")
    for entry in detail["history"]:
        line = f"  {entry.get('time', '')}  {entry.get('state', ''):<12}  {entry.get('note') or ''}"
        out.write(line.rstrip() + "\n")


def _device_line(device_id: str | None, device: dict[str, Any]) -> str:
    if not device_id and not device:
        return ""
    parts = [str(device.get("id") or device_id)]
    if device.get("name"):
        parts.append(f'"{device["name"]}"')
    system = " ".join(str(device[key]) for key in ("operatingSystem", "osVersion") if device.get(key))
    if system:
        parts.append(system)
    if device.get("userPrincipalName"):
        parts.append(f"user {device['userPrincipalName']}")
    return ", ".join(parts)


def _replayed_as_line(replayed_as: dict[str, Any] | None) -> str:
    if not replayed_as:
        return ""
    return f"{replayed_as['requestId']} ({replayed_as['status']})"


# ---------------------------------------------------------------- list


LIST_COLUMNS = (
    ("UPDATED (UTC)", "updatedAt"),
    ("REQUEST ID", "requestId"),
    ("STATUS", "status"),
    ("REASON", "reasonCode"),
    ("PLATFORM", "platform"),
    ("ACTION", "action"),
    ("ATT", "attempts"),
    ("DEVICE", "device"),
    ("REQUESTED BY", "requestedBy"),
    ("TICKET", "ticketId"),
)


def render_table(views: Sequence[RequestView], out: TextIO) -> None:
    rows = []
    for view in views:
        row = view.summary()
        row["device"] = view.device_label
        rows.append(["" if row[key] is None else str(row[key]) for _, key in LIST_COLUMNS])
    headers = [title for title, _ in LIST_COLUMNS]
    widths = [max([len(headers[i])] + [len(row[i]) for row in rows]) for i in range(len(headers))]
    for cells in (headers, *rows):
        out.write("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip() + "\n")


# ---------------------------------------------------------------- audit


def write_audit(views: Iterable[RequestView], out: TextIO, file_format: str) -> int:
    """Write the audit rows as CSV (header first, formula-safe cells) or JSON Lines."""
    count = 0
    if file_format == "csv":
        writer = csv.DictWriter(out, fieldnames=AUDIT_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for view in views:
            writer.writerow({key: _csv_cell(value) for key, value in view.summary().items()})
            count += 1
    else:
        for view in views:
            out.write(json.dumps(view.summary(), ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    return count


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_TRIGGERS) else text


def _json_object(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
