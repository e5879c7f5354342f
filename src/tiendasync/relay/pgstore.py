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
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import conninfo

from tiendasync.errors import ConfigError, InvalidArgument, NotFound, StorageError
from tiendasync.relay import pgschema
from tiendasync.relay.dblock import RelayLocked
from tiendasync.relay.records import (
    AppendEntry,
    AppendResult,
    ConflictRecord,
    DocHistory,
    SessionRecord,
    TokenRecord,
)
from tiendasync.relay.schema import checksum_of
from tiendasync.relay.storage import generation_history

__all__ = ["PostgresRelayStore", "describe_url"]

Connection = psycopg.Connection[tuple[Any, ...]]

#: How long a connection attempt may take before the call fails (seconds).
CONNECT_TIMEOUT = 10

#: Longest any one statement may run or wait for a lock (seconds): a store of record
#: that hangs (a stuck transaction elsewhere holding a row, a dead server behind a
#: live socket) fails the relay's write with StorageError instead of stalling it.
STATEMENT_TIMEOUT_S = 30.0

#: ``pg_try_advisory_lock`` key of :meth:`PostgresRelayStore.single_relay`.
SINGLE_RELAY_LOCK = 0x7469656E64615231  # "tiendaR1"


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

    def __init__(self, url: str, *, statement_timeout_s: float = STATEMENT_TIMEOUT_S) -> None:
        self.url = url
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

    @contextmanager
    def single_relay(self) -> Iterator[None]:
        """Hold, for the ``with`` block, the database's one-relay lock (a session advisory
        lock on a connection of its own; the server drops it when the process dies).

        Until relays fan out to each other's sessions, two relays on one database would
        each acknowledge what the other's sessions never hear: :class:`RelayLocked` at
        once (never waits) if another process holds it.
        """
        try:
            conn: Connection = psycopg.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT
            )
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to relay database {self.where}: {exc}") from exc
        with conn:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (SINGLE_RELAY_LOCK,)).fetchone()
            if row is None or not row[0]:
                raise RelayLocked(
                    f"another relay is already running on {self.where} (its advisory lock "
                    "is held); one relay per database until the cluster mode lands"
                )
            yield

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
            cur.executemany(
                "INSERT INTO docs (tenant, doc, state_vector, log_count, updated_at) "
                "VALUES (%s, %s, %s, 0, %s) ON CONFLICT (tenant, doc) "
                "DO UPDATE SET log_count = docs.log_count",
                [(k[0], k[1], first[k].state_vector, first[k].received_at) for k in sorted(first)],
            )
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
            cur.executemany(
                "UPDATE docs SET state_vector = %s, log_count = log_count + %s, updated_at = %s "
                "WHERE tenant = %s AND doc = %s RETURNING log_count",
                [(last[k].state_vector, added[k], last[k].received_at, *k) for k in keys],
                returning=True,
            )
            for key in keys:
                row = cur.fetchone()
                assert row is not None
                counts[key] = int(row[0])
                cur.nextset()
        found = iter(logged_seqs)
        seqs = [next(found) if e.data is not None else None for e in entries]
        return AppendResult(seqs, counts)

    def load_doc(self, tenant: str, doc: str) -> DocHistory:
        """The doc's snapshot and log, read in one snapshot of the database (a compaction
        committing meanwhile cannot drop updates from between the two reads); rows whose
        checksum fails are left out, in ``damaged``."""
        damaged: list[tuple[int, str]] = []

        def intact(seq: int, data: bytes, checksum: int) -> bool:
            if checksum_of(data) == checksum:
                return True
            what = "snapshot" if seq == 0 else f"update {seq}"
            damaged.append((seq, f"stored {what}: its bytes do not match their checksum"))
            return False

        with self._snapshot() as conn:
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
        updates = [(int(s), bytes(d)) for s, d, c in rows if intact(int(s), bytes(d), int(c))]
        return DocHistory(snapshot, upto, updates, damaged)

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
        key, now = (tenant, doc), time.time()
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
            conn.execute(
                "INSERT INTO generation_cuts (tenant, doc, generation, data, checksum, cut_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                (*key, generation, cut, checksum_of(cut), now),
            )
            conn.execute(
                "INSERT INTO snapshots (tenant, doc, data, upto_seq, created_at, checksum) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant, doc) DO UPDATE SET "
                "data = excluded.data, upto_seq = excluded.upto_seq, "
                "created_at = excluded.created_at, checksum = excluded.checksum",
                (*key, seed, upto_seq, now, checksum_of(seed)),
            )
            conn.execute("DELETE FROM updates WHERE tenant = %s AND doc = %s", key)
            conn.execute(
                "UPDATE docs SET generation = %s, state_vector = %s, log_count = 0, "
                "updated_at = %s WHERE tenant = %s AND doc = %s",
                (generation + 1, state_vector, now, *key),
            )
        return True

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
            newer = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM late_updates WHERE tenant = %s AND doc = %s "
                "AND generation = %s AND seq > %s)",
                (*key, generation, after_seq),
            ).fetchone()
            if (newer is not None and newer[0]) or (
                generation + 1 != current and carry is not None
            ):
                return None
            logged = conn.execute(
                "INSERT INTO late_updates (tenant, doc, generation, data, replica, received_at, "
                "checksum) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING seq",
                (*key, generation, data, replica, received_at, checksum_of(data)),
            ).fetchone()
            if carry is not None:
                conn.execute(
                    "INSERT INTO updates (tenant, doc, data, replica, received_at, checksum) "
                    "VALUES (%s, %s, %s, NULL, %s, %s)",
                    (*key, carry, received_at, checksum_of(carry)),
                )
                conn.execute(
                    "UPDATE docs SET state_vector = %s, log_count = log_count + 1, "
                    "updated_at = %s WHERE tenant = %s AND doc = %s",
                    (state_vector, received_at, *key),
                )
        assert logged is not None
        return int(logged[0])

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

    def quarantined(self) -> list[tuple[str, str, int, str]]:
        rows = self._read("SELECT tenant, doc, seq, reason FROM quarantine ORDER BY id")
        return [(r[0], r[1], int(r[2]), r[3]) for r in rows]

    def log_size(self, tenant: str, doc: str) -> int:
        rows = self._read(
            "SELECT log_count FROM docs WHERE tenant = %s AND doc = %s", (tenant, doc)
        )
        return int(rows[0][0]) if rows else 0

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
