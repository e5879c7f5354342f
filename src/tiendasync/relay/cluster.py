"""Several relay processes ("nodes") on one PostgreSQL store of record.

Every node accepts sync and y-protocols sessions for any tenant, validates,
commits to the shared database and acknowledges after its own commit, as a
lone relay does.  What a node must also do is :class:`ClusterNode`'s:

- **fan out the others' commits**: each commit notifies the database's
  channel with a pointer ``(tenant, doc, seq)`` (``relay.pgfeed``); a node
  told of a seq above its cursor for that document reads the rows after the
  cursor from ``updates``, applies them to its loaded doc (if any: its
  in-memory docs must hold what the others stored before it serves a state
  vector or a sync step), publishes them to its own sessions, and moves the
  cursor.  Per document, seq order is commit order, so a cursor never skips
  a row that commits later;
- **never lose one**: the cursors are per document; each time the LISTEN
  connection (re)connects, the node reads every document's highest seq and
  pulls those above its cursor, and a row folded into a snapshot before the
  node read it (a long outage) makes it reload that document from storage
  and send its sessions what the reload added;
- **be current before it answers**: before a HELLO's catch-up or a
  follower's first sync step the node pulls that tenant's loaded documents,
  then reads what to announce and subscribes the session, with no pull in
  between (:meth:`ClusterNode.serve_current`);
- **review once**: the invariant review runs on one node only, the holder of
  the ``review`` advisory lock, which reviews its own commits and the rows it
  pulls of the others (interim: partitioned review workers replace this).
  Another node takes the lock over within seconds of the holder's death and
  catches its central writers up from storage.

Its own commits a node remembers by seq (``committed``) and leaves out of its
reads.  Deliveries to sessions are at least once (a CRDT update applies once
however often it arrives).

The decisions are sans I/O, so a simulated network drives the same code
(``tests/support/simcluster.py``): :meth:`ClusterNode.connected` (the catch-up
after LISTEN (re)connects), :meth:`ClusterNode.notice`, :meth:`ClusterNode.due`,
:meth:`ClusterNode.plan` / :meth:`ClusterNode.handle` (what to read, cursor
moves, when to reload), :meth:`ClusterNode.serving` and
:meth:`ClusterNode.review_lock_checked`; the asyncio tasks only read the
feed in threads and call them (:meth:`ClusterNode.pull_now` does it inline).

Node-to-node messages ride the same channel: :meth:`ClusterNode.on` registers
a handler for a kind, :meth:`ClusterNode.send` sends one (kind ``u`` is the
update pointer, reserved).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tiendasync.errors import StorageError, TiendaSyncError
from tiendasync.relay.docs import replay
from tiendasync.relay.records import AppendResult
from tiendasync.relay.state import PendingWrite

if TYPE_CHECKING:
    from tiendasync.relay.core import RelayCore

__all__ = [
    "MAX_NOTICE_BYTES",
    "ClusterNode",
    "Feed",
    "Notice",
    "PullPlan",
    "Pulled",
    "parse_notice",
]

log = logging.getLogger("tiendasync.relay.cluster")

#: Longest accepted payload (PostgreSQL's own limit is 8000 bytes).
MAX_NOTICE_BYTES = 8000

#: The kind of the notice a cut sends with its commit (``relay.pgstore.generation_notice``):
#: tenant ``t``, doc ``d``, new generation ``g``.
GENERATION = "g"

Key = tuple[str, str]


@dataclass(frozen=True)
class Notice:
    """One node-to-node message: its kind, its sender and its other fields."""

    kind: str
    node: str
    fields: Mapping[str, Any]


def parse_notice(payload: str) -> Notice | None:
    """A payload as a :class:`Notice`; None for anything malformed.

    Kind ``u`` must carry a non-empty string tenant ``t`` and doc ``d`` and a
    positive integer ``s``; kind ``g`` the same with ``g`` (the new generation)."""
    if len(payload) > MAX_NOTICE_BYTES:
        return None
    try:
        raw = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    kind, node = raw.get("k"), raw.get("n")
    if not isinstance(kind, str) or not kind or not isinstance(node, str):
        return None
    number = {"u": "s", GENERATION: "g"}.get(kind)
    if number is not None and not _pointer(raw.get("t"), raw.get("d"), raw.get(number)):
        return None
    return Notice(kind, node, {k: v for k, v in raw.items() if k not in ("k", "n")})


def _pointer(tenant: object, doc: object, seq: object) -> bool:
    names = isinstance(tenant, str) and bool(tenant) and isinstance(doc, str) and bool(doc)
    return names and isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1


@dataclass
class Pulled:
    """What a :meth:`Feed.rows_after` read, in one snapshot of the database."""

    #: per document, its rows after the cursor, in seq order: ``(seq, data, replica)``
    rows: dict[Key, list[tuple[int, bytes, str | None]]] = field(default_factory=dict)
    #: per document, the ``upto_seq`` of its snapshot (absent: none)
    snapshots: dict[Key, int] = field(default_factory=dict)
    #: ``(tenant, doc, seq)`` of rows whose checksum failed: left out
    damaged: list[tuple[str, str, int]] = field(default_factory=list)
    #: per document, its generation as the rows were read (absent: not told)
    generations: dict[Key, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PullPlan:
    """One read of the others' rows, as :meth:`ClusterNode.plan` decided it."""

    #: per document, the cursor the read starts after
    cursors: dict[Key, int]
    #: per document, this node's own seqs above the cursor (left out of the read)
    own: dict[Key, frozenset[int]]
    #: per document, the highest seq announced (popped: restored if the read fails)
    announced: dict[Key, int]
    #: every own seq of ``own``, for :meth:`Feed.rows_after`
    exclude: list[int]


class Feed(Protocol):
    """What a node reads of the others (``relay.pgfeed.PgFeed`` on PostgreSQL)."""

    node_id: str

    def latest_seqs(self) -> dict[Key, int]: ...

    def rows_after(self, cursors: Mapping[Key, int], exclude: Iterable[int] = ()) -> Pulled: ...

    def send(self, kind: str, fields: Mapping[str, Any]) -> None: ...

    def hold_review_lock(self) -> bool: ...

    def listen(
        self,
        on_notice: Callable[[str], None],
        on_connected: Callable[[], Awaitable[None]],
        *,
        ready: asyncio.Event | None = None,
        retry_seconds: float = 0.5,
    ) -> Awaitable[None]: ...

    def close(self) -> None: ...


class ClusterNode:
    """One relay node's side of the cluster (see the module docstring).

    ``tick_seconds``: how often own commits' cursors are moved on and a missed
    wake-up is made up for; ``review_check_seconds``: how often the review lock
    is checked (taken if free).  On the event loop; storage reads in threads.
    """

    def __init__(
        self,
        feed: Feed,
        *,
        tick_seconds: float = 1.0,
        review_check_seconds: float = 2.0,
        start_timeout: float = 30.0,
        listen_retry_seconds: float = 0.5,
    ) -> None:
        self.feed = feed
        self.node_id = feed.node_id
        self.tick_seconds = tick_seconds
        self.review_check_seconds = review_check_seconds
        self.start_timeout = start_timeout
        #: first pause before the LISTEN connection is tried again after a drop
        self.listen_retry_seconds = listen_retry_seconds
        self._core: RelayCore | None = None
        self._tenants: Callable[[], Iterable[str]] = lambda: ()
        #: per document, the highest seq this node has handled (all rows up to it)
        self.seen: dict[Key, int] = {}
        #: per document, this node's own committed seqs above its cursor
        self.own: dict[Key, set[int]] = {}
        #: per document, the highest seq another node announced and not read yet
        self.notified: dict[Key, int] = {}
        self.handlers: dict[str, Callable[[Notice], None]] = {}
        #: told of the documents whose rows of other nodes were read (the rollover schedule)
        self.on_rows: Callable[[Iterable[Key]], None] = lambda keys: None
        #: this node holds the review lock (runs the invariant review)
        self.reviewer = False
        self._wake: asyncio.Event | None = None
        self._pull_lock: asyncio.Lock | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        # per-node figures (the relay's /metrics)
        self.notices = 0
        self.bad_notices = 0
        self.pulls = 0
        self.pulled_rows = 0
        self.catch_ups = 0
        self.reloads = 0

    # -- wiring ------------------------------------------------------------------------------

    def attach(self, core: RelayCore, tenants: Callable[[], Iterable[str]]) -> None:
        """The relay core this node feeds, and where the tenants come from (its tokens)."""
        self._core = core
        self._tenants = tenants
        if core.reviews is not None:
            core.reviews.enabled = False  # until this node holds the review lock

    @property
    def core(self) -> RelayCore:
        if self._core is None:
            raise RuntimeError("cluster node not attached to a relay")
        return self._core

    def on(self, kind: str, handler: Callable[[Notice], None]) -> None:
        """Call ``handler`` (on the loop) for each message of ``kind`` any node sends."""
        if kind in ("u", GENERATION):
            raise ValueError(f"kind {kind!r} is reserved (update pointer, new generation)")
        self.handlers[kind] = handler

    async def send(self, kind: str, fields: Mapping[str, Any]) -> None:
        """Send a message of ``kind`` to every node (this one included)."""
        await asyncio.to_thread(self.feed.send, kind, fields)

    def metrics(self) -> dict[str, float]:
        return {
            "cluster_reviewer": float(self.reviewer),
            "cluster_notices_total": float(self.notices),
            "cluster_bad_notices_total": float(self.bad_notices),
            "cluster_pulls_total": float(self.pulls),
            "cluster_pulled_updates_total": float(self.pulled_rows),
            "cluster_catch_ups_total": float(self.catch_ups),
            "cluster_reloads_total": float(self.reloads),
            "cluster_documents_behind": float(len(self.notified)),
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """LISTEN (and learn every document's cursor) before the relay serves."""
        self._wake = asyncio.Event()
        self._pull_lock = asyncio.Lock()
        ready = asyncio.Event()
        listen = asyncio.ensure_future(
            self.feed.listen(
                self._notice,
                self._connected,
                ready=ready,
                retry_seconds=self.listen_retry_seconds,
            )
        )
        self._tasks.append(listen)
        try:
            await asyncio.wait_for(ready.wait(), self.start_timeout)
        except TimeoutError:
            await self.stop()
            raise StorageError(
                f"relay node {self.node_id}: could not LISTEN on the relay database "
                f"within {self.start_timeout:g} s"
            ) from None
        self._tasks.append(asyncio.create_task(self._puller(), name="cluster-pull"))
        self._tasks.append(asyncio.create_task(self._review_watch(), name="cluster-review"))
        log.info("relay node %s: listening to the other nodes", self.node_id)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await asyncio.to_thread(self.feed.close)

    # -- notifications -----------------------------------------------------------------------

    async def _connected(self) -> None:
        """LISTEN is active (again): every document's cursor, from the table."""
        self.connected(await asyncio.to_thread(self.feed.latest_seqs))

    def connected(self, latest: Mapping[Key, int]) -> int:
        """The LISTEN connection is active (again) and ``latest`` (every document's
        highest seq, :meth:`Feed.latest_seqs`) was read after it became so.

        The first time, the cursors start there (this node has loaded nothing yet:
        a load reads storage).  After a reconnection, every document above its
        cursor is due for a pull (notifications sent while deaf were lost); returns
        how many.  No I/O: the pump reads ``latest``, the simulation too.
        """
        if not self._started:
            self._started = True
            for key, seq in latest.items():
                self.seen.setdefault(key, seq)
            return 0
        self.catch_ups += 1
        behind = 0
        for key, seq in latest.items():
            if seq > self.seen.get(key, 0):
                self.notified[key] = max(seq, self.notified.get(key, 0))
                behind += 1
        if self._core is not None:
            # A cut adds no row: each loaded doc is read once, with its generation.
            for key in self.core.docs.loaded():
                self.notified.setdefault(key, self.seen.get(key, 0))
        log.info("relay node %s: reconnected; %d document(s) to catch up", self.node_id, behind)
        self._kick()
        return behind

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _notice(self, payload: str) -> None:
        self.notice(payload)

    def notice(self, payload: str) -> None:
        """One notification's payload, as the LISTEN connection delivered it (no I/O)."""
        notice = parse_notice(payload)
        if notice is None:
            self.bad_notices += 1
            log.warning("relay node %s: ignored a malformed notification", self.node_id)
            return
        self.notices += 1
        if notice.kind == GENERATION:
            # A cut committed (this node's or another's): drop the older generation
            # now, and send away the sessions that use it (relay.generations).
            self.core.docs.saw_generation(
                str(notice.fields["t"]), str(notice.fields["d"]), int(notice.fields["g"])
            )
            return
        if notice.kind != "u":
            handler = self.handlers.get(notice.kind)
            if handler is None:
                log.debug(
                    "relay node %s: no handler for messages of kind %r", self.node_id, notice.kind
                )
                return
            try:
                handler(notice)
            except Exception:  # a handler's bug must not stop the LISTEN loop
                log.exception("relay node %s: handler of %r failed", self.node_id, notice.kind)
            return
        if notice.node == self.node_id:
            return  # ours: applied and published before it was stored
        key = (str(notice.fields["t"]), str(notice.fields["d"]))
        seq = int(notice.fields["s"])
        if seq > self.seen.get(key, 0):
            self.notified[key] = max(seq, self.notified.get(key, 0))
            self._kick()

    def committed(self, batch: list[PendingWrite], result: AppendResult) -> None:
        """This node stored ``batch`` (seqs in ``result``): left out of its reads."""
        for write, seq in zip(batch, result.seqs, strict=False):
            if seq is not None:
                self.own.setdefault((write.tenant, write.doc), set()).add(seq)

    # -- reading what the others stored ----------------------------------------------------------

    async def _puller(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.tick_seconds)
            self._wake.clear()
            keys = self.due()
            if not keys:
                continue
            try:
                await self.pull(keys)
            except Exception:  # storage trouble or a bug: retried at the next tick
                log.exception(
                    "relay node %s: reading the other nodes' updates failed", self.node_id
                )

    def due(self) -> set[Key]:
        """The documents a pull must look at: announced by others, or with own commits
        above the cursor (which move it on)."""
        return set(self.notified) | set(self.own)

    async def serve_current(
        self, tenant: str, docs: Iterable[str] | None, serve: Callable[[], Awaitable[None]]
    ) -> None:
        """Run ``serve`` (what a HELLO's welcome or a follower's open does: read what to
        announce, subscribe the session, send its catch-up) with this node's loaded docs
        of ``tenant`` (or ``docs`` of it) up to what every node has committed, and no
        read of the others' updates in between.

        So each row is either in what ``serve`` reads and sends, or published after
        the session subscribed: a row read and published to the tenant's sessions
        just before it subscribed, but missing from the state vectors it was
        announced, would never reach it.
        """
        assert self._pull_lock is not None
        async with self._pull_lock:
            keys = self.serving(tenant, docs)
            if keys:
                await self._pull_locked(keys, force=True)
            await serve()

    def serving(self, tenant: str, docs: Iterable[str] | None) -> set[Key]:
        """What :meth:`serve_current` pulls first: the docs (default: every loaded doc
        of ``tenant``) this node holds in memory."""
        names = docs if docs is not None else [d for t, d in self.core.docs.loaded() if t == tenant]
        return {(tenant, d) for d in names if self.core.docs.current(tenant, d) is not None}

    def _wanted(self, key: Key) -> bool:
        """Whether this node needs ``key``'s rows: loaded, followed here, or reviewed here."""
        if self.reviewer or self.core.docs.current(*key) is not None:
            return True
        count = getattr(self.core.broker, "subscriber_count", None)
        return count is None or bool(count(key[0]))

    async def pull(self, keys: Iterable[Key], *, force: bool = False) -> None:
        """Read and handle the rows of ``keys`` above this node's cursors."""
        assert self._pull_lock is not None
        async with self._pull_lock:
            await self._pull_locked(keys, force=force)

    async def _pull_locked(self, keys: Iterable[Key], *, force: bool) -> None:
        plan = self.plan(keys, force=force)
        if plan is None:
            return
        try:
            pulled = await asyncio.to_thread(self.feed.rows_after, plan.cursors, plan.exclude)
        except BaseException:
            self.read_failed(plan)
            raise
        self.handle(plan, pulled)

    def pull_now(self, keys: Iterable[Key], *, force: bool = False) -> None:
        """:meth:`pull` without asyncio: the feed's read in this thread (the simulation)."""
        plan = self.plan(keys, force=force)
        if plan is None:
            return
        try:
            pulled = self.feed.rows_after(plan.cursors, plan.exclude)
        except BaseException:
            self.read_failed(plan)
            raise
        self.handle(plan, pulled)

    def plan(self, keys: Iterable[Key], *, force: bool) -> PullPlan | None:
        """What to read of ``keys`` (None: nothing).  A key nobody here needs (not
        loaded, not followed, not reviewed; ``force`` needs them all) has its cursor
        moved on unread: a later load or session reads storage."""
        wanted: set[Key] = set()
        for key in keys:
            if force or self._wanted(key):
                wanted.add(key)
                continue
            top = max([self.notified.pop(key, 0), *self.own.pop(key, ())])
            self.seen[key] = max(self.seen.get(key, 0), top)
        if not wanted:
            return None
        own = {k: frozenset(self.own.get(k, ())) for k in wanted}
        return PullPlan(
            cursors={k: self.seen.get(k, 0) for k in wanted},
            own=own,
            announced={k: self.notified.pop(k, 0) for k in wanted},
            exclude=[s for seqs in own.values() for s in seqs],
        )

    def read_failed(self, plan: PullPlan) -> None:
        """The read of ``plan`` failed: what was announced is read again next time."""
        for k, seq in plan.announced.items():
            if seq:
                self.notified[k] = max(seq, self.notified.get(k, 0))

    def handle(self, plan: PullPlan, pulled: Pulled) -> None:
        """Apply what the read of ``plan`` returned and move the cursors (no I/O but
        a reload from storage when rows were folded into a snapshot unread)."""
        self.pulls += 1
        self._handle(pulled, plan.cursors, plan.own)

    def _handle(
        self, pulled: Pulled, cursors: dict[Key, int], own: dict[Key, frozenset[int]]
    ) -> None:
        core = self.core
        for tenant, doc, seq in pulled.damaged:
            log.error(
                "CORRUPT relay data %s/%s: stored update %s fails its checksum", tenant, doc, seq
            )
        review: list[PendingWrite] = []
        for key in sorted(cursors):
            after = cursors[key]
            read = pulled.rows.get(key, [])
            upto = pulled.snapshots.get(key, 0)
            top = max([after, upto, *(r[0] for r in read), *own[key]])
            review.extend(self._apply(key, after, upto, read, pulled.generations.get(key)))
            self.seen[key] = max(self.seen.get(key, 0), top)
            if key in self.own:
                left = {s for s in self.own[key] if s > self.seen[key]}
                if left:
                    self.own[key] = left
                else:
                    del self.own[key]
            if self.notified.get(key, 0) <= self.seen[key]:
                self.notified.pop(key, None)
        if review:
            self.on_rows({(w.tenant, w.doc) for w in review})
        if self.reviewer and core.reviews is not None and review:
            core.reviews.review(review)

    def _apply(
        self,
        key: Key,
        after: int,
        upto: int,
        read: list[tuple[int, bytes, str | None]],
        generation: int | None,
    ) -> list[PendingWrite]:
        """One document's read: into the loaded doc and out to the sessions; what the
        review is handed."""
        core = self.core
        tenant, doc = key
        if generation is not None:
            # Cut since this node loaded it: the older copy goes, its sessions too.
            core.docs.saw_generation(tenant, doc, generation)
            if generation < core.docs.generation(tenant, doc):
                return []  # read before a cut this node knows of: that generation is gone
        if upto > after:
            # Rows this node never read were folded into a snapshot (or a cut): reload.
            self.reloads += 1
            added = core.docs.reload_stored(tenant, doc)
            if added is None:
                rebuilt, _ = replay(core.store.load_doc(tenant, doc), tenant, doc)
                added = whole = bytes(rebuilt.get_update())
            else:
                # The review gets the whole doc, not what the reload added: a doc loaded
                # here from storage holds rows this node never read, nor reviewed.
                reloaded = core.docs.current(tenant, doc)
                whole = added if reloaded is None else reloaded.diff(None)
            core.policy.stored(tenant, doc)
            core.broker.publish(tenant, doc, added, None)
            if not core.reviewable(tenant, doc):
                return []
            return [PendingWrite(None, tenant, doc, None, b"", whole, [], None)]
        mine = self.own.get(key, set())
        review = []
        for seq, data, replica in read:
            if seq in mine:
                continue
            core.fanout.foreign(tenant, doc, data, generation)
            review.append(PendingWrite(None, tenant, doc, None, b"", data, [], replica))
        self.pulled_rows += len(read)
        if review and not core.reviewable(tenant, doc):
            self.on_rows([key])
            return []
        return review

    # -- the review lock -------------------------------------------------------------------------

    async def _review_watch(self) -> None:
        while True:
            try:
                held = await asyncio.to_thread(self.feed.hold_review_lock)
            except Exception:
                log.exception("relay node %s: checking the review lock failed", self.node_id)
                held = False
            self.review_lock_checked(held)
            await asyncio.sleep(self.review_check_seconds)

    def review_lock_checked(self, held: bool) -> None:
        """The review lock was checked: this node holds it (``held``) or not."""
        if held and not self.reviewer:
            self._start_reviewing()
        elif not held and self.reviewer:
            self._stop_reviewing()

    def _start_reviewing(self) -> None:
        self.reviewer = True
        reviews = self.core.reviews
        log.info("relay node %s: holds the review lock; runs the invariant review", self.node_id)
        if reviews is None:
            return
        reviews.enabled = True
        try:
            tenants = sorted(self._tenants())
        except TiendaSyncError as exc:
            log.error("relay node %s: cannot list tenants to review: %s", self.node_id, exc)
            tenants = []
        for tenant in tenants:
            try:
                writer = reviews.writer(tenant)  # opened: caught up from storage
                writer.behind = True  # open before: caught up at the next retry
            except Exception:
                log.exception(
                    "relay node %s: central writer of %s unavailable", self.node_id, tenant
                )
        reviews.retry()

    def _stop_reviewing(self) -> None:
        self.reviewer = False
        log.warning("relay node %s: lost the review lock; stops reviewing", self.node_id)
        reviews = self.core.reviews
        if reviews is not None:
            reviews.enabled = False
