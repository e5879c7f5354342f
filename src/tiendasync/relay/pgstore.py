""":class:`~tiendasync.relay.storage.RelayStore` on a PostgreSQL server (psycopg 3).

The store of record several relay processes can share (the ``postgresql``
extra: ``pip install 'tiendasync[postgresql]'``).  Same contract as the
SQLite file, checked by the same tests (``tests/relay/test_store_contract.py``);
what differs is what sharing asks for:

- updates of one document get their ``seq`` in commit order (a transaction
  that logs one holds the document's ``docs`` row lock from before it takes
  the ``seq`` until it commits), so a reader that has seen ``seq`` N of a
  document never later finds a committed one below N;
- a writer id belongs to one replica (``client_ids``' primary key): two
  processes claiming the same id at once, for different replicas, cannot
  both succeed;
- a conflict is opened once per (tenant, id), whoever records it first.

Synchronous, like the SQLite store: one connection, every use serialised by
a lock, so the relay calls it from worker threads as it does today.  A lost
connection (server restart, network blip) fails the call in progress with
:class:`~tiendasync.errors.StorageError` (nothing of it committed, or all of
it: PostgreSQL's commit is atomic) and the next call connects again.
Passwords in the URL never appear in messages (:func:`describe_url`).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import conninfo

from tiendasync.errors import ConfigError, InvalidArgument, NotFound, StorageError
from tiendasync.protocol.statevector import decode_state_vector, encode_state_vector
from tiendasync.relay import pgschema
from tiendasync.relay.leases import Lease, LeaseLost, partitions_of
from tiendasync.relay.records import (
    AdminRequest,
    AppendEntry,
    AppendResult,
    ConflictRecord,
    DocHistory,
    GenerationMoved,
    NodeRecord,
    PastGeneration,
    RolloverCut,
    SessionRecord,
    SyncRequest,
    TokenRecord,
)
from tiendasync.relay.schema import checksum_of
from tiendasync.relay.storage import archived_reason, generation_history

__all__ = [
    "CHANNEL",
    "PostgresRelayStore",
    "describe_url",
    "generation_notice",
    "merge_state_vectors",
    "new_node_id",
    "update_notice",
]

Connection = psycopg.Connection[tuple[Any, ...]]

#: How long a connection attempt may take before the call fails (seconds).
CONNECT_TIMEOUT = 10

#: Longest any one statement may run or wait for a lock (seconds): a store of record
#: that hangs (a stuck transaction elsewhere holding a row, a dead server behind a
#: live socket) fails the relay's write with StorageError instead of stalling it.
STATEMENT_TIMEOUT_S = 30.0

#: The LISTEN/NOTIFY channel the relay nodes of one database talk on (see relay.pgfeed).
CHANNEL = "tiendasync"


def new_node_id() -> str:
    """A node id for a relay process not given one (``--node-id``)."""
    return f"node-{secrets.token_hex(4)}"


def merge_state_vectors(a: bytes, b: bytes) -> bytes:
    """Per client, the higher clock of the two (the state of a doc holding both).

    Several relay nodes write one document's row, each from its own in-memory
    doc; the row keeps what any of them stored.  An undecodable stored vector
    is replaced (the start-up check repairs what it claims)."""
    try:
        mine, theirs = decode_state_vector(a), decode_state_vector(b)
    except ValueError:
        return b
    for client, clock in theirs.items():
        if clock > mine.get(client, 0):
            mine[client] = clock
    return encode_state_vector(mine)


def update_notice(node: str, tenant: str, doc: str, seq: int) -> str:
    """The payload announcing that ``node`` committed ``doc`` up to ``seq`` (kind ``u``)."""
    return json.dumps({"k": "u", "n": node, "t": tenant, "d": doc, "s": seq}, separators=(",", ":"))


#: The kind of the notice a rollover sends (relay.cluster: every node drops the old one).
GENERATION_NOTICE = "g"


def generation_notice(node: str, tenant: str, doc: str, generation: int) -> str:
    """The payload announcing that ``node`` started ``generation`` of ``doc`` (kind ``g``)."""
    return json.dumps(
        {"k": GENERATION_NOTICE, "n": node, "t": tenant, "d": doc, "g": generation},
        separators=(",", ":"),
    )


#: The database's clock, in seconds since the epoch: leases expire on it, so the
#: workers' own clocks only decide when they look, never who holds a partition.
_DB_NOW = "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8"


def describe_url(url: str) -> str:
    """``url`` as it may be shown: user, host, port and database, never the password."""
    try:
        parts = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"not a valid PostgreSQL URL: {exc}") from None
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


class PostgresRelayStore:
    """The relay's store of record in a PostgreSQL database (:mod:`~tiendasync.relay.pgschema`)."""

    def __init__(
        self,
        url: str,
        *,
        statement_timeout_s: float = STATEMENT_TIMEOUT_S,
        node_id: str | None = None,
    ) -> None:
        self.url = url
        #: The relay node this store writes for: named in the notifications of its commits.
        self.node_id = node_id or new_node_id()
        self.statement_timeout_s = statement_timeout_s
        self.where = describe_url(url)
        self._lock = threading.RLock()
        self._conn: Connection | None = None
        self._closed = False
        with self._lock:
            self._connect()

    # -- connection and transactions --------------------------------------------------------

    def _connect(self) -> Connection:
        try:
            conn: Connection = psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT,
                options=f"-c statement_timeout={int(self.statement_timeout_s * 1000)}",
                keepalives=1,
                keepalives_idle=10,
                keepalives_interval=5,
                keepalives_count=3,
            )
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to relay database {self.where}: {exc}") from exc
        try:
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _connection(self) -> Connection:
        if self._closed:
            raise StorageError(f"relay database {self.where} is closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            return self._connect()
        return self._conn

    def _migrate(self, conn: Connection) -> None:
        """Bring the database to :data:`~tiendasync.relay.pgschema.SCHEMA_VERSION`, in one
        transaction, one process at a time."""
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (pgschema.MIGRATION_LOCK,))
                conn.execute(pgschema.VERSION_TABLE)
                row = conn.execute("SELECT version FROM schema_version").fetchone()
                version = pgschema.migrate(
                    lambda sql, params: conn.execute(sql, params),
                    None if row is None else int(row[0]),
                    self.where,
                )
                for statement in pgschema.statements():
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (one, version, migrated_at) VALUES (TRUE, %s, %s) "
                    "ON CONFLICT (one) DO UPDATE SET version = excluded.version, "
                    "migrated_at = excluded.migrated_at "
                    "WHERE schema_version.version <> excluded.version",
                    (version, time.time()),
                )
        except psycopg.Error as exc:
            raise StorageError(f"cannot prepare relay database {self.where}: {exc}") from exc

    @contextmanager
    def _write(self, *, isolation: str | None = None) -> Iterator[Connection]:
        """One transaction: all of it or (whatever failed, even the COMMIT) nothing."""
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    if isolation is not None:
                        conn.execute(f"SET TRANSACTION ISOLATION LEVEL {isolation}")
                    yield conn
            except psycopg.Error as exc:
                raise StorageError(f"relay database {self.where} write failed: {exc}") from exc

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """Several reads that see one committed state (REPEATABLE READ, read only)."""
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    yield conn
            except psycopg.Error as exc:
                raise StorageError(f"relay database {self.where} read failed: {exc}") from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            conn = self._connection()
            try:
                return conn.execute(sql, params).fetchall()
            except psycopg.Error as exc:
                raise StorageError(f"relay database {self.where} read failed: {exc}") from exc

    def schema_version(self) -> int:
        rows = self._read("SELECT version FROM schema_version")
        return int(rows[0][0])

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

    def __enter__(self) -> PostgresRelayStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tokens ----------------------------------------------------------------------------

    _TOKEN_COLS = "id, token_hash, tenant, replica_id, admin, created_at, revoked_at, location"

    def add_token(self, record: TokenRecord) -> None:
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO tokens ({self._TOKEN_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    record.id,
                    record.token_hash,
                    record.tenant,
                    record.replica_id,
                    record.admin,
                    record.created_at,
                    record.revoked_at,
                    record.location,
                ),
            )

    def get_token(self, token_id: str) -> TokenRecord | None:
        rows = self._read(f"SELECT {self._TOKEN_COLS} FROM tokens WHERE id = %s", (token_id,))
        return TokenRecord(*rows[0]) if rows else None

    def list_tokens(self) -> list[TokenRecord]:
        rows = self._read(f"SELECT {self._TOKEN_COLS} FROM tokens ORDER BY created_at, id")
        return [TokenRecord(*r) for r in rows]

    def revoke_token(self, token_id: str) -> None:
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE tokens SET revoked_at = COALESCE(revoked_at, %s) WHERE id = %s",
                (time.time(), token_id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"no token with id {token_id!r}")

    # -- writer ids ------------------------------------------------------------------------

    def claim_client_ids(self, tenant: str, replica_id: str, ids: Sequence[int]) -> list[int]:
        wanted = sorted(set(ids))  # one order for every claimer: no deadlock between two
        if not wanted:
            return []
        foreign: list[int] = []
        with self._write() as conn:
            # A concurrent claim of the same id waits here for the other transaction,
            # then finds its row (ON CONFLICT DO NOTHING) and the check below sees it.
            conn.execute(
                "INSERT INTO client_ids (client_id, tenant, replica_id, registered_at) "
                "SELECT c, %s, %s, %s FROM unnest(%s::bigint[]) AS c "
                "ON CONFLICT (client_id) DO NOTHING",
                (tenant, replica_id, time.time(), wanted),
            )
            rows = conn.execute(
                "SELECT client_id FROM client_ids WHERE client_id = ANY(%s) "
                "AND (tenant, replica_id) <> (%s, %s) ORDER BY client_id",
                (wanted, tenant, replica_id),
            ).fetchall()
            foreign = [int(r[0]) for r in rows]
            if foreign:
                raise psycopg.Rollback()  # nothing registered
        order = {c: i for i, c in enumerate(dict.fromkeys(ids))}
        return sorted(foreign, key=order.__getitem__)

    def client_ids_of(self, tenant: str, replica_id: str) -> set[int]:
        rows = self._read(
            "SELECT client_id FROM client_ids WHERE tenant = %s AND replica_id = %s",
            (tenant, replica_id),
        )
        return {int(r[0]) for r in rows}

    # -- documents -------------------------------------------------------------------------

    def append_many(self, entries: Sequence[AppendEntry]) -> AppendResult:
        """One transaction in a few round trips (psycopg pipelines each ``executemany``):
        lock the documents, log the updates, then set each document's row once."""
        if not entries:
            return AppendResult([], {})
        first: dict[tuple[str, str], AppendEntry] = {}
        last: dict[tuple[str, str], AppendEntry] = {}
        added: dict[tuple[str, str], int] = {}
        for e in entries:
            key = (e.tenant, e.doc)
            first.setdefault(key, e)
            last[key] = e
            added[key] = added.get(key, 0) + int(e.data is not None)
        logged = [e for e in entries if e.data is not None]
        counts: dict[tuple[str, str], int] = {}
        with self._write() as conn, conn.cursor() as cur:
            # Create and row-lock every document first, in one order for every writer (no
            # deadlock), so each takes its seqs only while it holds its documents: per
            # document, seq order is commit order.  DO UPDATE (to itself) takes the lock
            # whether the row is new or not.
            locked = sorted(first)
            cur.executemany(
                "INSERT INTO docs (tenant, doc, state_vector, log_count, updated_at) "
                "VALUES (%s, %s, %s, 0, %s) ON CONFLICT (tenant, doc) "
                "DO UPDATE SET log_count = docs.log_count RETURNING state_vector, generation",
                [(k[0], k[1], first[k].state_vector, first[k].received_at) for k in locked],
                returning=True,
            )
            stored_svs: dict[tuple[str, str], bytes] = {}
            stored_gens: dict[tuple[str, str], int] = {}
            for key in locked:
                row = cur.fetchone()
                assert row is not None
                stored_svs[key], stored_gens[key] = bytes(row[0]), int(row[1])
                cur.nextset()
            # Under the row locks a cut takes too: an update applied to a generation
            # another node has cut since is not logged into the next one.
            moved = {
                (e.tenant, e.doc): stored_gens[(e.tenant, e.doc)]
                for e in entries
                if e.generation is not None and e.generation != stored_gens[(e.tenant, e.doc)]
            }
            if moved:
                raise GenerationMoved(moved)
            logged_seqs: list[int] = []
            if logged:
                cur.executemany(
                    "INSERT INTO updates (tenant, doc, data, replica, received_at, checksum) "
                    "VALUES (%s, %s, %s, %s, %s, %s) RETURNING seq",
                    [
                        (e.tenant, e.doc, e.data, e.replica, e.received_at, checksum_of(e.data))
                        for e in logged
                        if e.data is not None
                    ],
                    returning=True,
                )
                while True:
                    row = cur.fetchone()
                    assert row is not None
                    logged_seqs.append(int(row[0]))
                    if not cur.nextset():
                        break
            keys = list(first)
            # Another node's commit may have set the row since this node's doc was
            # read: keep what both stored (the row lock is held, so no one else
            # writes it meanwhile).
            cur.executemany(
                "UPDATE docs SET state_vector = %s, log_count = log_count + %s, updated_at = %s "
                "WHERE tenant = %s AND doc = %s RETURNING log_count",
                [
                    (
                        merge_state_vectors(stored_svs[k], last[k].state_vector),
                        added[k],
                        last[k].received_at,
                        *k,
                    )
                    for k in keys
                ],
                returning=True,
            )
            for key in keys:
                row = cur.fetchone()
                assert row is not None
                counts[key] = int(row[0])
                cur.nextset()
            found = iter(logged_seqs)
            seqs = [next(found) if e.data is not None else None for e in entries]
            highest: dict[tuple[str, str], int] = {}
            for e, seq in zip(entries, seqs, strict=True):
                if seq is not None:
                    highest[(e.tenant, e.doc)] = max(seq, highest.get((e.tenant, e.doc), 0))
            if highest:
                # Delivered at COMMIT, to every node listening (relay.pgfeed): a pointer,
                # the data stays in the table.
                cur.executemany(
                    "SELECT pg_notify(%s, %s)",
                    [(CHANNEL, update_notice(self.node_id, *k, s)) for k, s in highest.items()],
                )
        return AppendResult(seqs, counts)

    def load_doc(self, tenant: str, doc: str) -> DocHistory:
        """The doc's snapshot and log, read in one snapshot of the database (a compaction
        committing meanwhile cannot drop updates from between the two reads); rows whose
        checksum fails are left out, in ``damaged``."""
        with self._snapshot() as conn:
            return self._history(conn, tenant, doc)

    @staticmethod
    def _history(conn: Connection, tenant: str, doc: str) -> DocHistory:
        """:meth:`load_doc`'s reads, in ``conn``'s transaction (which must see one state)."""
        damaged: list[tuple[int, str]] = []

        def intact(seq: int, data: bytes, checksum: int) -> bool:
            if checksum_of(data) == checksum:
                return True
            what = "snapshot" if seq == 0 else f"update {seq}"
            damaged.append((seq, f"stored {what}: its bytes do not match their checksum"))
            return False

        snap = conn.execute(
            "SELECT data, upto_seq, checksum FROM snapshots WHERE tenant = %s AND doc = %s",
            (tenant, doc),
        ).fetchone()
        snapshot, upto = (bytes(snap[0]), int(snap[1])) if snap else (None, 0)
        if snap is not None and snapshot is not None and not intact(0, snapshot, snap[2]):
            snapshot = None
        rows = conn.execute(
            "SELECT seq, data, checksum FROM updates WHERE tenant = %s AND doc = %s "
            "AND seq > %s ORDER BY seq",
            (tenant, doc, upto),
        ).fetchall()
        gen = conn.execute(
            "SELECT generation FROM docs WHERE tenant = %s AND doc = %s", (tenant, doc)
        ).fetchone()
        updates = [(int(s), bytes(d)) for s, d, c in rows if intact(int(s), bytes(d), int(c))]
        return DocHistory(snapshot, upto, updates, damaged, generation=int(gen[0]) if gen else 0)

    def update_origins(self, tenant: str, doc: str, after_seq: int) -> dict[int, tuple[str, float]]:
        rows = self._read(
            "SELECT seq, replica, received_at FROM updates WHERE tenant = %s AND doc = %s "
            "AND seq > %s ORDER BY seq",
            (tenant, doc, after_seq),
        )
        return {int(s): (r or "", float(at)) for s, r, at in rows}

    def doc_writers(self, tenant: str) -> list[tuple[str, str, float]]:
        rows = self._read(
            "SELECT doc, replica, MAX(received_at) FROM updates WHERE tenant = %s "
            "AND replica IS NOT NULL GROUP BY doc, replica ORDER BY doc, replica",
            (tenant,),
        )
        return [(d, r, float(at)) for d, r, at in rows]

    def put_snapshot(self, tenant: str, doc: str, data: bytes, upto_seq: int) -> None:
        """Replace the snapshot and drop the log it covers, in one transaction."""
        with self._write() as conn:
            conn.execute(
                "SELECT 1 FROM docs WHERE tenant = %s AND doc = %s FOR UPDATE", (tenant, doc)
            )
            conn.execute(
                "INSERT INTO snapshots (tenant, doc, data, upto_seq, created_at, checksum) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant, doc) DO UPDATE SET "
                "data = excluded.data, upto_seq = excluded.upto_seq, "
                "created_at = excluded.created_at, checksum = excluded.checksum",
                (tenant, doc, data, upto_seq, time.time(), checksum_of(data)),
            )
            conn.execute(
                "DELETE FROM updates WHERE tenant = %s AND doc = %s AND seq <= %s",
                (tenant, doc, upto_seq),
            )
            conn.execute(
                "UPDATE docs SET log_count = (SELECT COUNT(*) FROM updates "
                "WHERE tenant = %s AND doc = %s) WHERE tenant = %s AND doc = %s",
                (tenant, doc, tenant, doc),
            )

    # -- document generations ---------------------------------------------------------------

    def generations(self, tenant: str) -> dict[str, int]:
        rows = self._read(
            "SELECT doc, generation FROM docs WHERE tenant = %s AND generation > 0 ORDER BY doc",
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
        """Under the document's row lock, as every writer of its log takes it."""
        key = (tenant, doc)
        with self._write() as conn:
            row = conn.execute(
                "SELECT generation FROM docs WHERE tenant = %s AND doc = %s FOR UPDATE", key
            ).fetchone()
            newer = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM updates WHERE tenant = %s AND doc = %s AND seq > %s)",
                (*key, upto_seq),
            ).fetchone()
            if row is None or int(row[0]) != generation or (newer is not None and newer[0]):
                return False
            self._cut(conn, key, generation, upto_seq, RolloverCut(cut, seed, state_vector))
        return True

    def roll_over_locked(
        self, tenant: str, doc: str, build: Callable[[DocHistory], RolloverCut]
    ) -> int | None:
        key = (tenant, doc)
        with self._write() as conn:
            # The row lock every writer of the doc's log takes: from here to the COMMIT
            # nothing lands in the log, so the reads below see the doc's last state.
            row = conn.execute(
                "SELECT generation FROM docs WHERE tenant = %s AND doc = %s FOR UPDATE", key
            ).fetchone()
            if row is None:
                return None
            history = self._history(conn, tenant, doc)
            self._cut(conn, key, history.generation, history.last_seq, build(history))
        return history.generation + 1

    def _cut(
        self,
        conn: Connection,
        key: tuple[str, str],
        generation: int,
        upto_seq: int,
        parts: RolloverCut,
    ) -> None:
        now = time.time()
        conn.execute(
            "INSERT INTO generation_cuts (tenant, doc, generation, data, checksum, cut_at) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (*key, generation, parts.cut, checksum_of(parts.cut), now),
        )
        conn.execute(
            "INSERT INTO snapshots (tenant, doc, data, upto_seq, created_at, checksum) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant, doc) DO UPDATE SET "
            "data = excluded.data, upto_seq = excluded.upto_seq, "
            "created_at = excluded.created_at, checksum = excluded.checksum",
            (*key, parts.seed, upto_seq, now, checksum_of(parts.seed)),
        )
        conn.execute("DELETE FROM updates WHERE tenant = %s AND doc = %s", key)
        conn.execute(
            "UPDATE docs SET generation = %s, state_vector = %s, log_count = 0, "
            "updated_at = %s WHERE tenant = %s AND doc = %s",
            (generation + 1, parts.state_vector, now, *key),
        )
        # Delivered at COMMIT (so never for a cut that did not commit): every node
        # drops the generation it holds (relay.cluster).
        conn.execute(
            "SELECT pg_notify(%s, %s)",
            (CHANNEL, generation_notice(self.node_id, *key, generation + 1)),
        )

    def load_generation(self, tenant: str, doc: str, generation: int) -> DocHistory:
        with self._snapshot() as conn:
            cut = conn.execute(
                "SELECT data, checksum FROM generation_cuts WHERE tenant = %s AND doc = %s "
                "AND generation = %s",
                (tenant, doc, generation),
            ).fetchone()
            rows = conn.execute(
                "SELECT seq, data, checksum FROM late_updates WHERE tenant = %s AND doc = %s "
                "AND generation = %s ORDER BY seq",
                (tenant, doc, generation),
            ).fetchall()
        if cut is None:
            raise NotFound(f"{doc!r} of {tenant!r} has no past generation {generation}")
        return generation_history(
            bytes(cut[0]), int(cut[1]), [(int(s), bytes(d), int(c)) for s, d, c in rows]
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
        """Under the document's row lock: late updates of one generation, and the
        carries they make, are logged one transaction at a time across relays."""
        key = (tenant, doc)
        with self._write() as conn:
            row = conn.execute(
                "SELECT generation FROM docs WHERE tenant = %s AND doc = %s FOR UPDATE", key
            ).fetchone()
            current = 0 if row is None else int(row[0])
            if not 0 <= generation < current:
                raise InvalidArgument(
                    f"{doc!r} is at generation {current}: {generation} is not a past one"
                )
            if not _cut_kept(conn, tenant, doc, generation):
                raise NotFound(archived_reason(doc, generation))
            newer = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM late_updates WHERE tenant = %s AND doc = %s "
                "AND generation = %s AND seq > %s)",
                (*key, generation, after_seq),
            ).fetchone()
            if (newer is not None and newer[0]) or current != into_generation:
                return None
            logged = conn.execute(
                "INSERT INTO late_updates (tenant, doc, generation, data, replica, received_at, "
                "checksum) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING seq",
                (*key, generation, data, replica, received_at, checksum_of(data)),
            ).fetchone()
            if carry is not None:
                carried = conn.execute(
                    "INSERT INTO updates (tenant, doc, data, replica, received_at, checksum) "
                    "VALUES (%s, %s, %s, NULL, %s, %s) RETURNING seq",
                    (*key, carry, received_at, checksum_of(carry)),
                ).fetchone()
                assert carried is not None
                # The other nodes read it into their loaded docs, as any commit.
                conn.execute(
                    "SELECT pg_notify(%s, %s)",
                    (CHANNEL, update_notice(self.node_id, tenant, doc, int(carried[0]))),
                )
                conn.execute(
                    "UPDATE docs SET state_vector = %s, log_count = log_count + 1, "
                    "updated_at = %s WHERE tenant = %s AND doc = %s",
                    (state_vector, received_at, *key),
                )
        assert logged is not None
        return int(logged[0])

    def past_generations(self, tenant: str) -> list[PastGeneration]:
        rows = self._read(
            "SELECT c.doc, c.generation, c.cut_at, COUNT(l.seq), "
            "octet_length(c.data) + COALESCE(SUM(octet_length(l.data)), 0) "
            "FROM generation_cuts c LEFT JOIN late_updates l "
            "ON l.tenant = c.tenant AND l.doc = c.doc AND l.generation = c.generation "
            "WHERE c.tenant = %s GROUP BY c.tenant, c.doc, c.generation "
            "ORDER BY c.doc, c.generation",
            (tenant,),
        )
        return [PastGeneration(r[0], int(r[1]), float(r[2]), int(r[3]), int(r[4])) for r in rows]

    def late_update_senders(
        self, tenant: str, doc: str, generation: int
    ) -> dict[int, tuple[str | None, float]]:
        rows = self._read(
            "SELECT seq, replica, received_at FROM late_updates WHERE tenant = %s AND doc = %s "
            "AND generation = %s",
            (tenant, doc, generation),
        )
        return {int(r[0]): (r[1], float(r[2])) for r in rows}

    def drop_generation(self, tenant: str, doc: str, generation: int, *, upto_seq: int) -> bool:
        """Under the document's row lock, as :meth:`append_late`: no late update can
        be logged to the generation between the check and the delete."""
        key = (tenant, doc)
        with self._write() as conn:
            conn.execute(
                "SELECT generation FROM docs WHERE tenant = %s AND doc = %s FOR UPDATE", key
            )
            newer = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM late_updates WHERE tenant = %s AND doc = %s "
                "AND generation = %s AND seq > %s)",
                (*key, generation, upto_seq),
            ).fetchone()
            if newer is not None and newer[0]:
                return False
            dropped = conn.execute(
                "DELETE FROM generation_cuts WHERE tenant = %s AND doc = %s AND generation = %s",
                (*key, generation),
            ).rowcount
            conn.execute(
                "DELETE FROM late_updates WHERE tenant = %s AND doc = %s AND generation = %s",
                (*key, generation),
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
                "SELECT generation FROM docs WHERE tenant = %s AND doc = %s FOR UPDATE", key
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
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (*key, generation, cut, checksum_of(cut), cut_at),
            )
            for data, replica, received_at in late:
                conn.execute(
                    "INSERT INTO late_updates (tenant, doc, generation, data, replica, "
                    "received_at, checksum) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    (*key, generation, data, replica, received_at, checksum_of(data)),
                )
        return True

    def state_vectors(self, tenant: str) -> dict[str, bytes]:
        rows = self._read(
            "SELECT doc, state_vector FROM docs WHERE tenant = %s ORDER BY doc", (tenant,)
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
            conn.execute("SELECT 1 FROM docs WHERE tenant = %s AND doc = %s FOR UPDATE", key)
            for seq, reason in bad:
                if seq == 0:
                    moved = conn.execute(
                        "DELETE FROM snapshots WHERE tenant = %s AND doc = %s RETURNING data", key
                    ).fetchone()
                else:
                    moved = conn.execute(
                        "DELETE FROM updates WHERE seq = %s AND tenant = %s AND doc = %s "
                        "RETURNING data",
                        (seq, *key),
                    ).fetchone()
                if moved is not None:
                    conn.execute(
                        "INSERT INTO quarantine (tenant, doc, seq, data, reason, quarantined_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s)",
                        (*key, seq, moved[0], reason, now),
                    )
            conn.execute(
                "UPDATE docs SET state_vector = %s, log_count = (SELECT COUNT(*) FROM updates "
                "WHERE tenant = %s AND doc = %s) WHERE tenant = %s AND doc = %s",
                (state_vector, *key, *key),
            )

    # -- the cluster's nodes ------------------------------------------------------------------

    def beat_node(self, record: NodeRecord) -> list[SyncRequest]:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO relay_nodes (node_id, started_at, seen_at, replicas, metrics) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (node_id) DO UPDATE SET "
                "started_at = excluded.started_at, seen_at = excluded.seen_at, "
                "replicas = excluded.replicas, metrics = excluded.metrics",
                (
                    record.node_id,
                    record.started_at,
                    record.seen_at,
                    json.dumps([list(pair) for pair in record.replicas]),
                    json.dumps(record.metrics, sort_keys=True),
                ),
            )
            rows = conn.execute(
                "DELETE FROM node_requests WHERE node_id = %s "
                "RETURNING id, tenant, replica_id, full_sync",
                (record.node_id,),
            ).fetchall()
        return [SyncRequest(r[1], r[2], bool(r[3])) for r in sorted(rows)]

    def live_nodes(self, seen_since: float) -> list[NodeRecord]:
        rows = self._read(
            "SELECT node_id, started_at, seen_at, replicas, metrics FROM relay_nodes "
            "WHERE seen_at >= %s ORDER BY node_id",
            (seen_since,),
        )
        return [node for row in rows if (node := _node_record(row)) is not None]

    def request_node_sync(self, node_id: str, request: SyncRequest) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO node_requests (node_id, tenant, replica_id, full_sync, "
                "requested_at) VALUES (%s, %s, %s, %s, %s)",
                (node_id, request.tenant, request.replica_id, request.full, time.time()),
            )

    def forget_node(self, node_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM relay_nodes WHERE node_id = %s", (node_id,))
            conn.execute("DELETE FROM node_requests WHERE node_id = %s", (node_id,))

    # -- admin operations forwarded to the reviewing node (relay/forward.py) -------------------

    _ADMIN_COLS = (
        "id, tenant, op, args, state, asked_by, asked_at, node, started_at, done_at, "
        "result, error_class, error"
    )

    def ask_admin(self, request: AdminRequest) -> AdminRequest:
        """Record ``request`` (state ``asked``) unless its key is taken; the stored row.

        A ``cancelled`` row with the same operation and arguments is asked again
        (nobody ran it); any other existing row is returned as it is."""
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO admin_requests ({self._ADMIN_COLS}) "
                "VALUES (%s, %s, %s, %s, 'asked', %s, %s, NULL, NULL, NULL, NULL, NULL, NULL) "
                "ON CONFLICT (id) DO NOTHING",
                (
                    request.id,
                    request.tenant,
                    request.op,
                    request.args,
                    request.asked_by,
                    request.asked_at,
                ),
            )
            conn.execute(
                "UPDATE admin_requests SET state = 'asked', asked_by = %s, asked_at = %s, "
                "node = NULL, started_at = NULL, done_at = NULL, error_class = NULL, error = NULL "
                "WHERE id = %s AND state = 'cancelled' AND tenant = %s AND op = %s AND args = %s",
                (
                    request.asked_by,
                    request.asked_at,
                    request.id,
                    request.tenant,
                    request.op,
                    request.args,
                ),
            )
            row = conn.execute(
                f"SELECT {self._ADMIN_COLS} FROM admin_requests WHERE id = %s", (request.id,)
            ).fetchone()
        assert row is not None
        return AdminRequest(*row)

    def admin_request(self, request_id: str) -> AdminRequest | None:
        rows = self._read(
            f"SELECT {self._ADMIN_COLS} FROM admin_requests WHERE id = %s", (request_id,)
        )
        return AdminRequest(*rows[0]) if rows else None

    def claim_admin(self, request_id: str, node: str, now: float) -> AdminRequest | None:
        """``asked`` -> ``running`` by ``node``; None if it is not waiting (taken, done)."""
        with self._write() as conn:
            row = conn.execute(
                "UPDATE admin_requests SET state = 'running', node = %s, started_at = %s "
                f"WHERE id = %s AND state = 'asked' RETURNING {self._ADMIN_COLS}",
                (node, now, request_id),
            ).fetchone()
        return None if row is None else AdminRequest(*row)

    def finish_admin(
        self,
        request_id: str,
        node: str,
        now: float,
        *,
        result: str | None,
        error_class: str | None,
        error: str | None,
        retry: bool = False,
    ) -> bool:
        """``running`` by ``node`` -> ``done`` (``result``) or ``failed`` (the error), or
        with ``retry`` ``cancelled`` (the error passed: nothing was done, asking again
        runs it); False if the row is no longer ``node``'s to finish."""
        with self._write() as conn:
            row = conn.execute(
                "UPDATE admin_requests SET state = %s, done_at = %s, result = %s, "
                "error_class = %s, error = %s "
                "WHERE id = %s AND state = 'running' AND node = %s RETURNING 1",
                (
                    "cancelled" if retry else "failed" if error_class is not None else "done",
                    now,
                    result,
                    error_class,
                    error,
                    request_id,
                    node,
                ),
            ).fetchone()
        return row is not None

    def cancel_admin(self, request_id: str, now: float) -> bool:
        """``asked`` -> ``cancelled`` (nobody took it); False if it was taken meanwhile."""
        with self._write() as conn:
            row = conn.execute(
                "UPDATE admin_requests SET state = 'cancelled', done_at = %s "
                "WHERE id = %s AND state = 'asked' RETURNING 1",
                (now, request_id),
            ).fetchone()
        return row is not None

    def unfinished_admin(self) -> list[AdminRequest]:
        """The requests ``asked`` or ``running``, oldest first."""
        rows = self._read(
            f"SELECT {self._ADMIN_COLS} FROM admin_requests "
            "WHERE state IN ('asked', 'running') ORDER BY asked_at, id"
        )
        return [AdminRequest(*row) for row in rows]

    def forget_admin(self, request_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM admin_requests WHERE id = %s", (request_id,))

    def prune_admin(self, before: float) -> int:
        """Forget finished requests older than ``before`` (their keys may be reused)."""
        with self._write() as conn:
            cur = conn.execute(
                "DELETE FROM admin_requests WHERE state IN ('done', 'failed', 'cancelled') "
                "AND asked_at < %s",
                (before,),
            )
            return cur.rowcount

    def quarantined(self) -> list[tuple[str, str, int, str]]:
        rows = self._read("SELECT tenant, doc, seq, reason FROM quarantine ORDER BY id")
        return [(r[0], r[1], int(r[2]), r[3]) for r in rows]

    def log_size(self, tenant: str, doc: str) -> int:
        rows = self._read(
            "SELECT log_count FROM docs WHERE tenant = %s AND doc = %s", (tenant, doc)
        )
        return int(rows[0][0]) if rows else 0

    def stored_bytes(self, tenant: str, doc: str) -> int:
        # octet_length() of a bytea reads its (TOAST) header, not the value.
        rows = self._read(
            "SELECT COALESCE((SELECT octet_length(data) FROM snapshots "
            "WHERE tenant = %s AND doc = %s), 0) + COALESCE((SELECT SUM(octet_length(u.data)) "
            "FROM updates u WHERE u.tenant = %s AND u.doc = %s AND u.seq > COALESCE("
            "(SELECT upto_seq FROM snapshots WHERE tenant = %s AND doc = %s), 0)), 0)",
            (tenant, doc) * 3,
        )
        return int(rows[0][0])

    # -- per-replica config ------------------------------------------------------------------

    def _json_row(
        self, table: str, at: str, tenant: str, replica_id: str
    ) -> tuple[Any, float] | None:
        rows = self._read(
            f"SELECT json, {at} FROM {table} WHERE tenant = %s AND replica_id = %s",
            (tenant, replica_id),
        )
        if not rows:
            return None
        try:
            value = json.loads(rows[0][0])
        except ValueError:
            return None  # a damaged row: as if absent (what the SQLite store does)
        return (value, float(rows[0][1])) if isinstance(value, dict) else None

    def _put_json(
        self, table: str, at: str, tenant: str, replica_id: str, value: dict[str, Any], when: float
    ) -> None:
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO {table} (tenant, replica_id, json, {at}) VALUES (%s, %s, %s, %s) "
                f"ON CONFLICT (tenant, replica_id) DO UPDATE SET json = excluded.json, "
                f"{at} = excluded.{at}",
                (tenant, replica_id, json.dumps(value, sort_keys=True), when),
            )

    def get_replica_config(self, tenant: str, replica_id: str) -> dict[str, Any] | None:
        found = self._json_row("replica_config", "updated_at", tenant, replica_id)
        return None if found is None else dict(found[0])

    def set_replica_config(self, tenant: str, replica_id: str, config: dict[str, Any]) -> None:
        self._put_json("replica_config", "updated_at", tenant, replica_id, config, time.time())

    def get_reported_config(
        self, tenant: str, replica_id: str
    ) -> tuple[dict[str, Any], float] | None:
        found = self._json_row("reported_config", "reported_at", tenant, replica_id)
        return None if found is None else (dict(found[0]), found[1])

    def set_reported_config(
        self, tenant: str, replica_id: str, config: dict[str, Any], at: float
    ) -> None:
        self._put_json("reported_config", "reported_at", tenant, replica_id, config, at)

    # -- sync log ---------------------------------------------------------------------------

    _SESSION_COLS = (
        "session_id, tenant, replica_id, started_at, ended_at, outcome, kind, docs, "
        "updates_received, updates_sent, bytes_received, bytes_sent, error"
    )

    def log_session(self, record: SessionRecord) -> None:
        with self._write() as conn:
            conn.execute(
                f"INSERT INTO sync_log ({self._SESSION_COLS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
        rows = self._read(
            f"SELECT {self._SESSION_COLS} FROM sync_log "
            "WHERE (%s::text IS NULL OR tenant = %s) AND (%s::text IS NULL OR replica_id = %s) "
            "ORDER BY id DESC LIMIT %s",
            (tenant, tenant, replica_id, replica_id, limit),
        )
        return [SessionRecord(*row) for row in rows]

    def prune_sessions(self, before: float) -> int:
        with self._write() as conn:
            cur = conn.execute(
                "DELETE FROM sync_log WHERE COALESCE(ended_at, started_at) < %s "
                "AND id NOT IN (SELECT MAX(id) FROM sync_log GROUP BY tenant, replica_id)",
                (before,),
            )
            return int(cur.rowcount)

    # -- conflicts' metadata ------------------------------------------------------------------

    _CONFLICT_COLS = (
        "tenant, id, invariant, location, sku, status, opened_at, updated_at, source_seq"
    )

    def record_conflict(self, record: ConflictRecord) -> bool:
        with self._write() as conn:
            # A concurrent insert of the same (tenant, id) waits for the other transaction;
            # if it committed, DO NOTHING returns no row and this call only updates.
            opened = conn.execute(
                f"INSERT INTO conflicts ({self._CONFLICT_COLS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (tenant, id) DO NOTHING RETURNING 1",
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
            ).fetchone()
            if opened is not None:
                return True
            conn.execute(
                "UPDATE conflicts SET status = %s, updated_at = %s WHERE tenant = %s AND id = %s",
                (record.status, record.updated_at, record.tenant, record.id),
            )
            return False

    def list_conflicts(self, tenant: str, *, status: str | None = None) -> list[ConflictRecord]:
        rows = self._read(
            f"SELECT {self._CONFLICT_COLS} FROM conflicts WHERE tenant = %s "
            "AND (%s::text IS NULL OR status = %s) ORDER BY opened_at, id",
            (tenant, status, status),
        )
        return [ConflictRecord(*row) for row in rows]

    # -- review partitions: leases, cursors, fenced commits (relay/workers.py) -----------------

    def review_partitions(self) -> list[tuple[str, str]]:
        """Every ``(tenant, location)`` review partition the stored documents make
        (:func:`~tiendasync.relay.leases.partitions_of`)."""
        by_tenant: dict[str, list[str]] = {}
        for tenant, doc in self._read("SELECT tenant, doc FROM docs ORDER BY tenant, doc"):
            by_tenant.setdefault(tenant, []).append(doc)
        return [(t, loc) for t, docs in by_tenant.items() for loc in partitions_of(docs)]

    @staticmethod
    def _now(conn: Connection) -> float:
        row = conn.execute(_DB_NOW).fetchone()
        assert row is not None
        return float(row[0])

    def acquire_lease(
        self, tenant: str, location: str, owner: str, ttl: float
    ) -> tuple[Lease | None, float]:
        """Take the partition's lease for ``ttl`` seconds if it is free or expired (a new
        epoch) or already ``owner``'s (renewed, same epoch); ``(None, now)`` if another
        worker holds it.  ``now``: the database's clock at the call."""
        with self._write() as conn:
            now = self._now(conn)
            mine = "review_leases.owner = excluded.owner AND review_leases.expires_at > %(now)s"
            row = conn.execute(
                "INSERT INTO review_leases (tenant, location, owner, epoch, expires_at, "
                "acquired_at) VALUES (%(tenant)s, %(location)s, %(owner)s, 1, %(until)s, "
                "%(now)s) ON CONFLICT (tenant, location) DO UPDATE SET owner = excluded.owner, "
                f"expires_at = excluded.expires_at, epoch = CASE WHEN {mine} "
                "THEN review_leases.epoch ELSE review_leases.epoch + 1 END, "
                f"acquired_at = CASE WHEN {mine} THEN review_leases.acquired_at "
                "ELSE excluded.acquired_at END "
                "WHERE review_leases.owner IS NULL OR review_leases.expires_at <= %(now)s "
                "OR review_leases.owner = excluded.owner RETURNING epoch, expires_at",
                {
                    "tenant": tenant,
                    "location": location,
                    "owner": owner,
                    "until": now + ttl,
                    "now": now,
                },
            ).fetchone()
        if row is None:
            return None, now
        return Lease(tenant, location, owner, int(row[0]), float(row[1])), now

    def renew_lease(self, lease: Lease, ttl: float) -> tuple[Lease | None, float]:
        """Extend a lease its owner still holds; ``(None, now)`` if it no longer does."""
        with self._write() as conn:
            now = self._now(conn)
            row = conn.execute(
                "UPDATE review_leases SET expires_at = %s WHERE tenant = %s AND location = %s "
                "AND owner = %s AND epoch = %s AND expires_at > %s RETURNING expires_at",
                (now + ttl, lease.tenant, lease.location, lease.owner, lease.epoch, now),
            ).fetchone()
        if row is None:
            return None, now
        return Lease(lease.tenant, lease.location, lease.owner, lease.epoch, float(row[0])), now

    def release_lease(self, lease: Lease) -> None:
        """Let the partition go at once (a clean stop), if ``lease`` still holds it."""
        with self._write() as conn:
            conn.execute(
                "UPDATE review_leases SET owner = NULL, expires_at = 0 WHERE tenant = %s "
                "AND location = %s AND owner = %s AND epoch = %s",
                (lease.tenant, lease.location, lease.owner, lease.epoch),
            )

    def read_lease(self, tenant: str, location: str) -> Lease | None:
        rows = self._read(
            "SELECT owner, epoch, expires_at FROM review_leases WHERE tenant = %s "
            "AND location = %s",
            (tenant, location),
        )
        if not rows:
            return None
        owner, epoch, expires_at = rows[0]
        return Lease(tenant, location, owner, int(epoch), float(expires_at))

    def review_cursor(self, tenant: str, location: str) -> dict[str, int]:
        """The partition's committed cursor: the last seq reviewed, per document."""
        rows = self._read(
            "SELECT doc, seq FROM review_cursors WHERE tenant = %s AND location = %s",
            (tenant, location),
        )
        return {d: int(s) for d, s in rows}

    def updates_after(
        self, tenant: str, cursor: dict[str, int], limit: int
    ) -> tuple[list[tuple[int, str, bytes]], set[str]]:
        """Up to ``limit`` logged updates of ``cursor``'s documents after its seqs, by seq
        (per document: commit order), and the documents whose snapshot folded updates
        after the cursor (gone from the log: the partition must be rebuilt from them)."""
        docs, after = list(cursor), [cursor[d] for d in cursor]
        with self._snapshot() as conn:
            folded = conn.execute(
                "SELECT s.doc FROM snapshots s JOIN unnest(%s::text[], %s::bigint[]) "
                "AS c(doc, seq) ON s.doc = c.doc WHERE s.tenant = %s AND s.upto_seq > c.seq",
                (docs, after, tenant),
            ).fetchall()
            rows = conn.execute(
                "SELECT u.seq, u.doc, u.data, u.checksum FROM updates u "
                "JOIN unnest(%s::text[], %s::bigint[]) AS c(doc, seq) ON u.doc = c.doc "
                "WHERE u.tenant = %s AND u.seq > c.seq ORDER BY u.seq LIMIT %s",
                (docs, after, tenant, limit),
            ).fetchall()
        out = [(int(q), d, bytes(b)) for q, d, b, c in rows if checksum_of(bytes(b)) == int(c)]
        return out, {r[0] for r in folded}

    def commit_review(
        self,
        lease: Lease,
        reviewed_from: dict[str, int],
        cursor: dict[str, int],
        entries: Sequence[AppendEntry],
        conflicts: Sequence[tuple[ConflictRecord, bool]],
    ) -> list[int]:
        """Commit one reviewed batch in one transaction, fenced by ``lease``: the review's
        writes (``entries``, logged like a replica's, each document's state vector merged
        with the stored one), the conflicts' rows (``(record, opens)``) and the cursor
        moved from ``reviewed_from`` to ``cursor``.  Returns the seqs logged.

        :class:`~tiendasync.relay.leases.LeaseLost`, with nothing committed, when the
        lease is no longer held (another epoch, or expired), when the stored cursor is
        not ``reviewed_from``, or when a conflict it opens is recorded already.
        """
        with self._write() as conn, conn.cursor() as cur:
            # The row lock holds off a takeover until this commit ends (acquire_lease
            # waits on it), so the check below stays true until COMMIT.
            row = conn.execute(
                "SELECT owner, epoch, expires_at FROM review_leases WHERE tenant = %s "
                "AND location = %s FOR UPDATE",
                (lease.tenant, lease.location),
            ).fetchone()
            now = self._now(conn)
            stored = None if row is None else Lease(lease.tenant, lease.location, *row)
            if (
                stored is None
                or lease.owner is None
                or not stored.held_by(lease.owner, lease.epoch, now)
            ):
                raise LeaseLost(
                    f"review of {lease.tenant}/{lease.location}: the lease of epoch "
                    f"{lease.epoch} is no longer held"
                )
            found = dict(
                conn.execute(
                    "SELECT doc, seq FROM review_cursors WHERE tenant = %s AND location = %s "
                    "FOR UPDATE",
                    (lease.tenant, lease.location),
                ).fetchall()
            )
            if any(int(found.get(d, 0)) != reviewed_from.get(d, 0) for d in cursor):
                raise LeaseLost(f"review of {lease.tenant}/{lease.location}: its cursor moved")
            seqs = self._log_review_writes(cur, entries)
            logged = [e for e in entries if e.data is not None]
            highest: dict[tuple[str, str], int] = {}
            for e, seq in zip(logged, seqs, strict=True):
                highest[(e.tenant, e.doc)] = max(seq, highest.get((e.tenant, e.doc), 0))
            if highest:
                # as append_many: every node hears of the review's writes at COMMIT (its
                # central writers merge them: the admin API on any node lists them)
                cur.executemany(
                    "SELECT pg_notify(%s, %s)",
                    [(CHANNEL, update_notice(self.node_id, *k, s)) for k, s in highest.items()],
                )
            for record, opens in conflicts:
                inserted = conn.execute(
                    f"INSERT INTO conflicts ({self._CONFLICT_COLS}) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (tenant, id) DO NOTHING RETURNING 1",
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
                ).fetchone()
                if inserted is None and opens:
                    raise LeaseLost(f"conflict {record.id} of {record.tenant} is open already")
                if inserted is None:
                    conn.execute(
                        "UPDATE conflicts SET status = %s, updated_at = %s "
                        "WHERE tenant = %s AND id = %s",
                        (record.status, record.updated_at, record.tenant, record.id),
                    )
            moved = [d for d in sorted(cursor) if cursor[d] != reviewed_from.get(d, 0)]
            if moved:
                cur.executemany(
                    "INSERT INTO review_cursors (tenant, location, doc, seq) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (tenant, location, doc) "
                    "DO UPDATE SET seq = excluded.seq",
                    [(lease.tenant, lease.location, d, cursor[d]) for d in moved],
                )
                cur.executemany(
                    "INSERT INTO review_log (tenant, location, doc, after_seq, upto_seq, epoch, "
                    "owner, committed_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    [
                        (
                            lease.tenant,
                            lease.location,
                            d,
                            reviewed_from.get(d, 0),
                            cursor[d],
                            lease.epoch,
                            lease.owner,
                            now,
                        )
                        for d in moved
                    ],
                )
        return seqs

    @staticmethod
    def _log_review_writes(cur: psycopg.Cursor[Any], entries: Sequence[AppendEntry]) -> list[int]:
        """Log a review's writes like :meth:`append_many`, under each document's row lock
        (so per document seq order stays commit order); the stored state vector is
        merged with the writer's, which may lack what others committed meanwhile."""
        seqs: list[int] = []
        for key in sorted({(e.tenant, e.doc) for e in entries}):
            mine = [e for e in entries if (e.tenant, e.doc) == key]
            cur.execute(
                "INSERT INTO docs (tenant, doc, state_vector, log_count, updated_at) "
                "VALUES (%s, %s, %s, 0, %s) ON CONFLICT (tenant, doc) "
                "DO UPDATE SET log_count = docs.log_count RETURNING state_vector, generation",
                (*key, mine[0].state_vector, mine[0].received_at),
            )
            row = cur.fetchone()
            assert row is not None
            if any(e.generation not in (None, int(row[1])) for e in mine):
                raise GenerationMoved({key: int(row[1])})  # made on a generation cut since
            clocks = decode_state_vector(bytes(row[0]))
            for e in mine:
                for client, clock in decode_state_vector(e.state_vector).items():
                    clocks[client] = max(clock, clocks.get(client, 0))
                if e.data is not None:
                    cur.execute(
                        "INSERT INTO updates (tenant, doc, data, replica, received_at, checksum) "
                        "VALUES (%s, %s, %s, %s, %s, %s) RETURNING seq",
                        (*key, e.data, e.replica, e.received_at, checksum_of(e.data)),
                    )
                    seq_row = cur.fetchone()
                    assert seq_row is not None
                    seqs.append(int(seq_row[0]))
            cur.execute(
                "UPDATE docs SET state_vector = %s, log_count = log_count + %s, updated_at = %s "
                "WHERE tenant = %s AND doc = %s",
                (
                    encode_state_vector(clocks),
                    sum(e.data is not None for e in mine),
                    mine[-1].received_at,
                    *key,
                ),
            )
        return seqs


def _node_record(row: Sequence[Any]) -> NodeRecord | None:
    """A ``relay_nodes`` row as a record; ``None`` for a damaged one (as if absent)."""
    try:
        pairs = json.loads(row[3])
        metrics = json.loads(row[4])
        replicas = tuple((str(t), str(r)) for t, r in pairs)
        figures = {str(k): float(v) for k, v in metrics.items()}
    except (ValueError, TypeError, AttributeError):
        return None
    return NodeRecord(str(row[0]), float(row[1]), float(row[2]), replicas, figures)


def _cut_kept(conn: Connection, tenant: str, doc: str, generation: int) -> bool:
    """Whether past ``generation`` of ``doc`` is kept (not archived), inside ``conn``'s
    transaction."""
    return (
        conn.execute(
            "SELECT 1 FROM generation_cuts WHERE tenant = %s AND doc = %s AND generation = %s",
            (tenant, doc, generation),
        ).fetchone()
        is not None
    )
