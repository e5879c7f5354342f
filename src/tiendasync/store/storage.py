"""The replica's SQLite database.

One file holds everything a store needs to work offline: document snapshots
and the log of updates since, the sync queue, the sales index, the sync log,
the local mirror of conflicts, and settings.  Every local write is one SQLite
transaction (``ReplicaStore.write``), committed before the API call returns.

The in-memory pycrdt documents are derived state: ``load_doc`` rebuilds one
from its snapshot plus the updates logged after it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlite_utils

from tiendasync.errors import StorageError

__all__ = ["SCHEMA_VERSION", "ReplicaStore"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (
    name TEXT PRIMARY KEY,
    data_type TEXT NOT NULL,
    snapshot BLOB,
    snapshot_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    doc TEXT NOT NULL,
    data BLOB NOT NULL,
    origin TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_doc ON updates (doc, seq);
CREATE TABLE IF NOT EXISTS held_updates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS client_ids (client_id INTEGER PRIMARY KEY, opened_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    data_type TEXT NOT NULL,
    priority INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    summary TEXT NOT NULL,
    client_id INTEGER NOT NULL,
    clocks TEXT NOT NULL,
    ref TEXT,
    has_conflict INTEGER NOT NULL DEFAULT 0,
    conflict_ids TEXT NOT NULL DEFAULT '[]',
    error TEXT
);
CREATE INDEX IF NOT EXISTS queue_status ON queue (status, priority);
CREATE INDEX IF NOT EXISTS queue_ref ON queue (ref);
CREATE TABLE IF NOT EXISTS queue_clocks (
    entry_id INTEGER NOT NULL,
    doc TEXT NOT NULL,
    client_id INTEGER NOT NULL,
    clock INTEGER NOT NULL,
    acked INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (entry_id, doc)
);
CREATE INDEX IF NOT EXISTS queue_clocks_pending ON queue_clocks (doc, client_id, acked, clock);
CREATE TABLE IF NOT EXISTS sales (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    location TEXT NOT NULL,
    replica TEXT NOT NULL,
    created_at REAL NOT NULL,
    total_cents INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sales_location ON sales (location, created_at);
CREATE TABLE IF NOT EXISTS sale_lines (
    sale_id TEXT NOT NULL,
    line INTEGER NOT NULL,
    location TEXT NOT NULL,
    sku TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    unit_price_cents INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    replica TEXT NOT NULL,
    voided INTEGER NOT NULL DEFAULT 0,
    remapped_to TEXT,
    PRIMARY KEY (sale_id, line)
);
CREATE INDEX IF NOT EXISTS sale_lines_key ON sale_lines (location, sku);
CREATE TABLE IF NOT EXISTS sync_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    relay TEXT,
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT NOT NULL,
    mode TEXT NOT NULL,
    docs INTEGER NOT NULL DEFAULT 0,
    updates_sent INTEGER NOT NULL DEFAULT 0,
    updates_received INTEGER NOT NULL DEFAULT 0,
    bytes_sent INTEGER NOT NULL DEFAULT 0,
    bytes_received INTEGER NOT NULL DEFAULT 0,
    conflicts_opened INTEGER NOT NULL DEFAULT 0,
    conflicts_healed INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
"""


class ReplicaStore:
    """Typed access to one replica database file.

    Not thread-safe by itself: the :class:`~tiendasync.Replica` that owns it
    serialises calls with its lock.
    """

    def __init__(self, path: str, *, durability: str = "full") -> None:
        self.path = path
        try:
            self.conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.set_durability(durability)
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.db = sqlite_utils.Database(self.conn)
            self.conn.executescript(_SCHEMA)
            version = self.get_meta("schema_version")
            if version is None:
                self.set_meta("schema_version", str(SCHEMA_VERSION))
            elif int(version) > SCHEMA_VERSION:
                raise StorageError(
                    f"{path} was written by a newer tiendasync (schema {version}); upgrade"
                )
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"cannot open replica database {path}: {exc}") from exc

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
            raise StorageError(f"cannot start a transaction on {self.path}: {exc}") from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as exc:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise StorageError(f"write to {self.path} failed: {exc}") from exc
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
        text = self.get_meta(key)
        return None if text is None else json.loads(text)

    def set_json(self, key: str, value: Any) -> None:
        self.set_meta(key, json.dumps(value, sort_keys=True))

    # -- documents ------------------------------------------------------------

    def doc_names(self) -> list[tuple[str, str]]:
        return [(str(n), str(t)) for n, t in self.conn.execute("SELECT name, data_type FROM docs")]

    def ensure_doc(self, name: str, data_type: str) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO docs (name, data_type) VALUES (?, ?)", (name, data_type)
        )

    def doc_history(self, name: str) -> tuple[bytes | None, list[bytes]]:
        """The snapshot of ``name`` and the updates logged after it, oldest first."""
        row = self.conn.execute(
            "SELECT snapshot, snapshot_seq FROM docs WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            return None, []
        snapshot, since = row
        updates = [
            bytes(data)
            for (data,) in self.conn.execute(
                "SELECT data FROM updates WHERE doc = ? AND seq > ? ORDER BY seq", (name, since)
            )
        ]
        return (bytes(snapshot) if snapshot is not None else None), updates

    def log_update(self, doc: str, data: bytes, origin: str) -> None:
        self.conn.execute(
            "INSERT INTO updates (doc, data, origin) VALUES (?, ?, ?)", (doc, data, origin)
        )

    def updates_since_snapshot(self, doc: str) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) FROM updates u JOIN docs d ON d.name = u.doc "
            "WHERE u.doc = ? AND u.seq > d.snapshot_seq",
            (doc,),
        ).fetchone()
        return int(row[0])

    def compact_doc(self, doc: str, snapshot: bytes) -> None:
        """Replace the log of ``doc`` by ``snapshot`` (call inside ``write``)."""
        row = self.conn.execute("SELECT COALESCE(MAX(seq), 0) FROM updates").fetchone()
        upto = int(row[0])
        self.conn.execute(
            "UPDATE docs SET snapshot = ?, snapshot_seq = ? WHERE name = ?", (snapshot, upto, doc)
        )
        self.conn.execute("DELETE FROM updates WHERE doc = ? AND seq <= ?", (doc, upto))

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

    def add_client_id(self, client_id: int) -> None:
        self.conn.execute(
            "INSERT INTO client_ids (client_id, opened_at) VALUES (?, ?)", (client_id, time.time())
        )
