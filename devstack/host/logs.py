"""Structured logging: one JSON object per record, host and app records alike, tagged with the
invocation that logged them."""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("devstack.host")


@dataclass(frozen=True)
class Invocation:
    function: str
    invocation_id: str


CURRENT_INVOCATION: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar(
    "devstack_invocation", default=None
)
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the ``extra`` fields, and the
    function/invocation_id of the invocation that logged it (host and app records alike)."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                payload[key] = value
        invocation = CURRENT_INVOCATION.get()
        if invocation is not None:
            payload.setdefault("function", invocation.function)
            payload.setdefault("invocation_id", invocation.invocation_id)
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


def configure_logging(function_level: int = logging.INFO, stream: Any = None) -> logging.Handler:
    """Route every record (host and app) through :class:`JsonFormatter` to stderr."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(function_level)
    log.setLevel(logging.INFO)
    for noisy in ("azure", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)  # Python warnings become JSON lines too, not raw stderr text
    return handler


def elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
