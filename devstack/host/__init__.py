"""A small Functions-like host that runs a Python v2 programming model app against Azurite.

Functions Core Tools cannot be installed on the development machines, so this package plays the
part of the Functions host + Python worker for the local stack and the end-to-end tests. It reads
the app's bindings exactly as the real worker indexes them (``app.get_functions()``), and follows
the documented behaviour of the queue extension (batchSize, newBatchThreshold, maxDequeueCount and
``<queue>-poison``, visibilityTimeout, maxPollingInterval, messageEncoding) and of HTTP triggers
(route templates under ``routePrefix``, methods, function keys). docs/devstack.md lists what it
does not implement.

One job per module:

- ``options``: host.json (``extensions.queues``, ``routePrefix``, ``functionTimeout``, log level)
- ``indexing``: loading the app, reading its bindings, resolving ``%TOKENS%`` and connections
- ``bindings``: what a function receives (``func.Out``, ``func.Context``), message encoding
- ``invoker``: calling functions (async on the loop, sync in a thread pool, ``functionTimeout``)
- ``storage``: the host's queue clients
- ``queue_listener``: polling, batches, leases, dequeue count, poison queues
- ``routes`` and ``http_frontend``: route templates; the aiohttp server with function keys
- ``logs``: one JSON object per log record, tagged with the invocation
- ``devhost``: :class:`DevHost`, which puts them together; ``cli``: ``python -m devstack host``

Python API (in-process, e.g. tests)::

    async with DevHost("function_app:app", settings, "host.json") as host:
        ...  # host.url, await host.drain()

CLI: ``python -m devstack host [--port 7071] [--app function_app:app] [--settings ...]``.
"""

from devstack.host.cli import configure, main, serve
from devstack.host.devhost import DEFAULT_LEASE_SECONDS, FUNCTION_KEY_SETTING, DevHost
from devstack.host.errors import HostConfigurationError
from devstack.host.indexing import DEFAULT_CONNECTION, FunctionDef, HttpTriggerBinding, QueueBinding
from devstack.host.logs import JsonFormatter, configure_logging
from devstack.host.options import HostOptions, QueueOptions, load_host_options, parse_host_json, parse_timespan

__all__ = [
    "DEFAULT_CONNECTION",
    "DEFAULT_LEASE_SECONDS",
    "FUNCTION_KEY_SETTING",
    "DevHost",
    "FunctionDef",
    "HostConfigurationError",
    "HostOptions",
    "HttpTriggerBinding",
    "JsonFormatter",
    "QueueBinding",
    "QueueOptions",
    "configure",
    "configure_logging",
    "load_host_options",
    "main",
    "parse_host_json",
    "parse_timespan",
    "serve",
]
