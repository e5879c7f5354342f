"""``tiendasync relay``: run the relay, manage its tokens.

::

    tiendasync relay --db relay.db --host 127.0.0.1 --port 8765 [--admin-port N]
    tiendasync relay token add --db relay.db --tenant acme --replica tienda-1 --location tienda-1
    tiendasync relay token add --db relay.db --admin
    tiendasync relay token list --db relay.db [--json]
    tiendasync relay token revoke --db relay.db ID
    tiendasync relay sync-now --replica tienda-1 [--full] --token-file admin.token
    tiendasync relay worker --store postgresql://... (cli/relay_worker.py)

Every handler runs under the one exit-code guard (:mod:`tiendasync.cli.exits`):
``sync-now`` exits 3 when the admin API refuses the token, 1 when it cannot
be reached or answers with another error.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import importlib
import json
import logging
import os
import signal
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from contextlib import closing
from typing import TYPE_CHECKING, Any, TextIO

from tiendasync.cli.common import Commands, read_token_file
from tiendasync.cli.exits import guard
from tiendasync.cli.relay_generations import register_generations
from tiendasync.cli.relay_worker import add_worker_options, register_worker, start_worker_thread
from tiendasync.cli.tables import format_time
from tiendasync.errors import (
    AuthError,
    ConfigError,
    InvalidArgument,
    StorageError,
    StoragePermissionError,
    SyncError,
    Unauthorized,
    UnreachableRelay,
)
from tiendasync.relay.admin import AdminHTTPServer, RelayAdmin
from tiendasync.relay.auth import issue_token
from tiendasync.relay.central import CENTRAL_REPLICA_ID
from tiendasync.relay.console import console_routes
from tiendasync.relay.dblock import relay_lock
from tiendasync.relay.generations import RolloverPolicy
from tiendasync.relay.sales_archive import SalesMonth, read_month, sale_json, sales_months
from tiendasync.relay.server import RateLimits, RelayServer, check_node_id
from tiendasync.relay.storage import (
    RelayStore,
    SqliteRelayStore,
    is_postgresql_url,
    open_postgresql_store,
    open_relay_store,
)
from tiendasync.store.storage.access import access_problem, directory_problem

if TYPE_CHECKING:
    from tiendasync.relay.cluster import ClusterNode

__all__ = ["register"]

log = logging.getLogger("tiendasync.relay")


def register(commands: Commands) -> None:
    """Add ``relay`` to the ``tiendasync`` sub-commands."""
    relay = commands.add_parser(
        "relay",
        help="run the relay server, or manage its tokens",
        description="Run the relay server (no sub-command), or manage its tokens.",
    )
    relay.add_argument(
        "--db",
        "--store",
        dest="db",
        default="relay.db",
        help="the relay's store of record: an SQLite file (default relay.db) or a "
        "postgresql:// URL (the postgresql extra)",
    )
    relay.add_argument("--host", default="127.0.0.1", help="address to listen on")
    relay.add_argument("--port", type=int, default=8765, help="websocket port (0: any free)")
    relay.add_argument(
        "--admin-port", type=int, default=None, help="admin API port (default --port + 1)"
    )
    relay.add_argument(
        "--yjs-writable", action="store_true", help="accept writes on the /yjs/ endpoint"
    )
    relay.add_argument(
        "--central-dir",
        default=None,
        help="where the relay's own per-tenant replicas live (invariants, "
        "conflicts); default DB.central next to --db",
    )
    _add_transport(relay)
    relay.add_argument(
        "--node-id",
        default=None,
        help="this relay process's name among the nodes of a cluster (letters, digits, "
        "'.', '_', '-'; shown in /metrics); default: generated",
    )
    limits = RateLimits()
    for flag, kind, default, what in (
        (
            "--max-conns-per-token",
            int,
            limits.max_connections_per_token,
            "open connections one token may hold",
        ),
        (
            "--max-msgs-per-s",
            float,
            limits.max_messages_per_s,
            "messages per second per connection (token bucket rate)",
        ),
        (
            "--msg-burst",
            int,
            limits.message_burst,
            "burst of messages per connection (0: the rate)",
        ),
        (
            "--max-new-conns-per-ip-per-s",
            float,
            limits.max_new_connections_per_ip_per_s,
            "new connections per second per client address",
        ),
        (
            "--new-conn-burst",
            int,
            limits.new_connection_burst,
            "burst of new connections per client address (0: the rate)",
        ),
        ("--max-frames-per-s", float, limits.max_frames_per_s, "frames per second per connection"),
        ("--frame-burst", int, limits.frame_burst, "burst of frames per connection (0: the rate)"),
        ("--max-bytes-per-s", float, limits.max_bytes_per_s, "bytes per second per connection"),
        ("--byte-burst", int, limits.byte_burst, "burst of bytes per connection (0: the rate)"),
        ("--max-docs-per-tenant", int, limits.max_docs_per_tenant, "documents per tenant"),
        (
            "--max-docs-per-replica",
            int,
            limits.max_docs_per_replica,
            "documents holding one replica's writes",
        ),
        (
            "--max-new-docs-per-session",
            int,
            limits.max_new_docs_per_session,
            "documents one session may create",
        ),
        (
            "--max-send-stall-s",
            float,
            limits.max_send_stall_s,
            "seconds a connection's outgoing data may stand still before it is cut",
        ),
        (
            "--max-gap-seconds",
            float,
            limits.max_gap_seconds,
            "seconds an update with missing dependencies is held",
        ),
        (
            "--max-gap-bytes",
            int,
            limits.max_gap_bytes,
            "bytes of updates with missing dependencies held per writer",
        ),
    ):
        relay.add_argument(
            flag,
            type=kind,
            default=default,
            help=f"{what}; default {default:.10g}" + ("" if "burst" in flag else ", 0: no limit"),
        )
    relay.add_argument(
        "--sync-log-days",
        type=float,
        default=90.0,
        help="days the relay keeps its sync log (each store's newest session stays); default 90",
    )
    relay.add_argument(
        "--review-delay-s",
        type=float,
        default=0.2,
        help="seconds committed updates are gathered before the central review merges and "
        "reviews them together; default 0.2, 0: review every commit",
    )
    _add_rollover(relay)
    relay.add_argument(
        "--invariants",
        action="append",
        default=[],
        metavar="MODULE:NAME",
        help="load app-defined invariants (an invariant or a list of them) "
        "from an importable module; repeatable",
    )
    relay.add_argument(
        "--review-workers",
        type=int,
        choices=(0, 1),
        default=1,
        help="with a postgresql:// store: run a review worker in this relay (1, the "
        "default) or leave the review to `tiendasync relay worker` processes (0)",
    )
    add_worker_options(relay)
    relay.set_defaults(handler=guard(_run))
    sub = relay.add_subparsers(
        dest="relay_command",
        metavar="{token,sync-now,export-sales,worker,generations,archive-generations,"
        "restore-generations}",
    )
    _add_export_sales(sub)
    register_generations(sub)
    register_worker(sub, _load_invariants)

    now = sub.add_parser(
        "sync-now",
        help="ask a connected store to sync now (through the admin API)",
        description="Ask a connected store to sync now, like the console's button (the "
        "seed's --tienda). Talks to a running relay's admin API.",
    )
    now.add_argument("--replica", required=True, help="the store's replica id")
    now.add_argument("--full", action="store_true", help="a full state exchange")
    now.add_argument("--tenant", default=None, help="tenant (needed if there are several)")
    now.add_argument(
        "--admin-url",
        default="http://127.0.0.1:8766",
        help="the relay's admin API (default http://127.0.0.1:8766)",
    )
    admin_tokens = now.add_mutually_exclusive_group()
    admin_tokens.add_argument(
        "--token", default=None, help="admin token (default: $TIENDASYNC_ADMIN_TOKEN)"
    )
    admin_tokens.add_argument(
        "--token-file", default=None, metavar="PATH", help="read the admin token from this file"
    )
    now.set_defaults(handler=guard(_sync_now))

    token = sub.add_parser("token", help="add, list or revoke access tokens")
    tokens = token.add_subparsers(dest="token_command", metavar="{add,list,revoke}", required=True)

    add = tokens.add_parser("add", help="create a token and print it (shown only once)")
    add.add_argument(
        "--db", "--store", dest="token_db", default=None, help="relay database file or URL"
    )
    add.add_argument("--tenant", help="tenant of the replica token")
    add.add_argument("--replica", help="replica id the token is bound to")
    add.add_argument(
        "--location",
        help="the location the replica's store sells at: the token then writes only "
        "that location's stock, sales and record (and what its config grants)",
    )
    add.add_argument("--admin", action="store_true", help="an admin token (no tenant)")
    add.set_defaults(handler=guard(_token_add))

    lst = tokens.add_parser("list", help="list tokens (never their secrets)")
    lst.add_argument(
        "--db", "--store", dest="token_db", default=None, help="relay database file or URL"
    )
    lst.add_argument("--json", action="store_true", help="print JSON")
    lst.set_defaults(handler=guard(_token_list))

    rev = tokens.add_parser("revoke", help="revoke a token by its id")
    rev.add_argument(
        "--db", "--store", dest="token_db", default=None, help="relay database file or URL"
    )
    rev.add_argument("id", help="token id (as shown by token list)")
    rev.set_defaults(handler=guard(_token_revoke))


def _add_transport(relay: argparse.ArgumentParser) -> None:
    relay.add_argument(
        "--tls-cert",
        default=None,
        help="PEM certificate: serve wss:// (and https:// for the admin API)",
    )
    relay.add_argument("--tls-key", default=None, help="PEM private key for --tls-cert")
    relay.add_argument("--no-admin", action="store_true", help="do not serve the admin HTTP API")
    relay.add_argument(
        "--no-compression",
        action="store_true",
        help="refuse websocket compression (permessage-deflate): more bytes on the wire, "
        "less CPU and memory per connection",
    )


def _add_rollover(relay: argparse.ArgumentParser) -> None:
    relay.add_argument(
        "--rollover-slots",
        type=int,
        default=None,
        metavar="N",
        help="roll a counter or LWW document over to a new generation when a cut would "
        "fold more than N slots (those beyond the one per entity or field a fresh seed "
        "keeps), at start and while running (docs/generations.md); default: never",
    )
    relay.add_argument(
        "--rollover-bytes",
        type=int,
        default=None,
        metavar="N",
        help="roll a counter or LWW document over when the slots a cut would fold hold "
        "more than N stored bytes; default: never",
    )
    relay.add_argument(
        "--rollover-interval",
        type=float,
        default=86_400.0,
        metavar="SECONDS",
        help="roll a document over at most once per SECONDS, at start and while running "
        "(on a cluster, the node holding the review lock decides while running); 0: only "
        "at start, at every start (default: 86400)",
    )


def _add_export_sales(sub: Any) -> None:
    export = sub.add_parser(
        "export-sales",
        help="write the sales the relay keeps (every month) as JSON lines",
        description="Write every sale of the tenant the relay keeps, one JSON object per "
        "line, by location then month (oldest first). Replicas keep only their last "
        "sales_months months; the relay keeps them all.",
    )
    export.add_argument(
        "--db", "--store", dest="token_db", default=None, help="relay database file or URL"
    )
    export.add_argument("--tenant", required=True, help="the tenant whose sales to export")
    export.add_argument("--location", default=None, help="only this location's sales")
    export.add_argument("--since", default=None, metavar="YYYY-MM", help="from this month on")
    export.add_argument("--until", default=None, metavar="YYYY-MM", help="up to this month")
    export.add_argument(
        "--output", "-o", default="-", metavar="PATH", help="write there (default: stdout)"
    )
    export.set_defaults(handler=guard(_export_sales))


def _export_sales(args: argparse.Namespace) -> int:
    with closing(open_relay_store(_db(args))) as store:
        months = sales_months(
            store, args.tenant, location=args.location, since=args.since, until=args.until
        )
        if args.output == "-":
            counts = _write_sales(store, args.tenant, months, sys.stdout)
        else:
            partial = f"{args.output}.partial"
            try:
                with open(partial, "w", encoding="utf-8") as out:
                    counts = _write_sales(store, args.tenant, months, out)
                os.replace(partial, args.output)
            except OSError as exc:
                raise StorageError(f"cannot write {args.output}: {exc}") from exc
    exported, invalid = counts
    note = f", {invalid} invalid stored records left out" if invalid else ""
    print(f"exported {exported} sales from {len(months)} months{note}", file=sys.stderr)
    return 0


def _write_sales(
    store: RelayStore, tenant: str, months: list[SalesMonth], out: TextIO
) -> tuple[int, int]:
    exported = invalid = 0
    for month in months:  # one document in memory at a time
        sales, left_out = read_month(store, tenant, month)
        invalid += left_out
        for sale in sales:
            out.write(json.dumps({"period": month.period, **sale_json(sale)}) + "\n")
            exported += 1
    return exported, invalid


def _db(args: argparse.Namespace) -> str:
    path: str = getattr(args, "token_db", None) or args.db
    return path


def _sync_now(args: argparse.Namespace) -> int:
    token = args.token or (read_token_file(args.token_file) if args.token_file else None)
    token = token or os.environ.get("TIENDASYNC_ADMIN_TOKEN")
    if not token:
        raise InvalidArgument(
            "give --token-file, --token or set TIENDASYNC_ADMIN_TOKEN (an admin token)"
        )
    query = f"?tenant={urllib.parse.quote(args.tenant)}" if args.tenant else ""
    url = (
        f"{args.admin_url.rstrip('/')}/api/sync/config/"
        f"{urllib.parse.quote(args.replica)}/sync_now/{query}"
    )
    request = urllib.request.Request(
        url,
        method="POST",
        data=json.dumps({"full": args.full}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise _refusal(exc) from None
    except OSError as exc:
        raise UnreachableRelay(f"cannot reach the admin API at {args.admin_url}: {exc}") from exc
    print(f"asked {args.replica} to sync now{' (full)' if args.full else ''}")
    return 0


def _cannot_listen(host: str, port: int, option: str, exc: OSError) -> str:
    """One line for a port the relay cannot listen on (most often: already in use)."""
    why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    hint = (
        f"; is another relay running? choose another {option}"
        if exc.errno == errno.EADDRINUSE
        else ""
    )
    return f"cannot listen on {host}:{port}: {why}{hint}"


def _refusal(exc: urllib.error.HTTPError) -> SyncError:
    """The admin API's error answer as an error: refused credentials, else a failed request.

    A refused admin token is an :class:`AuthError` (exit 3, re-authenticate);
    any other answer (no such replica, not connected...) a :class:`SyncError`
    (exit 1), with the API's own message.
    """
    try:
        message = json.loads(exc.read()).get("error", exc.reason)
    except ValueError:
        message = exc.reason
    if exc.code == Unauthorized.http_status:
        return AuthError(message)
    return SyncError(message)


def _load_invariants(specs: list[str]) -> list[Any]:
    """``module:name`` -> the invariant (or list of invariants) it names."""
    loaded: list[Any] = []
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise InvalidArgument(f"--invariants wants MODULE:NAME, got {spec!r}")
        try:
            value = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise InvalidArgument(f"cannot load invariants {spec!r}: {exc}") from exc
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if not (hasattr(item, "name") and callable(getattr(item, "check", None))):
                raise InvalidArgument(f"{spec}: {item!r} is not an invariant")
        loaded.extend(items)
    return loaded


def _token_add(args: argparse.Namespace) -> int:
    if args.replica == CENTRAL_REPLICA_ID:
        raise InvalidArgument(f"replica id {CENTRAL_REPLICA_ID!r} is reserved for the relay")
    if args.admin and (args.tenant or args.replica or args.location):
        raise InvalidArgument("--admin takes no --tenant, --replica or --location")
    if not args.admin and not (args.tenant and args.replica):
        raise InvalidArgument("give --tenant and --replica (or --admin)")
    with closing(open_relay_store(_db(args))) as store:
        token = issue_token(
            store,
            tenant=args.tenant,
            replica_id=args.replica,
            admin=args.admin,
            location=args.location,
        )
    if not args.admin and args.location is None:
        print(
            "note: a token without --location may write every document its config "
            "grants (default: all); give --location for least privilege",
            file=sys.stderr,
        )
    print(token)
    return 0


def _token_list(args: argparse.Namespace) -> int:
    with closing(open_relay_store(_db(args))) as store:
        records = store.list_tokens()
    if args.json:
        print(json.dumps([r.public() for r in records], indent=2))
        return 0
    print(
        f"{'ID':<14} {'TENANT':<16} {'REPLICA':<20} {'LOCATION':<16} {'ADMIN':<5} "
        f"{'CREATED':<19} REVOKED"
    )
    for r in records:
        print(
            f"{r.id:<14} {r.tenant or '-':<16} {r.replica_id or '-':<20} {r.location or '-':<16} "
            f"{'yes' if r.admin else 'no':<5} {format_time(r.created_at):<19} "
            f"{format_time(r.revoked_at)}"
        )
    return 0


def _token_revoke(args: argparse.Namespace) -> int:
    with closing(open_relay_store(_db(args))) as store:
        store.revoke_token(args.id)
    print(f"revoked {args.id}", file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    if is_postgresql_url(args.db):
        return _run_on_postgresql(args)
    central_dir = args.central_dir or f"{args.db}.central"
    # Refuse by name, before any file is created, what would fail later (or worse,
    # start "ok" and fail on the first write).
    if (problem := access_problem(args.db, write=True)) is not None:
        raise StoragePermissionError(f"cannot open relay database {args.db}: {problem}")
    if (problem := directory_problem(central_dir)) is not None:
        raise StoragePermissionError(f"cannot keep the central writers in {central_dir}: {problem}")
    with relay_lock(args.db):  # one relay per database (RelayLocked: exit 1 at once)
        store = SqliteRelayStore(args.db)
        try:
            asyncio.run(_serve(store, args, central_dir))
        finally:
            store.close()
    return 0


def _run_on_postgresql(args: argparse.Namespace) -> int:
    """The relay on a PostgreSQL store of record: one node of a cluster (any number of
    relays may share the database; see relay.cluster)."""
    central_dir = args.central_dir
    if not central_dir:
        raise InvalidArgument(
            "give --central-dir with a postgresql:// store (no file to put it by)"
        )
    if (problem := directory_problem(central_dir)) is not None:
        raise StoragePermissionError(f"cannot keep the central writers in {central_dir}: {problem}")
    node_id = check_node_id(args.node_id) if args.node_id else None
    store = open_postgresql_store(args.db, node_id=node_id)
    try:
        from tiendasync.relay.cluster import ClusterNode
        from tiendasync.relay.pgfeed import PgFeed  # the optional extra, present: store opened

        cluster = ClusterNode(PgFeed(args.db, store.node_id))
        asyncio.run(_serve(store, args, central_dir, cluster))
    finally:
        store.close()
    return 0


def _review_by_workers(server: RelayServer, args: argparse.Namespace) -> Callable[[], None]:
    """On a PostgreSQL store the review is the workers' (relay/workers.py): this relay's
    central writers only merge (for the admin API's resolutions), and a worker thread
    here reviews unless ``--review-workers 0``.  Returns what stops it."""
    if server.core.reviews is not None:
        server.core.reviews.review_invariants = False
    if args.review_workers == 0:
        return lambda: None
    loop = asyncio.get_running_loop()
    fanout = server.core.fanout

    def committed(tenant: str, writes: list[tuple[str, bytes]]) -> None:
        # Served to this relay's sessions at once (ingest_central logs the update once
        # more: harmless, CRDT updates are idempotent) until the nodes' catch-up from
        # the table (issue 15 part 2) serves every node's sessions.
        for doc, data in writes:
            loop.call_soon_threadsafe(fanout.ingest_central, tenant, doc, data)

    cache = os.path.join(str(server.central_dir or "."), "review-workers")
    return start_worker_thread(
        args.db,
        cache,
        _load_invariants(args.invariants),
        lease_seconds=args.lease_seconds,
        batch=args.review_batch,
        on_committed=committed,
    )


async def _serve(
    store: RelayStore,
    args: argparse.Namespace,
    central_dir: str,
    cluster: ClusterNode | None = None,
) -> None:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise InvalidArgument("give both --tls-cert and --tls-key")
    ssl_context = None
    if args.tls_cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ssl_context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidArgument(f"cannot load TLS certificate/key: {exc}") from exc
    server = RelayServer(
        store,
        host=args.host,
        port=args.port,
        yjs_writable=args.yjs_writable,
        ssl_context=ssl_context,
        compression=not args.no_compression,
        central_dir=central_dir,
        invariants=_load_invariants(args.invariants),
        sync_log_days=args.sync_log_days,
        cluster=cluster,
        node_id=check_node_id(args.node_id) if args.node_id else None,
        review_delay=args.review_delay_s,
        rollover=RolloverPolicy(args.rollover_slots, args.rollover_bytes),
        rollover_interval=args.rollover_interval,
        limits=RateLimits(
            args.max_conns_per_token,
            args.max_msgs_per_s,
            args.msg_burst,
            args.max_new_conns_per_ip_per_s,
            args.new_conn_burst,
            max_frames_per_s=args.max_frames_per_s,
            frame_burst=args.frame_burst,
            max_bytes_per_s=args.max_bytes_per_s,
            byte_burst=args.byte_burst,
            max_docs_per_tenant=args.max_docs_per_tenant,
            max_docs_per_replica=args.max_docs_per_replica,
            max_new_docs_per_session=args.max_new_docs_per_session,
            max_send_stall_s=args.max_send_stall_s,
            max_gap_seconds=args.max_gap_seconds,
            max_gap_bytes=args.max_gap_bytes,
        ),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        raise ConfigError(_cannot_listen(args.host, args.port, "--port", exc)) from None
    admin: AdminHTTPServer | None = None
    if args.no_admin and server.forwarder is not None:
        # no admin API here, but other nodes' admin APIs forward to this node while it
        # holds the review lock: a RelayAdmin runs what they ask (relay.forward)
        RelayAdmin(server)
    if not args.no_admin:
        admin_port = (
            args.admin_port
            if args.admin_port is not None
            else (server.port + 1 if args.port else 0)
        )
        admin = AdminHTTPServer(
            server,
            host=args.host,
            port=admin_port,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            extra_routes=console_routes(RelayAdmin(server)),
        )
        try:
            await admin.start()
        except OSError as exc:
            await server.stop()
            raise ConfigError(_cannot_listen(args.host, admin_port, "--admin-port", exc)) from None
        print(
            f"tiendasync admin API on http://{args.host}:{admin.port}/api/sync/",
            file=sys.stderr,
            flush=True,
        )
        print(
            f"tiendasync console on {'https' if args.tls_cert else 'http'}://"
            f"{args.host}:{admin.port}/console/",
            file=sys.stderr,
            flush=True,
        )
    stop_workers = _review_by_workers(server, args) if is_postgresql_url(args.db) else None
    scheme = "wss" if ssl_context else "ws"
    print(
        f"tiendasync relay listening on {scheme}://{args.host}:{server.port}/sync",
        file=sys.stderr,
        flush=True,
    )
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        if stop_workers is not None:
            await asyncio.to_thread(stop_workers)
        if admin is not None:
            await admin.stop()
        await server.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
