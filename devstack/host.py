"""A small Functions-like host that runs a Python v2 programming model app against Azurite.

Functions Core Tools cannot be installed on the development machines, so this module plays the
part of the Functions host + Python worker for the local stack and the end-to-end tests. It reads
the app's bindings exactly as the real worker indexes them (``app.get_functions()``), and follows
the documented behaviour of the queue extension (batchSize, newBatchThreshold, maxDequeueCount and
``<queue>-poison``, visibilityTimeout, maxPollingInterval, messageEncoding) and of HTTP triggers
(route templates under ``routePrefix``, methods, function keys). docs/devstack.md lists what it
does not implement.

Python API (in-process, e.g. tests)::

    async with DevHost("function_app:app", settings, "host.json") as host:
        ...  # host.url, await host.drain()

CLI: ``python -m devstack host [--port 7071] [--app function_app:app] [--settings ...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import contextvars
import datetime as dt
import functools
import hmac
import importlib
import inspect
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import azure.functions as func
from aiohttp import web
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as TriggerQueueMessage
from azure.storage.queue import QueueMessage as StorageQueueMessage
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from devstack.azurite import DEVELOPMENT_STORAGE_CONNECTION_STRING
from devstack.settings import MissingSettingError, load_settings, resolve_tokens

log = logging.getLogger("devstack.host")

DEFAULT_CONNECTION = "AzureWebJobsStorage"
FUNCTION_KEY_SETTING = "DEVSTACK_FUNCTION_KEY"
MIN_POLLING_INTERVAL = 0.1  # the queue extension's minimum, seconds
DEFAULT_LEASE_SECONDS = 600.0  # how long a received message stays invisible; renewed at half
MAX_BATCH_SIZE = 32


class HostConfigurationError(RuntimeError):
    """The app, host.json or settings cannot be run; the message says what to fix."""


# ---------------------------------------------------------------------------------------------
# host.json
# ---------------------------------------------------------------------------------------------


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
    )


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


# ---------------------------------------------------------------------------------------------
# Structured logging
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Invocation:
    function: str
    invocation_id: str


_CURRENT_INVOCATION: contextvars.ContextVar[_Invocation | None] = contextvars.ContextVar(
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
        invocation = _CURRENT_INVOCATION.get()
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


# ---------------------------------------------------------------------------------------------
# Loading the app and reading its bindings
# ---------------------------------------------------------------------------------------------

# get_functions() can be called only once per app (a second call raises): remember its result.
_INDEXED: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


def load_app(spec: str) -> Any:
    """Import ``module:attr`` (default attr ``app``) with the working directory on sys.path."""
    module_name, _, attr = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the app's own start-up checks fail here too (e.g. a bad setting)
        raise HostConfigurationError(f"loading {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    app = getattr(module, attr or "app", None)
    if app is None or not hasattr(app, "get_functions"):
        raise HostConfigurationError(f"{spec!r} is not a func.FunctionApp")
    return app


def index_functions(app: Any) -> list[Any]:
    if app not in _INDEXED:
        _INDEXED[app] = list(app.get_functions())
    return _INDEXED[app]


@dataclass(frozen=True)
class QueueBinding:
    param: str
    queue_name: str
    connection: str


@dataclass(frozen=True)
class HttpTriggerBinding:
    param: str
    route: str
    methods: frozenset[str] | None
    auth_level: str


@dataclass
class FunctionDef:
    name: str
    user_function: Callable[..., Any]
    trigger: QueueBinding | HttpTriggerBinding
    outputs: list[QueueBinding]
    http_output: str | None = None
    context_param: str | None = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)

    @property
    def directory(self) -> str:
        source = inspect.getsourcefile(self.user_function)
        return str(Path(source).parent) if source else os.getcwd()


def build_function(indexed: Any, settings: Mapping[str, str]) -> FunctionDef:
    """Turn one indexed function into a :class:`FunctionDef` with ``%TOKENS%`` resolved."""
    name = indexed.get_function_name()
    bindings = json.loads(indexed.get_function_json())["bindings"]
    trigger: QueueBinding | HttpTriggerBinding | None = None
    outputs: list[QueueBinding] = []
    http_output: str | None = None
    for binding in bindings:
        kind, param = binding.get("type"), binding.get("name")
        where = f"function {name!r}, binding {param!r}"
        if kind == "queueTrigger":
            trigger = _queue_binding(binding, settings, where)
        elif kind == "httpTrigger":
            trigger = _http_binding(binding, name, settings, where)
        elif kind == "queue" and str(binding.get("direction")).upper() == "OUT":
            outputs.append(_queue_binding(binding, settings, where))
        elif kind == "http" and str(binding.get("direction")).upper() == "OUT":
            http_output = param
        else:
            raise HostConfigurationError(
                f"{where}: binding type {kind!r} is not implemented by the devstack host "
                f"(queueTrigger, httpTrigger, queue output and http output are)"
            )
    if trigger is None:
        raise HostConfigurationError(f"function {name!r} has no queueTrigger or httpTrigger")
    definition = FunctionDef(name, indexed.get_user_function(), trigger, outputs, http_output)
    definition.context_param = _check_parameters(definition)
    return definition


def _queue_binding(binding: Mapping[str, Any], settings: Mapping[str, str], where: str) -> QueueBinding:
    queue_name = resolve_tokens(str(binding["queueName"]), settings, where).lower()
    return QueueBinding(binding["name"], queue_name, binding.get("connection") or DEFAULT_CONNECTION)


def _http_binding(
    binding: Mapping[str, Any], function_name: str, settings: Mapping[str, str], where: str
) -> HttpTriggerBinding:
    route = resolve_tokens(str(binding.get("route") or function_name), settings, where).strip("/")
    methods = binding.get("methods")
    return HttpTriggerBinding(
        param=binding["name"],
        route=route,
        methods=frozenset(str(m).upper() for m in methods) if methods else None,
        auth_level=str(binding.get("authLevel") or "function").lower(),
    )


def _check_parameters(definition: FunctionDef) -> str | None:
    """Every binding needs a parameter (like the worker's indexing); returns the context param."""
    parameters = inspect.signature(definition.user_function).parameters
    bound = [definition.trigger.param, *(o.param for o in definition.outputs)]
    if definition.http_output and definition.http_output != "$return":
        bound.append(definition.http_output)
    for name in bound:
        if name != "$return" and name not in parameters:
            raise HostConfigurationError(
                f"function {definition.name!r}: binding {name!r} has no parameter of that name"
            )
    for parameter in parameters.values():
        if parameter.name == "context" or parameter.annotation in (func.Context, "func.Context", "Context"):
            return parameter.name
    return None


def connection_string_for(setting: str, settings: Mapping[str, str]) -> str:
    """The storage connection a binding's ``connection`` names (``AzureWebJobs`` prefix allowed)."""
    for name in (setting, f"AzureWebJobs{setting}"):
        value = settings.get(name)
        if value:
            if value.strip().rstrip(";").lower() == "usedevelopmentstorage=true":
                return DEVELOPMENT_STORAGE_CONNECTION_STRING
            return value
    if any(key.startswith(f"{setting}__") for key in settings):
        raise HostConfigurationError(
            f"connection {setting!r}: identity-based connections ({setting}__queueServiceUri, ...) "
            f"are not supported by the devstack host; set {setting} to a connection string"
        )
    raise MissingSettingError(setting, "a queue binding's connection")


# ---------------------------------------------------------------------------------------------
# Binding objects handed to the user function
# ---------------------------------------------------------------------------------------------


class OutParam(func.Out[Any]):
    """A ``func.Out``: the value is written by the host after the function succeeds."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


class _TraceContext(func._abc.TraceContext):
    def __init__(self) -> None:
        self._parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(func._abc.RetryContext):
    """No retry policy applies (``@app.retry`` does not cover queue triggers)."""

    @property
    def retry_count(self) -> int:
        return 0

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class InvocationContext(func.Context):
    """What the Python worker passes to a ``context`` parameter."""

    _thread_local = threading.local()

    def __init__(self, invocation_id: str, function_name: str, function_directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._function_directory = function_directory
        self._trace_context = _TraceContext()
        self._retry_context = _RetryContext()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._thread_local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> Any:
        return self._trace_context

    @property
    def retry_context(self) -> Any:
        return self._retry_context


def encode_outgoing(value: Any, encoding: str) -> list[str]:
    """An Out value (str, bytes, QueueMessage, or a list of them) as queue message texts."""
    if value is None:
        return []
    items = list(value) if isinstance(value, list | tuple) else [value]
    texts = []
    for item in items:
        if isinstance(item, func.QueueMessage):
            item = item.get_body()
        if isinstance(item, str):
            raw = item.encode("utf-8")
        elif isinstance(item, bytes | bytearray):
            raw = bytes(item)
        else:
            raise TypeError(f"queue output: expected str, bytes or a list of them, got {type(item).__name__}")
        texts.append(base64.b64encode(raw).decode("ascii") if encoding == "base64" else raw.decode("utf-8"))
    return texts


def decode_incoming(content: str, encoding: str) -> bytes:
    """The body the function sees; ``base64`` bodies that do not decode fail the invocation."""
    if encoding == "none":
        return content.encode("utf-8")
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("message body is not valid base64 (host.json messageEncoding is base64)") from exc


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------


class QueueStore:
    """Async queue clients per (connection string, queue), created queues remembered."""

    def __init__(self) -> None:
        self._services: dict[str, QueueServiceClient] = {}
        self._ensured: set[tuple[str, str]] = set()

    def client(self, connection: str, queue: str) -> QueueClient:
        service = self._services.get(connection)
        if service is None:
            service = self._services[connection] = QueueServiceClient.from_connection_string(connection)
        return service.get_queue_client(queue)

    async def ensure(self, connection: str, queue: str) -> None:
        if (connection, queue) in self._ensured:
            return
        with contextlib.suppress(ResourceExistsError):
            await self.client(connection, queue).create_queue()
        self._ensured.add((connection, queue))

    async def send(self, connection: str, queue: str, texts: Iterable[str]) -> None:
        client = self.client(connection, queue)
        for text in texts:
            try:
                await client.send_message(text)
            except ResourceNotFoundError:  # output and poison queues are created on first write
                await self.ensure(connection, queue)
                await client.send_message(text)

    async def close(self) -> None:
        for service in self._services.values():
            await service.close()
        self._services.clear()


# ---------------------------------------------------------------------------------------------
# Invocation
# ---------------------------------------------------------------------------------------------


class Invoker:
    """Runs user functions: async ones on the host loop, sync ones in a thread pool."""

    def __init__(self, max_workers: int, timeout: float | None) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="devstack-fn")
        self._timeout = timeout

    async def invoke(self, definition: FunctionDef, invocation_id: str, kwargs: dict[str, Any]) -> Any:
        if definition.is_async:
            call: Awaitable[Any] = definition.user_function(**kwargs)
        else:
            run = functools.partial(_call_in_thread, invocation_id, definition.user_function, kwargs)
            context = contextvars.copy_context()
            call = asyncio.get_running_loop().run_in_executor(self._executor, context.run, run)
        if self._timeout is None:
            return await call
        try:
            return await asyncio.wait_for(call, self._timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"function exceeded functionTimeout ({self._timeout:.0f} s)") from exc

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _thread_count(settings: Mapping[str, str]) -> int:
    """The worker's pool size: PYTHON_THREADPOOL_THREAD_COUNT, else Python's default."""
    configured = settings.get("PYTHON_THREADPOOL_THREAD_COUNT", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return min(32, (os.cpu_count() or 1) + 4)


def _call_in_thread(invocation_id: str, function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    InvocationContext._thread_local.invocation_id = invocation_id
    return function(**kwargs)


def _context_kwargs(definition: FunctionDef, invocation_id: str) -> dict[str, Any]:
    if definition.context_param is None:
        return {}
    context = InvocationContext(invocation_id, definition.name, definition.directory)
    return {definition.context_param: context}


def _output_kwargs(definition: FunctionDef) -> dict[str, OutParam]:
    return {o.param: OutParam() for o in definition.outputs if o.param != "$return"}


def _elapsed_ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


# ---------------------------------------------------------------------------------------------
# Queue triggers
# ---------------------------------------------------------------------------------------------


class Lease:
    """Keeps a received message invisible while its invocation runs, like the host's renewal."""

    def __init__(self, client: QueueClient, message: StorageQueueMessage, duration: float) -> None:
        self._client = client
        self.message_id: str = message.id
        self.pop_receipt: str = message.pop_receipt or ""
        self._duration = duration
        self._done = asyncio.Event()
        self._task = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._done.wait(), self._duration / 2)
                return
            try:
                updated = await self._client.update_message(
                    self.message_id, self.pop_receipt, visibility_timeout=int(self._duration)
                )
            except AzureError as exc:
                log.warning("message lease renewal failed", extra={"message_id": self.message_id, "error": str(exc)})
                return
            self.pop_receipt = updated.pop_receipt or self.pop_receipt

    async def end(self) -> str:
        """Stop renewing (letting an update in progress finish); returns the current pop receipt."""
        self._done.set()
        await asyncio.shield(self._task)
        return self.pop_receipt


class QueueListener:
    """Polls one queue for one queue-triggered function with the host.json queue options."""

    def __init__(self, host: DevHost, definition: FunctionDef, connection: str) -> None:
        assert isinstance(definition.trigger, QueueBinding)
        self._host = host
        self.definition = definition
        self.queue_name = definition.trigger.queue_name
        self.connection = connection
        self._options = host.options.queues
        self._client = host.store.client(connection, self.queue_name)
        self._tasks: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = False
        self._poller: asyncio.Task[None] | None = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        self._poller = asyncio.create_task(self._poll(), name=f"poll {self.queue_name}")

    def wake(self) -> None:
        """Poll now (a function of this host just wrote to the queue), like the host's watcher."""
        self._wake.set()

    async def stop_polling(self) -> None:
        self._stopping = True
        self._wake.set()
        self._slot_freed.set()
        if self._poller is not None:
            await self._poller

    async def finish(self, timeout: float) -> None:  # noqa: ASYNC109 - a grace period, not a deadline
        """Wait up to ``timeout`` for in-flight invocations, then cancel the rest (released)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- polling ----------------------------------------------------------------------------------

    async def _poll(self) -> None:
        delay = self._host.min_polling_interval
        while not self._stopping:
            await self._wait_for_capacity()
            if self._stopping:
                return
            messages = await self._receive()
            if messages:
                delay = self._host.min_polling_interval
                for message in messages:
                    self._spawn(message)
                continue
            await self._sleep(delay)
            delay = min(delay * 2, self._options.max_polling_interval)

    async def _wait_for_capacity(self) -> None:
        """A new batch is fetched only when in-flight work dropped to newBatchThreshold."""
        while not self._stopping and self.in_flight > self._options.new_batch_threshold:
            self._slot_freed.clear()
            await self._slot_freed.wait()

    async def _receive(self) -> list[StorageQueueMessage]:
        try:
            pages = self._client.receive_messages(
                messages_per_page=self._options.batch_size,
                visibility_timeout=int(self._host.lease_seconds),
            ).by_page()
            page = await pages.__anext__()
            return [message async for message in page]
        except StopAsyncIteration:
            return []
        except AzureError as exc:
            log.warning("queue receive failed", extra={"queue": self.queue_name, "error": str(exc)})
            return []

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)
        self._wake.clear()

    def _spawn(self, message: StorageQueueMessage) -> None:
        task = asyncio.create_task(self._process(message), name=f"{self.definition.name} {message.id}")
        self._tasks.add(task)
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slot_freed.set()

    # -- one message ----------------------------------------------------------------------------

    async def _process(self, message: StorageQueueMessage) -> None:
        dequeue_count = message.dequeue_count or 1
        if dequeue_count > self._options.max_dequeue_count:
            # Already over the limit when received (e.g. a previous host died): no invocation.
            await self._move_to_poison(message, message.pop_receipt or "", dequeue_count)
            return
        invocation_id = str(uuid.uuid4())
        _CURRENT_INVOCATION.set(_Invocation(self.definition.name, invocation_id))
        fields = self._log_fields(invocation_id, message, dequeue_count)
        lease = Lease(self._client, message, self._host.lease_seconds)
        started = time.monotonic()
        log.info("function started", extra=fields)
        try:
            await self._invoke(message, invocation_id)
        except asyncio.CancelledError:
            await asyncio.shield(self._release(lease, 0.0))
            log.warning("function cancelled at shutdown; message released", extra=fields)
            raise
        except Exception:
            receipt = await lease.end()
            log.exception("function failed", extra={**fields, "duration_ms": _elapsed_ms(started)})
            await self._after_failure(message, receipt, dequeue_count)
            return
        receipt = await lease.end()
        await self._delete(message.id, receipt)
        log.info("function succeeded", extra={**fields, "duration_ms": _elapsed_ms(started)})

    def _log_fields(
        self, invocation_id: str, message: StorageQueueMessage, dequeue_count: int
    ) -> dict[str, Any]:
        return {
            "function": self.definition.name,
            "invocation_id": invocation_id,
            "trigger": "queue",
            "queue": self.queue_name,
            "message_id": message.id,
            "dequeue_count": dequeue_count,
        }

    async def _invoke(self, message: StorageQueueMessage, invocation_id: str) -> None:
        """Decode, call, then write the outputs: only a fully successful invocation returns."""
        definition = self.definition
        body = decode_incoming(str(message.content or ""), self._options.message_encoding)
        trigger_message = TriggerQueueMessage(
            id=message.id,
            body=body,
            dequeue_count=message.dequeue_count,
            pop_receipt=message.pop_receipt,
            insertion_time=message.inserted_on,
            expiration_time=message.expires_on,
            time_next_visible=message.next_visible_on,
        )
        outs = _output_kwargs(definition)
        kwargs = {definition.trigger.param: trigger_message, **outs, **_context_kwargs(definition, invocation_id)}
        result = await self._host.invoker.invoke(definition, invocation_id, kwargs)
        await self._host.write_outputs(definition, outs, result)

    async def _after_failure(self, message: StorageQueueMessage, receipt: str, dequeue_count: int) -> None:
        if dequeue_count >= self._options.max_dequeue_count:
            await self._move_to_poison(message, receipt, dequeue_count)
        else:
            await self._set_visibility(message.id, receipt, self._options.visibility_timeout)

    async def _move_to_poison(self, message: StorageQueueMessage, receipt: str, dequeue_count: int) -> None:
        poison = f"{self.queue_name}-poison"
        try:
            await self._host.store.send(self.connection, poison, [str(message.content or "")])
        except AzureError as exc:
            log.error("moving message to poison queue failed", extra={"queue": poison, "error": str(exc)})
            return
        await self._delete(message.id, receipt)
        log.warning(
            "message moved to poison queue",
            extra={
                "function": self.definition.name,
                "queue": self.queue_name,
                "poison_queue": poison,
                "message_id": message.id,
                "dequeue_count": dequeue_count,
            },
        )

    async def _release(self, lease: Lease, visibility: float) -> None:
        receipt = await lease.end()
        await self._set_visibility(lease.message_id, receipt, visibility)

    async def _set_visibility(self, message_id: str, receipt: str, visibility: float) -> None:
        try:
            await self._client.update_message(message_id, receipt, visibility_timeout=int(visibility))
        except AzureError as exc:
            log.warning("message visibility update failed", extra={"message_id": message_id, "error": str(exc)})

    async def _delete(self, message_id: str, receipt: str) -> None:
        try:
            await self._client.delete_message(message_id, receipt)
        except AzureError as exc:
            log.warning("message delete failed", extra={"message_id": message_id, "error": str(exc)})


# ---------------------------------------------------------------------------------------------
# HTTP triggers
# ---------------------------------------------------------------------------------------------

_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?:true|false)",
    "alpha": r"[A-Za-z]+",
    "double": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "guid": r"\{?[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}\}?",
}
_PARAMETER = re.compile(r"\{([^{}]+)\}")


@dataclass
class HttpRoute:
    """A compiled route template: ``resets/{requestId}``, ``{id:int}``, ``{name?}``, ``{*rest}``."""

    definition: FunctionDef
    template: str
    pattern: re.Pattern[str]
    parameters: list[str]
    literal_segments: int

    @classmethod
    def compile(cls, definition: FunctionDef, prefix: str) -> HttpRoute:
        assert isinstance(definition.trigger, HttpTriggerBinding)
        template = "/".join(part for part in (prefix, definition.trigger.route) if part)
        parameters: list[str] = []
        regex = "".join(_segment_regex(segment, parameters) for segment in template.split("/") if segment)
        literal = sum(1 for segment in template.split("/") if segment and "{" not in segment)
        pattern = re.compile(f"^{regex}/?$", re.IGNORECASE)
        return cls(definition, template, pattern, parameters, literal)

    @property
    def trigger(self) -> HttpTriggerBinding:
        assert isinstance(self.definition.trigger, HttpTriggerBinding)
        return self.definition.trigger

    def match(self, raw_path: str) -> dict[str, str] | None:
        found = self.pattern.match(raw_path)
        if found is None:
            return None
        values = found.groups()
        return {name: unquote(value) for name, value in zip(self.parameters, values, strict=True) if value is not None}

    def allows(self, method: str) -> bool:
        return self.trigger.methods is None or method in self.trigger.methods


def _segment_regex(segment: str, parameters: list[str]) -> str:
    """Regex for ``/segment``; a segment that is one optional parameter may be absent."""
    whole = _PARAMETER.fullmatch(segment)
    if whole and whole.group(1).startswith("*"):
        parameters.append(whole.group(1)[1:].split(":")[0].rstrip("?"))
        return "(?:/(.*))?"
    if whole and whole.group(1).split(":")[0].endswith("?"):
        return f"(?:/({_parameter_regex(whole.group(1), parameters)}))?"
    parts, position = [], 0
    for found in _PARAMETER.finditer(segment):
        parts.append(re.escape(segment[position : found.start()]))
        parts.append(f"({_parameter_regex(found.group(1), parameters)})")
        position = found.end()
    parts.append(re.escape(segment[position:]))
    return "/" + "".join(parts)


def _parameter_regex(spec: str, parameters: list[str]) -> str:
    name, *constraints = spec.split(":")
    parameters.append(name.rstrip("?").split("=")[0])
    for constraint in constraints:
        known = _CONSTRAINTS.get(constraint.rstrip("?").lower())
        if known:
            return known
    return r"[^/]+"


def _request_headers(request: web.Request) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in request.headers.items():
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


_CHARSET_TYPES = ("text/", "application/json", "application/xml", "application/javascript")


def to_web_response(result: Any) -> web.Response:
    """Map what an HTTP function returned to an aiohttp response like the Python worker does."""
    if result is None:
        return web.Response(status=204)
    if isinstance(result, str | bytes):
        result = func.HttpResponse(result)
    if not isinstance(result, func.HttpResponse):
        raise TypeError(f"HTTP function returned {type(result).__name__}, expected func.HttpResponse")
    response = web.Response(status=result.status_code, body=result.get_body())
    for key, value in result.headers.items():
        response.headers.add(key, value)
    if "Content-Type" not in response.headers:
        mimetype = result.mimetype
        wants_charset = mimetype.startswith(_CHARSET_TYPES) or mimetype.endswith("+json")
        response.headers["Content-Type"] = f"{mimetype}; charset={result.charset}" if wants_charset else mimetype
    return response


class HttpFrontend:
    """The aiohttp server: routing, keys, request mapping and request logs."""

    def __init__(self, host: DevHost, routes: list[HttpRoute]) -> None:
        self._host = host
        # Most literal segments first, like ASP.NET routing precedence; catch-alls last.
        self._routes = sorted(routes, key=lambda r: (-r.literal_segments, "{*" in r.template))
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, bind: str, port: int) -> None:
        app = web.Application(client_max_size=100 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=self._host.shutdown_timeout
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, bind, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop accepting connections; requests in progress get up to the shutdown timeout."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        raw_path = request.raw_path.split("?", 1)[0]
        route, route_params, response = self._route(request.method, raw_path)
        if route is not None and response is None:
            response = await self._serve(request, route, route_params or {})
        assert response is not None
        log.info(
            "http request",
            extra={
                "method": request.method,
                "route": f"/{route.template}" if route else raw_path,
                "function": route.definition.name if route else None,
                "status": response.status,
                "duration_ms": _elapsed_ms(started),
            },
        )
        return response

    def _route(
        self, method: str, raw_path: str
    ) -> tuple[HttpRoute | None, dict[str, str] | None, web.Response | None]:
        """The matching route and its parameters, or the 404/405 response to send."""
        matched = [(route, params) for route in self._routes if (params := route.match(raw_path)) is not None]
        if not matched:
            if raw_path in ("", "/"):
                return None, None, web.Response(text="devstack host is running")
            return None, None, web.Response(status=404)
        for route, params in matched:
            if route.allows(method.upper()):
                return route, params, None
        allowed = sorted({m for route, _ in matched for m in (route.trigger.methods or ())})
        return matched[0][0], None, web.Response(status=405, headers={"Allow": ", ".join(allowed)})

    def _authorized(self, request: web.Request, route: HttpRoute) -> bool:
        if route.trigger.auth_level == "anonymous":
            return True
        supplied = request.headers.get("x-functions-key") or request.query.get("code") or ""
        return hmac.compare_digest(supplied.encode(), self._host.function_key.encode())

    async def _serve(self, request: web.Request, route: HttpRoute, route_params: dict[str, str]) -> web.Response:
        if not self._authorized(request, route):
            return web.Response(status=401)
        definition = route.definition
        http_request = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=_request_headers(request),
            params=dict(request.query),
            route_params=route_params,
            body=await request.read(),
        )
        invocation_id = str(uuid.uuid4())
        _CURRENT_INVOCATION.set(_Invocation(definition.name, invocation_id))
        fields = {"function": definition.name, "invocation_id": invocation_id, "trigger": "http"}
        outs = _output_kwargs(definition)
        http_out = OutParam() if definition.http_output not in (None, "$return") else None
        kwargs: dict[str, Any] = {definition.trigger.param: http_request, **outs}
        if http_out is not None and definition.http_output:
            kwargs[definition.http_output] = http_out
        kwargs.update(_context_kwargs(definition, invocation_id))
        started = time.monotonic()
        log.info("function started", extra=fields)
        self._host.http_in_flight += 1
        try:
            result = await self._host.invoker.invoke(definition, invocation_id, kwargs)
            await self._host.write_outputs(definition, outs, result)
            response = to_web_response(http_out.get() if http_out is not None else result)
        except Exception:
            log.exception("function failed", extra={**fields, "duration_ms": _elapsed_ms(started)})
            return web.Response(status=500)
        finally:
            self._host.http_in_flight -= 1
        log.info("function succeeded", extra={**fields, "duration_ms": _elapsed_ms(started)})
        return response


# ---------------------------------------------------------------------------------------------
# The host
# ---------------------------------------------------------------------------------------------


class DevHost:
    """Runs every function of a FunctionApp: queue triggers against storage, HTTP on loopback.

    ``app``: ``"module:attr"`` or the ``func.FunctionApp`` itself. ``settings``: the app settings
    for ``%TOKENS%``, connections and ``DEVSTACK_FUNCTION_KEY`` (default: environment, then
    ./local.settings.json); with ``export_env=True`` they are also put into ``os.environ`` for the
    host's lifetime (the app reads its settings there; ``main`` always does this).
    ``host_json``: a mapping, a path, or ``None`` for the extension defaults.
    """

    def __init__(
        self,
        app: Any = "function_app:app",
        settings: Mapping[str, str] | None = None,
        host_json: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        port: int = 0,
        *,
        bind: str = "127.0.0.1",
        shutdown_timeout: float = 30.0,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        min_polling_interval: float = MIN_POLLING_INTERVAL,
        max_workers: int | None = None,
        export_env: bool = False,
    ) -> None:
        self._app_ref = app
        self.settings: Mapping[str, str] = settings if settings is not None else load_settings()
        self.options = load_host_options(host_json)
        self.requested_port = port
        self.bind = bind
        self.shutdown_timeout = shutdown_timeout
        self.lease_seconds = max(lease_seconds, 2.0)
        self.min_polling_interval = min_polling_interval
        self.functions: list[FunctionDef] = []
        self.store = QueueStore()
        self.invoker = Invoker(max_workers or _thread_count(self.settings), self.options.function_timeout)
        self.function_key = self.settings.get(FUNCTION_KEY_SETTING) or ""
        self.http_in_flight = 0
        self._listeners: list[QueueListener] = []
        self._http: HttpFrontend | None = None
        self._stopped = False
        self._running = False
        self._export_env = export_env
        self._saved_env: dict[str, str | None] = {}

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> DevHost:
        """Index the app, create trigger queues, start polling and the HTTP server."""
        try:
            await self._start()
        except BaseException:
            await self.stop(timeout=0)
            raise
        self._running = True
        log.info("host started", extra={"url": self.url, "functions": self.function_names})
        return self

    async def _start(self) -> None:
        if self._export_env:
            self._saved_env = {name: os.environ.get(name) for name in self.settings}
            os.environ.update({name: str(value) for name, value in self.settings.items()})
        app = load_app(self._app_ref) if isinstance(self._app_ref, str) else self._app_ref
        self.functions = [build_function(indexed, self.settings) for indexed in index_functions(app)]
        self._check_function_key()
        for definition in self.functions:
            if isinstance(definition.trigger, QueueBinding):
                await self._add_listener(definition)
        routes = [
            HttpRoute.compile(d, self.options.route_prefix)
            for d in self.functions
            if isinstance(d.trigger, HttpTriggerBinding)
        ]
        self._http = HttpFrontend(self, routes)
        await self._http.start(self.bind, self.requested_port)
        for listener in self._listeners:
            listener.start()

    async def stop(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - grace period
        """Stop receiving, let in-flight invocations finish (bounded), close everything."""
        if self._stopped:
            return
        self._stopped = True
        timeout = self.shutdown_timeout if timeout is None else timeout
        if self._running:
            log.info("host stopping", extra={"in_flight": self.in_flight})
        await asyncio.gather(*(listener.stop_polling() for listener in self._listeners))
        if self._http is not None:
            await self._http.stop()
        await asyncio.gather(*(listener.finish(timeout) for listener in self._listeners))
        await self.store.close()
        self.invoker.shutdown()
        self._restore_env()
        if self._running:
            log.info("host stopped")
        self._running = False

    async def __aenter__(self) -> DevHost:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- queries --------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._http.port if self._http is not None else 0

    @property
    def url(self) -> str:
        return f"http://{self.bind}:{self.port}"

    @property
    def in_flight(self) -> int:
        return self.http_in_flight + sum(listener.in_flight for listener in self._listeners)

    @property
    def function_names(self) -> list[str]:
        return [d.name for d in self.functions]

    def queue_names(self) -> list[str]:
        """The resolved names of every trigger queue."""
        return [listener.queue_name for listener in self._listeners]

    async def drain(
        self,
        queue_names: Iterable[str] | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109 - raises TimeoutError naming the busy queues
        connection: str = DEFAULT_CONNECTION,
    ) -> None:
        """Wait until the queues (default: all trigger queues) hold no message, counting invisible
        ones, and no invocation is in flight, twice in a row. Raises ``TimeoutError``."""
        names = [resolve_tokens(n, self.settings) for n in queue_names] if queue_names else self.queue_names()
        conn = connection_string_for(connection, self.settings)
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2:
            busy = await self._busy_queues(conn, names)
            quiet = quiet + 1 if not busy and self.in_flight == 0 else 0
            if time.monotonic() > deadline:
                raise TimeoutError(f"not drained after {timeout} s: queues {busy}, in flight {self.in_flight}")
            await asyncio.sleep(0.05)

    async def _busy_queues(self, connection: str, names: list[str]) -> list[str]:
        busy = []
        for name in names:
            try:
                properties = await self.store.client(connection, name).get_queue_properties()
            except ResourceNotFoundError:
                continue
            if properties.approximate_message_count:
                busy.append(name)
        return busy

    # -- shared by listeners and HTTP -------------------------------------------------------------

    async def write_outputs(self, definition: FunctionDef, outs: Mapping[str, OutParam], result: Any) -> None:
        """Write queue outputs after a successful invocation (nothing is written on failure)."""
        for output in definition.outputs:
            value = result if output.param == "$return" else outs[output.param].get()
            texts = encode_outgoing(value, self.options.queues.message_encoding)
            if not texts:
                continue
            connection = connection_string_for(output.connection, self.settings)
            await self.store.send(connection, output.queue_name, texts)
            for listener in self._listeners:
                if listener.queue_name == output.queue_name and listener.connection == connection:
                    listener.wake()

    # -- internals ----------------------------------------------------------------------------------

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env = {}

    async def _add_listener(self, definition: FunctionDef) -> None:
        assert isinstance(definition.trigger, QueueBinding)
        connection = connection_string_for(definition.trigger.connection, self.settings)
        try:
            await self.store.ensure(connection, definition.trigger.queue_name)
        except AzureError as exc:
            raise HostConfigurationError(
                f"function {definition.name!r}: cannot reach queue {definition.trigger.queue_name!r} "
                f"with connection {definition.trigger.connection!r}: {exc}"
            ) from exc
        self._listeners.append(QueueListener(self, definition, connection))

    def _check_function_key(self) -> None:
        keyed = any(
            isinstance(d.trigger, HttpTriggerBinding) and d.trigger.auth_level != "anonymous"
            for d in self.functions
        )
        if not self.function_key:
            self.function_key = secrets.token_urlsafe(24)
            if keyed:
                log.warning(
                    f"{FUNCTION_KEY_SETTING} is not set; generated a function key for this run",
                    extra={"function_key": self.function_key},
                )


# ---------------------------------------------------------------------------------------------
# CLI: python -m devstack host
# ---------------------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=7071, help="HTTP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--settings", default="local.settings.json", help="local.settings.json to read")
    parser.add_argument("--host-json", default="host.json", help="host.json to read")
    parser.add_argument(
        "--shutdown-timeout", type=float, default=30.0, help="seconds to let in-flight work finish on stop"
    )


def main(args: argparse.Namespace) -> int:
    try:
        options = load_host_options(args.host_json)
        settings = load_settings(args.settings)
    except (HostConfigurationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    configure_logging(options.function_log_level)
    # Core Tools exports local.settings.json Values to the worker's environment; the app reads
    # its settings from os.environ, so do the same (an already exported variable wins).
    for name, value in settings.file_values.items():
        os.environ.setdefault(name, value)
    return asyncio.run(
        serve(lambda: DevHost(args.app, settings, args.host_json, args.port, shutdown_timeout=args.shutdown_timeout))
    )


async def serve(make_host: Callable[[], DevHost]) -> int:
    """Run a host until SIGINT/SIGTERM; print the ready line the main job and the benches wait for."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host = make_host()
    try:
        await host.start()
    except (HostConfigurationError, ValueError, OSError, AzureError) as exc:
        log.error("host failed to start", extra={"error": str(exc)})
        await host.stop()
        return 1
    print(f"host listening on {host.url} ({len(host.functions)} functions)", flush=True)
    await stop.wait()
    await host.stop()
    return 0
