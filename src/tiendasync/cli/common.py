"""What the store-side commands share: parent parsers, argument types, the replica.

Commands register through :func:`add_command`, which wraps their handler
in the one exit-code guard (:mod:`tiendasync.cli.exits`); they open the
replica at ``--db`` with :func:`open_replica` and print ``--json`` output
with :func:`print_json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from tiendasync.cli.exits import Handler, guard
from tiendasync.errors import ConfigError, InvalidArgument, StorageError
from tiendasync.store.replica import Replica

__all__ = [
    "TOKEN_ENV",
    "Commands",
    "add_command",
    "db_parent",
    "int_arg",
    "json_parent",
    "non_negative_int",
    "open_replica",
    "positive_float",
    "positive_int",
    "print_json",
    "read_token_file",
    "relay_parent",
    "token_of",
]

#: Environment variable read for the relay token when ``--token`` is not given.
TOKEN_ENV = "TIENDASYNC_TOKEN"


class Commands(Protocol):
    """The sub-command table of a parser (what ``add_subparsers`` returns)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def add_command(
    commands: Commands,
    name: str,
    help_text: str,
    handler: Handler | None,
    parents: list[argparse.ArgumentParser],
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """Add sub-command ``name``; its ``handler`` (if any) runs under the exit-code guard."""
    parser = commands.add_parser(
        name,
        help=help_text,
        description=help_text,
        parents=parents,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if handler is not None:
        parser.set_defaults(handler=guard(handler))
    return parser


# -- parent parsers -------------------------------------------------------------------


def db_parent() -> argparse.ArgumentParser:
    """``--db PATH``, the replica database (required)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--db", required=True, metavar="PATH", help="the store's replica database (SQLite file)"
    )
    return parent


def json_parent() -> argparse.ArgumentParser:
    """``--json``: one JSON document instead of a table."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--json",
        action="store_true",
        help="print machine-readable JSON (one document) instead of a table",
    )
    return parent


def relay_parent() -> argparse.ArgumentParser:
    """``--relay URL`` and ``--token TOKEN``, both defaulting to the saved config."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--relay", metavar="URL", help="relay URL (ws:// or wss://); default: the saved relay_url"
    )
    tokens = parent.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token",
        metavar="TOKEN",
        help=f"relay token (visible in ps and shell history: prefer --token-file, "
        f"${TOKEN_ENV} or 'config set-token'); default: ${TOKEN_ENV}, then the saved token",
    )
    tokens.add_argument(
        "--token-file",
        metavar="PATH",
        help="read the relay token from this file (its first line)",
    )
    return parent


# -- argument types (argparse turns their errors into usage errors, exit 2) -------------


def int_arg(text: str) -> int:
    """An integer."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive_int(text: str) -> int:
    """An integer greater than zero."""
    value = int_arg(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer, zero or more."""
    value = int_arg(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def positive_float(text: str) -> float:
    """A number greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


# -- the replica and output -------------------------------------------------------------


@contextmanager
def open_replica(args: argparse.Namespace, *, read_only: bool = False) -> Iterator[Replica]:
    """Open the existing replica at ``--db`` (never creates one); close it after.

    ``read_only`` for commands that only look: they start no incarnation of
    the store (no new writer id), so a ``status`` every minute costs nothing.
    """
    path = Path(args.db)
    if not path.is_file() or path.stat().st_size == 0:
        what = "is empty" if path.is_file() else "does not exist"
        raise ConfigError(
            f"no replica database at {path} (the file {what}); create the replica with "
            f"'tiendasync init --db {path} --tenant T --replica ID --location L'"
        )
    try:
        replica = Replica.open(path, read_only=read_only)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc
    try:
        yield replica
    finally:
        replica.close()


def read_token_file(path: str) -> str:
    """The token in the first line of ``path`` (:class:`InvalidArgument` if unreadable or empty)."""
    try:
        with open(path, encoding="utf-8") as f:
            token = f.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"cannot read the token file {path}: {exc}") from None
    if not token:
        raise InvalidArgument(f"the token file {path} is empty")
    return token


def token_of(args: argparse.Namespace) -> str | None:
    """The relay token: ``--token``, ``--token-file``, ``$TIENDASYNC_TOKEN``, else None (saved)."""
    given: str | None = getattr(args, "token", None)
    path: str | None = getattr(args, "token_file", None)
    if not given and path:
        given = read_token_file(path)
    return given or os.environ.get(TOKEN_ENV) or None


def print_json(data: Any) -> None:
    """``data`` as one indented JSON document on stdout."""
    print(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str))
