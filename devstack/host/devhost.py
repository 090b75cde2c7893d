"""The host: indexes the app, starts a listener per queue trigger and the HTTP frontend, writes
outputs, drains and stops gracefully."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError

from devstack.host.bindings import OutParam, encode_outgoing
from devstack.host.errors import HostConfigurationError
from devstack.host.http_frontend import HttpFrontend
from devstack.host.indexing import (
    DEFAULT_CONNECTION,
    FunctionDef,
    HttpTriggerBinding,
    QueueBinding,
    build_function,
    connection_string_for,
    index_functions,
    load_app,
)
from devstack.host.invoker import Invoker, thread_count
from devstack.host.logs import log
from devstack.host.options import MIN_POLLING_INTERVAL, HostOptions, load_host_options
from devstack.host.queue_listener import QueueListener
from devstack.host.routes import HttpRoute
from devstack.host.storage import QueueStore
from devstack.settings import load_settings, resolve_tokens

FUNCTION_KEY_SETTING = "DEVSTACK_FUNCTION_KEY"
DEFAULT_LEASE_SECONDS = 600.0  # how long a received message stays invisible; renewed at half


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
        self.invoker = Invoker(max_workers or thread_count(self.settings), self.options.function_timeout)
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
        self.functions = enabled_functions(
            [build_function(indexed, self.settings) for indexed in index_functions(app)], self.options, self.settings
        )
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


def enabled_functions(
    functions: list[FunctionDef], options: HostOptions, settings: Mapping[str, str]
) -> list[FunctionDef]:
    """The functions this host runs: those named in host.json `functions` (all when it is empty),
    less those whose `AzureWebJobs.<name>.Disabled` setting is true, as the Functions host does
    (https://learn.microsoft.com/azure/azure-functions/disable-function). A name in `functions`
    that the app does not have is an error, not a host that silently runs nothing."""
    known = {definition.name for definition in functions}
    unknown = [name for name in options.functions if name not in known]
    if unknown:
        raise HostConfigurationError(f"host.json functions: the app has no function {', '.join(map(repr, unknown))}")
    chosen = []
    for definition in functions:
        flag = str(settings.get(f"AzureWebJobs.{definition.name}.Disabled", "")).strip().lower()
        if (options.functions and definition.name not in options.functions) or flag in ("true", "1"):
            log.info("function disabled", extra={"function": definition.name})
            continue
        chosen.append(definition)
    return chosen
