"""``python -m devstack host``: the host as a process until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable

from azure.core.exceptions import AzureError

from devstack.host.devhost import DevHost
from devstack.host.errors import HostConfigurationError
from devstack.host.logs import configure_logging, log
from devstack.host.options import load_host_options
from devstack.settings import load_settings


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
