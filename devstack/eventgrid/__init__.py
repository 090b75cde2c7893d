"""`python -m devstack eventgrid`: a local Event Grid topic (CloudEvents 1.0 input schema) on loopback.

Point the app at it with `EVENTGRID_TOPIC_ENDPOINT=<printed url>` and `EVENTGRID_TOPIC_KEY=<key>`;
what it checks and records: devstack/eventgrid/receiver.py and docs/devstack.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

__all__ = ["configure", "main"]

READY_LINE = "eventgrid receiver listening on "


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8960, help="port (0 = any free port; default 8960)")
    parser.add_argument("--key", default="devstack-eventgrid-key", help="the aeg-sas-key publishers must send")


async def _serve(port: int, key: str) -> None:
    from .receiver import start_receiver

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with start_receiver(key, port=port) as receiver:
        print(f"{READY_LINE}{receiver.url} (control: {receiver.root}/_eg/)", flush=True)
        await stop.wait()


def main(args: argparse.Namespace) -> int:
    try:
        asyncio.run(_serve(args.port, args.key))
    except OSError as exc:
        print(f"eventgrid: {exc}", file=sys.stderr)
        return 1
    return 0
