"""The one exit-code policy of the ``tiendasync`` command line.

Every command ends with one of these codes, and an error is always one line
on stderr, ``tiendasync: error: ...``.  The code of an error is its family's
``exit_code`` (:mod:`tiendasync.errors`); nothing here re-maps errors:

====  ==========================================================================
code  meaning
====  ==========================================================================
0     success
1     retry later: the relay or admin API unreachable, the disk busy, a broken
      peer; nothing local was lost
2     fix the call: a bad option, unknown config key, bad CSV row, no such
      replica or record (argparse's own usage errors are 2 as well)
3     re-authenticate: the token was refused (bad, revoked, another tenant's)
70    a bug in tiendasync: report it with the message
130   interrupted (Ctrl-C)
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from tiendasync.cli.tables import one_line
from tiendasync.errors import TiendaSyncError

__all__ = ["INTERRUPTED", "Handler", "fail", "guard", "report"]

#: A command's handler: the parsed arguments in, the exit code out.
Handler = Callable[[argparse.Namespace], int]

#: The exit code after Ctrl-C (128 + SIGINT, as shells do).
INTERRUPTED = 130


def fail(message: object) -> None:
    """Print ``message`` as the one ``tiendasync: error: ...`` line on stderr."""
    print(f"tiendasync: error: {one_line(message)}", file=sys.stderr)


def report(exc: TiendaSyncError) -> int:
    """Print ``exc`` as one error line; return its family's exit code."""
    fail(exc)
    return exc.exit_code


def guard(func: Handler) -> Handler:
    """``func`` with tiendasync errors turned into one stderr line and their exit code.

    Every store and relay command's handler is wrapped in it.  Exceptions
    outside the tiendasync tree are not caught: they are bugs and keep their
    traceback.
    """

    @functools.wraps(func)
    def handler(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except TiendaSyncError as exc:
            return report(exc)

    return handler
