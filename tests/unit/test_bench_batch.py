"""`bench.batch`'s accounting: which storage requests of a run are the confirmation checks'
(the rest is what taking an item to its first outcome costs)."""

from __future__ import annotations

from bench.batch import FOLLOWUPS, Run, confirmation_ops
from bench.stack import LoggedRequest, request_kind

T = 1_800_000_000.0  # the `submitted` event of request R-1


def logged(at: float, kind: str, key: str | None = None) -> LoggedRequest:
    return LoggedRequest(at, kind, key)


def test_an_access_log_line_reads_as_its_kind() -> None:
    line = (
        '127.0.0.1 - - [07/Dec/2026:00:30:46 +0000] "PUT /devstoreaccount1/'
        "PasscodeResets(PartitionKey='one-00000',RowKey='request') HTTP/1.1\" 204 -"
    )
    assert request_kind(line) == "PUT PasscodeResets(key)"


def test_the_confirmation_checks_are_their_queue_and_the_later_ledger_work_of_submitted_requests() -> None:
    run = Run()
    run.first = {"R-1": ("submitted", T), "R-2": ("unsupported", T)}
    requests = [
        # the request path of R-1: its record, its claim, its event and its first check's message
        logged(T - 1, "POST PasscodeResets"),
        logged(T - 1, "PUT PasscodeResets(key)", "R-1"),
        logged(T, "POST passcode-reset-results/messages"),
        logged(T, f"POST {FOLLOWUPS}/messages"),
        logged(T + 5, "GET PasscodeResets(key)", "R-1"),  # a redelivery soon after: the request path
        logged(T + 90, "GET PasscodeResets(key)", "R-2"),  # not submitted: never a check
        # the first check 60 s later: receive, read, not done yet, look again, delete
        logged(T + 60, f"GET {FOLLOWUPS}/messages"),
        logged(T + 60, "GET PasscodeResets(key)", "R-1"),
        logged(T + 60, f"POST {FOLLOWUPS}/messages"),
        logged(T + 60, f"DELETE {FOLLOWUPS}/messages/<id>"),
        # the second: receive, read, done (record written, `completed` published), delete
        logged(T + 120, f"GET {FOLLOWUPS}/messages"),
        logged(T + 120, "GET PasscodeResets(key)", "R-1"),
        logged(T + 120, "PUT PasscodeResets(key)", "R-1"),
        logged(T + 120, "POST passcode-reset-results/messages"),
        logged(T + 120, f"DELETE {FOLLOWUPS}/messages/<id>"),
    ]
    assert confirmation_ops(requests, run, first_check=60) == 4 + 5  # the two checks, nothing else
