"""The relay database's schema and its migrations.

:data:`SCHEMA_VERSION` is the version this code writes; a file records its
version in ``meta.schema_version``.  On open,
:class:`~tiendasync.relay.storage.SqliteRelayStore` runs :func:`migrate` and
then the idempotent DDL of :func:`statements`, all in one transaction: a file
is either brought fully up to date or left as it was.  A file written by a
newer tiendasync is refused (:class:`~tiendasync.errors.StorageError`).
"""

from __future__ import annotations

import sqlite3
import zlib

from tiendasync.store.storage.schema import Migration, run_migrations

__all__ = [
    "META_TABLE",
    "MIGRATIONS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "checksum_of",
    "migrate",
    "statements",
]

SCHEMA_VERSION = 7

META_TABLE = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"

#: Every table and index of a current database (idempotent DDL; ``meta`` aside).
SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    tenant TEXT,
    replica_id TEXT,
    admin INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    revoked_at REAL,
    location TEXT
);
CREATE TABLE IF NOT EXISTS client_ids (
    client_id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    registered_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS client_ids_replica ON client_ids (tenant, replica_id);
CREATE TABLE IF NOT EXISTS docs (
    tenant TEXT NOT NULL,
    doc TEXT NOT NULL,
    state_vector BLOB NOT NULL,
    log_count INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, doc)
);
CREATE TABLE IF NOT EXISTS updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    doc TEXT NOT NULL,
    data BLOB NOT NULL,
    replica TEXT,
    received_at REAL NOT NULL,
    checksum INTEGER
);
CREATE INDEX IF NOT EXISTS updates_doc ON updates (tenant, doc, seq);
CREATE TABLE IF NOT EXISTS snapshots (
    tenant TEXT NOT NULL,
    doc TEXT NOT NULL,
    data BLOB NOT NULL,
    upto_seq INTEGER NOT NULL,
    created_at REAL NOT NULL,
    checksum INTEGER,
    PRIMARY KEY (tenant, doc)
);
CREATE TABLE IF NOT EXISTS replica_config (
    tenant TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    json TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (tenant, replica_id)
);
CREATE TABLE IF NOT EXISTS reported_config (
    tenant TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    json TEXT NOT NULL,
    reported_at REAL NOT NULL,
    PRIMARY KEY (tenant, replica_id)
);
CREATE TABLE IF NOT EXISTS sync_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT,
    replica_id TEXT,
    session_id TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'sync',
    started_at REAL NOT NULL,
    ended_at REAL,
    outcome TEXT NOT NULL,
    docs INTEGER NOT NULL DEFAULT 0,
    updates_received INTEGER NOT NULL DEFAULT 0,
    updates_sent INTEGER NOT NULL DEFAULT 0,
    bytes_received INTEGER NOT NULL DEFAULT 0,
    bytes_sent INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX IF NOT EXISTS sync_log_replica ON sync_log (tenant, replica_id, started_at);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    doc TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    reason TEXT NOT NULL,
    quarantined_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS conflicts (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    invariant TEXT NOT NULL,
    location TEXT NOT NULL,
    sku TEXT NOT NULL,
    status TEXT NOT NULL,
    opened_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    source_seq INTEGER,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS conflicts_status ON conflicts (tenant, status, opened_at);
CREATE TABLE IF NOT EXISTS generation_cuts (
    tenant TEXT NOT NULL,
    doc TEXT NOT NULL,
    generation INTEGER NOT NULL,
    data BLOB NOT NULL,
    checksum INTEGER NOT NULL,
    cut_at REAL NOT NULL,
    PRIMARY KEY (tenant, doc, generation)
);
CREATE TABLE IF NOT EXISTS late_updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    doc TEXT NOT NULL,
    generation INTEGER NOT NULL,
    data BLOB NOT NULL,
    replica TEXT,
    received_at REAL NOT NULL,
    checksum INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS late_updates_doc ON late_updates (tenant, doc, generation, seq);
"""


def _v0_to_v1(conn: sqlite3.Connection) -> None:
    """Version 0, a file from before schema versions: its tables already have the
    version 1 layout (:data:`SCHEMA` then adds what is missing), so nothing to do."""


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """Version 2 adds the ``quarantine`` table (garbage updates set aside at start).

    :data:`SCHEMA` creates it; recording version 2 makes an older relay refuse
    the file instead of ignoring what was quarantined.
    """


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    """Version 3 ties replica tokens to a location (``tokens.location``, NULL for
    the tokens made before: they keep the grants they had)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(tokens)")}
    if "location" not in columns:  # a file that SCHEMA created has it already
        conn.execute("ALTER TABLE tokens ADD COLUMN location TEXT")


def _v3_to_v4(conn: sqlite3.Connection) -> None:
    """Version 4 keeps a checksum of every stored update and snapshot
    (:func:`checksum_of`), so damage inside a row's bytes, which SQLite's own
    checks cannot see, is caught when the row is read.  Rows stored before get
    their checksum now (they are trusted as they are)."""
    conn.create_function("tiendasync_checksum", 1, checksum_of, deterministic=True)
    for table in ("updates", "snapshots"):
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not columns:
            continue  # not created yet: SCHEMA creates it with the column
        if "checksum" not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN checksum INTEGER")
        conn.execute(f"UPDATE {table} SET checksum = tiendasync_checksum(data)")


def checksum_of(data: bytes) -> int:
    """The checksum stored beside a row's ``data`` (CRC-32: detects flipped and
    cut bytes; it is not a defence against a forger, who could not write the
    file without already owning the relay)."""
    return zlib.crc32(data)


def _v4_to_v5(conn: sqlite3.Connection) -> None:
    """Version 5 adds ``reported_config``: the config each store said, in its last
    HELLO, that it runs with (:data:`SCHEMA` creates it; recording version 5 makes
    an older relay refuse the file instead of ignoring it)."""


def _v5_to_v6(conn: sqlite3.Connection) -> None:
    """Version 6 adds ``conflicts``: each conflict's metadata (opened once per
    tenant and id, its status), the part several relay processes sharing a store
    of record must agree on (:data:`SCHEMA` creates it)."""


def _v6_to_v7_generations(conn: sqlite3.Connection) -> None:
    """Version 7 (issue 14, document generations) numbers each document's generation
    (``docs.generation``, 0 for every document so far) and adds ``generation_cuts``
    (each past generation's whole state at its cut) and ``late_updates`` (updates
    that reached a past generation after its cut), which :data:`SCHEMA` creates."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(docs)")}
    if columns and "generation" not in columns:
        conn.execute("ALTER TABLE docs ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")


#: ``{version: step}``: the step turns a database of ``version`` into ``version + 1``
#: (inside the open's transaction).  The next layout change adds ``7: _v7_to_v8``
#: here and bumps :data:`SCHEMA_VERSION`.
MIGRATIONS: dict[int, Migration] = {
    0: _v0_to_v1,
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
    4: _v4_to_v5,
    5: _v5_to_v6,
    6: _v6_to_v7_generations,
}


def statements() -> list[str]:
    """:data:`SCHEMA` as single statements (``executescript`` would commit the transaction)."""
    return [s.strip() for s in SCHEMA.split(";") if s.strip()]


def migrate(conn: sqlite3.Connection, found: int | None, path: str) -> int:
    """The relay database's :func:`~tiendasync.store.storage.schema.run_migrations`."""
    return run_migrations(
        conn, found, target=SCHEMA_VERSION, steps=MIGRATIONS, path=path, what="relay"
    )
