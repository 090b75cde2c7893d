"""`python -m bench.soak_host`: the devstack host as the soak runs it, in its own process.

The same `devstack.host.DevHost` as `python -m devstack host`, with two knobs the soak needs so
that a SIGKILL costs seconds instead of minutes:

- `--lease-seconds`: the visibility timeout of a received message. The Functions host (and the
  devstack host by default) uses 10 minutes, so the messages a killed host held come back after 10
  minutes; the soak uses a few seconds (renewed at half, like the real lease).
- `--action-lease-seconds` (optional): the workflow's wait before it acts again on a request whose
  action call left no trace (`Policy.action_lease_seconds`, 60 s, sized for Graph's 30 s client
  timeout). Only the short soak in the test suite lowers it, to stay within its time budget; it stays
  safe there because the simulator's slowest answer (a latency spike) is far below it.

Settings come from the environment only (the soak sets every one it needs). Prints
`host listening on URL (N functions)` when ready, like the devstack host.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from typing import Any

from devstack.host import DevHost, HostConfigurationError, configure_logging, load_host_options, serve
from devstack.settings import load_settings


def shorten_action_lease(seconds: int) -> None:
    """Make the composition root build its Policy with a shorter action lease (this process only)."""
    import shared.bootstrap as bootstrap

    original = bootstrap.policy_from

    def policy_from(settings: Any) -> Any:
        return dataclasses.replace(original(settings), action_lease_seconds=seconds)

    bootstrap.policy_from = policy_from


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_host")
    parser.add_argument("--port", type=int, default=0, help="HTTP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    parser.add_argument("--host-json", default="host.json", help="host.json to read")
    parser.add_argument("--lease-seconds", type=float, default=10.0, help="visibility of a received message")
    parser.add_argument("--action-lease-seconds", type=int, default=None, help="see the module docstring")
    parser.add_argument("--shutdown-timeout", type=float, default=5.0, help="grace period on SIGTERM")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        options = load_host_options(args.host_json)
    except HostConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    configure_logging(options.function_log_level)
    if args.action_lease_seconds is not None:
        shorten_action_lease(args.action_lease_seconds)
    return asyncio.run(
        serve(
            lambda: DevHost(
                args.app,
                load_settings(None),
                args.host_json,
                args.port,
                shutdown_timeout=args.shutdown_timeout,
                lease_seconds=args.lease_seconds,
            )
        )
    )


if __name__ == "__main__":
    sys.exit(main())
