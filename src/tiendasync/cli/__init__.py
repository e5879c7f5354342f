"""The ``tiendasync`` command line.

Each family of sub-commands lives in its own module and registers itself
here: ``relay`` (tiendasync.cli.relay), and the store-side commands
(tiendasync.cli.store, one module per command).  Every command ends with
the one exit-code policy of :mod:`tiendasync.cli.exits`: an error is one
``tiendasync: error: ...`` line and its family's ``exit_code``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from tiendasync import __version__
from tiendasync.cli import relay as relay_commands
from tiendasync.cli import store as store_commands
from tiendasync.cli.exits import INTERRUPTED, report
from tiendasync.errors import TiendaSyncError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tiendasync",
        description="Offline-first replication for multi-store retail.",
    )
    parser.add_argument("--version", action="version", version=f"tiendasync {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    relay_commands.register(commands)
    store_commands.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.handler(args)
        sys.stdout.flush()  # here, so a closed pipe is caught below, not at exit
        return code
    except TiendaSyncError as exc:  # raised outside a guarded handler
        return report(exc)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader stopped early (`tiendasync status | grep -q online`): not an error
        # of ours. Point stdout at /dev/null so the interpreter's exit flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
