"""What relay nodes sharing one PostgreSQL database read of each other (psycopg 3).

Each node's commit notifies ``CHANNEL`` (:func:`~tiendasync.relay.pgstore.update_notice`,
sent inside the commit's transaction, so delivered at its COMMIT and only then):
a JSON object with a kind ``k``; kind ``u`` is a pointer ``{"n": node, "t": tenant,
"d": doc, "s": seq}``, never the data, which the other nodes read from ``updates``
(:meth:`PgFeed.rows_after`).  Other kinds (``{"k": ..., "n": node, ...}``) are
for node-to-node messages (:meth:`PgFeed.send`).

:class:`PgFeed` holds two connections of its own, apart from the store's: one
LISTENs (asyncio, :meth:`listen`, reconnecting with a back-off after any drop),
one reads and holds the review lock (synchronous: the node calls it from a
worker thread).  A notification lost while the LISTEN connection was down is
never needed: each time it (re)connects, :meth:`listen` calls ``on_connected``
*after* LISTEN is active, and the node catches up from the table
(:meth:`latest_seqs`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import psycopg

from tiendasync.errors import StorageError
from tiendasync.relay.cluster import MAX_NOTICE_BYTES, Pulled
from tiendasync.relay.pgstore import CHANNEL, CONNECT_TIMEOUT, Connection, describe_url
from tiendasync.relay.schema import checksum_of

__all__ = ["REVIEW_LOCK", "PgFeed"]

log = logging.getLogger("tiendasync.relay.cluster")

#: ``pg_try_advisory_lock`` key: the node holding it runs the invariant review.
REVIEW_LOCK = 0x7469656E64615276  # "tiendaRv"


class PgFeed:
    """The LISTEN side and the catch-up reads of one relay node (see the module docstring)."""

    def __init__(self, url: str, node_id: str) -> None:
        self.url = url
        self.node_id = node_id
        self.where = describe_url(url)
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._review: Connection | None = None
        self._closed = False
        #: times the LISTEN connection was (re)established
        self.connects = 0
        #: the LISTEN connection's server pid while connected (tests interrupt it)
        self.listen_pid: int | None = None

    # -- reads (blocking: from worker threads) -----------------------------------------------

    def _connection(self) -> Connection:
        if self._closed:
            raise StorageError(f"relay database {self.where} is closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(
                    self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
                )
            except psycopg.Error as exc:
                raise StorageError(f"cannot connect to relay database {self.where}: {exc}") from exc
        return self._conn

    def latest_seqs(self) -> dict[tuple[str, str], int]:
        """Per document, the highest seq committed (logged, or folded into its snapshot)."""
        with self._lock:
            try:
                rows = (
                    self._connection()
                    .execute(
                        "SELECT tenant, doc, MAX(s) FROM (SELECT tenant, doc, seq AS s "
                        "FROM updates UNION ALL SELECT tenant, doc, upto_seq FROM snapshots) "
                        "AS x GROUP BY tenant, doc"
                    )
                    .fetchall()
                )
            except psycopg.Error as exc:
                raise StorageError(f"relay database {self.where} read failed: {exc}") from exc
        return {(t, d): int(s) for t, d, s in rows}

    def rows_after(
        self, cursors: Mapping[tuple[str, str], int], exclude: Iterable[int] = ()
    ) -> Pulled:
        """Per document of ``cursors``, its rows with a seq above the cursor (but the seqs
        in ``exclude``: this node's own), its snapshot's ``upto_seq`` and its generation."""
        keys = sorted(cursors)
        out = Pulled()
        if not keys:
            return out
        tenants, docs = [k[0] for k in keys], [k[1] for k in keys]
        afters = [cursors[k] for k in keys]
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    # One snapshot: a compaction committing between the two reads
                    # cannot hide rows it folded.
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    snaps = conn.execute(
                        "SELECT s.tenant, s.doc, s.upto_seq FROM snapshots s "
                        "JOIN unnest(%s::text[], %s::text[]) AS c(tenant, doc) "
                        "ON s.tenant = c.tenant AND s.doc = c.doc",
                        (tenants, docs),
                    ).fetchall()
                    gens = conn.execute(
                        "SELECT d.tenant, d.doc, d.generation FROM docs d "
                        "JOIN unnest(%s::text[], %s::text[]) AS c(tenant, doc) "
                        "ON d.tenant = c.tenant AND d.doc = c.doc",
                        (tenants, docs),
                    ).fetchall()
                    rows = conn.execute(
                        "SELECT c.tenant, c.doc, u.seq, u.data, u.replica, u.checksum "
                        "FROM unnest(%s::text[], %s::text[], %s::bigint[]) "
                        "AS c(tenant, doc, after) "
                        "JOIN LATERAL (SELECT seq, data, replica, checksum FROM updates "
                        "WHERE tenant = c.tenant AND doc = c.doc AND seq > c.after "
                        "AND NOT seq = ANY(%s::bigint[]) ORDER BY seq) AS u ON TRUE "
                        "ORDER BY c.tenant, c.doc, u.seq",
                        (tenants, docs, afters, sorted(set(exclude))),
                    ).fetchall()
            except psycopg.Error as exc:
                raise StorageError(f"relay database {self.where} read failed: {exc}") from exc
        out.snapshots = {(t, d): int(s) for t, d, s in snaps}
        out.generations = {(t, d): int(g) for t, d, g in gens}
        for t, d, seq, data, replica, checksum in rows:
            data = bytes(data)
            if checksum_of(data) != int(checksum):
                out.damaged.append((t, d, int(seq)))
                continue
            out.rows.setdefault((t, d), []).append((int(seq), data, replica))
        return out

    def send(self, kind: str, fields: Mapping[str, Any]) -> None:
        """Notify every node (this one too) of a message of ``kind`` (not ``u``)."""
        payload = json.dumps({**fields, "k": kind, "n": self.node_id}, separators=(",", ":"))
        if kind == "u" or len(payload) > MAX_NOTICE_BYTES:
            raise ValueError(f"not a node message: kind {kind!r}, {len(payload)} bytes")
        with self._lock:
            try:
                self._connection().execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))
            except psycopg.Error as exc:
                raise StorageError(f"relay database {self.where} notify failed: {exc}") from exc

    # -- the review lock (blocking) -----------------------------------------------------------

    def hold_review_lock(self) -> bool:
        """Whether this node holds the review lock now: taken if free, kept while its
        connection lives (the server drops it when the process or the link dies)."""
        with self._lock:
            try:
                if self._review is not None and not self._review.closed:
                    self._review.execute("SELECT 1")  # still alive: still held
                    return True
            except psycopg.Error:
                self._drop_review()
            try:
                if self._review is None:
                    self._review = psycopg.connect(
                        self.url,
                        autocommit=True,
                        connect_timeout=CONNECT_TIMEOUT,
                        keepalives=1,
                        keepalives_idle=5,
                        keepalives_interval=2,
                        keepalives_count=3,
                    )
                row = self._review.execute(
                    "SELECT pg_try_advisory_lock(%s)", (REVIEW_LOCK,)
                ).fetchone()
            except psycopg.Error as exc:
                self._drop_review()
                log.warning("review lock on %s unavailable: %s", self.where, exc)
                return False
            if row is None or not row[0]:
                self._drop_review()
                return False
            return True

    def _drop_review(self) -> None:
        if self._review is not None:
            try:
                self._review.close()
            finally:
                self._review = None

    # -- LISTEN (asyncio) ---------------------------------------------------------------------

    async def listen(
        self,
        on_notice: Callable[[str], None],
        on_connected: Callable[[], Awaitable[None]],
        *,
        ready: asyncio.Event | None = None,
        retry_seconds: float = 0.5,
    ) -> None:
        """LISTEN until cancelled: each payload to ``on_notice`` (on the loop);
        ``on_connected`` after each (re)connection, once LISTEN is active; ``ready``
        set after the first ``on_connected`` returned."""
        delay = retry_seconds
        while not self._closed:
            try:
                aconn = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    connect_timeout=CONNECT_TIMEOUT,
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=3,
                )
            except psycopg.Error as exc:
                log.warning("cannot LISTEN on %s (retrying): %s", self.where, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            try:
                async with aconn:
                    await aconn.execute(f"LISTEN {CHANNEL}")
                    self.listen_pid = aconn.info.backend_pid
                    self.connects += 1
                    await on_connected()
                    if ready is not None:
                        ready.set()
                    delay = retry_seconds
                    async for notify in aconn.notifies():
                        on_notice(notify.payload)
            except (psycopg.Error, StorageError) as exc:
                log.warning(
                    "LISTEN connection to %s lost (reconnecting, then catching up): %s",
                    self.where,
                    exc,
                )
            finally:
                self.listen_pid = None
            await asyncio.sleep(delay)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self._drop_review()
