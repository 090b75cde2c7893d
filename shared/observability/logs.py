"""Structured log context: the fields that say which invocation and which request a record belongs to.

Every function invocation opens a `log_context` (invocation id, function name); the use cases add
what they learn (`bind`: requestId, correlationId, then deviceId, platform, action). A filter on
the app's loggers copies those fields onto each record that does not carry them already, so a
record's own `extra=` always wins. Handlers then see them as ordinary `extra` fields: the devstack
host writes them into its JSON lines, the OpenTelemetry log exporter (shared/telemetry.py) sends
them to Application Insights as customDimensions.

Nothing secret belongs here: identifiers only, never request values, tokens or passcodes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

# The loggers of the app (a logger's filters see only records logged to that very logger).
APP_LOGGERS = ("passcode_reset", "passcode_reset.audit")

_FIELDS: ContextVar[dict[str, Any] | None] = ContextVar("passcode_reset_log_fields", default=None)


class LogContextFilter(logging.Filter):
    """Adds the current context's fields to a record; fields the record already has are kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _FIELDS.get()
        if fields:
            attributes = record.__dict__
            for key, value in fields.items():
                if key not in attributes:
                    attributes[key] = value
        return True


_FILTER = LogContextFilter()


def install() -> None:
    """Put the filter on the app's loggers (idempotent)."""
    for name in APP_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """A scope (one invocation, one request) whose records carry `fields` and those bound inside it."""
    parent = _FIELDS.get() or {}
    token = _FIELDS.set({**parent, **_present(fields)})
    try:
        yield
    finally:
        _FIELDS.reset(token)


def bind(**fields: Any) -> None:
    """Add fields to the current scope; without a scope (a use case called directly) nothing happens."""
    current = _FIELDS.get()
    if current is not None:
        current.update(_present(fields))


def current_fields() -> dict[str, Any]:
    return dict(_FIELDS.get() or {})


def _present(fields: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in fields.items() if value is not None}
