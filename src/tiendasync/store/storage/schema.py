"""The replica database's schema and its migrations.

:data:`SCHEMA_VERSION` is the version this code writes.  A file records its
version in ``meta.schema_version``; :func:`migrate` brings an older file up to
date, one step of :data:`MIGRATIONS` at a time, inside the caller's
transaction, and refuses a file written by a newer tiendasync.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from tiendasync.errors import StorageError

__all__ = ["MIGRATIONS", "SCHEMA", "SCHEMA_VERSION", "Migration", "migrate", "run_migrations"]

SCHEMA_VERSION = 1

#: Every table and index of a current database (idempotent DDL).
#:
#: What one sale writes is kept to few B-trees: ``queue_clocks``, ``sales`` and
#: ``sale_lines`` are clustered on their primary key (``WITHOUT ROWID``), so a
#: row costs one B-tree, not a table and its key's index.  A file created before
#: that keeps its rowid tables: every statement reads and writes both layouts
#: alike, so the layout is not a schema version.
SCHEMA = """
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
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS queue_clocks_pending ON queue_clocks (doc, client_id, acked, clock);
CREATE TABLE IF NOT EXISTS sales (
    id TEXT PRIMARY KEY,
    doc TEXT NOT NULL,
    location TEXT NOT NULL,
    replica TEXT NOT NULL,
    created_at REAL NOT NULL,
    total_cents INTEGER NOT NULL
) WITHOUT ROWID;
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
) WITHOUT ROWID;
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

Migration = Callable[[sqlite3.Connection], None]

#: ``{version: step}``: the step turns a database of ``version`` into ``version + 1``.
#: Version 1 is the first released layout, so there is no step yet; the next
#: layout change adds ``1: _v1_to_v2`` here and bumps :data:`SCHEMA_VERSION`.
MIGRATIONS: dict[int, Migration] = {}


def run_migrations(
    conn: sqlite3.Connection,
    found: int | None,
    *,
    target: int,
    steps: dict[int, Migration],
    path: str,
    what: str,
) -> int:
    """Bring a ``what`` database at version ``found`` (``None``: new) to ``target``.

    Runs ``steps[v]`` for each version from ``found`` up, inside the caller's
    transaction, and returns the version reached.  Raises
    :class:`StorageError` for a file of a newer tiendasync or a version no
    step leads from.  The replica's and the relay's schemas both use it.
    """
    if found is None:
        return target
    if found > target:
        raise StorageError(
            f"{path} was written by a newer tiendasync ({what} schema {found}, this one "
            f"writes {target}); upgrade tiendasync"
        )
    version = found
    while version < target:
        step = steps.get(version)
        if step is None:
            raise StorageError(
                f"{path} has {what} schema {version}, which cannot be upgraded by this tiendasync"
            )
        step(conn)
        version += 1
    return version


def migrate(conn: sqlite3.Connection, found: int | None, path: str) -> int:
    """The replica database's :func:`run_migrations` (with this module's tables)."""
    return run_migrations(
        conn, found, target=SCHEMA_VERSION, steps=MIGRATIONS, path=path, what="replica"
    )
