"""Typed settings, parsed and validated once at start-up (docs/contract.md#settings).

Every problem names the setting at fault, so a misconfigured Function App fails fast with a
message an operator can act on instead of a crash loop deep inside a trigger.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from shared.core.approvals import InvalidSetting, parse_allowed_requesters, parse_approval_rules

_T = TypeVar("_T")

POISON_SUFFIX = "-poison"
# The Event Grid outbox is named after the results queue (docs/decisions/0021-event-grid-outbox.md).
EVENTGRID_OUTBOX_SUFFIX = "-eventgrid"
_QUEUE_NAME_RULE = "3-63 characters of lowercase letters, digits and single hyphens"


class SettingsError(ValueError):
    """One or more settings are invalid; the message names each of them."""


@dataclass(frozen=True)
class Settings:
    storage_connection: str | None
    storage_service_uris: Mapping[str, str]
    storage_client_id: str | None
    requests_queue: str
    results_queue: str
    followups_queue: str
    ledger_table: str
    graph_base_url: str
    graph_token: str | None
    azure_client_id: str | None
    confirm_first_check_seconds: int
    confirm_timeout_seconds: int
    cooldown_seconds: int
    allow_passcode_reveal: bool
    auth_require_roles: bool
    request_deadline_seconds: int
    graph_post_budget: int
    graph_request_budget: int
    graph_budget_window_seconds: int
    graph_budget_instances: int
    eventgrid_topic_endpoint: str | None = None
    eventgrid_topic_key: str | None = None
    eventgrid_retry_seconds: int = 300
    # Approvals, guardrails and requesters (docs/contract.md#approvals-guardrails-and-requesters).
    approval_rules: frozenset[str] = frozenset()
    approval_timeout_seconds: int = 86400
    guardrail_max_actions_per_hour: int = 100
    guardrail_max_per_requester_per_hour: int = 0
    allowed_requesters: tuple[str, ...] = ()
    # Batches (docs/contract.md#batches).
    batches_queue: str = "passcode-reset-batches"

    @property
    def graph_host(self) -> str:
        return urlsplit(self.graph_base_url).hostname or ""

    @property
    def eventgrid_outbox_queue(self) -> str:
        """Events waiting for Event Grid (docs/contract.md#event-grid-delivery); bindings use
        `%RESET_RESULTS_QUEUE%-eventgrid`."""
        return self.results_queue + EVENTGRID_OUTBOX_SUFFIX

    def __repr__(self) -> str:  # never print the token or the connection string's key
        return (
            f"Settings(requests_queue={self.requests_queue!r}, results_queue={self.results_queue!r}, "
            f"followups_queue={self.followups_queue!r}, ledger_table={self.ledger_table!r}, "
            f"graph_base_url={self.graph_base_url!r}, graph_token={'set' if self.graph_token else 'unset'}, "
            f"eventgrid_topic_endpoint={self.eventgrid_topic_endpoint!r}, "
            f"eventgrid_topic_key={'set' if self.eventgrid_topic_key else 'unset'})"
        )


def load_settings(env: Mapping[str, str]) -> Settings:
    """Parse and validate every setting; raise SettingsError listing all problems at once."""
    problems: list[str] = []
    reader = _Reader(env, problems)

    connection = env.get("AzureWebJobsStorage") or None
    uris = {
        kind: env[f"AzureWebJobsStorage__{kind}ServiceUri"]
        for kind in ("queue", "table", "blob")
        if env.get(f"AzureWebJobsStorage__{kind}ServiceUri")
    }
    if connection is None and not {"queue", "table"} <= uris.keys():
        problems.append(
            "AzureWebJobsStorage: set a connection string, or identity-based "
            "AzureWebJobsStorage__queueServiceUri and AzureWebJobsStorage__tableServiceUri"
        )

    graph_base_url = reader.text("GRAPH_BASE_URL", "https://graph.microsoft.com").rstrip("/")
    graph_token = env.get("GRAPH_TOKEN") or None
    _check_graph_url(graph_base_url, graph_token, problems)
    eventgrid_endpoint = (env.get("EVENTGRID_TOPIC_ENDPOINT") or "").strip() or None
    eventgrid_key = env.get("EVENTGRID_TOPIC_KEY") or None
    _check_eventgrid(eventgrid_endpoint, eventgrid_key, problems)

    settings = Settings(
        storage_connection=connection,
        storage_service_uris=uris,
        storage_client_id=env.get("AzureWebJobsStorage__clientId") or None,
        requests_queue=reader.queue("RESET_REQUESTS_QUEUE", "passcode-reset-requests", poison=True),
        results_queue=reader.queue(
            "RESET_RESULTS_QUEUE", "passcode-reset-results", suffix=EVENTGRID_OUTBOX_SUFFIX + POISON_SUFFIX
        ),
        followups_queue=reader.queue("RESET_FOLLOWUPS_QUEUE", "passcode-reset-followups", poison=True),
        ledger_table=reader.table("RESET_LEDGER_TABLE", "PasscodeResets"),
        graph_base_url=graph_base_url,
        graph_token=graph_token,
        azure_client_id=env.get("AZURE_CLIENT_ID") or None,
        confirm_first_check_seconds=reader.integer("CONFIRM_FIRST_CHECK_SECONDS", 60, 0, 7 * 86400),
        confirm_timeout_seconds=reader.integer("CONFIRM_TIMEOUT_SECONDS", 86400, 1, 7 * 86400),
        cooldown_seconds=reader.integer("RESET_COOLDOWN_SECONDS", 900, 0, 30 * 86400),
        allow_passcode_reveal=reader.boolean("ALLOW_PASSCODE_REVEAL", False),
        auth_require_roles=reader.boolean("AUTH_REQUIRE_ROLES", False),
        request_deadline_seconds=reader.integer("REQUEST_DEADLINE_SECONDS", 3600, 60, 7 * 86400),
        graph_post_budget=reader.integer("GRAPH_POST_BUDGET", 200, 1, 1_000_000, unit="calls"),
        graph_request_budget=reader.integer("GRAPH_REQUEST_BUDGET", 2000, 1, 10_000_000, unit="calls"),
        graph_budget_window_seconds=reader.integer("GRAPH_BUDGET_WINDOW_SECONDS", 20, 1, 3600),
        graph_budget_instances=reader.integer("GRAPH_BUDGET_INSTANCES", 4, 1, 1000, unit="instances"),
        eventgrid_topic_endpoint=eventgrid_endpoint,
        eventgrid_topic_key=eventgrid_key,
        eventgrid_retry_seconds=reader.integer("EVENTGRID_RETRY_SECONDS", 300, 1, 86400),
        approval_rules=reader.parsed("APPROVAL_REQUIRED", parse_approval_rules, frozenset()),
        # A follow-up message waits at most 7 days on a storage queue.
        approval_timeout_seconds=reader.integer("APPROVAL_TIMEOUT_SECONDS", 86400, 1, 7 * 86400 - 1),
        guardrail_max_actions_per_hour=reader.integer(
            "GUARDRAIL_MAX_ACTIONS_PER_HOUR", 100, 0, 1_000_000, unit="action calls (0 = off)"
        ),
        guardrail_max_per_requester_per_hour=reader.integer(
            "GUARDRAIL_MAX_PER_REQUESTER_PER_HOUR", 0, 0, 1_000_000, unit="action calls (0 = off)"
        ),
        allowed_requesters=reader.parsed("ALLOWED_REQUESTERS", parse_allowed_requesters, ()),
        batches_queue=reader.queue("RESET_BATCHES_QUEUE", "passcode-reset-batches", poison=True),
    )
    _check_graph_budget(settings, problems)
    queues = [settings.requests_queue, settings.results_queue, settings.followups_queue, settings.batches_queue]
    if len(set(queues)) != len(queues):
        problems.append(
            "RESET_REQUESTS_QUEUE, RESET_RESULTS_QUEUE, RESET_FOLLOWUPS_QUEUE, RESET_BATCHES_QUEUE: "
            "must be four different queues"
        )
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
    return settings


def _check_graph_budget(settings: Settings, problems: list[str]) -> None:
    """Actions count as requests too, and reads keep the difference (docs/contract.md#graph-budget);
    the fallback share of each instance must allow at least one action per window."""
    if settings.graph_post_budget >= settings.graph_request_budget:
        problems.append(
            "GRAPH_POST_BUDGET: must be less than GRAPH_REQUEST_BUDGET (every POST is also a request; "
            "reads keep the difference)"
        )
    if settings.graph_post_budget < settings.graph_budget_instances:
        problems.append(
            f"GRAPH_BUDGET_INSTANCES: {settings.graph_budget_instances} instances cannot share a "
            f"GRAPH_POST_BUDGET of {settings.graph_post_budget} (each needs at least one action per window)"
        )


def _check_graph_url(url: str, token: str | None, problems: list[str]) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"GRAPH_BASE_URL: not an absolute http(s) URL: {url!r}")
        return
    if parts.path not in ("", "/") or parts.query:
        problems.append("GRAPH_BASE_URL: give the Graph root only; the app appends /v1.0 or /beta")
    loopback = _is_loopback(parts.hostname)
    if token is not None and not (parts.scheme == "http" and loopback):
        problems.append(
            "GRAPH_TOKEN: a static token is accepted only for a local Graph simulator "
            "(GRAPH_BASE_URL must be a loopback http URL); unset it to use the managed identity"
        )
    if parts.scheme == "http" and not loopback:
        problems.append("GRAPH_BASE_URL: plain http is allowed only for a loopback simulator")


def _check_eventgrid(endpoint: str | None, key: str | None, problems: list[str]) -> None:
    """The topic is reached with the managed identity (https); a key only for a local receiver."""
    if endpoint is None:
        if key is not None:
            problems.append("EVENTGRID_TOPIC_KEY: set without EVENTGRID_TOPIC_ENDPOINT")
        return
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append("EVENTGRID_TOPIC_ENDPOINT: not an absolute http(s) URL")
        return
    loopback_http = parts.scheme == "http" and _is_loopback(parts.hostname)
    if parts.scheme == "http" and not loopback_http:
        problems.append("EVENTGRID_TOPIC_ENDPOINT: plain http is allowed only for a loopback receiver")
    if key is not None and not loopback_http:
        problems.append(
            "EVENTGRID_TOPIC_KEY: a key is accepted only for a local Event Grid receiver "
            "(EVENTGRID_TOPIC_ENDPOINT must be a loopback http URL); unset it to use the managed identity"
        )
    if key is None and loopback_http:
        problems.append("EVENTGRID_TOPIC_KEY: required for a loopback http EVENTGRID_TOPIC_ENDPOINT")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Reader:
    def __init__(self, env: Mapping[str, str], problems: list[str]) -> None:
        self._env = env
        self._problems = problems

    def text(self, name: str, default: str) -> str:
        return (self._env.get(name) or default).strip()

    def queue(self, name: str, default: str, *, poison: bool = False, suffix: str = "") -> str:
        """A queue name; `poison` or `suffix`: the longest name derived from it must stay valid."""
        value = self.text(name, default)
        suffix = suffix or (POISON_SUFFIX if poison else "")
        if not _valid_queue_name(value):
            self._problems.append(f"{name}: {value!r} is not a valid queue name ({_QUEUE_NAME_RULE})")
        elif len(value) > 63 - len(suffix):
            self._problems.append(
                f"{name}: at most {63 - len(suffix)} characters, so that "
                f"the queue name derived from it ({value}{suffix}) stays valid"
            )
        return value

    def table(self, name: str, default: str) -> str:
        value = self.text(name, default)
        if not (3 <= len(value) <= 63 and value.isalnum() and value[0].isalpha()):
            self._problems.append(f"{name}: {value!r} is not a valid table name (3-63 letters/digits)")
        return value

    def integer(self, name: str, default: int, low: int, high: int, *, unit: str = "seconds") -> int:
        raw = self._env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            self._problems.append(f"{name}: {raw!r} is not a whole number of {unit}")
            return default
        if not low <= value <= high:
            self._problems.append(f"{name}: {value} is outside {low}..{high}")
        return value

    def parsed(self, name: str, parse: Callable[[str], _T], default: _T) -> _T:
        """A list setting read by a parser of the core; a bad entry is named with the setting."""
        raw = self._env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw)
        except InvalidSetting as exc:
            self._problems.append(f"{name}: {exc}")
            return default

    def boolean(self, name: str, default: bool) -> bool:
        raw = self._env.get(name)
        if raw is None or raw.strip() == "":
            return default
        lowered = raw.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        self._problems.append(f"{name}: {raw!r} is not true or false")
        return default


def _valid_queue_name(name: str) -> bool:
    return (
        3 <= len(name) <= 63
        and all(c.islower() or c.isdigit() or c == "-" for c in name)
        and name[0].isalnum()
        and name[-1].isalnum()
        and "--" not in name
        and name.isascii()
    )
