"""`python -m ops approvals | approve | deny` (docs/operations.md#approvals): what waits for a human,
how full the guardrail is, and a decision taken from the operator's workstation.

A decision goes through the same use case as `POST /api/resets/{requestId}/approval`
(shared/workflow/approval.py): four eyes, 409 semantics, the ledger history and the events'
`approval`. The operator names themself with `--approver`: like the function-key mode of the API
this is self-asserted, and what protects it is who may write to the storage account (docs/threat-model.md).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any, Protocol, TextIO

from ops.selection import Selection, UsageError
from shared.adapters.eventgrid import OutboxPublisher
from shared.adapters.guardrails import TableGuardrails
from shared.adapters.storage import QueueWorkScheduler, StorageQueue
from shared.bootstrap import policy_from
from shared.core.approvals import NotAwaiting, SamePerson, approval_age
from shared.core.clock import iso, utcnow
from shared.core.device import ActionResult, IntuneDevice
from shared.core.lifecycle import State
from shared.core.platforms import Action
from shared.ports import EventPublisher
from shared.workflow.approval import Decided, UnknownRequest, decide
from shared.workflow.services import Services

OK, NOTHING, USAGE = 0, 1, 2
CONFLICT = 3  # the request is not awaiting approval, or four eyes refused the approver


class Console(Protocol):
    out: TextIO

    def say(self, text: str = "") -> None: ...
    def note(self, text: str) -> None: ...


class Store(Protocol):
    settings: Any
    table: Any
    ledger: Any

    def queue(self, name: str) -> Any: ...
    async def records(self, selection: Selection) -> list[Any]: ...


def add_commands(commands: Any, common: argparse.ArgumentParser, check_request_id: Any) -> None:
    listing = commands.add_parser(
        "approvals", parents=[common], help="requests awaiting approval, oldest first, and the guardrail's hour"
    )
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(prepare=_prepare_approvals)
    for decision, verb in (("approve", "approve: the request goes on"), ("deny", "deny: it ends rejected")):
        parser = commands.add_parser(decision, parents=[common], help=f"{verb} (a request awaiting approval)")
        parser.add_argument("request_id", metavar="REQUEST_ID")
        parser.add_argument(
            "--approver", required=True, help="who decides (recorded; may be neither requestedBy nor submittedBy)"
        )
        parser.add_argument("--comment", help="why (recorded in the ledger and in later events)")
        parser.set_defaults(prepare=_prepare_decision(decision, check_request_id))


def _prepare_approvals(args: argparse.Namespace, now: datetime) -> Any:
    async def approvals(store: Store, console: Console) -> int:
        selection = Selection(statuses=(State.AWAITING_APPROVAL.value,))
        records = sorted(await store.records(selection), key=lambda r: r.held_at or r.updated_at)
        policy = policy_from(store.settings)
        guardrail = None
        if policy.guardrail_max_actions_per_hour > 0:
            counted = await TableGuardrails(store.table, policy).counts(utcnow())
            guardrail = {
                "actionsLastHour": counted.count,
                "limit": counted.limit,
                "full": counted.count >= counted.limit,
            }
        rows = [
            {
                "requestId": r.request_id,
                "heldAt": iso(r.held_at) if r.held_at else None,
                "waitingSeconds": round(approval_age(r, now) or 0),
                "reasonCode": ((r.last_event or {}).get("data", {}).get("reason") or {}).get("code"),
                "platform": r.platform,
                "action": r.action,
                "requestedBy": r.requested_by,
                "submittedBy": r.submitted_by,
                "ticketId": r.ticket_id,
            }
            for r in records
        ]
        if args.json:
            console.say(json.dumps({"guardrail": guardrail, "awaiting": rows}, indent=2, ensure_ascii=False))
        else:
            if guardrail is not None:
                state = "FULL: new requests are held" if guardrail["full"] else "open"
                console.say(
                    f"guardrail: {guardrail['actionsLastHour']} of {guardrail['limit']} action calls "
                    f"in the last hour ({state})"
                )
            else:
                console.say("guardrail: off (GUARDRAIL_MAX_ACTIONS_PER_HOUR=0)")
            for row in rows:
                console.say(
                    f"{row['requestId']}  {row['reasonCode']}  waiting {row['waitingSeconds']} s  "
                    f"{row['platform']} {row['action']}  requestedBy={row['requestedBy']}"
                    + (f" submittedBy={row['submittedBy']}" if row["submittedBy"] else "")
                )
        if not rows:
            console.note("nothing is awaiting approval")
            return NOTHING
        return OK

    return approvals


def _prepare_decision(decision: Any, check_request_id: Any) -> Any:
    def prepare(args: argparse.Namespace, now: datetime) -> Any:
        request_id = check_request_id(args.request_id)
        approver = args.approver.strip()
        if not approver:
            raise UsageError("--approver: name who decides")

        async def decide_command(store: Store, console: Console) -> int:
            result = await decide(_services(store), request_id, decision, approver, args.comment)
            if isinstance(result, UnknownRequest):
                console.note(f"ops {decision}: no request {request_id!r} in ledger table {store.settings.ledger_table}")
                return NOTHING
            if isinstance(result, SamePerson):
                console.note(f"ops {decision}: {result.detail}")
                return CONFLICT
            if isinstance(result, NotAwaiting):
                console.note(f"ops {decision}: {request_id} is not awaiting approval; nothing changed")
                return CONFLICT
            assert isinstance(result, Decided)
            console.say(f"{request_id}: {decision} recorded; now {result.record.state}")
            return OK

        return decide_command

    return prepare


class _NoGraph:
    """A decision never calls Graph (the request queue's worker does, after an approval)."""

    async def get_device(self, device_id: str) -> IntuneDevice | None:
        raise RuntimeError("the operations CLI does not call Graph")

    async def find_devices(self, kind: str, value: str) -> list[IntuneDevice]:
        raise RuntimeError("the operations CLI does not call Graph")

    async def perform(self, device_id: str, action: Action) -> None:
        raise RuntimeError("the operations CLI does not call Graph")

    async def action_results(self, device_id: str) -> list[ActionResult]:
        raise RuntimeError("the operations CLI does not call Graph")


def _services(store: Store) -> Services:
    settings = store.settings
    publisher: EventPublisher = StorageQueue(store.queue(settings.results_queue), settings.results_queue)
    if settings.eventgrid_topic_endpoint:  # the app publishes every event to the outbox too
        outbox = StorageQueue(store.queue(settings.eventgrid_outbox_queue), settings.eventgrid_outbox_queue)
        publisher = OutboxPublisher(publisher, outbox)
    scheduler = QueueWorkScheduler(
        StorageQueue(store.queue(settings.requests_queue), settings.requests_queue),
        StorageQueue(store.queue(settings.followups_queue), settings.followups_queue),
    )
    return Services(
        gateway=_NoGraph(),
        ledger=store.ledger,
        publisher=publisher,
        scheduler=scheduler,
        clock=utcnow,
        policy=policy_from(settings),
    )
