"""Store-side sub-commands of ``tiendasync``.

``init``, ``sync``, ``queue list|process|resolve``, ``log``, ``status``,
``config show|set|set-token`` and ``import``.  Each works on one replica
database (``--db``).  Human output is aligned tables; ``--json`` prints one
JSON document instead (``sync --continuous --json`` prints one JSON object
per line, one per finished session).

Exit codes: 0 success; 1 a sync with the relay failed (relay unreachable,
token refused, protocol error: local data is intact); 2 usage, configuration
or data errors (bad option, unknown config key, bad CSV row, no such
replica...); 130 interrupted.  Errors are one line on stderr:
``tiendasync: error: ...``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import json
import os
import signal
import sqlite3
import sys
import threading
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tiendasync.cli.tables import ProgressBar, format_fields, format_table, format_time, one_line
from tiendasync.crdt import check_name, check_safe_int
from tiendasync.errors import (
    ConfigError,
    InvalidArgument,
    StorageError,
    SyncError,
    TiendaSyncError,
)
from tiendasync.model.config import StoreConfig
from tiendasync.store.queue import STATUSES, QueueEntry
from tiendasync.store.replica import Replica
from tiendasync.store.synclog import SyncLogEntry

__all__ = ["RESOLVE_ACTIONS", "TOKEN_ENV", "register"]

#: Environment variable read for the relay token when ``--token`` is not given.
TOKEN_ENV = "TIENDASYNC_TOKEN"

#: Conflict resolution actions (DESIGN.md, "the contract").
RESOLVE_ACTIONS = (
    "accept",
    "adjust",
    "recount",
    "transfer",
    "void",
    "restore",
    "remap",
    "keep_central",
    "keep_local",
)

#: Catalog CSV columns holding integers (the catalog refuses anything else there).
_INTEGER_COLUMNS = ("price_cents", "cost_cents")
_CATALOG_REQUIRED = ("sku", "name", "price_cents")
_STOCK_COLUMNS = ("sku", "quantity")

Handler = Callable[[argparse.Namespace], int]


# -- errors and plumbing ------------------------------------------------------------


def _fail(message: object) -> None:
    print(f"tiendasync: error: {one_line(message)}", file=sys.stderr)


def _guard(func: Handler) -> Handler:
    """Turn tiendasync errors into one stderr line and their exit code.

    The exit code is the error family's (:mod:`tiendasync.errors`): 1 retry
    later (relay unreachable, disk busy), 2 fix the call, 3 re-authenticate.
    """

    @functools.wraps(func)
    def handler(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except TiendaSyncError as exc:
            _fail(exc)
            return exc.exit_code

    return handler


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str))


def _db_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--db", required=True, metavar="PATH", help="the store's replica database (SQLite file)"
    )
    return parent


def _json_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--json",
        action="store_true",
        help="print machine-readable JSON (one document) instead of a table",
    )
    return parent


def _relay_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--relay", metavar="URL", help="relay URL (ws:// or wss://); default: the saved relay_url"
    )
    parent.add_argument(
        "--token", metavar="TOKEN", help=f"relay token; default: ${TOKEN_ENV}, then the saved token"
    )
    return parent


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _positive_int(text: str) -> int:
    value = _int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


@contextmanager
def _open(args: argparse.Namespace) -> Iterator[Replica]:
    """Open the existing replica at ``--db`` (never creates one)."""
    path = Path(args.db)
    if not path.is_file():
        raise ConfigError(f"no replica database at {path}; create one with 'tiendasync init'")
    try:
        replica = Replica.open(path)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc
    try:
        yield replica
    finally:
        replica.close()


def _token(args: argparse.Namespace) -> str | None:
    given: str | None = getattr(args, "token", None)
    return given or os.environ.get(TOKEN_ENV) or None


# -- init ---------------------------------------------------------------------------


def _cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.db)
    check_name(args.tenant, "tenant")
    check_name(args.replica, "replica id")
    check_name(args.location, "location")
    if args.relay is not None:
        StoreConfig(relay_url=args.relay)  # validate before creating anything
    if args.token is not None and not args.token.strip():
        raise InvalidArgument("the token must not be empty")
    existed = path.exists()
    if not existed and not path.parent.is_dir():
        raise ConfigError(f"directory {path.parent} does not exist")
    try:
        replica = Replica.open(
            path, tenant=args.tenant, replica_id=args.replica, location=args.location
        )
    except BaseException as exc:
        if not existed:  # leave no half-made database behind
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        if isinstance(exc, sqlite3.Error):
            raise StorageError(f"cannot create {path}: {exc}") from exc
        raise
    with replica:
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


# -- sync ---------------------------------------------------------------------------


def _session_line(row: SyncLogEntry) -> str:
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


def _cmd_sync(args: argparse.Namespace) -> int:
    if args.full and args.continuous:
        raise InvalidArgument("--full and --continuous cannot be combined; run 'sync --full' first")
    with _open(args) as replica:
        if args.store is not None and args.store != replica.replica_id:
            raise ConfigError(f"{args.db} is store {replica.replica_id!r}, not {args.store!r}")
        if not replica.config.enabled:
            raise ConfigError(
                "sync is disabled for this store; enable it with "
                "'tiendasync config set enabled=true'"
            )
        token = _token(args)
        if args.continuous:
            return _sync_continuous(replica, args.relay, token, args.json, args.poll)
        url = args.relay or replica.config.relay_url
        try:
            report = replica.sync_now(args.relay, token=token, full=args.full, timeout=args.timeout)
        except SyncError as exc:
            if args.json:
                _print_json({"relay": url, "outcome": "error", "error": one_line(exc)})
            raise
        if args.json:
            _print_json(report.to_dict())
            return 0
        pending = replica.queue.pending_count()
        print(
            format_fields(
                [
                    ("relay", report.relay),
                    ("session", report.session_id or "-"),
                    ("outcome", report.outcome),
                    ("mode", "full" if args.full else "incremental"),
                    ("duration", f"{report.duration_s:.2f} s"),
                    ("sent", f"{report.updates_sent} updates, {report.bytes_sent} bytes"),
                    (
                        "received",
                        f"{report.updates_received} updates, {report.bytes_received} bytes",
                    ),
                    ("acknowledged", f"{report.acknowledged} queue entries"),
                    ("conflicts seen", report.conflicts_seen),
                    ("still pending", pending),
                ]
            )
        )
        return 0


def _sync_continuous(
    replica: Replica, url: str | None, token: str | None, as_json: bool, poll: float
) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        newest = replica.log.list(limit=1)
        baseline = newest[0].id if newest else 0
        printed: set[int] = set()

        def emit() -> None:
            rows = [
                r
                for r in replica.log.list(limit=100)
                if r.id > baseline and r.id not in printed and r.ended_at is not None
            ]
            for row in sorted(rows, key=lambda r: r.id):
                printed.add(row.id)
                if as_json:
                    print(json.dumps(row.to_dict(), sort_keys=True, ensure_ascii=False))
                else:
                    print(_session_line(row))
            sys.stdout.flush()

        replica.start_sync(url, token=token)
        print(
            f"syncing continuously with {url or replica.config.relay_url}; "
            "stop with Ctrl-C or SIGTERM",
            file=sys.stderr,
        )
        while not stop.is_set():
            stop.wait(poll)
            emit()
        replica.stop_sync()
        emit()
    finally:
        replica.stop_sync()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


# -- queue --------------------------------------------------------------------------


def _entry_row(e: QueueEntry) -> list[Any]:
    summary = e.summary if not e.error else f"{e.summary} (error: {e.error})"
    return [
        e.id,
        e.status,
        e.priority,
        e.data_type,
        e.kind,
        e.attempts,
        format_time(e.updated_at),
        ",".join(e.conflict_ids) or None,
        summary,
    ]


_ENTRY_HEADERS = (
    "ID",
    "STATUS",
    "PRIO",
    "TYPE",
    "KIND",
    "TRIES",
    "UPDATED",
    "CONFLICTS",
    "SUMMARY",
)


def _cmd_queue_list(args: argparse.Namespace) -> int:
    with _open(args) as replica:
        entries = replica.queue.list(
            conflicts=True if args.conflicts else None,
            status=args.status,
            kind=args.kind,
            limit=args.limit,
            offset=args.offset,
        )
        if args.json:
            _print_json([e.to_dict() for e in entries])
        else:
            print(format_table(_ENTRY_HEADERS, [_entry_row(e) for e in entries], right=(0, 2, 5)))
    return 0


def _cmd_queue_process(args: argparse.Namespace) -> int:
    with _open(args) as replica:
        sync_args: dict[str, Any] = {}
        if args.relay:
            sync_args["url"] = args.relay
        token = _token(args)
        if token:
            sync_args["token"] = token
        replica.queue.get(args.id)  # NotFound before anything is counted
        if not sync_args.get("url") and not replica.config.relay_url:
            print(
                "tiendasync: note: no relay URL configured; only the attempt was counted",
                file=sys.stderr,
            )
        error: SyncError | None = None
        try:
            entry = replica.queue.process(args.id, **sync_args)
        except SyncError as exc:
            error = exc
            entry = replica.queue.get(args.id)
        if args.json:
            _print_json(entry.to_dict())
        else:
            print(format_table(_ENTRY_HEADERS, [_entry_row(entry)], right=(0, 2, 5)))
        if error is not None:
            raise error
    return 0


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _cmd_queue_resolve(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    for name in ("quantity", "count", "from_location", "sku", "field", "note", "by"):
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    if args.sale_ids is not None:
        ids = [s.strip() for s in args.sale_ids.split(",") if s.strip()]
        if not ids:
            raise InvalidArgument("--sale-ids needs at least one sale id")
        params["sale_ids"] = ids
    if args.fields is not None:
        try:
            fields = json.loads(args.fields)
        except ValueError:
            fields = None
        if not isinstance(fields, dict) or not fields:
            raise InvalidArgument(f"--fields must be a non-empty JSON object, got {args.fields!r}")
        params["fields"] = fields
    with _open(args) as replica:
        result = _jsonable(replica.queue.resolve(args.conflict_id, args.action, **params))
        if args.json:
            _print_json(result)
        elif isinstance(result, Mapping):
            print(format_fields((str(k), v) for k, v in result.items()))
        else:
            print(f"resolved {args.conflict_id} with {args.action}: {result}")
    return 0


# -- log ----------------------------------------------------------------------------


def _cmd_log(args: argparse.Namespace) -> int:
    with _open(args) as replica:
        rows = replica.log.list(limit=args.limit, outcome=args.outcome)
    if args.json:
        _print_json([r.to_dict() for r in rows])
        return 0
    table = [
        [
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
        for r in rows
    ]
    print(
        format_table(
            (
                "ID",
                "STARTED",
                "SECS",
                "OUTCOME",
                "MODE",
                "RELAY",
                "SENT UPD/B",
                "RECV UPD/B",
                "ERROR",
            ),
            table,
            right=(0, 2, 6, 7),
        )
    )
    return 0


# -- status -------------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    with _open(args) as replica:
        status = replica.status
        config = replica.config
        counts = {s: 0 for s in STATUSES}
        counts.update(replica.queue.counts())
        last = replica.log.list(limit=1)
        data: dict[str, Any] = {
            "database": str(replica.path),
            "tenant": replica.tenant,
            "replica_id": replica.replica_id,
            "location": replica.location,
            "client_id": replica.client_id,
            "relay_url": config.relay_url,
            "relay_token_saved": replica.relay_token is not None,
            "sync_enabled": config.enabled,
            "state": status.state,
            "online": status.online,
            "pending": status.pending,
            "last_sync_at": status.last_sync_at,
            "open_conflicts": status.open_conflicts,
            "last_error": status.last_error,
            "last_session": last[0].to_dict() if last else None,
            "queue": counts,
        }
    if args.json:
        _print_json(data)
        return 0
    session = "never"
    if last:
        row = last[0]
        session = f"#{row.id} {row.outcome} at {format_time(row.started_at)}"
        if row.error:
            session += f": {row.error}"
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
                ("state", data["state"]),
                ("pending", data["pending"]),
                ("open conflicts", data["open_conflicts"]),
                (
                    "last sync",
                    format_time(data["last_sync_at"]) if data["last_sync_at"] else "never",
                ),
                ("last session", session),
                ("queue", ", ".join(f"{k} {v}" for k, v in counts.items())),
            ]
        )
    )
    return 0


# -- config -------------------------------------------------------------------------


def _show_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _cmd_config_show(args: argparse.Namespace) -> int:
    with _open(args) as replica:
        config = replica.config.to_dict()
        token_saved = replica.relay_token is not None
    if args.json:
        _print_json({"config": config, "relay_token_saved": token_saved})
        return 0
    pairs = [(k, _show_value(v)) for k, v in config.items()]
    pairs.append(("relay token", "saved" if token_saved else "(not set)"))
    print(format_fields(pairs))
    return 0


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin)
    return not isinstance(hint, type) or isinstance(value, hint)


def _describe(hint: Any) -> str:
    names = {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
        type(None): "null",
        dict: "a JSON object",
        list: "a JSON list",
    }
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    return names.get(origin or hint, str(hint))


def _parse_assignments(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> typed changes; values are JSON when they parse."""
    hints = typing.get_type_hints(StoreConfig)
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        if key in changes:
            raise ConfigError(f"{key} is given twice")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        hint = hints.get(key)
        if hint is not None:
            if not _type_ok(value, hint):
                raise ConfigError(f"{key} must be {_describe(hint)}, got {raw!r}")
            if hint is float and isinstance(value, int):
                value = float(value)
        changes[key] = value
    return changes


def _cmd_config_set(args: argparse.Namespace) -> int:
    changes = _parse_assignments(args.assignments)
    with _open(args) as replica:
        try:
            config = replica.configure(**changes)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"invalid config: {exc}") from exc
        shown = config.to_dict()
    print(format_fields((k, _show_value(shown[k])) for k in changes))
    return 0


def _cmd_config_set_token(args: argparse.Namespace) -> int:
    token: str = args.token_value
    if token == "-":
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise InvalidArgument("the token must not be empty")
    with _open(args) as replica:
        replica.set_relay_token(token)
    print("relay token saved")
    return 0


# -- import -------------------------------------------------------------------------


def _read_csv(path: str, what: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and ``(line number, cells)`` rows of a CSV file (blank lines skipped)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader, None)
                if header is None:
                    raise InvalidArgument(f"{path}: the {what} file is empty (need a header)")
                rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
            except csv.Error as exc:
                raise InvalidArgument(f"{path} line {reader.line_num}: {exc}") from exc
    except OSError as exc:
        raise InvalidArgument(f"cannot read {what} file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{path} is not UTF-8 text: {exc.reason}") from exc
    header = [h.strip() for h in header]
    seen: set[str] = set()
    for name in header:
        try:
            check_name(name, "column name")
        except InvalidArgument as exc:
            raise InvalidArgument(f"{path} line 1: {exc}") from None
        if name in seen:
            raise InvalidArgument(f"{path} line 1: column {name!r} appears twice")
        seen.add(name)
    return header, rows


def _row_error(path: str, line: int, message: str, done: int) -> InvalidArgument:
    return InvalidArgument(f"{path} line {line}: {message} ({done} row(s) before it were imported)")


def _parse_int_cell(text: str, column: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise InvalidArgument(f"{column} must be an integer, got {text!r}") from None
    return check_safe_int(value, column)


def _import_catalog(replica: Replica, path: str, batch_size: int, progress: bool) -> int:
    header, rows = _read_csv(path, "catalog")
    missing = [c for c in _CATALOG_REQUIRED if c not in header]
    if missing:
        raise InvalidArgument(
            f"{path} line 1: missing column(s) {', '.join(missing)}; "
            f"the header needs {','.join(_CATALOG_REQUIRED)}"
        )
    bar = ProgressBar(len(rows), stream=sys.stderr, enabled=progress, label="catalog")
    batch: dict[str, dict[str, Any]] = {}
    done = 0

    def flush() -> None:
        nonlocal done
        if batch:
            replica.catalog.put_many(batch)
            done += len(batch)
            batch.clear()

    try:
        for n, (line, cells) in enumerate(rows):
            try:
                record = _csv_record(header, cells)
                sku = check_name(record.pop("sku").strip(), "SKU")
                fields: dict[str, Any] = {}
                for column, text in record.items():
                    if column in _CATALOG_REQUIRED and not text.strip():
                        raise InvalidArgument(f"{column} is empty")
                    if not text.strip():
                        continue  # an empty optional cell leaves that field unchanged
                    if column in _INTEGER_COLUMNS:
                        value = _parse_int_cell(text, column)
                        if value < 0:
                            raise InvalidArgument(f"{column} must not be negative, got {value}")
                        fields[column] = value
                    else:
                        fields[column] = text
            except InvalidArgument as exc:
                flush()
                raise _row_error(path, line, str(exc), done) from None
            if sku in batch:
                flush()  # keep the file's order: a later row for the same SKU wins
            batch[sku] = fields
            if len(batch) >= batch_size:
                flush()
            bar.update(n + 1)
        flush()
    finally:
        bar.close()
    return done


def _csv_record(header: list[str], cells: list[str]) -> dict[str, str]:
    """One CSV row as ``{column: text}``; a row of the wrong width is an error."""
    if len(cells) != len(header):
        raise InvalidArgument(f"expected {len(header)} cells, got {len(cells)}")
    return dict(zip(header, cells, strict=True))


def _import_stock(
    replica: Replica, path: str, location: str | None, progress: bool, batch_size: int = 1000
) -> tuple[int, int]:
    header, rows = _read_csv(path, "stock")
    missing = [c for c in _STOCK_COLUMNS if c not in header]
    extra = [c for c in header if c not in _STOCK_COLUMNS]
    if missing or extra:
        raise InvalidArgument(
            f"{path} line 1: the header must be {','.join(_STOCK_COLUMNS)} (got {','.join(header)})"
        )
    bar = ProgressBar(len(rows), stream=sys.stderr, enabled=progress, label="stock")
    done = unknown = 0
    batch: list[tuple[str, int]] = []

    def flush() -> None:
        nonlocal unknown
        if batch:
            replica.inventory.receive_many(batch, location=location, reason="import")
            unknown += sum(1 for sku in {s for s, _ in batch} if replica.catalog.get(sku) is None)
            batch.clear()

    try:
        for n, (line, cells) in enumerate(rows):
            try:
                record = _csv_record(header, cells)
                sku = check_name(record["sku"].strip(), "SKU")
                quantity = _parse_int_cell(record["quantity"], "quantity")
                if quantity < 0:
                    raise InvalidArgument(f"quantity must not be negative, got {quantity}")
            except InvalidArgument as exc:
                flush()  # the rows before the bad one stay imported, as documented
                raise _row_error(path, line, str(exc), done) from None
            if quantity > 0:
                batch.append((sku, quantity))
            done += 1
            if len(batch) >= batch_size:
                flush()
            bar.update(n + 1)
        flush()
    finally:
        bar.close()
    return done, unknown


def _cmd_import(args: argparse.Namespace) -> int:
    if args.catalog is None and args.stock is None:
        raise InvalidArgument("nothing to import: give --catalog and/or --stock")
    progress = bool(args.progress or sys.stderr.isatty())
    with _open(args) as replica:
        if args.location is not None and args.location not in replica.inventory.locations():
            known = ", ".join(replica.inventory.locations())
            raise InvalidArgument(f"unknown location {args.location!r}; known: {known}")
        if args.catalog is not None:
            count = _import_catalog(replica, args.catalog, args.batch_size, progress)
            print(f"catalog: {count} product row(s) imported from {args.catalog}")
        if args.stock is not None:
            rows, unknown = _import_stock(
                replica, args.stock, args.location, progress, args.batch_size
            )
            where = args.location or replica.location
            print(f"stock: {rows} row(s) received at {where} from {args.stock}")
            if unknown:
                print(
                    f"warning: {unknown} stock row(s) name SKUs that are not in the catalog",
                    file=sys.stderr,
                )
    return 0


# -- registration -------------------------------------------------------------------


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the store-side sub-commands to the ``tiendasync`` parser."""
    db, as_json, relay = _db_parent(), _json_parent(), _relay_parent()

    def add(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        help_text: str,
        handler: Handler | None,
        parents: list[argparse.ArgumentParser],
        epilog: str | None = None,
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=parents,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if handler is not None:
            p.set_defaults(handler=_guard(handler))
        return p

    # init
    p = add(commands, "init", "create a store replica database", _cmd_init, [db])
    p.add_argument("--tenant", required=True, help="tenant (retail chain) the store belongs to")
    p.add_argument(
        "--replica", required=True, metavar="ID", help="this replica's id, unique within the tenant"
    )
    p.add_argument("--location", required=True, help="the location this replica sells from")
    p.add_argument("--relay", metavar="URL", help="save this relay URL (ws:// or wss://)")
    p.add_argument("--token", metavar="TOKEN", help="save this relay token")

    # sync
    p = add(
        commands,
        "sync",
        "synchronise with the relay (once, or continuously)",
        _cmd_sync,
        [db, relay, as_json],
        epilog="Exit code 1 if the relay cannot be reached or refuses the token; "
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
        type=_positive_float,
        default=30.0,
        metavar="SECONDS",
        help="give up a one-shot sync after this long (default: 30)",
    )
    p.add_argument(
        "--poll",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="with --continuous: how often to check for finished sessions (default: 1)",
    )

    # queue
    queue = add(commands, "queue", "inspect and act on the sync queue", None, [])
    queue_cmds = queue.add_subparsers(
        dest="queue_command", metavar="ACTION", required=True, help="what to do"
    )
    p = add(
        queue_cmds,
        "list",
        "list queue entries, highest priority first",
        _cmd_queue_list,
        [db, as_json],
    )
    p.add_argument(
        "--conflicts", action="store_true", help="only entries that took part in a conflict"
    )
    p.add_argument("--status", choices=STATUSES, help="only entries with this status")
    p.add_argument("--kind", help="only entries of this kind (e.g. sale, receive, transfer)")
    p.add_argument(
        "--limit",
        type=_positive_int,
        default=100,
        metavar="N",
        help="show at most N entries (default: 100)",
    )
    p.add_argument(
        "--offset",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="skip the first N entries (default: 0)",
    )
    p = add(
        queue_cmds,
        "process",
        "retry one queue entry now (counts an attempt and syncs)",
        _cmd_queue_process,
        [db, relay, as_json],
        epilog="Without a relay URL (option or saved config) only the attempt is counted.",
    )
    p.add_argument("id", type=_int, metavar="ID", help="the queue entry id")
    p = add(
        queue_cmds,
        "resolve",
        "resolve a conflict with a compensating action",
        _cmd_queue_resolve,
        [db, as_json],
    )
    p.add_argument("conflict_id", metavar="CONFLICT_ID", help="the conflict id")
    p.add_argument(
        "--action", required=True, choices=RESOLVE_ACTIONS, help="the compensating action"
    )
    p.add_argument("--quantity", type=_int, metavar="N", help="units, for adjust and transfer")
    p.add_argument("--count", type=_int, metavar="N", help="counted units, for recount")
    p.add_argument(
        "--from-location", dest="from_location", metavar="L", help="source location, for transfer"
    )
    p.add_argument(
        "--sale-ids", dest="sale_ids", metavar="A,B", help="comma-separated sale ids, for void"
    )
    p.add_argument("--sku", metavar="S", help="the SKU to remap to, for remap")
    p.add_argument(
        "--fields",
        metavar="JSON",
        help='product fields as a JSON object, for restore (e.g. \'{"name": "X"}\')',
    )
    p.add_argument(
        "--field", metavar="NAME", help="only this product field, for keep_central and keep_local"
    )
    p.add_argument("--note", metavar="TEXT", help="a note recorded with the resolution")
    p.add_argument("--by", metavar="WHO", help="who resolves (default: this replica's id)")

    # log
    p = add(commands, "log", "show the sync log (newest first)", _cmd_log, [db, as_json])
    p.add_argument(
        "--limit",
        type=_positive_int,
        default=20,
        metavar="N",
        help="show at most N sessions (default: 20)",
    )
    p.add_argument(
        "--outcome", metavar="OUTCOME", help="only sessions with this outcome (ok, error, running)"
    )

    # status
    add(
        commands,
        "status",
        "show the store's identity, sync state and queue counts",
        _cmd_status,
        [db, as_json],
        epilog="'state' is this command's own connection state (offline); a sync running in\n"
        "another process shows up as 'last session', from the sync log.",
    )

    # config
    config = add(commands, "config", "show or change the store's sync config", None, [])
    config_cmds = config.add_subparsers(
        dest="config_command", metavar="ACTION", required=True, help="what to do"
    )
    add(config_cmds, "show", "show the sync config", _cmd_config_show, [db, as_json])
    keys = ", ".join(f.name for f in dataclasses.fields(StoreConfig))
    p = add(
        config_cmds,
        "set",
        "change config values (all or nothing)",
        _cmd_config_set,
        [db],
        epilog=f"Keys: {keys}.\nValues are parsed as JSON when possible, else taken as "
        "text, e.g.\n  interval_s=10 'priorities={\"sales\":9}' "
        "relay_url=ws://127.0.0.1:8765 relay_url=null",
    )
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE", help="a config value to set")
    p = add(
        config_cmds,
        "set-token",
        "save the relay token this store uses",
        _cmd_config_set_token,
        [db],
    )
    p.add_argument(
        "token_value", metavar="TOKEN", help="the token, or - to read it from standard input"
    )

    # import
    p = add(
        commands,
        "import",
        "import a product catalog and/or stock from CSV files",
        _cmd_import,
        [db],
        epilog="Catalog CSV header: sku,name,price_cents[,more columns]; price_cents and "
        "cost_cents\nare integers, other columns are text fields, empty optional "
        "cells are skipped.\nStock CSV header: sku,quantity; each row is received "
        "at the location.\nRows are checked one by one: at the first bad row the "
        "import stops with an error\nnaming its line; the rows before it stay "
        "imported.",
    )
    p.add_argument("--catalog", metavar="CSV", help="products CSV (sku,name,price_cents,...)")
    p.add_argument(
        "--stock", metavar="CSV", help="stock CSV (sku,quantity), imported after the catalog"
    )
    p.add_argument(
        "--location", metavar="L", help="location that receives the stock (default: the replica's)"
    )
    p.add_argument(
        "--batch-size",
        dest="batch_size",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="products per transaction (default: 1000)",
    )
    p.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on stderr even when it is not a terminal",
    )
