"""host.json: the parts the devstack host honours (``extensions.queues``, ``extensions.http.routePrefix``,
``functionTimeout``, ``logging.logLevel``, ``functions``), with the Functions host's defaults."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devstack.host.errors import HostConfigurationError

MIN_POLLING_INTERVAL = 0.1  # the queue extension's minimum, seconds
MAX_BATCH_SIZE = 32


@dataclass(frozen=True)
class QueueOptions:
    """``extensions.queues`` of host.json with the extension's defaults."""

    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @property
    def max_in_flight(self) -> int:
        return self.batch_size + self.new_batch_threshold


@dataclass(frozen=True)
class HostOptions:
    queues: QueueOptions = field(default_factory=QueueOptions)
    route_prefix: str = "api"
    function_timeout: float | None = None
    function_log_level: int = logging.INFO
    # host.json `functions`: the functions this host runs (empty: all). Azure's own way to run part
    # of an app on an instance is per-function scaling (Flex Consumption) or the
    # `AzureWebJobs.<name>.Disabled` app setting; the host honours both (devhost.enabled_functions).
    functions: tuple[str, ...] = ()


_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?$")
_LOG_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "information": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "none": logging.CRITICAL + 10,
}


def parse_timespan(value: object, key: str) -> float:
    """A .NET TimeSpan string (``[d.]hh:mm:ss[.fffffff]``) in seconds; the error names ``key``."""
    match = _TIMESPAN.match(value) if isinstance(value, str) else None
    if match is None:
        raise HostConfigurationError(f"host.json {key}: expected a timespan like '00:00:30', got {value!r}")
    days, hours, minutes, seconds, fraction = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


def _int_option(section: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise HostConfigurationError(
            f"host.json extensions.queues.{name}: expected an integer {low}..{high}, got {value!r}"
        )
    return value


def parse_queue_options(section: Mapping[str, Any]) -> QueueOptions:
    batch_size = _int_option(section, "batchSize", 16, 1, MAX_BATCH_SIZE)
    default_threshold = batch_size // 2 * (os.cpu_count() or 1)
    encoding = str(section.get("messageEncoding", "base64")).lower()
    if encoding not in ("base64", "none"):
        raise HostConfigurationError(
            f"host.json extensions.queues.messageEncoding: 'base64' or 'none', got {encoding!r}"
        )
    return QueueOptions(
        batch_size=batch_size,
        new_batch_threshold=_int_option(section, "newBatchThreshold", default_threshold, 0, 10_000),
        max_dequeue_count=_int_option(section, "maxDequeueCount", 5, 1, 10_000),
        visibility_timeout=parse_timespan(
            section.get("visibilityTimeout", "00:00:00"), "extensions.queues.visibilityTimeout"
        ),
        max_polling_interval=max(
            MIN_POLLING_INTERVAL,
            parse_timespan(
                section.get("maxPollingInterval", "00:01:00"), "extensions.queues.maxPollingInterval"
            ),
        ),
        message_encoding=encoding,
    )


def parse_host_json(document: Mapping[str, Any]) -> HostOptions:
    """The parts of host.json the devstack host honours."""
    extensions = document.get("extensions") or {}
    timeout = document.get("functionTimeout")
    log_levels = (document.get("logging") or {}).get("logLevel") or {}
    level_name = str(log_levels.get("Function", log_levels.get("default", "Information"))).lower()
    if level_name not in _LOG_LEVELS:
        raise HostConfigurationError(f"host.json logging.logLevel: unknown level {level_name!r}")
    return HostOptions(
        queues=parse_queue_options(extensions.get("queues") or {}),
        route_prefix=str((extensions.get("http") or {}).get("routePrefix", "api")).strip("/"),
        function_timeout=None if timeout in (None, "-1") else parse_timespan(timeout, "functionTimeout"),
        function_log_level=_LOG_LEVELS[level_name],
        functions=_function_names(document.get("functions", [])),
    )


def _function_names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise HostConfigurationError(f"host.json functions: expected a list of function names, got {value!r}")
    return tuple(value)


def load_host_options(host_json: Mapping[str, Any] | str | os.PathLike[str] | None) -> HostOptions:
    """host.json from a mapping, a path (missing file: defaults), or ``None`` (defaults)."""
    if host_json is None:
        return HostOptions()
    if isinstance(host_json, Mapping):
        return parse_host_json(host_json)
    path = Path(host_json)
    if not path.exists():
        return HostOptions()
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, json.JSONDecodeError) as exc:
        raise HostConfigurationError(f"cannot read {path}: {exc}") from exc
    return parse_host_json(document)
