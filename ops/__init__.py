"""Operations CLI for the Intune passcode reset app: `python -m ops show|list|replay|audit`.

Operator tooling over the app's storage (the request ledger and the queues); never deployed
(.funcignore). The runbook is docs/operations.md.
"""

from ops.cli import main

__all__ = ["main"]
