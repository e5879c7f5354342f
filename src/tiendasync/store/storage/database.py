"""The replica's SQLite database: connection, transactions, settings, documents.

One file holds everything a store needs to work offline: document snapshots
and the log of updates since, the sync queue, the sales index, the sync log
and settings.  Every local write is one SQLite transaction
(:meth:`ReplicaStore.write`), committed before the API call returns.

The in-memory pycrdt documents are derived state: :meth:`doc_history` gives
what rebuilds one (its snapshot plus the updates logged after it).  The
queue, sales index and sync log tables have their own modules, reached as
``store.outbox``, ``store.sales`` and ``store.sync_log``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlite_utils

from tiendasync.errors import CorruptData, StorageError
from tiendasync.store.storage.access import storage_error
from tiendasync.store.storage.outbox import OutboxTable
from tiendasync.store.storage.sales_index import SalesIndex
from tiendasync.store.storage.schema import SCHEMA, SCHEMA_VERSION, migrate
from tiendasync.store.storage.synclog import SyncLogTable

__all__ = ["GENERATIONS_KEY", "ReplicaStore"]

#: The ``meta`` key holding ``{doc: generation}`` of the documents past generation 0.
GENERATIONS_KEY = "generations"


class ReplicaStore:
    """Typed access to one replica database file.

    Not thread-safe by itself: the :class:`~tiendasync.Replica` that owns it
    serialises calls with its lock.
    """

    def __init__(self, path: str, *, durability: str = "full", read_only: bool = False) -> None:
        """Open (or create) the database; ``read_only`` only shapes the diagnosis of
        a permission failure (what a reader needs, not what a writer needs)."""
        self.path = path
        what = f"cannot open replica database {path}"
        try:
            self.conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
        except sqlite3.Error as exc:
            raise storage_error(what, path, exc, write=not read_only) from exc
        try:
            self._prepare(durability)
        except sqlite3.OperationalError as exc:
            self.conn.close()
            raise storage_error(what, path, exc, write=not read_only) from exc
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            self.conn.close()
            raise CorruptData(
                f"{path} is not a readable replica database ({exc}); restore it from a "
                "backup, or move it aside and re-create the replica"
            ) from exc
        except BaseException:
            self.conn.close()
            raise
        self.outbox = OutboxTable(self.conn)
        self.sales = SalesIndex(self.conn)
        self.sync_log = SyncLogTable(self.conn)

    def _prepare(self, durability: str) -> None:
        # Takes effect only when the file is new (WAL keeps a file's page size).  Small
        # pages: a sale changes about 15 B-tree pages, each a WAL frame of one page.
        self.conn.execute("PRAGMA page_size=1024")
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.set_durability(durability)
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.db = sqlite_utils.Database(self.conn)
        self.conn.executescript(SCHEMA)
        found = self.get_meta("schema_version")
        if found == str(SCHEMA_VERSION):
            return  # current: nothing to write (read-only opens write nothing)
        with self.write():
            found = self.get_meta("schema_version")
            if found is not None and not found.isdigit():
                raise CorruptData(f"{self.path} has a garbage schema version {found!r}")
            version = migrate(self.conn, None if found is None else int(found), self.path)
            self.set_meta("schema_version", str(version))

    def set_durability(self, durability: str) -> None:
        """``full``: fsync on every commit (default); ``normal``: WAL checkpoints only."""
        mode = {"full": "FULL", "normal": "NORMAL"}[durability]
        self.conn.execute(f"PRAGMA synchronous={mode}")

    def close(self) -> None:
        self.conn.close()

    # -- transactions -------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One durable transaction; rolls back and raises StorageError on failure."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise storage_error(
                f"cannot start a transaction on {self.path}", self.path, exc
            ) from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise storage_error(f"write to {self.path} failed", self.path, exc) from exc
            raise

    # -- settings -----------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def get_json(self, key: str) -> Any:
        """The JSON setting ``key`` (None if unset); CorruptData if it is not JSON."""
        text = self.get_meta(key)
        if text is None:
            return None
        try:
            return json.loads(text)
        except ValueError as exc:
            raise CorruptData(
                f"{self.path} holds a garbage {key!r} setting ({exc}); restore the file from "
                "a backup, or move it aside and re-create the replica"
            ) from exc

    def get_config(self) -> dict[str, Any]:
        """The stored store config as a dict (empty if unset); CorruptData if not an object."""
        value = self.get_json("config")
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise CorruptData(
                f"{self.path} holds a garbage config ({type(value).__name__}, not an object); "
                "restore the file from a backup, or move it aside and re-create the replica"
            )
        return value

    def set_json(self, key: str, value: Any) -> None:
        self.set_meta(key, json.dumps(value, sort_keys=True))

    # -- documents ------------------------------------------------------------

    def doc_names(self) -> list[tuple[str, str]]:
        return [(str(n), str(t)) for n, t in self.conn.execute("SELECT name, data_type FROM docs")]

    def ensure_doc(self, name: str, data_type: str) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO docs (name, data_type) VALUES (?, ?)", (name, data_type)
        )

    def doc_history(self, name: str) -> tuple[bytes | None, list[bytes], int]:
        """The snapshot of ``name``, the updates logged after it (oldest first), and the
        highest update sequence number they cover (call inside a read or write)."""
        row = self.conn.execute(
            "SELECT snapshot, snapshot_seq FROM docs WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            return None, [], self.max_seq()
        snapshot, since = row
        updates = [
            bytes(data)
            for (data,) in self.conn.execute(
                "SELECT data FROM updates WHERE doc = ? AND seq > ? ORDER BY seq", (name, since)
            )
        ]
        return (bytes(snapshot) if snapshot is not None else None), updates, self.max_seq()

    def log_update(self, doc: str, data: bytes, origin: str) -> int:
        """Append an update to the shared log; returns its sequence number."""
        cur = self.conn.execute(
            "INSERT INTO updates (doc, data, origin) VALUES (?, ?, ?)", (doc, data, origin)
        )
        return int(cur.lastrowid or 0)

    def max_seq(self) -> int:
        """The highest sequence number ever given to an update of this file."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'updates'").fetchone()
        return 0 if row is None else int(row[0])

    def data_version(self) -> int:
        """Changes whenever another connection (another process) commits to the file."""
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def snapshots_after(self, seq: int) -> list[tuple[str, bytes, int]]:
        """``(doc, snapshot, snapshot seq)`` of documents compacted past ``seq``."""
        rows = self.conn.execute(
            "SELECT name, snapshot, snapshot_seq FROM docs "
            "WHERE snapshot_seq > ? AND snapshot IS NOT NULL",
            (seq,),
        ).fetchall()
        return [(str(n), bytes(s), int(q)) for n, s, q in rows]

    def updates_after(self, seq: int) -> list[tuple[int, str, bytes, str]]:
        """``(seq, doc, update, origin)`` of every update logged after ``seq``, in order."""
        rows = self.conn.execute(
            "SELECT seq, doc, data, origin FROM updates WHERE seq > ? ORDER BY seq", (seq,)
        ).fetchall()
        return [(int(q), str(d), bytes(b), str(o)) for q, d, b, o in rows]

    @contextmanager
    def read(self) -> Iterator[None]:
        """A consistent read of several statements (nested inside a write: the write's)."""
        if self.conn.in_transaction:
            yield
            return
        try:
            self.conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read {self.path}: {exc}") from exc
        try:
            yield
        finally:
            if self.conn.in_transaction:
                self.conn.execute("COMMIT")

    def updates_since_snapshot(self, doc: str) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) FROM updates u JOIN docs d ON d.name = u.doc "
            "WHERE u.doc = ? AND u.seq > d.snapshot_seq",
            (doc,),
        ).fetchone()
        return int(row[0])

    def compact_doc(self, doc: str, snapshot: bytes) -> None:
        """Replace the log of ``doc`` by ``snapshot`` (call inside ``write``).

        ``snapshot`` must hold every update of ``doc`` logged so far (by any
        process): the caller caught up inside this same write transaction.
        """
        upto = self.max_seq()
        self.conn.execute(
            "UPDATE docs SET snapshot = ?, snapshot_seq = ? WHERE name = ?", (snapshot, upto, doc)
        )
        self.conn.execute("DELETE FROM updates WHERE doc = ? AND seq <= ?", (doc, upto))

    def doc_generations(self) -> dict[str, int]:
        """``{doc: generation}`` of every document past generation 0 (docs/generations.md);
        CorruptData if the file holds something else there."""
        raw = self.get_json(GENERATIONS_KEY)
        if raw is None:
            return {}
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and type(v) is int and v >= 0 for k, v in raw.items()
        ):
            raise CorruptData(
                f"{self.path} holds a garbage {GENERATIONS_KEY!r} setting; restore the file "
                "from a backup, or move it aside and re-create the replica"
            )
        return raw

    def replace_generation(self, doc: str, state: bytes, generation: int) -> None:
        """Replace ``doc`` by its generation ``generation``, whose whole state is ``state``
        (call inside ``write``): its log and held updates belong to the one before."""
        self.conn.execute(
            "UPDATE docs SET snapshot = ?, snapshot_seq = ? WHERE name = ?",
            (state, self.max_seq(), doc),
        )
        self.conn.execute("DELETE FROM updates WHERE doc = ?", (doc,))
        self.conn.execute("DELETE FROM held_updates WHERE doc = ?", (doc,))
        self.record_generations({doc: generation})

    def record_generations(self, generations: dict[str, int]) -> None:
        """Record each document's generation (call inside ``write``)."""
        stored = self.doc_generations()
        if any(stored.get(d) != g for d, g in generations.items()):
            self.set_json(GENERATIONS_KEY, dict(sorted({**stored, **generations}.items())))

    def drop_doc(self, doc: str) -> None:
        """Remove ``doc`` from this file: its log, snapshot, held updates and its sales'
        index rows (call inside ``write``).  Only for a document the relay keeps and
        this replica no longer needs (see :mod:`tiendasync.store.retention`)."""
        self.conn.execute("DELETE FROM updates WHERE doc = ?", (doc,))
        self.conn.execute("DELETE FROM held_updates WHERE doc = ?", (doc,))
        self.conn.execute("DELETE FROM docs WHERE name = ?", (doc,))
        self.sales.drop_doc(doc)

    # -- updates waiting for the ones they depend on ------------------------------

    def held_updates(self, doc: str) -> list[tuple[int, bytes]]:
        return [
            (int(i), bytes(d))
            for i, d in self.conn.execute(
                "SELECT id, data FROM held_updates WHERE doc = ? ORDER BY id", (doc,)
            )
        ]

    def hold_update(self, doc: str, data: bytes) -> int:
        cur = self.conn.execute("INSERT INTO held_updates (doc, data) VALUES (?, ?)", (doc, data))
        return int(cur.lastrowid or 0)

    def release_updates(self, ids: list[int]) -> None:
        self.conn.executemany("DELETE FROM held_updates WHERE id = ?", [(i,) for i in ids])

    # -- client ids -----------------------------------------------------------

    def used_client_ids(self) -> set[int]:
        return {int(c) for (c,) in self.conn.execute("SELECT client_id FROM client_ids")}

    def add_client_id(self, client_id: int, opened_at: float) -> None:
        self.conn.execute(
            "INSERT INTO client_ids (client_id, opened_at) VALUES (?, ?)", (client_id, opened_at)
        )

    def delete_meta(self, key: str) -> None:
        self.conn.execute("DELETE FROM meta WHERE key = ?", (key,))
