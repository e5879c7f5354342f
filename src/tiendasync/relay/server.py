"""The relay server: the websocket pump around :class:`~tiendasync.relay.core.RelayCore`.

One asyncio process.  Every decision (authentication, validation, storage
contents, acknowledgements, fan-out, invariant review) is the core's; this
module only moves bytes between websockets and the core, and runs the single
writer task that stores applied updates in batches (group commit) before the
core acknowledges and fans them out.

Paths: ``/sync`` (or ``/``) speaks tiendasync's protocol;
``/yjs/<tenant>/<doc>?token=...`` speaks the standard y-protocols sync
protocol for one doc (read-only unless ``yjs_writable=True``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import http
import logging
import re
import secrets
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.http11 import Request, Response

from tiendasync.errors import ConfigError, TiendaSyncError
from tiendasync.protocol import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_RATE_LIMIT,
    MAX_FRAME_BYTES,
    CloseCode,
    Hello,
)
from tiendasync.protocol.codes import MAX_HELLO_BYTES
from tiendasync.protocol.yprotocols import FollowerClose, follower_close_code
from tiendasync.relay.auth import check_token
from tiendasync.relay.broker import Broker
from tiendasync.relay.central import CentralWriter
from tiendasync.relay.cluster import ClusterNode, Notice
from tiendasync.relay.core import RelayCore
from tiendasync.relay.docs import DocCache
from tiendasync.relay.forward import Forwarder, RequestBook
from tiendasync.relay.generations import Generations, RolloverPolicy
from tiendasync.relay.heap import HeapTrimPolicy, release_free_heap
from tiendasync.relay.integrity import VerifyReport, verify_store
from tiendasync.relay.lookups import log_session, lookup_follower, lookup_hello
from tiendasync.relay.nodes import WAKE, NodeBoard
from tiendasync.relay.policy import Grants, RateLimits
from tiendasync.relay.records import SyncRequest
from tiendasync.relay.reviews import ReviewWork
from tiendasync.relay.rollover import LiveRollover, RolloverSchedule
from tiendasync.relay.state import HelloFacts, PendingWrite, RelaySession
from tiendasync.relay.storage import AppendResult, RelayStore, TokenRecord
from tiendasync.relay.writer import GroupCommit

__all__ = ["Grants", "RateLimits", "RelayServer", "check_node_id"]

log = logging.getLogger("tiendasync.relay")


def _session_id() -> str:
    return secrets.token_hex(8)


def _sweep_interval(idle_seconds: float) -> float:
    """Seconds between sweeps of idle documents (and at least between heap trims)."""
    return max(0.5, min(60.0, idle_seconds / 2))


def _node_id() -> str:
    return f"node-{secrets.token_hex(4)}"


_NODE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def check_node_id(node_id: str) -> str:
    """``node_id`` if it is a valid relay node name (1-64 of letters, digits, ``._-``)."""
    if not _NODE_ID.fullmatch(node_id):
        raise ConfigError(
            f"not a valid node id {node_id[:80]!r}: 1-64 letters, digits, '.', '_' or '-'"
        )
    return node_id


def _close_code(code: int | None, *, follower: bool = False) -> int:
    """The code to close with: one of ours (:class:`CloseCode`), never a code a peer
    put in its ERROR frame (echoing it would let a peer choose our verdict).

    A y-protocols ``follower`` gets the y-websocket form (``follower_close_code``):
    4400-4499 for refusals it must not retry."""
    if code is None:
        return CLOSE_NORMAL
    if follower:
        wire = follower_close_code(code)
        if wire in FollowerClose._value2member_map_:
            return wire
    return code if code in CloseCode._value2member_map_ else CLOSE_PROTOCOL


def _close_reason(reason: str) -> str:
    """A websocket close reason must fit in 123 UTF-8 bytes."""
    return reason.encode("utf-8")[:123].decode("utf-8", "ignore")


#: The largest websocket message the relay sends: whole frames, cut at frame
#: boundaries (a larger frame is a message of its own).
SEND_CHUNK_BYTES = 1024 * 1024


def _high_water(transport: asyncio.WriteTransport) -> int:
    """The write-buffer size past which ``transport`` pauses its writers (0: unknown)."""
    try:
        return int(transport.get_write_buffer_limits()[1])
    except (AttributeError, TypeError, ValueError, IndexError):
        return 0


class _Stalled(Exception):
    """Outgoing data made no progress for ``seconds``: the peer does not read."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no progress for {seconds:.1f} s")
        self.seconds = seconds


@dataclass
class _Link:
    """The I/O side of one session: its websocket and flushing state."""

    session: RelaySession
    ws: ServerConnection
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    flush_scheduled: bool = False
    close_sent: bool = False
    #: cut for not reading: nothing more is sent, the transport is aborted
    cut: bool = False


#: How often (seconds) a session's end may also prune the sync log.
SYNC_LOG_PRUNE_EVERY_S = 3600.0
#: How often documents committed to are checked for a rollover while running (at most).
LIVE_ROLLOVER_CHECK_S = 60.0


def _nothing() -> None:
    """A review-thread barrier: runs after everything handed to it before."""


#: How often a HELLO held by a rollover of its tenant looks again.
ROLLOVER_HELLO_POLL_S = 0.01


class RelayServer:
    """The relay.  ``await start()``, serve, ``await stop()``.

    ``store`` is owned by the caller (the server never closes it).  Pass
    ``port=0`` to bind a free port; :attr:`port` is the real one after start.
    ``ssl_context`` serves ``wss://``.  ``limits`` caps connections and
    message rates (see :class:`~tiendasync.relay.core.RateLimits`).
    ``trim_heap``: after documents were unloaded, give the allocator's free heap
    back to the system (``relay.heap``; glibc only), at most once a sweep.
    """

    def __init__(
        self,
        store: RelayStore,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        broker: Broker | None = None,
        max_update_bytes: int = MAX_FRAME_BYTES,
        max_message_bytes: int = 4 * MAX_FRAME_BYTES,
        max_outbound_bytes: int = 64 * 1024 * 1024,
        max_batch: int = 1000,
        compact_threshold: int = 1000,
        max_docs: int = 1000,
        idle_seconds: float = 600.0,
        yjs_writable: bool = False,
        central_dir: str | Path | None = None,
        invariants: Iterable[Any] = (),
        ssl_context: ssl.SSLContext | None = None,
        compression: bool = True,
        hello_timeout: float = 10.0,
        limits: RateLimits | None = None,
        sync_log_days: float = 90.0,
        cluster: ClusterNode | None = None,
        node_id: str | None = None,
        review_delay: float = 0.2,
        rollover: RolloverPolicy | None = None,
        rollover_interval: float = 86_400.0,
        trim_heap: bool = True,
    ) -> None:
        if not sync_log_days > 0:
            raise ConfigError(f"sync_log_days must be positive, got {sync_log_days!r}")
        if not review_delay >= 0:
            raise ConfigError(f"review_delay must be 0 or more, got {review_delay!r}")
        #: Seconds committed updates are gathered before the central writers merge
        #: and review them together (``CentralReviews.review``); 0: every batch.
        self.review_delay = review_delay
        self._review_timer: asyncio.TimerHandle | None = None
        self.store = store
        #: Sessions older than this leave the sync log (each replica's newest stays).
        self.sync_log_days = sync_log_days
        self._pruned_at: float | None = None
        self.host = host
        self._requested_port = port
        self.max_message_bytes = max_message_bytes
        self.max_batch = max_batch
        self.compact_threshold = compact_threshold
        self.ssl_context = ssl_context
        #: Whether sync and follower connections may negotiate permessage-deflate
        #: (docs/protocol.md#compression): fewer bytes, some CPU and ~40 KiB each.
        self.compression = compression
        #: A connection that has not said HELLO after this many seconds is closed.
        self.hello_timeout = hello_timeout
        #: Document generations: rolled over at start past ``rollover`` (off by
        #: default); late updates of sessions a generation behind are carried.
        self.generations = Generations(store, rollover)
        self._late_locks: dict[tuple[str, str], asyncio.Lock] = {}
        if not rollover_interval >= 0:
            raise ConfigError(f"rollover_interval must be 0 or more, got {rollover_interval!r}")
        #: A document past ``rollover`` rolls over at most once per this many seconds
        #: since its last cut, at start and while running (a document never cut: since
        #: the start); 0: only at start, at every start.
        self.rollover_interval = rollover_interval
        #: Rollovers while running, from :meth:`start` (None on a cluster); its
        #: ``schedule`` is None when none happen by themselves (:attr:`rollover_interval`
        #: 0, or no policy): then only :meth:`roll_over` runs one.
        self.live_rollover: LiveRollover | None = None
        #: When the allocator's free heap goes back to the system after documents
        #: were unloaded (``relay.heap``; None: never, the process's own business).
        self.heap_trim = HeapTrimPolicy(_sweep_interval(idle_seconds)) if trim_heap else None
        self.core = RelayCore(
            store,
            clock=time.time,
            random_id=_session_id,
            broker=broker,
            max_update_bytes=max_update_bytes,
            max_outbound_bytes=max_outbound_bytes,
            max_docs=max_docs,
            idle_seconds=idle_seconds,
            yjs_writable=yjs_writable,
            central_dir=central_dir,
            invariants=invariants,
            on_output=self._on_output,
            on_write=self._on_write,
            limits=limits,
            on_late=self._on_late,
        )
        #: Seconds between retries of central reviews that failed (their storage).
        self.review_retry_seconds = 2.0
        #: How often open sessions' tokens are checked for revocation (the
        #: CLI revokes in the database file, from another process).
        self.revocation_check_seconds = 0.5
        self._revocation_task: asyncio.Task[None] | None = None
        self._server: Server | None = None
        self._review_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._writes: GroupCommit | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._sweeper_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._links: dict[str, _Link] = {}
        self.port: int = port
        #: What the start-up check of the stored documents found (see ``relay.integrity``).
        self.verified: VerifyReport | None = None
        #: This relay's side of a cluster on a shared database (None: the only relay).
        self.cluster = cluster
        #: This process's name among the relay nodes (``/metrics``: ``tiendasync_node_info``).
        self.node_id = check_node_id(
            cluster.node_id if cluster is not None else (node_id or _node_id())
        )
        if cluster is not None:
            cluster.attach(self.core, self.tenants)
        #: A cluster's admin operations on the central writers, run by the node that
        #: holds the review lock whichever node is asked (``relay.forward``).
        self.forwarder: Forwarder | None = None
        if cluster is not None and isinstance(store, RequestBook):
            self.forwarder = Forwarder(cluster, store, settle=self.settle_writes)
        #: The cluster seen through the store of record (set by :meth:`start`).
        self.nodes: NodeBoard | None = None
        self._beat_task: asyncio.Task[None] | None = None

    # -- what the admin layer and tests use ----------------------------------------------------

    @property
    def docs(self) -> DocCache:
        return self.core.docs

    @property
    def broker(self) -> Broker:
        return self.core.broker

    @property
    def updates_total(self) -> int:
        return self.core.updates_total

    @property
    def central_dir(self) -> Path | None:
        return self.core.central_dir

    def central(self, tenant: str) -> CentralWriter:
        """The tenant's central writer, here.  On a cluster only the node holding the
        review lock has current ones (ConfigError elsewhere): the admin layer asks that
        node through :attr:`forwarder`."""
        if self.cluster is not None and not self.cluster.reviewer:
            raise ConfigError(
                f"relay node {self.node_id} does not run the invariant review (another node "
                "holds the review lock): ask the node whose /metrics show "
                "tiendasync_cluster_reviewer 1"
            )
        return self.core.central(tenant)

    def tenants(self) -> list[str]:
        """Tenants known to this relay (from its tokens)."""
        return sorted({t.tenant for t in self.store.list_tokens() if t.tenant})

    def connected_replicas(self, tenant: str) -> list[str]:
        return self.core.connected_replicas(tenant)

    def request_sync(self, tenant: str, replica_id: str, full: bool = False) -> bool:
        return self.core.request_sync(tenant, replica_id, full)

    def queue_depth(self) -> int:
        return 0 if self._writes is None else self._writes.depth()

    def connection_count(self) -> int:
        return self.core.connection_count()

    def node_metrics(self) -> dict[str, float]:
        """This node's own figures (what its heartbeat and ``/metrics`` carry).

        ``reviewer`` is 1 on the node whose central writers keep the conflicts
        (a lone relay with a ``central_dir``; on a cluster, the review lock's holder)."""
        if self.cluster is not None:
            reviewer = self.cluster.reviewer
        else:
            reviewer = self.core.reviews is not None
        return {
            "connections": float(self.connection_count()),
            "updates_total": float(self.updates_total),
            "queue_depth": float(self.queue_depth()),
            "loaded_docs": float(len(self.docs)),
            "reviewer": float(reviewer),
        }

    async def settle_writes(self, timeout: float) -> bool:
        """Wait until the writes queued now (the central writers' too: their callbacks
        run on this loop first) are committed or failed; whether within ``timeout``."""
        for _ in range(2):
            await asyncio.sleep(0)
        return True if self._writes is None else await self._writes.settled(timeout)

    def wake_nodes(self, nodes: list[str]) -> None:
        """Tell ``nodes`` (a cluster's) to take the requests left for them now, not at
        their next heartbeat (``relay.nodes``).  Best effort: the rows stay the fallback."""
        if self.cluster is None or not nodes:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # not on the loop: the heartbeat takes them
            return
        cluster = self.cluster

        async def send() -> None:
            try:
                await cluster.send(WAKE, {"to": sorted(nodes)})
            except (TiendaSyncError, ValueError) as exc:
                log.warning("waking nodes %s failed (their next beat serves it): %s", nodes, exc)

        self._spawn(send())

    def _on_wake(self, notice: Notice) -> None:
        to = notice.fields.get("to")
        if isinstance(to, list) and self.node_id in to and self.nodes is not None:
            self.nodes.wake()

    def _serve_request(self, request: SyncRequest) -> None:
        self.core.request_sync(request.tenant, request.replica_id, request.full)

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("relay already started")
        # Never announce what cannot be served: rebuild every stored doc first.
        self.verified = await asyncio.to_thread(
            verify_store, self.store, repair_underclaims=self.cluster is None
        )
        # Before anyone is served: no write can be on its way to a document cut here.
        self.live_rollover = self._rollovers(await self._roll_over_at_start())
        after_commit = self._after_commit()
        if self.cluster is not None:
            # Another node's cut (its notice, a read, a refused commit): the central
            # writers move over here too, once what they were handed has run.
            self.core.on_moved = self._moved_elsewhere
            if self.live_rollover.schedule is not None:
                self.cluster.on_rows = self.live_rollover.schedule.noted
        self._writes = GroupCommit(
            self.core,
            self.store,
            max_batch=self.max_batch,
            compact_threshold=self.compact_threshold,
            spawn=self._spawn,
            after_commit=after_commit,
        )
        # Invariant reviews run on one worker thread (in order): a big catch-up
        # must not stall pings and other stores; the central writers' writes come
        # back to this loop.
        pool = self._review_pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="relay-review"
        )

        def review_later(work: ReviewWork) -> None:
            pool.submit(work.run)

        loop = asyncio.get_running_loop()

        def defer(flush: Callable[[], None]) -> None:
            self._review_timer = loop.call_later(self.review_delay, flush)

        if self.core.reviews is not None:
            self.core.reviews.run = review_later
            self.core.reviews.call_soon = loop.call_soon_threadsafe
            self.core.reviews.defer = defer if self.review_delay > 0 else None
        if self.cluster is not None:  # LISTENing before anything is served
            self.cluster.on(WAKE, self._on_wake)
            await self.cluster.start()
        if self.forwarder is not None:
            self.forwarder.start()
        self._writer_task = asyncio.create_task(self._writes.run(), name="relay-writer")
        self._sweeper_task = asyncio.create_task(self._sweeper(), name="relay-sweeper")
        self._revocation_task = asyncio.create_task(
            self._revocation_watch(), name="relay-revocations"
        )
        self._server = await serve(
            self._handler,
            self.host,
            self._requested_port,
            process_request=self._process_request,
            max_size=self.max_message_bytes,
            ssl=self.ssl_context,
            compression="deflate" if self.compression else None,
            ping_interval=20,
            ping_timeout=60,  # a relay busy with a storm is not dead
        )
        sockets = list(self._server.sockets)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        board = self.nodes = NodeBoard(self.store, self.node_id, time.time())
        self._beat_task = asyncio.create_task(
            board.run(
                time.time,
                lambda: (self.core.connected_pairs(), self.node_metrics()),
                self._serve_request,
            ),
            name="relay-heartbeat",
        )
        scheme = "wss" if self.ssl_context else "ws"
        log.info("relay listening on %s://%s:%s/sync", scheme, self.host, self.port)

    def _after_commit(self) -> Callable[[list[PendingWrite], AppendResult], None] | None:
        """Who is told of each stored batch: the cluster's cursors, the rollover schedule."""
        live = self.live_rollover
        told = [
            hook
            for hook in (
                None if self.cluster is None else self.cluster.committed,
                None if live is None or live.schedule is None else live.committed,
            )
            if hook is not None
        ]
        if len(told) < 2:
            return told[0] if told else None

        def both(batch: list[PendingWrite], result: AppendResult) -> None:
            for hook in told:
                hook(batch, result)

        return both

    async def _roll_over_at_start(self) -> RolloverSchedule | None:
        """Roll over what is due and was not cut within :attr:`rollover_interval`; the
        schedule of the rollovers while running, which counts the interval from each
        document's last cut."""
        if not self.generations.policy.enabled:
            return None  # nothing rolls over: no cut times to read
        starts = (
            await asyncio.to_thread(self.generations.generation_starts)
            if self.rollover_interval
            else {}
        )
        wall = time.time()
        rolled = await asyncio.to_thread(
            self.generations.roll_over_due,
            min_interval_s=self.rollover_interval,
            now=wall,
            starts=starts,
        )
        for tenant, doc, generation in rolled:
            log.info("%s/%s rolled over to generation %d", tenant, doc, generation)
            starts.pop((tenant, doc), None)  # began now: the start counts
        schedule = self._rollover_schedule()
        if schedule is not None:
            for key, began in starts.items():
                schedule.rolled(key, schedule.started_at - max(0.0, wall - began))
        return schedule

    def _rollover_schedule(self) -> RolloverSchedule | None:
        """When documents are checked for a rollover while running (None: never)."""
        if not self.rollover_interval or not self.generations.policy.enabled:
            return None
        return RolloverSchedule(
            self.rollover_interval,
            time.monotonic(),
            check_s=min(LIVE_ROLLOVER_CHECK_S, self.rollover_interval),
        )

    def _rollovers(self, schedule: RolloverSchedule | None) -> LiveRollover:
        cluster = self.cluster
        return LiveRollover(
            self.core,
            self.generations,
            schedule,
            settle=self.settle_writes,
            late_lock=lambda key: self._late_locks.setdefault(key, asyncio.Lock()),
            in_reviews=self._in_reviews,
            # On a cluster one node decides: the review lock's holder (its central
            # writers are the ones to hold and move over).
            deciding=(lambda: True) if cluster is None else (lambda: cluster.reviewer),
        )

    def _moved_elsewhere(self, tenant: str, doc: str, generation: int) -> None:
        """``doc`` was cut by another node (``RelayCore.on_moved``): the central writer
        of ``tenant`` here, if this node reviews, follows once its handed reviews ran."""
        if self.cluster is None or not self.cluster.reviewer:
            return  # (a node that takes the review lock opens its writers from storage)
        if not self.core.hold_central(tenant):
            return
        log.info("%s/%s: generation %d was started by another node", tenant, doc, generation)

        async def follow() -> None:
            try:
                await self._in_reviews(_nothing)
                await asyncio.sleep(0)  # their writes' callbacks ran
            finally:
                if not self.core.rolling(tenant) and self.core.reviews is not None:
                    self.core.reviews.follow(tenant)

        self._spawn(follow())

    async def _in_reviews(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the review thread, after the reviews handed to it so far."""
        pool = self._review_pool
        if pool is None:
            fn()
        else:
            await asyncio.wrap_future(pool.submit(fn))

    async def roll_over(self, tenant: str, doc: str) -> int | None:
        """Roll ``doc`` over now, while serving (docs/generations.md): its new
        generation, or None if it could not be cut now.  On a cluster any node may
        (the others drop the old generation at its notice).  ConfigError when not
        running."""
        if self._server is None or self.live_rollover is None:
            raise ConfigError("the relay is not running")
        return (await self.live_rollover.roll_over(tenant, [doc])).get(doc)

    async def stop(self) -> None:
        """Close every connection, commit what is queued, stop.  Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await server.wait_closed()
        if self.live_rollover is not None:
            await self.live_rollover.wait()
        if self.forwarder is not None:  # nothing more run here (asked: the next reviewer's)
            await self.forwarder.stop()
        if self._writes is not None and self._writer_task is not None:
            self._writes.stop()
            await self._writer_task
        if self._review_timer is not None:
            self._review_timer.cancel()
        self.core.flush_reviews()  # what was gathered for review goes to the pool first
        if self._review_pool is not None:
            await asyncio.to_thread(self._review_pool.shutdown, True)
            self._review_pool = None
            await asyncio.sleep(0)  # let the writers' last writes reach the queue
        await self._stop_background()
        if self._writes is not None:  # writes the central writer made while closing
            await self._writes.drain()
        if self.nodes is not None:
            await asyncio.to_thread(self.nodes.forget)
        if self.cluster is not None:
            await self.cluster.stop()
        self.core.close()

    async def _stop_background(self) -> None:
        """Cancel the periodic tasks; wait for the spawned ones."""
        for background in (self._sweeper_task, self._revocation_task, self._beat_task):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        for task in list(self._tasks):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task

    async def __aenter__(self) -> RelayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self, stop: asyncio.Event) -> None:
        """Start, wait until ``stop`` is set, stop."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- HTTP routing ---------------------------------------------------------------------------

    @staticmethod
    def _route(raw_path: str) -> tuple[str, str | None, str | None, str | None]:
        """``("sync"|"yjs"|"", tenant, doc, token)``."""
        parts = urlsplit(raw_path)
        if parts.path in ("/", "/sync"):
            return "sync", None, None, None
        if parts.path.startswith("/yjs/"):
            segments = [unquote(s) for s in parts.path[len("/yjs/") :].split("/")]
            token = parse_qs(parts.query).get("token", [None])[0]
            if len(segments) >= 2 and all(segments):
                return "yjs", segments[0], "/".join(segments[1:]), token
            return "yjs", None, None, token  # refused after the upgrade (4404)
        return "", None, None, None

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        kind = self._route(request.path)[0]
        # A follower is refused after the upgrade, with a close code y-websocket does
        # not retry (it retries an HTTP refusal forever): see relay.followers.
        if kind in ("sync", "yjs"):
            return None
        return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")

    async def _handler(self, ws: ServerConnection) -> None:
        peer = ws.remote_address[0] if isinstance(ws.remote_address, tuple) else "?"
        refused = self.core.admit(str(peer), time.monotonic())
        if refused is not None:
            with contextlib.suppress(Exception):
                await ws.close(CLOSE_RATE_LIMIT, refused)
            return
        kind, tenant, doc, token = self._route(ws.request.path if ws.request else "/")
        session = self.core.new_session(kind or "sync")
        link = self._links[session.id] = _Link(session, ws)
        internal_error = None
        try:
            if kind == "yjs":
                await self._serve_yjs(link, tenant, doc, token)
            else:
                await self._serve_sync(link)
        except Exception as exc:  # a bug must not take the relay down
            log.exception("session %s failed", session.id)
            internal_error = f"internal error: {type(exc).__name__}"
            with contextlib.suppress(Exception):
                await ws.close(CLOSE_INTERNAL, "internal error")
        finally:
            self._links.pop(session.id, None)
            record = self.core.end_session(session, internal_error=internal_error)
            await asyncio.to_thread(log_session, self.store, record, self._prune_before())

    def _prune_before(self) -> float | None:
        """The cut of a sync-log prune that is due (at most one an hour), else None."""
        now = time.monotonic()
        if self._pruned_at is not None and now - self._pruned_at < SYNC_LOG_PRUNE_EVERY_S:
            return None
        self._pruned_at = now
        return time.time() - self.sync_log_days * 86_400

    # -- sending --------------------------------------------------------------------------------

    def _on_output(self, session: RelaySession) -> None:
        link = self._links.get(session.id)
        if link is None or link.flush_scheduled:
            return
        conn = session.conn
        if conn is not None and not conn.pending_bytes and not conn.closed:
            return  # nothing to send (the core reports every message it took)
        link.flush_scheduled = True

        async def run() -> None:
            # The flag stays up until this flush holds the lock: however much output
            # arrives while a send waits, at most one more flush waits behind it.
            async with link.lock:
                link.flush_scheduled = False
                await self._flush_locked(link)

        self._spawn(run())

    async def _flush(self, link: _Link) -> None:
        """Send what the session has queued; close the socket once it failed."""
        async with link.lock:
            await self._flush_locked(link)

    async def _flush_locked(self, link: _Link) -> None:
        session, ws = link.session, link.ws
        if link.cut:
            return
        try:
            if session.conn is not None:
                messages = session.conn.messages_to_send(SEND_CHUNK_BYTES)
                session.queued_bytes = 0
                while messages and not link.close_sent:
                    await self._send(link, messages.pop(0))
                closed = session.conn.closed
                code, reason = session.conn.close_code, session.conn.close_reason
            else:
                while session.outbox and not link.close_sent:
                    message = session.outbox.pop(0)
                    session.record.bytes_sent += len(message)
                    await self._send(link, message)
                session.queued_bytes = 0
                closed = session.close_code is not None
                code, reason = session.close_code, session.close_reason
            if closed and not link.close_sent:
                link.close_sent = True
                if session.kind == "yjs":
                    # Not awaited: _serve_yjs reads on (and drops) what the follower still
                    # sends, or its close frame would wait behind a full receive queue
                    # until the close timeout (a flood's close came 10 s late).
                    self._spawn(ws.close(_close_code(code, follower=True), _close_reason(reason)))
                else:
                    await ws.close(_close_code(code), _close_reason(reason))
        except _Stalled as stalled:
            self._cut(link, stalled.seconds)
        except (ConnectionClosed, WebSocketException, OSError):
            link.close_sent = True

    async def _send(self, link: _Link, message: bytes) -> None:
        """Send one message; raise :class:`_Stalled` if the peer stops reading it.

        Time-bounded, not only size-bounded: while the send waits for the
        socket, the transport's write buffer must shrink at least once every
        ``RateLimits.max_send_stall_s`` seconds.
        """
        ws, stall = link.ws, self.core.limits.max_send_stall_s
        transport = ws.transport
        last = transport.get_write_buffer_size()
        if not stall or (last == 0 and len(message) + 64 <= _high_water(transport)):
            # Nothing buffered and room for this message: the send cannot wait for the
            # peer (it waits only once the buffer is over its high-water mark), so it
            # needs no watch (a task and a timer per message, on the busiest path).
            await ws.send(message)
            return
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(ws.send(message))
        since = loop.time()
        tick = min(0.25, stall / 4)
        while True:
            done, _ = await asyncio.wait({task}, timeout=tick)
            if done:
                task.result()
                return
            size, now = transport.get_write_buffer_size(), loop.time()
            if size < last:
                last, since = size, now
            elif now - since >= stall:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                raise _Stalled(now - since)

    def _cut(self, link: _Link, seconds: float) -> None:
        """The peer does not read: drop what it was sent and abort its socket.

        The close code and reason go to the sync log (a close frame could not
        reach a peer that does not read).
        """
        session = link.session
        link.cut = link.close_sent = True
        reason = f"not reading: nothing could be sent for {seconds:.0f} s; reconnect to catch up"
        session.record.error = session.record.error or f"{CLOSE_RATE_LIMIT}: {reason}"
        self.core.fail(session, CLOSE_RATE_LIMIT, reason)
        if session.conn is not None:
            session.conn.discard_output()
        session.outbox.clear()
        session.queued_bytes = 0
        log.warning("session %s: cut: %s", session.id, reason)
        link.ws.transport.abort()

    async def _serve_sync(self, link: _Link) -> None:
        session = link.session
        assert session.conn is not None

        def no_hello() -> None:
            if session.conn is not None and session.conn.state == "new":
                self.core.fail(session, CLOSE_PROTOCOL, f"no HELLO within {self.hello_timeout:g} s")

        watchdog = asyncio.get_running_loop().call_later(self.hello_timeout, no_hello)
        # Until its HELLO is accepted a connection is nobody's: its messages are held to
        # the HELLO's bound, inflated (a compressed message of a few KiB could inflate to
        # the whole message limit otherwise).
        protocol = link.ws.protocol
        hello_cap = self.core.limits.max_hello_bytes or MAX_HELLO_BYTES
        protocol.max_message_size = min(self.max_message_bytes, max(hello_cap, MAX_HELLO_BYTES))
        try:
            async for message in link.ws:
                hello = self.core.receive(session, message, time.monotonic())
                if hello is not None:
                    await self._answer_hello(session, hello)
                    if session.conn.state == "open":
                        protocol.max_message_size = self.max_message_bytes
                if session.conn.pending_bytes or session.conn.closed:
                    await self._flush(link)
                if session.conn.closed:
                    break
        except ConnectionClosed:
            pass
        finally:
            watchdog.cancel()
        await self._flush(link)

    async def _answer_hello(self, session: RelaySession, hello: Hello) -> None:
        """The HELLO's storage lookups, off the event loop (see ``relay.sessions``)."""
        try:
            token, refused = await asyncio.to_thread(check_token, self.store, hello.token)
            if not self.core.authenticated(session, hello, token, refused):
                return
            assert token is not None
            facts = await self._lookup_hello(hello)
            if self.cluster is not None:  # serve what every node stored, not only ours
                await self.cluster.serve_current(
                    hello.tenant, None, lambda: self._welcome_current(session, hello, token, facts)
                )
                return
        except TiendaSyncError as exc:
            self.core.lookup_failed(session, exc)
            return
        self.core.welcome(session, hello, token, facts)

    async def _lookup_hello(self, hello: Hello) -> HelloFacts:
        """What storage says of ``hello``, read after any rollover of its tenant under
        way: facts read before a cut would welcome the store to the old generation."""
        core = self.core
        while True:
            while core.rolling(hello.tenant):
                await asyncio.sleep(ROLLOVER_HELLO_POLL_S)
            epoch = core.rollover_epoch(hello.tenant)
            facts = await asyncio.to_thread(lookup_hello, self.store, hello)
            if not core.rolling(hello.tenant) and core.rollover_epoch(hello.tenant) == epoch:
                return facts

    async def _welcome_current(
        self, session: RelaySession, hello: Hello, token: TokenRecord, facts: HelloFacts
    ) -> None:
        """Welcome with the state vectors as they are now (a cluster: read again after
        this node's docs were brought up to date, see ``ClusterNode.serve_current``)."""
        if not facts.foreign:
            svs = await asyncio.to_thread(self.store.state_vectors, hello.tenant)
            facts = dataclasses.replace(facts, state_vectors=svs)
        self.core.welcome(session, hello, token, facts)

    async def _serve_yjs(
        self, link: _Link, tenant: str | None, doc: str | None, token: str | None
    ) -> None:
        session, ws = link.session, link.ws
        facts = await asyncio.to_thread(lookup_follower, self.store, tenant, doc, token)
        status, record, grants = self.core.yjs_auth(tenant, doc, facts)
        if status != 200 or record is None or tenant is None or doc is None:
            self.core.yjs_refuse(session, tenant, doc, status, record)
            await self._flush(link)
            return
        if self.cluster is not None:

            async def open_current() -> None:
                self.core.yjs_open(session, tenant, doc, record, grants)

            try:
                await self.cluster.serve_current(tenant, [doc], open_current)
            except TiendaSyncError as exc:
                log.error("session %s: catching %s/%s up failed: %s", session.id, tenant, doc, exc)
                self.core.fail(session, CLOSE_INTERNAL, "internal error")
                await self._flush(link)
                return
        else:
            self.core.yjs_open(session, tenant, doc, record, grants)
        await self._flush(link)
        if session.close_code is not None:
            return
        try:
            async for message in ws:
                if session.close_code is not None:
                    continue  # closing: dropped until the follower's close frame is read
                now = time.monotonic()
                # a y-protocols message is one frame: charged per frame and per byte
                refusal = self.core.policy.charge(session, 1, len(message), now)
                if refusal is not None:
                    self.core.fail(session, *refusal)
                else:
                    self.core.yjs_receive(session, message, now)
                await self._flush(link)
        except ConnectionClosed:
            pass
        if session.close_code is None:
            session.close_code, session.close_reason = CLOSE_NORMAL, ""
            link.close_sent = True

    # -- late updates (relay.generations) ---------------------------------------------------

    def _on_late(
        self, session: RelaySession, doc: str, generation: int, data: bytes, acks: list[int]
    ) -> None:
        """Carry a late update off the event loop, one at a time per document, in order."""
        tenant = session.tenant
        assert tenant is not None
        lock = self._late_locks.setdefault((tenant, doc), asyncio.Lock())
        work = self.core.late_carry(
            self.generations, session, doc, generation, data, now=time.time()
        )

        async def carry() -> None:
            async with lock:
                if not session.open:
                    return  # closed meanwhile: it re-sends on its next sync
                outcome = await asyncio.to_thread(work)
                self.core.late_done(session, doc, acks, outcome)

        self._spawn(carry())

    # -- group commit (relay.writer) and housekeeping ----------------------------------------

    def _on_write(self, write: PendingWrite) -> None:
        assert self._writes is not None
        self._writes.put(write)

    async def _sweeper(self) -> None:
        interval = _sweep_interval(self.docs.idle_seconds)
        loop = asyncio.get_running_loop()
        next_sweep = loop.time() + interval
        rolled = 0
        while True:
            await asyncio.sleep(min(interval, self.review_retry_seconds))
            unloaded = 0
            if loop.time() >= next_sweep:
                unloaded += self.docs.sweep()
                next_sweep = loop.time() + interval
            try:
                self.docs.expire_gaps()
                self.core.yjs_tick(loop.time())
                self.core.retry_reviews()
                if self.live_rollover is not None:
                    unloaded += self.live_rollover.count - rolled
                    rolled = self.live_rollover.count
                    self.live_rollover.tick(time.monotonic())
                if self.heap_trim is not None:
                    self.heap_trim.unloaded(unloaded)
                    if self.heap_trim.due(loop.time()):
                        await asyncio.to_thread(release_free_heap)
            except Exception:  # a bug must not stop the sweeps
                log.exception("expiring gapped updates or retrying central reviews failed")

    async def _revocation_watch(self) -> None:
        """Close open sessions whose token was revoked since they authenticated."""
        while True:
            await asyncio.sleep(self.revocation_check_seconds)
            ids = self.core.open_token_ids()
            if not ids:
                continue
            try:
                revoked = await asyncio.to_thread(self._revoked_among, ids)
            except Exception:  # the store's trouble must not stop the watch
                log.exception("checking open sessions' tokens for revocation failed")
                continue
            if revoked:
                self.core.close_revoked(revoked)

    def _revoked_among(self, token_ids: set[str]) -> set[str]:
        revoked = set()
        for token_id in token_ids:
            record = self.store.get_token(token_id)
            if record is None or record.revoked:
                revoked.add(token_id)
        return revoked
