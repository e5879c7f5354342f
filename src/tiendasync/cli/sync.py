"""``tiendasync sync``: one session with the relay, or continuous sync until a signal.

A failed sync ends with the error family's exit code (1 relay unreachable
or broken, 3 token refused); nothing local is lost either way.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import signal
import sys
import threading
import time
import types
from typing import Any

from tiendasync.cli.common import (
    Commands,
    add_command,
    db_parent,
    json_parent,
    open_replica,
    positive_float,
    print_json,
    relay_parent,
    token_of,
)
from tiendasync.cli.tables import format_fields, format_time, one_line
from tiendasync.errors import ConfigError, InvalidArgument, SyncError
from tiendasync.store.client import SyncReport
from tiendasync.store.replica import Replica, ReplicaStatus
from tiendasync.store.synclog import SyncLogEntry

__all__ = ["register", "session_line"]


def session_line(row: SyncLogEntry) -> str:
    """One finished sync session as a line of text."""
    duration = "-" if row.ended_at is None else f"{row.ended_at - row.started_at:.2f} s"
    text = (
        f"{format_time(row.started_at)}  #{row.id} {row.outcome} ({row.mode}) "
        f"{row.relay or '-'}"
        f"  sent {row.updates_sent} upd/{row.bytes_sent} B"
        f"  received {row.updates_received} upd/{row.bytes_received} B  {duration}"
    )
    if row.error:
        text += f"  error: {one_line(row.error)}"
    return text


def _check_can_sync(args: argparse.Namespace, replica: Replica) -> None:
    if args.store is not None and args.store != replica.replica_id:
        raise ConfigError(f"{args.db} is store {replica.replica_id!r}, not {args.store!r}")
    if not replica.config.enabled:
        raise ConfigError(
            "sync is disabled for this store; enable it with 'tiendasync config set enabled=true'"
        )


def _print_report(report: SyncReport, full: bool, pending: int) -> None:
    print(
        format_fields(
            [
                ("relay", report.relay),
                ("session", report.session_id or "-"),
                ("outcome", report.outcome),
                ("mode", "full" if full else "incremental"),
                ("duration", f"{report.duration_s:.2f} s"),
                ("sent", f"{report.updates_sent} updates, {report.bytes_sent} bytes"),
                ("received", f"{report.updates_received} updates, {report.bytes_received} bytes"),
                ("acknowledged", f"{report.acknowledged} queue entries"),
                ("conflicts opened", report.conflicts_opened),
                ("conflicts healed", report.conflicts_healed),
                ("still pending", pending),
            ]
        )
    )


def _cmd_sync(args: argparse.Namespace) -> int:
    if args.full and args.continuous:
        raise InvalidArgument("--full and --continuous cannot be combined; run 'sync --full' first")
    with open_replica(args) as replica:
        _check_can_sync(args, replica)
        token = token_of(args)
        if args.continuous:
            client_log = logging.getLogger("tiendasync.store.client")
            level = client_log.level
            if not getattr(args, "verbose", False):
                # The printer reports every session and failure; the client's own
                # log lines would say each one a second time.
                client_log.setLevel(logging.ERROR)
            try:
                return _sync_continuous(replica, args.relay, token, args.json, args.poll)
            finally:
                client_log.setLevel(level)
        url = args.relay or replica.config.relay_url
        try:
            report = replica.sync_now(args.relay, token=token, full=args.full, timeout=args.timeout)
        except SyncError as exc:
            if args.json:
                print_json({"relay": url, "outcome": "error", "error": one_line(exc)})
            raise
        if args.json:
            print_json(report.to_dict())
        else:
            _print_report(report, args.full, replica.queue.pending_count())
    return 0


class _ContinuousPrinter:
    """Prints what continuous sync does: connected, disconnected, each finished session.

    Each event is printed once, by the main thread: connection changes are
    queued by a status callback (the sync thread calls it), finished
    sessions are read from the sync log.  With ``as_json`` each event is one
    JSON object per line with an ``event`` key (``connected``,
    ``disconnected``, ``session``).
    """

    def __init__(self, replica: Replica, url: str, as_json: bool) -> None:
        self.replica = replica
        self.url = url
        self.as_json = as_json
        newest = replica.log.list(limit=1)
        self.baseline = newest[0].id if newest else 0
        self.printed: set[int] = set()
        self.changes: queue.SimpleQueue[tuple[float, str, str | None]] = queue.SimpleQueue()
        self.connected = False
        self.unsubscribe = replica.on_status_change(self._on_status)

    def _on_status(self, status: ReplicaStatus) -> None:  # the sync thread
        self.changes.put((time.time(), status.state, status.last_error))

    def _event(self, event: str, at: float, text: str, **data: Any) -> None:
        if self.as_json:
            print(json.dumps({"event": event, "at": at, **data}, ensure_ascii=False))
        else:
            print(f"{format_time(at)}  {text}")

    def emit(self) -> None:
        while True:
            try:
                at, state, error = self.changes.get_nowait()
            except queue.Empty:
                break
            if state in ("syncing", "online") and not self.connected:
                self.connected = True
                self._event("connected", at, f"connected to {self.url}", relay=self.url)
            elif state == "offline" and self.connected:
                self.connected = False
                why = f": {one_line(error)}" if error else ""
                self._event("disconnected", at, f"disconnected from {self.url}{why}", error=error)
        rows = [
            r
            for r in self.replica.log.list(limit=100)
            if r.id > self.baseline and r.id not in self.printed and r.ended_at is not None
        ]
        for row in sorted(rows, key=lambda r: r.id):
            self.printed.add(row.id)
            if self.as_json:
                print(json.dumps({"event": "session", **row.to_dict()}, ensure_ascii=False))
            else:
                print(session_line(row))
        sys.stdout.flush()


def _sync_continuous(
    replica: Replica, url: str | None, token: str | None, as_json: bool, poll: float
) -> int:
    """Sync until SIGINT/SIGTERM (exit 0) or a permanent error (raised: its exit code)."""
    stop = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    relay = url or replica.config.relay_url or ""
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    printer = _ContinuousPrinter(replica, relay, as_json)
    try:
        replica.start_sync(url, token=token)
        print(
            f"syncing continuously with {relay}; stop with Ctrl-C or SIGTERM",
            file=sys.stderr,
        )
        failure = None
        while not stop.is_set() and failure is None:
            stop.wait(poll)
            failure = replica.sync_failure
            printer.emit()
        replica.stop_sync()
        printer.emit()
        if failure is not None:
            raise failure
    finally:
        printer.unsubscribe()
        replica.stop_sync()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def register(commands: Commands) -> None:
    """Add ``sync``."""
    p = add_command(
        commands,
        "sync",
        "synchronise with the relay (once, or continuously)",
        _cmd_sync,
        [db_parent(), relay_parent(), json_parent()],
        epilog="Exit code 1 if the relay cannot be reached, 3 if it refuses the token; "
        "nothing local is lost.\nWith --continuous, --json prints one JSON "
        "object per line, one per finished session.",
    )
    p.add_argument(
        "--full", action="store_true", help="full state exchange instead of an incremental one"
    )
    p.add_argument(
        "--continuous",
        action="store_true",
        help="keep syncing (auto-reconnect) and print one line per session until SIGINT/SIGTERM",
    )
    p.add_argument(
        "--store", metavar="ID", help="refuse to run unless --db is the replica of this store id"
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="give up a one-shot sync after this long (default: 30)",
    )
    p.add_argument(
        "--poll",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="with --continuous: how often to check for finished sessions (default: 1)",
    )
