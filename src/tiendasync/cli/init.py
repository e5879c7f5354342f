"""``tiendasync init``: create (or reopen) a store's replica database."""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from tiendasync.cli.common import Commands, add_command, db_parent, read_token_file
from tiendasync.errors import ConfigError, InvalidArgument, StorageError
from tiendasync.model.config import StoreConfig
from tiendasync.model.names import check_name
from tiendasync.store.replica import Replica

__all__ = ["register"]


def _create(path: Path, args: argparse.Namespace) -> Replica:
    """Open or create the replica; a database this call created is removed if that fails."""
    existed = path.exists()
    try:
        return Replica.open(
            path, tenant=args.tenant, replica_id=args.replica, location=args.location
        )
    except BaseException as exc:
        if not existed:  # leave no half-made database behind
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        if isinstance(exc, sqlite3.Error):
            raise StorageError(f"cannot create {path}: {exc}") from exc
        raise


def _cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.db)
    check_name(args.tenant, "tenant")
    check_name(args.replica, "replica id")
    check_name(args.location, "location")
    if args.relay is not None:
        StoreConfig(relay_url=args.relay)  # validate before creating anything
    if args.token_file is not None:
        args.token = read_token_file(args.token_file)
    if args.token is not None and not args.token.strip():
        raise InvalidArgument("the token must not be empty")
    existed = path.exists()
    if not existed and not path.parent.is_dir():
        raise ConfigError(f"directory {path.parent} does not exist")
    with _create(path, args) as replica:
        if args.relay is not None:
            replica.configure(relay_url=args.relay)
        if args.token is not None:
            replica.set_relay_token(args.token)
        verb = "opened existing" if existed else "created"
        print(
            f"{verb} replica {replica.tenant}/{replica.replica_id} at location "
            f"{replica.location} in {path}"
        )
        print(
            f"relay: {replica.config.relay_url or '(not set)'}; "
            f"token: {'saved' if replica.relay_token else '(not set)'}"
        )
    return 0


def register(commands: Commands) -> None:
    """Add ``init``."""
    p = add_command(commands, "init", "create a store replica database", _cmd_init, [db_parent()])
    p.add_argument("--tenant", required=True, help="tenant (retail chain) the store belongs to")
    p.add_argument(
        "--replica", required=True, metavar="ID", help="this replica's id, unique within the tenant"
    )
    p.add_argument("--location", required=True, help="the location this replica sells from")
    p.add_argument("--relay", metavar="URL", help="save this relay URL (ws:// or wss://)")
    tokens = p.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token",
        metavar="TOKEN",
        help="save this relay token (visible in ps and shell history: prefer --token-file)",
    )
    tokens.add_argument(
        "--token-file", metavar="PATH", help="save the relay token in this file (its first line)"
    )
