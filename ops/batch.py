"""`python -m ops batch submit FILE.csv [--dry-run] [--wait]` and `python -m ops batch status BATCH_ID`
(docs/operations.md#batches): a batch from the operator's workstation, with a live progress bar.

Submission goes through the same use case as `POST /api/batches` (shared/workflow/batches.py):
the same row-by-row validation, idempotency per batchId and item requests `<batchId>.<n>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TextIO

from ops.selection import UsageError
from shared.adapters.batch_store import BATCH_CONTAINER, BlobBatchStore, TableBatchItems
from shared.adapters.storage import StorageQueue
from shared.core.batches import (
    BATCH_ID_PATTERN,
    MAX_BODY_BYTES,
    Batch,
    BatchState,
    GroupMember,
    Pacing,
    TooLarge,
    UserDevice,
    new_batch_id,
    read_batch_csv,
)
from shared.core.clock import utcnow
from shared.core.errors import GraphPermanentError
from shared.workflow.batches import Accepted, BatchServices, BatchView, accept_batch, read_batch

OK, NOTHING, USAGE = 0, 1, 2
CONFLICT = 3
POLL_SECONDS = 2.0


class Console(Protocol):
    out: TextIO

    def say(self, text: str = "") -> None: ...
    def note(self, text: str) -> None: ...


class _NoDirectory:
    """The CLI submits device lists only (a group batch goes through the API or the batch queue)."""

    async def group_exists(self, group_id: str) -> bool:
        raise GraphPermanentError("group batches are submitted through POST /api/batches")

    async def transitive_members(self, group_id: str) -> list[GroupMember]:
        raise GraphPermanentError("not available in the CLI")

    async def user_managed_devices(self, user_id: str) -> list[UserDevice]:
        raise GraphPermanentError("not available in the CLI")


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("batch", help="submit a batch from a CSV file, follow a batch")
    actions = group.add_subparsers(dest="batch_command", required=True, metavar="{submit,status}")
    submit = actions.add_parser("submit", parents=[common], help="submit FILE.csv (a header row of identifier columns)")
    submit.add_argument("file", metavar="FILE.csv")
    submit.add_argument("--dry-run", action="store_true", help="resolve and classify every device, call nothing")
    submit.add_argument("--wait", action="store_true", help="follow the batch with a progress bar until it is done")
    submit.add_argument("--batch-id", help="idempotency key (default: generated)")
    submit.add_argument("--requested-by", help="recorded as requestedBy (default: $USER)")
    submit.add_argument("--ticket-id", help="recorded as ticketId")
    submit.add_argument("--reason", help="recorded as reason")
    submit.add_argument("--allow-remote-lock", action="store_true", help="permit remote lock on macOS")
    submit.set_defaults(prepare=_prepare_submit)
    status = actions.add_parser("status", parents=[common], help="a batch's state and counts")
    status.add_argument("batch_id", metavar="BATCH_ID")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(prepare=_prepare_status)


def services(store: Any) -> BatchServices:
    settings = store.settings
    return BatchServices(
        store=BlobBatchStore(store.container(BATCH_CONTAINER)),
        items=TableBatchItems(store.table),
        ledger=store.ledger,
        requests_queue=StorageQueue(store.queue(settings.requests_queue), settings.requests_queue),
        batches_queue=StorageQueue(store.queue(settings.batches_queue), settings.batches_queue),
        directory=_NoDirectory(),
        publisher=StorageQueue(store.queue(settings.results_queue), settings.results_queue),
        clock=utcnow,
        pacing=Pacing(rate_per_second=settings.graph_post_budget / settings.graph_budget_window_seconds),
    )


def _prepare_submit(args: argparse.Namespace, now: datetime) -> Any:
    path = Path(args.file)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    if args.batch_id is not None:
        import re

        if not re.fullmatch(BATCH_ID_PATTERN, args.batch_id):
            raise UsageError(f"--batch-id: {args.batch_id!r} is not 1-100 of A-Z a-z 0-9 . _ : -")
    fields = {
        "requestedBy": args.requested_by or os.environ.get("USER") or os.environ.get("USERNAME") or "ops",
        "dryRun": "true" if args.dry_run else "false",
        "allowRemoteLock": "true" if args.allow_remote_lock else "false",
        **({"batchId": args.batch_id} if args.batch_id else {}),
        **({"ticketId": args.ticket_id} if args.ticket_id else {}),
        **({"reason": args.reason} if args.reason else {}),
    }
    parsed = read_batch_csv(raw, fields)
    if isinstance(parsed, TooLarge):
        raise UsageError(f"{path}: {parsed.detail} (at most {MAX_BODY_BYTES} bytes)")
    if isinstance(parsed, list):
        lines = [f"row {e.row}: {e.field or 'row'}: {e.detail}" if e.row else f"{e.field}: {e.detail}" for e in parsed]
        raise UsageError(f"{path}: {len(parsed)} problem(s), nothing submitted\n  " + "\n  ".join(lines[:50]))
    batch: Batch = parsed if parsed.fields.batchId else parsed.with_id(new_batch_id())

    async def submit(store: Any, console: Console) -> int:
        s = services(store)
        result = await accept_batch(batch, s)
        if not isinstance(result, Accepted):
            console.note(f"ops batch submit: batchId {batch.batch_id} was already used for a different batch")
            return CONFLICT
        word = "accepted" if result.created else "already accepted (same file)"
        console.say(f"batch {batch.batch_id} {word}: {result.record.items} devices")
        if not args.wait:
            console.say(f"follow it: python -m ops batch status {batch.batch_id}")
            return OK
        view = await _follow(s, batch.batch_id, console)
        _summary(view, console)
        return OK

    return submit


def _prepare_status(args: argparse.Namespace, now: datetime) -> Any:
    import re

    if not re.fullmatch(BATCH_ID_PATTERN, args.batch_id):
        raise UsageError(f"{args.batch_id!r} is not a batchId (1-100 of A-Z a-z 0-9 . _ : -)")

    async def status(store: Any, console: Console) -> int:
        view = await read_batch(services(store), args.batch_id, details=False)
        if view is None:
            console.note(f"no batch {args.batch_id}")
            return NOTHING
        if args.json:
            console.say(json.dumps(_state(view)))
        else:
            _summary(view, console)
        return OK

    return status


def _state(view: BatchView) -> dict[str, Any]:
    return {
        "batchId": view.record.batch_id,
        "state": view.state.value,
        "items": view.record.items,
        "counts": view.progress.counts,
        "final": view.progress.final,
    }


async def _follow(s: BatchServices, batch_id: str, console: Console) -> BatchView:
    """A live progress bar (final items of all items) until the batch is done."""
    from rich.console import Console as RichConsole
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    terminal = RichConsole(file=console.out)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=terminal, transient=False) as bar:
        task = bar.add_task(f"batch {batch_id}", total=None)
        while True:
            view = await read_batch(s, batch_id, details=False)
            assert view is not None
            counts = " ".join(f"{k}={v}" for k, v in view.progress.counts.items())
            bar.update(
                task,
                total=view.record.items,
                completed=view.progress.final,
                description=f"{batch_id} {view.state.value} {counts}",
            )
            if view.state is BatchState.DONE:
                return view
            await asyncio.sleep(POLL_SECONDS)


def _summary(view: BatchView, console: Console) -> None:
    from rich.console import Console as RichConsole
    from rich.table import Table

    table = Table(
        title=f"batch {view.record.batch_id}: {view.state.value}, {view.progress.final} of "
        f"{view.record.items if view.record.items is not None else '?'} final"
    )
    table.add_column("status")
    table.add_column("items", justify="right")
    for status, count in view.progress.counts.items():
        table.add_row(status, str(count))
    RichConsole(file=console.out, width=100).print(table)
