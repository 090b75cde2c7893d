"""`python -m devstack <command>`: host, simulator, azurite, eventgrid, run."""

from __future__ import annotations

import argparse
import importlib
import sys

from devstack.children import run_ending_children

# Each command module exposes `configure(parser)` and `main(args) -> int`.
COMMANDS = {
    "host": ("devstack.host.cli", "run every function of function_app.py like the Functions host"),
    "simulator": ("devstack.simulator", "serve the Intune Graph simulator on loopback"),
    "azurite": ("devstack.azurite", "start Azurite (project-local npm install) on free ports"),
    "eventgrid": ("devstack.eventgrid", "serve a local Event Grid topic (CloudEvents) that checks and records"),
    "run": ("devstack.run", "the main job: Azurite + simulator + host, sample requests, live outcomes"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    # Import only the chosen command's module: a broken or slow module of another command must not
    # break this one (and `host` should not pay for the simulator's imports).
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text)
        if name == chosen:
            importlib.import_module(module_name).configure(command_parser)
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    # SIGTERM acts like Ctrl-C, and no child process outlives the command (devstack/children.py).
    return run_ending_children(lambda: int(module.main(args) or 0))


if __name__ == "__main__":
    sys.exit(main())
