"""`python -m ops`: the operations CLI (docs/operations.md).

Exit codes: 0 done, 1 nothing found / nothing to do / declined, 2 usage or configuration error
(the message names the option or the setting).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from devstack.settings import SettingsError as SettingsFileError
from ops import approvals, batch
from ops.replay import (
    REPLAYABLE_STATUSES,
    ReplayItem,
    execute_replay,
    inspect_poison,
    move_poison,
    plan_replay,
    replay_id,
)
from ops.selection import (
    REASON_CODES,
    Selection,
    UsageError,
    expand_reasons,
    expand_statuses,
    parse_moment,
    reason_code,
)
from ops.store import OpsStore, operator_settings
from ops.views import RequestView, render_detail, render_table, replay_origin, write_audit
from shared.core.clock import iso, utcnow
from shared.core.contract import REQUEST_ID_PATTERN
from shared.core.lifecycle import LedgerRecord
from shared.settings import Settings, SettingsError

OK, NOTHING, USAGE = 0, 1, 2

_EPILOG = """\
settings: the environment first, then the Values of local.settings.json (--settings), like the app.
In Azure: AzureWebJobsStorage__queueServiceUri and __tableServiceUri, signed in with `az login`.
exit codes: 0 done, 1 nothing found or nothing to do, 2 usage or configuration error.
"""


@dataclass(frozen=True)
class Console:
    out: TextIO
    err: TextIO
    stdin: TextIO

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def note(self, text: str) -> None:
        self.err.write(text + "\n")

    def confirm(self, question: str) -> bool:
        self.err.write(f"{question} [y/N] ")
        self.err.flush()
        return self.stdin.readline().strip().lower() in ("y", "yes")


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    console = Console(stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin)
    parser = build_parser()
    try:
        with redirect_stdout(console.out), redirect_stderr(console.err):
            args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error argparse has already explained (2)
        return exc.code if isinstance(exc.code, int) else USAGE
    environment = os.environ if env is None else env
    if getattr(args, "by", "") is None:
        args.by = environment.get("USER") or environment.get("USERNAME") or "unknown"
    try:
        command = args.prepare(args, utcnow())
        settings = operator_settings(environment, args.settings or None)
    except UsageError as exc:
        console.note(f"ops {args.command}: {exc}")
        return USAGE
    except (SettingsError, SettingsFileError) as exc:
        console.note(f"ops: {exc}")
        return USAGE
    try:
        return asyncio.run(_run(command, settings, console))
    except ResourceNotFoundError as exc:
        error_code = getattr(exc, "error_code", None)
        code = str(getattr(error_code, "value", error_code) or "not found")
        console.note(
            f"ops: {code}: check RESET_LEDGER_TABLE ({settings.ledger_table}), RESET_REQUESTS_QUEUE, "
            "RESET_FOLLOWUPS_QUEUE and AzureWebJobsStorage: they must name the deployment's table and queues"
        )
    except ClientAuthenticationError as exc:
        console.note(f"ops: storage sign-in failed ({_first_line(exc)}); run `az login` or set AzureWebJobsStorage")
    except HttpResponseError as exc:
        if exc.status_code == 403:
            console.note(
                "ops: storage denied access (403): reading needs Storage Table Data Reader, replay needs Storage "
                "Table Data Contributor and Storage Queue Data Contributor on the storage account"
            )
        else:
            console.note(f"ops: storage error {exc.status_code}: {_first_line(exc)}")
    except ServiceRequestError as exc:
        console.note(f"ops: cannot reach storage ({_first_line(exc)}); check AzureWebJobsStorage")
    return USAGE


async def _run(command: Any, settings: Settings, console: Console) -> int:
    async with OpsStore(settings) as store:
        result: int = await command(store, console)
        return result


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


# ====================================================================== the parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--settings",
        metavar="FILE",
        default="local.settings.json",
        help="local.settings.json whose Values fill in settings missing from the environment "
        "(default: %(default)s in the current directory; '' for none)",
    )
    parser = argparse.ArgumentParser(
        prog="python -m ops",
        description="Operate the Intune passcode reset app: inspect the request ledger, replay failed "
        "requests, export the audit trail.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    show = commands.add_parser("show", parents=[common], help="one request's full history from the ledger")
    show.add_argument("request_id", metavar="REQUEST_ID")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(prepare=_prepare_show)

    listing = commands.add_parser(
        "list", parents=[common], help="requests by status, reason and last-update time, newest first"
    )
    _add_filters(listing)
    listing.add_argument("--limit", type=_positive, default=50, help="at most this many rows (default 50)")
    listing.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    listing.set_defaults(prepare=_prepare_list)

    replay = commands.add_parser(
        "replay",
        parents=[common],
        help="re-submit failed requests as new requests, or move poison messages back (dry run by default)",
        description="Re-submit failed/timed_out requests as new requests <id>-r1 (same payload and correlationId), "
        "selected by REQUEST_ID or by --since/--until/--reason; or, with --poison, move messages parked in the "
        "poison queues back to the queues they came from. Shows the plan and changes nothing without --execute.",
    )
    replay.add_argument("request_ids", nargs="*", metavar="REQUEST_ID", help="failed requests to replay")
    replay.add_argument("--since", help="failed requests last updated at or after this time (30m, 1h, 7d, ISO)")
    replay.add_argument("--until", help="... and before this time (default: now)")
    replay.add_argument("--reason", action="append", metavar="CODE", help=f"only these reason codes ({_codes()})")
    replay.add_argument("--poison", action="store_true", help="move messages from the -poison queues back instead")
    replay.add_argument(
        "--repeat-action",
        action="store_true",
        help="also replay requests whose action already reached Intune (resets the device again)",
    )
    replay.add_argument("--limit", type=_positive, default=50, help="act on at most this many (default 50)")
    replay.add_argument("--execute", action="store_true", help="act; without it this is a dry run")
    replay.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    replay.add_argument("--by", metavar="NAME", help="operator recorded in the new request's history (default: $USER)")
    replay.add_argument("--json", action="store_true", help="machine-readable output")
    replay.set_defaults(prepare=_prepare_replay)

    audit = commands.add_parser(
        "audit",
        parents=[common],
        help="export who asked for what and the outcome, for requests created in a time range",
    )
    audit.add_argument("--since", required=True, help="requests created at or after this time (7d, ISO)")
    audit.add_argument("--until", help="... and before this time (default: now)")
    audit.add_argument("--format", choices=("csv", "jsonl"), default="csv", help="default csv")
    audit.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")
    audit.set_defaults(prepare=_prepare_audit)
    approvals.add_commands(commands, common, _check_request_id)
    batch.add_commands(commands, common)
    return parser


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status",
        action="append",
        metavar="S",
        help="status or ledger state (queued, processing, acting, submitted, completed, failed, ...); "
        "'open' = not final, 'final' = final; repeat or comma-separate",
    )
    parser.add_argument("--reason", action="append", metavar="CODE", help=f"reason code ({_codes()})")
    parser.add_argument("--since", help="last updated at or after (30m, 1h, 7d, 2w or ISO 8601; naive = UTC)")
    parser.add_argument("--until", help="last updated before (same forms)")


def _codes() -> str:
    return ", ".join(REASON_CODES)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _moment(text: str | None, now: datetime, option: str) -> datetime | None:
    return parse_moment(text, now, option) if text else None


def _check_request_id(request_id: str) -> str:
    if not re.fullmatch(REQUEST_ID_PATTERN, request_id):
        raise UsageError(f"{request_id!r} is not a requestId (1-128 of A-Z a-z 0-9 . _ : -)")
    return request_id


# ====================================================================== show


def _prepare_show(args: argparse.Namespace, now: datetime) -> Any:
    request_id = _check_request_id(args.request_id)

    async def show(store: OpsStore, console: Console) -> int:
        record = await store.get(request_id)
        if record is None:
            console.note(f"ops show: no request {request_id!r} in ledger table {store.settings.ledger_table}")
            return NOTHING
        replayed_as = None
        successor = await store.ledger.get(replay_id(request_id))
        if successor is not None and replay_origin(successor) == request_id:
            replayed_as = {"requestId": successor.request_id, "status": successor.state}
        detail = RequestView.of(record).detail(replay_of=replay_origin(record), replayed_as=replayed_as)
        if args.json:
            console.say(json.dumps(detail, indent=2, ensure_ascii=False))
        else:
            render_detail(detail, console.out)
        return OK

    return show


# ====================================================================== list


def _prepare_list(args: argparse.Namespace, now: datetime) -> Any:
    selection = Selection(
        statuses=expand_statuses(args.status),
        reasons=expand_reasons(args.reason),
        since=_moment(args.since, now, "--since"),
        until=_moment(args.until, now, "--until"),
    )

    async def list_requests(store: OpsStore, console: Console) -> int:
        records = sorted(await store.records(selection), key=lambda r: r.updated_at, reverse=True)
        views = [RequestView.of(record) for record in records[: args.limit]]
        if args.json:
            console.say(json.dumps([view.summary() for view in views], indent=2, ensure_ascii=False))
        elif views:
            render_table(views, console.out)
        if not records:
            console.note("no matching requests")
            return NOTHING
        if len(records) > len(views):
            console.note(f"{len(views)} of {len(records)} matching requests shown; raise --limit for more")
        return OK

    return list_requests


# ====================================================================== replay


def _prepare_replay(args: argparse.Namespace, now: datetime) -> Any:
    ids = [_check_request_id(request_id) for request_id in args.request_ids]
    reasons = expand_reasons(args.reason)
    if args.poison and (ids or args.since or args.until or reasons or args.repeat_action):
        raise UsageError("--poison moves poison-queue messages; it takes no REQUEST_ID, time or reason filters")
    if ids and (args.since or args.until):
        raise UsageError("give REQUEST_IDs or --since/--until, not both")
    if not (ids or args.since or args.poison):
        raise UsageError("name what to replay: REQUEST_ID..., or --since (with --until/--reason), or --poison")
    operator = "".join(c for c in args.by if c.isprintable())[:64] or "unknown"
    if args.poison:
        return _poison_command(args)
    selection = Selection(
        statuses=REPLAYABLE_STATUSES,
        reasons=reasons,
        since=_moment(args.since, now, "--since"),
        until=_moment(args.until, now, "--until"),
    )

    async def replay(store: OpsStore, console: Console) -> int:
        missing: list[str] = []
        if ids:
            sources = []
            for request_id in dict.fromkeys(ids):
                record = await store.get(request_id)
                if record is None:
                    missing.append(request_id)
                else:
                    sources.append(record)
        else:
            sources = sorted(await store.records(selection), key=lambda r: r.updated_at)
        items = await plan_replay(store, sources, repeat_action=args.repeat_action)
        if reasons:
            items = [
                item if reason_code(item.source) in reasons else _skipped(item, "reason code not selected")
                for item in items
            ]
        actionable = [item for item in items if item.verdict != "skip"]
        beyond = actionable[args.limit :]
        actionable = actionable[: args.limit]
        if beyond:
            kept = {id(item) for item in actionable}
            items = [
                item
                if item.verdict == "skip" or id(item) in kept
                else _skipped(item, f"beyond --limit {args.limit}")
                for item in items
            ]

        if not args.json:
            _render_plan(items, missing, console)
        if not actionable:
            if args.json:
                _say_json(console, "ledger", items, missing, executed=False)
            console.note("nothing to replay")
            return NOTHING
        if not args.execute:
            if args.json:
                _say_json(console, "ledger", items, missing, executed=False)
            console.note(f"dry run: nothing changed; add --execute to replay {len(actionable)} request(s)")
            return OK
        question = (
            f"Re-submit {len(actionable)} request(s) as new requests on {store.settings.requests_queue}?"
        )
        if not args.yes and not console.confirm(question):
            console.note("declined: nothing changed")
            return NOTHING
        done = []
        stamp = utcnow()
        for item in actionable:
            result = await execute_replay(store, item, stamp, operator)
            done.append(result)
            if not args.json:
                console.say(f"{item.source.request_id}: {result.why}")
        if args.json:
            replaced = {r.source.request_id: r for r in done}
            _say_json(console, "ledger", [replaced.get(i.source.request_id, i) for i in items], missing, executed=True)
        return OK

    return replay


def _skipped(item: ReplayItem, why: str) -> ReplayItem:
    return ReplayItem(item.source, "skip", why, item.new_id)


def _render_plan(items: list[ReplayItem], missing: list[str], console: Console) -> None:
    rows = [["REQUEST ID", "STATUS", "REASON", "NEW REQUEST ID", "PLAN"]]
    for item in items:
        plan = item.verdict if item.verdict != "skip" else f"skip: {item.why}"
        if item.verdict == "resend":
            plan = f"resend: {item.why}"
        rows.append(
            [item.source.request_id, item.source.state, reason_code(item.source) or "", item.new_id or "", plan]
        )
    for request_id in missing:
        rows.append([request_id, "", "", "", "skip: not in the ledger"])
    if len(rows) == 1:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        console.say("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)) + "  " + row[4])


def _say_json(console: Console, mode: str, items: list[ReplayItem], missing: list[str], *, executed: bool) -> None:
    document = {
        "mode": mode,
        "executed": executed,
        "items": [item.as_dict() for item in items],
        "notFound": missing,
    }
    console.say(json.dumps(document, indent=2))


def _poison_command(args: argparse.Namespace) -> Any:
    async def replay_poison(store: OpsStore, console: Console) -> int:
        queues = await inspect_poison(store)
        total = sum(queue.approximate_count for queue in queues)
        if args.json and (total == 0 or not args.execute):
            console.say(json.dumps({"mode": "poison", "executed": False, "queues": [
                {"queue": q.name, "target": q.target, "approximateCount": q.approximate_count,
                 "messages": [m.as_dict() for m in q.peeked]} for q in queues
            ]}, indent=2))
        elif not args.json:
            for queue in queues:
                console.say(f"{queue.name} -> {queue.target}: about {queue.approximate_count} message(s)")
                for message in queue.peeked:
                    console.say(
                        f"  requestId={message.request_id or '?'}  dequeued {message.dequeue_count or '?'}x  "
                        f"inserted {message.inserted_on or '?'}"
                    )
        if total == 0:
            console.note(
                "the poison queues are empty: the running app settles poison messages itself (failed/"
                "retries_exhausted); re-submit those requests with `python -m ops replay --since ...`"
            )
            return NOTHING
        if not args.execute:
            console.note(f"dry run: nothing changed; add --execute to move up to {min(total, args.limit)} message(s)")
            return OK
        if not args.yes and not console.confirm(
            f"Move up to {min(total, args.limit)} message(s) back to their queues? Stop the app first if its "
            "poison triggers are failing."
        ):
            console.note("declined: nothing changed")
            return NOTHING
        moved = await move_poison(
            store,
            args.limit,
            on_moved=None
            if args.json
            else lambda m: console.say(f"moved requestId={m.request_id or '?'} {m.queue} -> {m.target}"),
        )
        if args.json:
            console.say(json.dumps({"mode": "poison", "executed": True, "moved": [m.as_dict() for m in moved]},
                                   indent=2))
        console.note(f"moved {len(moved)} message(s)")
        return OK if moved else NOTHING

    return replay_poison


# ====================================================================== audit


def _prepare_audit(args: argparse.Namespace, now: datetime) -> Any:
    since = parse_moment(args.since, now, "--since")
    until = _moment(args.until, now, "--until") or now
    selection = Selection(since=since, until=until, time_field="CreatedAt")

    async def audit(store: OpsStore, console: Console) -> int:
        records = sorted(await store.records(selection), key=_created_order)
        views = [RequestView.of(record) for record in records]
        if args.output:
            count = await asyncio.to_thread(_write_audit_file, Path(args.output), views, args.format)
            where = args.output
        else:
            count = write_audit(views, console.out, args.format)
            where = "standard output"
        console.note(f"{count} request(s) created in [{iso(since)}, {iso(until)}) written to {where}")
        return OK if count else NOTHING

    return audit


def _write_audit_file(path: Path, views: list[RequestView], file_format: str) -> int:
    with path.open("w", encoding="utf-8", newline="") as file:
        return write_audit(views, file, file_format)


def _created_order(record: LedgerRecord) -> tuple[datetime, str]:
    return record.created_at, record.request_id
