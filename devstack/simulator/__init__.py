"""`python -m devstack simulator`: serve the Intune Graph simulator on loopback.

Graph routes (v1.0 and beta) need `Authorization: Bearer <token>`; the control API lives under
/_sim/ (see docs/simulator.md). In-process use (tests, demo): `start_simulator()` in server.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from .state import DEFAULT_FLEET, DEFAULT_SEED, DEFAULT_TOKEN, SimulatorConfig, SimulatorError, ThrottleConfig

__all__ = ["command", "configure", "main"]


def _complete_after(value: str) -> float | None:
    if value.strip().lower() in {"never", "none"}:
        return None
    try:
        seconds = float(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number of seconds or 'never': {value!r}") from exc
    if seconds < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return seconds


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8950, help="port (0 = any free port; default 8950)")
    parser.add_argument("--token", default=DEFAULT_TOKEN, help="bearer token Graph routes require")
    parser.add_argument("--fleet", type=Path, default=DEFAULT_FLEET, help="fleet JSON file")
    parser.add_argument(
        "--complete-after",
        type=_complete_after,
        default=2.0,
        metavar="SECONDS",
        help="seconds until an action result leaves pending ('never' to keep it pending)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="latency added to every Graph call")
    parser.add_argument("--no-throttle", action="store_true", help="disable the Intune throttling budget")
    parser.add_argument("--post-limit", type=int, default=200, help="writes per window (default 200)")
    parser.add_argument("--any-limit", type=int, default=2000, help="requests per window (default 2000)")
    parser.add_argument("--throttle-window", type=float, default=20.0, help="window seconds (default 20)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the simulator's RNG")
    parser.add_argument("--page-size", type=int, default=25, help="server page size of list calls")


def command(**options: object) -> list[str]:
    """The arguments after the interpreter that start this simulator: `["-m", "devstack",
    "simulator", ...]`, each option of `configure` by its name (`latency_ms=150`, `port=0`,
    `no_throttle=True`; None or False leaves it out). Each value is joined to its option
    (`--token=-x...`): a value that starts with "-", as a random token may, is not read as an option."""
    argv = ["-m", "devstack", "simulator"]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv.append(f"{flag}={value}")
    return argv


def _config(args: argparse.Namespace) -> SimulatorConfig:
    return SimulatorConfig(
        token=args.token,
        fleet_path=args.fleet,
        complete_after=args.complete_after,
        latency_ms=args.latency_ms,
        throttle=ThrottleConfig(
            enabled=not args.no_throttle,
            post_limit=args.post_limit,
            any_limit=args.any_limit,
            window_seconds=args.throttle_window,
        ),
        seed=args.seed,
        page_size=args.page_size,
    )


async def _serve(config: SimulatorConfig, host: str, port: int) -> None:
    from .server import start_simulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with start_simulator(config, host=host, port=port) as sim:
        print(f"simulator listening on {sim.url}", flush=True)
        await stop.wait()


def main(args: argparse.Namespace) -> int:
    from .server import is_loopback

    if not is_loopback(args.host):
        print(f"simulator: refusing to bind {args.host!r}: loopback addresses only", file=sys.stderr)
        return 2
    try:
        config = _config(args)
        asyncio.run(_serve(config, args.host, args.port))
    except (OSError, SimulatorError, ValueError) as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
