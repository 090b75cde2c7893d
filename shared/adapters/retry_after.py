"""`Retry-After` as seconds, shared by the Graph adapter's error mapping and its budget transport."""

from __future__ import annotations

import email.utils
import time
from datetime import UTC
from typing import Any


def parse_retry_after(value: Any) -> float | None:
    """Retry-After as seconds (delta-seconds or HTTP-date), None when absent or unreadable."""
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if value is None:
        return None
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - time.time())
