"""``tiendasync status`` and ``tiendasync log``: what the store is and how its syncs went."""

from __future__ import annotations

import argparse
from typing import Any

from tiendasync.cli.common import (
    Commands,
    add_command,
    db_parent,
    json_parent,
    open_replica,
    positive_int,
    print_json,
)
from tiendasync.cli.tables import format_fields, format_table, format_time
from tiendasync.store.queue import STATUSES
from tiendasync.store.replica import Replica
from tiendasync.store.synclog import SyncLogEntry

__all__ = ["register"]

_LOG_HEADERS = (
    "ID",
    "STARTED",
    "SECS",
    "OUTCOME",
    "MODE",
    "RELAY",
    "SENT UPD/B",
    "RECV UPD/B",
    "ERROR",
)


def _log_row(r: SyncLogEntry) -> list[Any]:
    return [
        r.id,
        format_time(r.started_at),
        None if r.ended_at is None else f"{r.ended_at - r.started_at:.2f}",
        r.outcome,
        r.mode,
        r.relay,
        f"{r.updates_sent}/{r.bytes_sent}",
        f"{r.updates_received}/{r.bytes_received}",
        r.error,
    ]


def _cmd_log(args: argparse.Namespace) -> int:
    with open_replica(args, read_only=True) as replica:
        rows = replica.log.list(limit=args.limit, outcome=args.outcome)
    if args.json:
        print_json([r.to_dict() for r in rows])
    else:
        print(format_table(_LOG_HEADERS, [_log_row(r) for r in rows], right=(0, 2, 6, 7)))
    return 0


def _status_data(replica: Replica) -> dict[str, Any]:
    status = replica.status
    config = replica.config
    counts = {s: 0 for s in STATUSES}
    counts.update(replica.queue.counts())
    last = replica.log.list(limit=1)
    daemon = replica.core.shared_sync_state()
    return {
        "database": str(replica.path),
        "tenant": replica.tenant,
        "replica_id": replica.replica_id,
        "location": replica.location,
        "client_id": replica.client_id,
        "relay_url": config.relay_url,
        "relay_token_saved": replica.relay_token is not None,
        "sync_enabled": config.enabled,
        "state": status.state,
        "sync_process": daemon.get("pid") if daemon else None,
        "state_since": daemon.get("at") if daemon else None,
        "online": status.online,
        "pending": status.pending,
        "last_sync_at": status.last_sync_at,
        "open_conflicts": status.open_conflicts,
        "last_error": status.last_error,
        "last_session": last[0].to_dict() if last else None,
        "queue": counts,
    }


def _session_text(last: dict[str, Any] | None) -> str:
    if last is None:
        return "never"
    text = f"#{last['id']} {last['outcome']} at {format_time(last['started_at'])}"
    if last["error"]:
        text += f": {last['error']}"
    return text


def _state_text(data: dict[str, Any]) -> str:
    """``online (sync process 1234, since 12:00:03)``, or ``offline (no sync process)``."""
    if data["sync_process"] is None:
        return f"{data['state']} (no process is syncing this store)"
    since = f", since {format_time(data['state_since'])}" if data["state_since"] else ""
    return f"{data['state']} (sync process {data['sync_process']}{since})"


def _print_status(data: dict[str, Any]) -> None:
    print(
        format_fields(
            [
                ("tenant", data["tenant"]),
                ("replica", data["replica_id"]),
                ("location", data["location"]),
                ("client id", f"{data['client_id']} (this process)"),
                ("database", data["database"]),
                ("relay", data["relay_url"] or "(not set)"),
                ("token", "saved" if data["relay_token_saved"] else "(not set)"),
                ("sync enabled", "yes" if data["sync_enabled"] else "no"),
                ("state", _state_text(data)),
                ("pending", data["pending"]),
                ("open conflicts", data["open_conflicts"]),
                (
                    "last sync",
                    format_time(data["last_sync_at"]) if data["last_sync_at"] else "never",
                ),
                ("last session", _session_text(data["last_session"])),
                ("queue", ", ".join(f"{k} {v}" for k, v in data["queue"].items())),
            ]
        )
    )


def _cmd_status(args: argparse.Namespace) -> int:
    with open_replica(args, read_only=True) as replica:
        data = _status_data(replica)
    if args.json:
        print_json(data)
    else:
        _print_status(data)
    return 0


def register_log(commands: Commands) -> None:
    """Add ``log``."""
    p = add_command(
        commands, "log", "show the sync log (newest first)", _cmd_log, [db_parent(), json_parent()]
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        default=20,
        metavar="N",
        help="show at most N sessions (default: 20)",
    )
    p.add_argument(
        "--outcome", metavar="OUTCOME", help="only sessions with this outcome (ok, error, running)"
    )


def register(commands: Commands) -> None:
    """Add ``status``."""
    add_command(
        commands,
        "status",
        "show the store's identity, sync state and queue counts",
        _cmd_status,
        [db_parent(), json_parent()],
        epilog="'state' is the connection state of the process syncing this store (e.g. a\n"
        "'sync --continuous' daemon), read from the store file: connecting, syncing,\n"
        "online or offline; offline when no process syncs it.",
    )
