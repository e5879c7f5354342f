"""The relay's storage: an interface and its SQLite implementation.

Everything the relay must not forget lives here: tokens (hashed), the
client-id registry, the log of CRDT updates per (tenant, document) and its
snapshots, per-replica configuration and grants, and the relay's sync log.

:class:`RelayStore` is the small interface the server talks to, so that a
server database can replace :class:`SqliteRelayStore` when several relay
processes share one.  Implementations must be safe to call from several
threads (the server commits from a worker thread and looks up HELLOs in
others); the SQLite one serialises every use of its one connection with a
lock.  Schema versions and migrations: :mod:`tiendasync.relay.schema`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from tiendasync.errors import (
    ConfigError,
    InvalidArgument,
    NotFound,
    StorageError,
    StoragePermissionError,
)
from tiendasync.relay import schema
from tiendasync.relay.records import (
    AppendEntry,
    AppendResult,
    ConflictRecord,
    DocHistory,
    NodeRecord,
    PastGeneration,
    RolloverCut,
    SessionRecord,
    SyncRequest,
    TokenRecord,
)
from tiendasync.relay.schema import SCHEMA_VERSION
from tiendasync.store.storage.access import access_problem, storage_error

if TYPE_CHECKING:
    from tiendasync.relay.pgstore import PostgresRelayStore

log = logging.getLogger("tiendasync.relay.storage")

__all__ = [
    "SCHEMA_VERSION",
    "AppendEntry",
    "AppendResult",
    "ConflictRecord",
    "DocHistory",
    "NodeRecord",
    "RelayStore",
    "SessionRecord",
    "SqliteRelayStore",
    "SyncRequest",
    "TokenRecord",
    "generation_history",
    "is_postgresql_url",
    "open_postgresql_store",
    "open_relay_store",
]

# -- the interface ------------------------------------------------------------------------


@runtime_checkable
class RelayStore(Protocol):
    """What the relay server needs from storage.  Every method is thread-safe."""

    # tokens
    def add_token(self, record: TokenRecord) -> None: ...
    def get_token(self, token_id: str) -> TokenRecord | None: ...
    def list_tokens(self) -> list[TokenRecord]: ...
    def revoke_token(self, token_id: str) -> None: ...

    # client ids
    def claim_client_ids(self, tenant: str, replica_id: str, ids: Sequence[int]) -> list[int]:
        """Register ``ids`` to the replica unless one belongs to someone else.

        Returns the ids owned by another (tenant, replica); if any, nothing
        is registered.
        """
        ...

    def client_ids_of(self, tenant: str, replica_id: str) -> set[int]: ...

    # documents
    def append_many(self, entries: Sequence[AppendEntry]) -> AppendResult:
        """Store a batch of updates in one durable transaction (group commit).

        A store several relays share (PostgreSQL) stores nothing and raises
        :class:`~tiendasync.relay.records.GenerationMoved` when an entry's
        ``generation`` is not its document's (another relay cut it meanwhile); the
        embedded store has one relay, whose cuts wait for its writes, and does not check.
        """
        ...

    def load_doc(self, tenant: str, doc: str) -> DocHistory: ...
    def update_origins(self, tenant: str, doc: str, after_seq: int) -> dict[int, tuple[str, float]]:
        """Who wrote each logged update of ``doc`` after ``after_seq``, and when the relay
        stored it: ``{seq: (writer name, received_at)}`` (read-only; for the console)."""
        ...

    def doc_writers(self, tenant: str) -> list[tuple[str, str, float]]:
        """``(doc, writer name, last received_at)`` for every writer of the tenant's
        logged updates (read-only; the console places tills at their stores with it)."""
        ...

    def put_snapshot(self, tenant: str, doc: str, data: bytes, upto_seq: int) -> None: ...
    def state_vectors(self, tenant: str) -> dict[str, bytes]: ...
    def all_state_vectors(self) -> dict[tuple[str, str], bytes]:
        """Every stored document's state vector, by (tenant, doc)."""
        ...

    def repair_doc(
        self, tenant: str, doc: str, state_vector: bytes, bad: Sequence[tuple[int, str]]
    ) -> None:
        """Set the doc's state vector and quarantine its ``(seq, reason)`` updates
        (seq 0: the snapshot), in one transaction."""
        ...

    # document generations (docs/generations.md)
    def generations(self, tenant: str) -> dict[str, int]:
        """``{doc: generation}`` of every document of ``tenant`` past generation 0."""
        ...

    def roll_over(
        self,
        tenant: str,
        doc: str,
        *,
        generation: int,
        upto_seq: int,
        cut: bytes,
        seed: bytes,
        state_vector: bytes,
    ) -> bool:
        """Start generation ``generation + 1`` of ``doc``, in one transaction.

        ``cut`` is the whole state of ``generation`` (its snapshot and every
        update up to ``upto_seq``), kept as that generation's record;
        ``seed`` becomes the new generation's snapshot (``state_vector`` its
        state vector) and the old log is dropped.  Nothing is done and
        ``False`` returned if the document is not at ``generation`` or has
        updates after ``upto_seq`` (another relay moved it on: reload, retry).
        """
        ...

    def roll_over_locked(
        self, tenant: str, doc: str, build: Callable[[DocHistory], RolloverCut]
    ) -> int | None:
        """Start the next generation of ``doc`` from ``build(history)``, run while the
        document's writers wait: ``history`` is the doc as stored then (with its
        generation), so nothing can land between the read and the cut.  Returns the
        new generation (``None``: ``doc`` is not stored).  For a document that keeps
        changing under :meth:`roll_over`; its writers wait for ``build``."""
        ...

    def load_generation(self, tenant: str, doc: str, generation: int) -> DocHistory:
        """A past generation: its cut (as the snapshot) and the late updates logged to it
        since, in order (``last_seq`` is what :meth:`append_late` expects);
        :class:`~tiendasync.errors.NotFound` if ``doc`` has no such past generation."""
        ...

    def append_late(
        self,
        tenant: str,
        doc: str,
        *,
        generation: int,
        data: bytes,
        replica: str | None,
        after_seq: int,
        carry: bytes | None,
        into_generation: int,
        state_vector: bytes,
        received_at: float,
    ) -> int | None:
        """Log ``data``, a late update to past ``generation`` (any past one), and
        ``carry`` (what it adds to the current generation, if anything) in one
        transaction: the late update's seq.  ``into_generation``: the current generation
        the carry was computed on; ``state_vector``: its state vector with the carry.
        ``None``, and nothing done, if ``generation`` got late updates after
        ``after_seq`` or the doc is no longer at ``into_generation`` (the carry was
        computed on an old state: reload, recompute, retry).
        :class:`~tiendasync.errors.InvalidArgument` if ``generation`` is not a past
        generation of ``doc``."""
        ...

    def past_generations(self, tenant: str) -> list[PastGeneration]:
        """Every past generation the store keeps of the tenant's documents, by document
        then generation (what ``tiendasync relay generations`` lists)."""
        ...

    def late_update_senders(
        self, tenant: str, doc: str, generation: int
    ) -> dict[int, tuple[str | None, float]]:
        """Who sent each late update of past ``generation`` and when it arrived, by seq."""
        ...

    def drop_generation(self, tenant: str, doc: str, generation: int, *, upto_seq: int) -> bool:
        """Delete past ``generation`` of ``doc`` (its cut and late updates), in one
        transaction, once it is archived elsewhere.  ``False``, and nothing done, if
        it has late updates after ``upto_seq`` (logged since it was read: archive it
        again) or is not kept.  Late updates to it are refused afterwards
        (:class:`~tiendasync.errors.NotFound`)."""
        ...

    def restore_generation(
        self,
        tenant: str,
        doc: str,
        generation: int,
        *,
        cut: bytes,
        cut_at: float,
        late: Sequence[tuple[bytes, str | None, float]],
    ) -> bool:
        """Put back an archived past generation: its cut and its late updates
        ``(data, replica, received_at)`` in order, in one transaction.  ``False``,
        and nothing done, if the store already keeps it;
        :class:`~tiendasync.errors.InvalidArgument` if ``doc`` is not past it."""
        ...

    # per-replica config
    def get_replica_config(self, tenant: str, replica_id: str) -> dict[str, Any] | None: ...
    def set_replica_config(self, tenant: str, replica_id: str, config: dict[str, Any]) -> None: ...

    # the config each store says it runs with (its last HELLO)
    def get_reported_config(
        self, tenant: str, replica_id: str
    ) -> tuple[dict[str, Any], float] | None: ...
    def set_reported_config(
        self, tenant: str, replica_id: str, config: dict[str, Any], at: float
    ) -> None: ...

    # sync log
    def log_session(self, record: SessionRecord) -> None: ...
    def list_sessions(
        self, *, tenant: str | None = None, replica_id: str | None = None, limit: int = 100
    ) -> list[SessionRecord]: ...
    def prune_sessions(self, before: float) -> int:
        """Delete sessions that ended (never ended: started) before ``before``, keeping
        each replica's newest (its last sync, shown by the admin API); how many went."""
        ...

    # conflicts' metadata
    def record_conflict(self, record: ConflictRecord) -> bool:
        """Keep ``record``: ``True`` when this call opened the conflict (no row for its
        (tenant, id) yet), ``False`` when it only updated one (status, ``updated_at``;
        the first ``opened_at`` and ``source_seq`` stay).  Two callers recording the
        same new conflict at once: exactly one gets ``True``."""
        ...

    def list_conflicts(self, tenant: str, *, status: str | None = None) -> list[ConflictRecord]:
        """The tenant's conflicts (of ``status``, if given), oldest opened first."""
        ...

    # the relay nodes sharing this store (a cluster on PostgreSQL; one node on SQLite)
    def beat_node(self, record: NodeRecord) -> list[SyncRequest]:
        """Record ``record`` as its node's latest heartbeat and hand over, once, the
        sync requests other nodes left for it (oldest first)."""
        ...

    def live_nodes(self, seen_since: float) -> list[NodeRecord]:
        """Nodes whose last heartbeat is at or after ``seen_since``, by node id."""
        ...

    def request_node_sync(self, node_id: str, request: SyncRequest) -> None:
        """Leave ``request`` for ``node_id``: its next heartbeat takes it."""
        ...

    def forget_node(self, node_id: str) -> None:
        """A node that stops cleanly removes its heartbeat and unserved requests."""
        ...

    # what the start-up check and the console read
    def quarantined(self) -> list[tuple[str, str, int, str]]:
        """``(tenant, doc, seq, reason)`` of every stored update set aside as garbage."""
        ...

    def log_size(self, tenant: str, doc: str) -> int:
        """Updates logged for ``doc`` since its snapshot."""
        ...

    def stored_bytes(self, tenant: str, doc: str) -> int:
        """The bytes stored of ``doc``'s current generation: its snapshot and the updates
        logged since (0 for a document never written).  Read from the rows' lengths,
        without loading them (what a byte bound of rollover measures)."""
        ...

    def schema_version(self) -> int:
        """The schema version the store of record is at."""
        ...

    def close(self) -> None: ...


def is_postgresql_url(spec: str) -> bool:
    """Whether ``spec`` names a PostgreSQL server (``postgresql://`` or ``postgres://``)."""
    return spec.startswith(("postgresql://", "postgres://"))


def open_relay_store(spec: str) -> RelayStore:
    """The store of record ``spec`` names: a PostgreSQL URL, else an SQLite file path.

    PostgreSQL needs the ``postgresql`` extra (psycopg); without it this raises
    :class:`~tiendasync.errors.ConfigError` naming the extra.
    """
    return open_postgresql_store(spec) if is_postgresql_url(spec) else SqliteRelayStore(spec)


def open_postgresql_store(url: str, *, node_id: str | None = None) -> PostgresRelayStore:
    """A :class:`~tiendasync.relay.pgstore.PostgresRelayStore` on ``url``;
    :class:`~tiendasync.errors.ConfigError` naming the extra when psycopg is missing."""
    try:
        from tiendasync.relay.pgstore import PostgresRelayStore  # the optional extra
    except ImportError as exc:
        raise ConfigError(
            f"a PostgreSQL store needs psycopg: pip install 'tiendasync[postgresql]' ({exc})"
        ) from exc
    return PostgresRelayStore(url, node_id=node_id)


def archived_reason(doc: str, generation: int) -> str:
    """Why a late update to, or a store holding, a dropped past generation is refused."""
    return (
        f"generation {generation} of {doc[:100]!r} is no longer kept at the relay (archived): "
        "its operator can put it back with 'tiendasync relay restore-generations'"
    )


def generation_history(
    cut: bytes, cut_checksum: int, late: Sequence[tuple[int, bytes, int]]
) -> DocHistory:
    """A past generation as a :class:`DocHistory`: the cut as its snapshot (seq 0),
    the late updates after it; rows whose checksum fails left out, in ``damaged``."""
    damaged: list[tuple[int, str]] = []
    snapshot: bytes | None = cut
    if schema.checksum_of(cut) != cut_checksum:
        damaged.append((0, "stored generation cut: its bytes do not match their checksum"))
        snapshot = None
    updates: list[tuple[int, bytes]] = []
    for seq, data, checksum in late:
        if schema.checksum_of(data) == checksum:
            updates.append((seq, data))
        else:
            damaged.append(
                (seq, f"stored late update {seq}: its bytes do not match their checksum")
            )
    return DocHistory(snapshot, 0, updates, damaged)


# -- SQLite -----------------------------------------------------------------------------


def _cut_kept(conn: sqlite3.Connection, tenant: str, doc: str, generation: int) -> bool:
    """Whether past ``generation`` of ``doc`` is kept (not archived), inside ``conn``'s
    transaction."""
    return (
        conn.execute(
            "SELECT 1 FROM generation_cuts WHERE tenant = ? AND doc = ? AND generation = ?",
            (tenant, doc, generation),
        ).fetchone()
        is not None
    )


class SqliteRelayStore:
    """:class:`RelayStore` in one SQLite file (WAL, ``synchronous=FULL``)."""

    def __init__(self, path: str, *, durability: str = "full") -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        self._nodes: dict[str, NodeRecord] = {}
        self._node_requests: dict[str, list[SyncRequest]] = {}
        what = f"cannot open relay database {path}"
        # The relay writes on every open (migrations) and on every accepted update:
        # refuse here, by name, rather than start "ok" on a file it cannot write.
        if (problem := access_problem(self.path, write=True)) is not None:
            raise StoragePermissionError(f"{what}: {problem}")
        try:
            self.conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except sqlite3.Error as exc:
            raise storage_error(what, self.path, exc) from exc
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            # a damaged file must not be served (or migrated over) as if it were whole
            check = self.conn.execute("PRAGMA quick_check(1)").fetchone()
            if check is None or check[0] != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {check}")
            self.conn.execute(
                "PRAGMA synchronous=" + ("FULL" if durability == "full" else "NORMAL")
            )
            self._migrate()
        except BaseException as exc:
            self.conn.close()
            if isinstance(exc, sqlite3.OperationalError):
                raise storage_error(what, self.path, exc) from exc
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"{what}: {exc}") from exc
            raise
        self._closed = False

    def _migrate(self) -> None:
        """Bring the file to :data:`~tiendasync.relay.schema.SCHEMA_VERSION`, in one transaction."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(schema.META_TABLE)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = schema.migrate(conn, None if row is None else int(row[0]), self.path)
            for statement in schema.statements():
                conn.execute(statement)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(version),),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def schema_version(self) -> int:
        """The schema version recorded in the file."""
        rows = self._read("SELECT value FROM meta WHERE key = 'schema_version'")
        return int(rows[0][0])

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.conn.close()

    def __enter__(self) -> SqliteRelayStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One durable transaction: all of it, or (whatever failed, even the COMMIT)
        nothing of it, and the connection is left with no transaction open."""
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self.conn
                    self.conn.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            except sqlite3.Error as exc:
                raise storage_error("relay database write failed", self.path, exc) from exc

    def _rollback(self) -> None:
        # A failed COMMIT (disk full, I/O error) may leave the transaction open:
        # the next write would otherwise commit it together with its own rows.
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("relay database: ROLLBACK failed")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self.conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"relay database read failed: {exc}") from exc

    # -- tokens --------------------------------------------------------------------------

    def add_token(self, record: TokenRecord) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO tokens (id, token_hash, tenant, replica_id, admin, created_at, "
                "revoked_at, location) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.token_hash,
                    record.tenant,
                    record.replica_id,
                    int(record.admin),
                    record.created_at,
                    record.revoked_at,
                    record.location,
                ),
            )

    @staticmethod
    def _token(row: Sequence[Any]) -> TokenRecord:
        return TokenRecord(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], row[7])

    def get_token(self, token_id: str) -> TokenRecord | None:
        rows = self._read(
            "SELECT id, token_hash, tenant, replica_id, admin, created_at, revoked_at, location "
            "FROM tokens WHERE id = ?",
            (token_id,),
        )
        return self._token(rows[0]) if rows else None

    def list_tokens(self) -> list[TokenRecord]:
        rows = self._read(
            "SELECT id, token_hash, tenant, replica_id, admin, created_at, revoked_at, location "
            "FROM tokens ORDER BY created_at, id"
        )
        return [self._token(r) for r in rows]

    def revoke_token(self, token_id: str) -> None:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?",
                (time.time(), token_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no token with id {token_id!r}")

    # -- client ids ------------------------------------------------------------------------

    def claim_client_ids(self, tenant: str, replica_id: str, ids: Sequence[int]) -> list[int]:
        now = time.time()
        with self._write() as conn:
            foreign: list[int] = []
            new: list[int] = []
            for client_id in dict.fromkeys(ids):
                row = conn.execute(
                    "SELECT tenant, replica_id FROM client_ids WHERE client_id = ?",
                    (client_id,),
                ).fetchone()
                if row is None:
                    new.append(client_id)
                elif (row[0], row[1]) != (tenant, replica_id):
                    foreign.append(client_id)
            if not foreign:
                conn.executemany(
                    "INSERT INTO client_ids (client_id, tenant, replica_id, registered_at) "
                    "VALUES (?, ?, ?, ?)",
                    [(c, tenant, replica_id, now) for c in new],
                )
            return foreign

    def client_ids_of(self, tenant: str, replica_id: str) -> set[int]:
        rows = self._read(
            "SELECT client_id FROM client_ids WHERE tenant = ? AND replica_id = ?",
            (tenant, replica_id),
        )
        return {r[0] for r in rows}

    # -- documents ------------------------------------------------------------------------

    def append_many(self, entries: Sequence[AppendEntry]) -> AppendResult:
        seqs: list[int | None] = []
        counts: dict[tuple[str, str], int] = {}
        if not entries:
            return AppendResult(seqs, counts)
        with self._write() as conn:
            for e in entries:
                seq: int | None = None
                added = 0
                if e.data is not None:
                    cur = conn.execute(
                        "INSERT INTO updates (tenant, doc, data, replica, received_at, checksum) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            e.tenant,
                            e.doc,
                            e.data,
                            e.replica,
                            e.received_at,
                            schema.checksum_of(e.data),
                        ),
                    )
                    seq = cur.lastrowid
                    added = 1
                seqs.append(seq)
                conn.execute(
                    "INSERT INTO docs (tenant, doc, state_vector, log_count, updated_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant, doc) DO UPDATE SET "
                    "state_vector = excluded.state_vector, "
                    "log_count = docs.log_count + excluded.log_count, "
                    "updated_at = excluded.updated_at",
                    (e.tenant, e.doc, e.state_vector, added, e.received_at),
                )
            for tenant, doc in dict.fromkeys((e.tenant, e.doc) for e in entries):
                row = conn.execute(
                    "SELECT log_count FROM docs WHERE tenant = ? AND doc = ?", (tenant, doc)
                ).fetchone()
                counts[(tenant, doc)] = int(row[0])
        return AppendResult(seqs, counts)

    def load_doc(self, tenant: str, doc: str) -> DocHistory:
        """The doc's snapshot and log; rows whose checksum fails are left out, in
        ``damaged`` (a NULL checksum, from a file older than schema 4, is trusted)."""
        damaged: list[tuple[int, str]] = []

        def intact(seq: int, data: bytes, checksum: int | None) -> bool:
            if checksum is None or schema.checksum_of(data) == checksum:
                return True
            what = "snapshot" if seq == 0 else f"update {seq}"
            damaged.append((seq, f"stored {what}: its bytes do not match their checksum"))
            return False

        with self._lock:
            snap = self._read(
                "SELECT data, upto_seq, checksum FROM snapshots WHERE tenant = ? AND doc = ?",
                (tenant, doc),
            )
            snapshot, upto = (bytes(snap[0][0]), int(snap[0][1])) if snap else (None, 0)
            if snapshot is not None and not intact(0, snapshot, snap[0][2]):
                snapshot = None
            rows = self._read(
                "SELECT seq, data, checksum FROM updates WHERE tenant = ? AND doc = ? "
                "AND seq > ? ORDER BY seq",
                (tenant, doc, upto),
            )
            gen = self._read(
                "SELECT generation FROM docs WHERE tenant = ? AND doc = ?", (tenant, doc)
            )
        updates = [(int(s), bytes(d)) for s, d, c in rows if intact(int(s), bytes(d), c)]
        return DocHistory(snapshot, upto, updates, damaged, generation=int(gen[0][0]) if gen else 0)

    def update_origins(self, tenant: str, doc: str, after_seq: int) -> dict[int, tuple[str, float]]:
        rows = self._read(
            "SELECT seq, replica, received_at FROM updates WHERE tenant = ? AND doc = ? "
            "AND seq > ? ORDER BY seq",
            (tenant, doc, after_seq),
        )
        return {int(s): (r or "", float(at)) for s, r, at in rows}

    def doc_writers(self, tenant: str) -> list[tuple[str, str, float]]:
        rows = self._read(
            "SELECT doc, replica, MAX(received_at) FROM updates WHERE tenant = ? "
            "AND replica IS NOT NULL GROUP BY doc, replica",
            (tenant,),
        )
        return [(d, r, float(at)) for d, r, at in rows]

    def put_snapshot(self, tenant: str, doc: str, data: bytes, upto_seq: int) -> None:
        """Replace the snapshot and drop the log it covers, in one transaction."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO snapshots (tenant, doc, data, upto_seq, created_at, checksum) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, doc) DO UPDATE SET "
                "data = excluded.data, upto_seq = excluded.upto_seq, "
                "created_at = excluded.created_at, checksum = excluded.checksum",
                (tenant, doc, data, upto_seq, time.time(), schema.checksum_of(data)),
            )
            conn.execute(
                "DELETE FROM updates WHERE tenant = ? AND doc = ? AND seq <= ?",
                (tenant, doc, upto_seq),
            )
            remaining = conn.execute(
                "SELECT COUNT(*) FROM updates WHERE tenant = ? AND doc = ?", (tenant, doc)
            ).fetchone()[0]
            conn.execute(
                "UPDATE docs SET log_count = ? WHERE tenant = ? AND doc = ?",
                (remaining, tenant, doc),
            )

    def state_vectors(self, tenant: str) -> dict[str, bytes]:
        rows = self._read(
            "SELECT doc, state_vector FROM docs WHERE tenant = ? ORDER BY doc", (tenant,)
        )
        return {r[0]: bytes(r[1]) for r in rows}

    def all_state_vectors(self) -> dict[tuple[str, str], bytes]:
        rows = self._read("SELECT tenant, doc, state_vector FROM docs ORDER BY tenant, doc")
        return {(r[0], r[1]): bytes(r[2]) for r in rows}

    def repair_doc(
        self, tenant: str, doc: str, state_vector: bytes, bad: Sequence[tuple[int, str]]
    ) -> None:
        now, key = time.time(), (tenant, doc)
        with self._write() as conn:
            for seq, reason in bad:
                if seq == 0:
                    moved = conn.execute(
                        "SELECT data FROM snapshots WHERE tenant = ? AND doc = ?", key
                    ).fetchone()
                    conn.execute("DELETE FROM snapshots WHERE tenant = ? AND doc = ?", key)
                else:
                    moved = conn.execute(
                        "SELECT data FROM updates WHERE seq = ? AND tenant = ? AND doc = ?",
                        (seq, *key),
                    ).fetchone()
                    conn.execute("DELETE FROM updates WHERE seq = ?", (seq,))
                if moved is not None:
                    conn.execute(
                        "INSERT INTO quarantine (tenant, doc, seq, data, reason, quarantined_at) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (*key, seq, moved[0], reason, now),
                    )
            conn.execute(
                "UPDATE docs SET state_vector = ?, log_count = (SELECT COUNT(*) FROM updates "
                "WHERE tenant = ? AND doc = ?) WHERE tenant = ? AND doc = ?",
                (state_vector, *key, *key),
            )

    # -- nodes: one relay process per file (the lock in relay.dblock), so in memory

    def beat_node(self, record: NodeRecord) -> list[SyncRequest]:
        with self._lock:
            self._nodes[record.node_id] = record
            return self._node_requests.pop(record.node_id, [])

    def live_nodes(self, seen_since: float) -> list[NodeRecord]:
        with self._lock:
            return sorted(
                (n for n in self._nodes.values() if n.seen_at >= seen_since),
                key=lambda n: n.node_id,
            )

    def request_node_sync(self, node_id: str, request: SyncRequest) -> None:
        with self._lock:
            self._node_requests.setdefault(node_id, []).append(request)

    def forget_node(self, node_id: str) -> None:
        with self._lock:
            self._nodes.pop(node_id, None)
            self._node_requests.pop(node_id, None)

    def quarantined(self) -> list[tuple[str, str, int, str]]:
        """``(tenant, doc, seq, reason)`` of every stored update set aside as garbage."""
        rows = self._read("SELECT tenant, doc, seq, reason FROM quarantine ORDER BY id")
        return [(r[0], r[1], int(r[2]), r[3]) for r in rows]

    def log_size(self, tenant: str, doc: str) -> int:
        """Updates logged for ``doc`` since its snapshot."""
        rows = self._read("SELECT log_count FROM docs WHERE tenant = ? AND doc = ?", (tenant, doc))
        return int(rows[0][0]) if rows else 0

    def stored_bytes(self, tenant: str, doc: str) -> int:
        # length() of a BLOB reads its size from the record header, not its pages.
        rows = self._read(
            "SELECT COALESCE((SELECT length(data) FROM snapshots WHERE tenant = ?1 "
            "AND doc = ?2), 0) + COALESCE((SELECT SUM(length(u.data)) FROM updates u "
            "WHERE u.tenant = ?1 AND u.doc = ?2 AND u.seq > COALESCE((SELECT upto_seq "
            "FROM snapshots WHERE tenant = ?1 AND doc = ?2), 0)), 0)",
            (tenant, doc),
        )
        return int(rows[0][0])

    # -- document generations ---------------------------------------------------------------

    def generations(self, tenant: str) -> dict[str, int]:
        rows = self._read(
            "SELECT doc, generation FROM docs WHERE tenant = ? AND generation > 0 ORDER BY doc",
            (tenant,),
        )
        return {r[0]: int(r[1]) for r in rows}

    def roll_over(
        self,
        tenant: str,
        doc: str,
        *,
        generation: int,
        upto_seq: int,
        cut: bytes,
        seed: bytes,
        state_vector: bytes,
    ) -> bool:
        key = (tenant, doc)
        with self._write() as conn:
            row = conn.execute(
                "SELECT generation FROM docs WHERE tenant = ? AND doc = ?", key
            ).fetchone()
            newer = conn.execute(
                "SELECT COUNT(*) FROM updates WHERE tenant = ? AND doc = ? AND seq > ?",
                (*key, upto_seq),
            ).fetchone()[0]
            if row is None or int(row[0]) != generation or newer:
                return False
            self._cut(conn, key, generation, upto_seq, RolloverCut(cut, seed, state_vector))
        return True

    def roll_over_locked(
        self, tenant: str, doc: str, build: Callable[[DocHistory], RolloverCut]
    ) -> int | None:
        with self._write() as conn:  # the database's write lock: every writer waits
            if not self._read("SELECT 1 FROM docs WHERE tenant = ? AND doc = ?", (tenant, doc)):
                return None
            history = self.load_doc(tenant, doc)
            self._cut(conn, (tenant, doc), history.generation, history.last_seq, build(history))
        return history.generation + 1

    @staticmethod
    def _cut(
        conn: sqlite3.Connection,
        key: tuple[str, str],
        generation: int,
        upto_seq: int,
        parts: RolloverCut,
    ) -> None:
        now = time.time()
        conn.execute(
            "INSERT INTO generation_cuts (tenant, doc, generation, data, checksum, cut_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (*key, generation, parts.cut, schema.checksum_of(parts.cut), now),
        )
        conn.execute(
            "INSERT INTO snapshots (tenant, doc, data, upto_seq, created_at, checksum) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, doc) DO UPDATE SET "
            "data = excluded.data, upto_seq = excluded.upto_seq, "
            "created_at = excluded.created_at, checksum = excluded.checksum",
            (*key, parts.seed, upto_seq, now, schema.checksum_of(parts.seed)),
        )
        conn.execute("DELETE FROM updates WHERE tenant = ? AND doc = ?", key)
        conn.execute(
            "UPDATE docs SET generation = ?, state_vector = ?, log_count = 0, updated_at = ? "
            "WHERE tenant = ? AND doc = ?",
            (generation + 1, parts.state_vector, now, *key),
        )

    def load_generation(self, tenant: str, doc: str, generation: int) -> DocHistory:
        with self._lock:
            cut = self._read(
                "SELECT data, checksum FROM generation_cuts WHERE tenant = ? AND doc = ? "
                "AND generation = ?",
                (tenant, doc, generation),
            )
            rows = self._read(
                "SELECT seq, data, checksum FROM late_updates WHERE tenant = ? AND doc = ? "
                "AND generation = ? ORDER BY seq",
                (tenant, doc, generation),
            )
        if not cut:
            raise NotFound(f"{doc!r} of {tenant!r} has no past generation {generation}")
        return generation_history(
            bytes(cut[0][0]), int(cut[0][1]), [(int(s), bytes(d), int(c)) for s, d, c in rows]
        )

    def append_late(
        self,
        tenant: str,
        doc: str,
        *,
        generation: int,
        data: bytes,
        replica: str | None,
        after_seq: int,
        carry: bytes | None,
        into_generation: int,
        state_vector: bytes,
        received_at: float,
    ) -> int | None:
        key = (tenant, doc)
        with self._write() as conn:
            row = conn.execute(
                "SELECT generation FROM docs WHERE tenant = ? AND doc = ?", key
            ).fetchone()
            current = 0 if row is None else int(row[0])
            if not 0 <= generation < current:
                raise InvalidArgument(
                    f"{doc!r} is at generation {current}: {generation} is not a past one"
                )
            if not _cut_kept(conn, tenant, doc, generation):
                raise NotFound(archived_reason(doc, generation))
            newer = conn.execute(
                "SELECT COUNT(*) FROM late_updates WHERE tenant = ? AND doc = ? "
                "AND generation = ? AND seq > ?",
                (*key, generation, after_seq),
            ).fetchone()[0]
            if newer or current != into_generation:
                return None
            cur = conn.execute(
                "INSERT INTO late_updates (tenant, doc, generation, data, replica, received_at, "
                "checksum) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, generation, data, replica, received_at, schema.checksum_of(data)),
            )
            seq = cur.lastrowid
            if carry is not None:
                conn.execute(
                    "INSERT INTO updates (tenant, doc, data, replica, received_at, checksum) "
                    "VALUES (?, ?, ?, NULL, ?, ?)",
                    (*key, carry, received_at, schema.checksum_of(carry)),
                )
                conn.execute(
                    "UPDATE docs SET state_vector = ?, log_count = log_count + 1, "
                    "updated_at = ? WHERE tenant = ? AND doc = ?",
                    (state_vector, received_at, *key),
                )
        assert seq is not None
        return int(seq)

    def past_generations(self, tenant: str) -> list[PastGeneration]:
        rows = self._read(
            "SELECT c.doc, c.generation, c.cut_at, COUNT(l.seq), "
            "length(c.data) + COALESCE(SUM(length(l.data)), 0) "
            "FROM generation_cuts c LEFT JOIN late_updates l ON l.tenant = c.tenant "
            "AND l.doc = c.doc AND l.generation = c.generation WHERE c.tenant = ? "
            "GROUP BY c.doc, c.generation ORDER BY c.doc, c.generation",
            (tenant,),
        )
        return [PastGeneration(r[0], int(r[1]), float(r[2]), int(r[3]), int(r[4])) for r in rows]

    def late_update_senders(
        self, tenant: str, doc: str, generation: int
    ) -> dict[int, tuple[str | None, float]]:
        rows = self._read(
            "SELECT seq, replica, received_at FROM late_updates WHERE tenant = ? AND doc = ? "
            "AND generation = ?",
            (tenant, doc, generation),
        )
        return {int(r[0]): (r[1], float(r[2])) for r in rows}

    def drop_generation(self, tenant: str, doc: str, generation: int, *, upto_seq: int) -> bool:
        key = (tenant, doc, generation)
        with self._write() as conn:
            newer = conn.execute(
                "SELECT COUNT(*) FROM late_updates WHERE tenant = ? AND doc = ? "
                "AND generation = ? AND seq > ?",
                (*key, upto_seq),
            ).fetchone()[0]
            if newer:
                return False
            dropped = conn.execute(
                "DELETE FROM generation_cuts WHERE tenant = ? AND doc = ? AND generation = ?", key
            ).rowcount
            conn.execute(
                "DELETE FROM late_updates WHERE tenant = ? AND doc = ? AND generation = ?", key
            )
        return bool(dropped)

    def restore_generation(
        self,
        tenant: str,
        doc: str,
        generation: int,
        *,
        cut: bytes,
        cut_at: float,
        late: Sequence[tuple[bytes, str | None, float]],
    ) -> bool:
        key = (tenant, doc)
        with self._write() as conn:
            row = conn.execute(
                "SELECT generation FROM docs WHERE tenant = ? AND doc = ?", key
            ).fetchone()
            current = 0 if row is None else int(row[0])
            if not 0 <= generation < current:
                raise InvalidArgument(
                    f"{doc!r} is at generation {current}: {generation} is not a past one"
                )
            if _cut_kept(conn, tenant, doc, generation):
                return False
            conn.execute(
                "INSERT INTO generation_cuts (tenant, doc, generation, data, checksum, cut_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (*key, generation, cut, schema.checksum_of(cut), cut_at),
            )
            conn.executemany(
                "INSERT INTO late_updates (tenant, doc, generation, data, replica, received_at, "
                "checksum) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*key, generation, d, r, at, schema.checksum_of(d)) for d, r, at in late],
            )
        return True

    # -- per-replica config ------------------------------------------------------------------

    def get_replica_config(self, tenant: str, replica_id: str) -> dict[str, Any] | None:
        rows = self._read(
            "SELECT json FROM replica_config WHERE tenant = ? AND replica_id = ?",
            (tenant, replica_id),
        )
        if not rows:
            return None
        value = json.loads(rows[0][0])
        return value if isinstance(value, dict) else None

    def set_replica_config(self, tenant: str, replica_id: str, config: dict[str, Any]) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO replica_config (tenant, replica_id, json, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (tenant, replica_id) DO UPDATE SET "
                "json = excluded.json, updated_at = excluded.updated_at",
                (tenant, replica_id, json.dumps(config, sort_keys=True), time.time()),
            )

    def get_reported_config(
        self, tenant: str, replica_id: str
    ) -> tuple[dict[str, Any], float] | None:
        rows = self._read(
            "SELECT json, reported_at FROM reported_config WHERE tenant = ? AND replica_id = ?",
            (tenant, replica_id),
        )
        if not rows:
            return None
        try:
            value = json.loads(rows[0][0])
        except ValueError:
            return None  # a damaged row is only a display hint: show the defaults
        return (value, float(rows[0][1])) if isinstance(value, dict) else None

    def set_reported_config(
        self, tenant: str, replica_id: str, config: dict[str, Any], at: float
    ) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO reported_config (tenant, replica_id, json, reported_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (tenant, replica_id) DO UPDATE SET "
                "json = excluded.json, reported_at = excluded.reported_at",
                (tenant, replica_id, json.dumps(config, sort_keys=True), at),
            )

    # -- sync log ---------------------------------------------------------------------------

    _SESSION_COLS = (
        "session_id, tenant, replica_id, started_at, ended_at, outcome, kind, docs, "
        "updates_received, updates_sent, bytes_received, bytes_sent, error"
    )

    def log_session(self, record: SessionRecord) -> None:
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO sync_log ({self._SESSION_COLS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.session_id,
                    record.tenant,
                    record.replica_id,
                    record.started_at,
                    record.ended_at,
                    record.outcome,
                    record.kind,
                    record.docs,
                    record.updates_received,
                    record.updates_sent,
                    record.bytes_received,
                    record.bytes_sent,
                    record.error,
                ),
            )

    def list_sessions(
        self, *, tenant: str | None = None, replica_id: str | None = None, limit: int = 100
    ) -> list[SessionRecord]:
        where: list[str] = []
        params: list[Any] = []
        if tenant is not None:
            where.append("tenant = ?")
            params.append(tenant)
        if replica_id is not None:
            where.append("replica_id = ?")
            params.append(replica_id)
        sql = f"SELECT {self._SESSION_COLS} FROM sync_log"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [SessionRecord(*row) for row in self._read(sql, params)]

    def prune_sessions(self, before: float) -> int:
        with self._write() as conn:
            cur = conn.execute(
                "DELETE FROM sync_log WHERE COALESCE(ended_at, started_at) < ? "
                "AND id NOT IN (SELECT MAX(id) FROM sync_log GROUP BY tenant, replica_id)",
                (before,),
            )
            return int(cur.rowcount)

    # -- conflicts' metadata --------------------------------------------------------------

    _CONFLICT_COLS = (
        "tenant, id, invariant, location, sku, status, opened_at, updated_at, source_seq"
    )

    def record_conflict(self, record: ConflictRecord) -> bool:
        with self._write() as conn:
            found = conn.execute(
                "SELECT 1 FROM conflicts WHERE tenant = ? AND id = ?", (record.tenant, record.id)
            ).fetchone()
            if found is not None:
                conn.execute(
                    "UPDATE conflicts SET status = ?, updated_at = ? WHERE tenant = ? AND id = ?",
                    (record.status, record.updated_at, record.tenant, record.id),
                )
                return False
            conn.execute(
                f"INSERT INTO conflicts ({self._CONFLICT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.tenant,
                    record.id,
                    record.invariant,
                    record.location,
                    record.sku,
                    record.status,
                    record.opened_at,
                    record.updated_at,
                    record.source_seq,
                ),
            )
            return True

    def list_conflicts(self, tenant: str, *, status: str | None = None) -> list[ConflictRecord]:
        sql = f"SELECT {self._CONFLICT_COLS} FROM conflicts WHERE tenant = ?"
        params: list[Any] = [tenant]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        rows = self._read(sql + " ORDER BY opened_at, id", params)
        return [ConflictRecord(*row) for row in rows]
