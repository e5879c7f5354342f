"""The relay's store of record on PostgreSQL: its schema and migrations.

The same tables as the SQLite file (:mod:`tiendasync.relay.schema`), in
PostgreSQL's types, with the constraints several relay processes rely on
(a writer id belongs to one replica: ``client_ids``' primary key; a conflict
is opened once per tenant and id: ``conflicts``' primary key).

:data:`SCHEMA_VERSION` is the version this code writes; the database records
its version in the one row of ``schema_version``.  On connect,
:class:`~tiendasync.relay.pgstore.PostgresRelayStore` runs :func:`migrate`
in one transaction under a transaction-scoped advisory lock, so several
relay processes starting at once migrate once, in turn, and a database is
either brought fully up to date or left as it was.  A database written by a
newer tiendasync is refused (:class:`~tiendasync.errors.StorageError`).
PostgreSQL's DDL is transactional, so a failed step leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tiendasync.errors import StorageError

__all__ = ["MIGRATIONS", "MIGRATION_LOCK", "SCHEMA", "SCHEMA_VERSION", "migrate", "statements"]

SCHEMA_VERSION = 5

#: ``pg_advisory_xact_lock`` key held while a process checks and migrates the schema.
MIGRATION_LOCK = 0x7469656E64615331  # "tiendaS1"

VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), "
    "version INTEGER NOT NULL, migrated_at DOUBLE PRECISION NOT NULL)"
)

#: Every table and index of a current database (idempotent DDL; ``schema_version`` aside).
#: ``seq`` is global and grows; per document it also follows commit order, because
#: every transaction that logs an update of a document holds that document's
#: ``docs`` row lock from before it takes a ``seq`` until it commits.
SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    tenant TEXT,
    replica_id TEXT,
    admin BOOLEAN NOT NULL DEFAULT FALSE,
    created_at DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION,
    location TEXT
);
CREATE TABLE IF NOT EXISTS client_ids (
    client_id BIGINT PRIMARY KEY,
    tenant TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    registered_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS client_ids_replica ON client_ids (tenant, replica_id);
CREATE TABLE IF NOT EXISTS docs (
    tenant TEXT NOT NULL,
    doc TEXT NOT NULL,
    state_vector BYTEA NOT NULL,
    log_count BIGINT NOT NULL DEFAULT 0,
    updated_at DOUBLE PRECISION NOT NULL,
    generation BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, doc)
);
CREATE TABLE IF NOT EXISTS updates (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant TEXT NOT NULL,
    doc TEXT NOT NULL,
    data BYTEA NOT NULL,
    replica TEXT,
    received_at DOUBLE PRECISION NOT NULL,
    checksum BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_doc ON updates (tenant, doc, seq);
CREATE TABLE IF NOT EXISTS snapshots (
    tenant TEXT NOT NULL,
    doc TEXT NOT NULL,
    data BYTEA NOT NULL,
    upto_seq BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    checksum BIGINT NOT NULL,
    PRIMARY KEY (tenant, doc)
);
CREATE TABLE IF NOT EXISTS relay_nodes (
    node_id TEXT PRIMARY KEY,
    started_at DOUBLE PRECISION NOT NULL,
    seen_at DOUBLE PRECISION NOT NULL,
    replicas TEXT NOT NULL,
    metrics TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS node_requests (
    id BIGSERIAL PRIMARY KEY,
    node_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    full_sync BOOLEAN NOT NULL,
    requested_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS node_requests_node ON node_requests (node_id, id);
CREATE TABLE IF NOT EXISTS replica_config (
    tenant TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    json TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, replica_id)
);
CREATE TABLE IF NOT EXISTS reported_config (
    tenant TEXT NOT NULL,
    replica_id TEXT NOT NULL,
    json TEXT NOT NULL,
    reported_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, replica_id)
);
CREATE TABLE IF NOT EXISTS sync_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant TEXT,
    replica_id TEXT,
    session_id TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'sync',
    started_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION,
    outcome TEXT NOT NULL,
    docs BIGINT NOT NULL DEFAULT 0,
    updates_received BIGINT NOT NULL DEFAULT 0,
    updates_sent BIGINT NOT NULL DEFAULT 0,
    bytes_received BIGINT NOT NULL DEFAULT 0,
    bytes_sent BIGINT NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX IF NOT EXISTS sync_log_replica ON sync_log (tenant, replica_id, started_at);
CREATE TABLE IF NOT EXISTS quarantine (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant TEXT NOT NULL,
    doc TEXT NOT NULL,
    seq BIGINT NOT NULL,
    data BYTEA NOT NULL,
    reason TEXT NOT NULL,
    quarantined_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS conflicts (
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    invariant TEXT NOT NULL,
    location TEXT NOT NULL,
    sku TEXT NOT NULL,
    status TEXT NOT NULL,
    opened_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    source_seq BIGINT,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX IF NOT EXISTS conflicts_status ON conflicts (tenant, status, opened_at);
CREATE TABLE IF NOT EXISTS generation_cuts (
    tenant TEXT NOT NULL,
    doc TEXT NOT NULL,
    generation BIGINT NOT NULL,
    data BYTEA NOT NULL,
    checksum BIGINT NOT NULL,
    cut_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, doc, generation)
);
CREATE TABLE IF NOT EXISTS late_updates (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant TEXT NOT NULL,
    doc TEXT NOT NULL,
    generation BIGINT NOT NULL,
    data BYTEA NOT NULL,
    replica TEXT,
    received_at DOUBLE PRECISION NOT NULL,
    checksum BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS late_updates_doc ON late_updates (tenant, doc, generation, seq);
"""

#: Schema 2 (issue 15 part 3, "review leases"): the review partitions' leases, their
#: cursors (per document: the last seq reviewed, committed with the review's writes)
#: and the log of committed review batches (which seqs each epoch reviewed).
REVIEW_LEASES = """
CREATE TABLE IF NOT EXISTS review_leases (
    tenant TEXT NOT NULL,
    location TEXT NOT NULL,
    owner TEXT,
    epoch BIGINT NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    acquired_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (tenant, location)
);
CREATE TABLE IF NOT EXISTS review_cursors (
    tenant TEXT NOT NULL,
    location TEXT NOT NULL,
    doc TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (tenant, location, doc)
);
CREATE TABLE IF NOT EXISTS review_log (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant TEXT NOT NULL,
    location TEXT NOT NULL,
    doc TEXT NOT NULL,
    after_seq BIGINT NOT NULL,
    upto_seq BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    owner TEXT NOT NULL,
    committed_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS review_log_partition ON review_log (tenant, location, doc, upto_seq);
"""

SCHEMA += REVIEW_LEASES

#: Schema 5 (issue 15 part 4, "admin API on any node"): the admin operations one node
#: asks the reviewing node to run (``relay.forward``), keyed by their idempotency key.
#: ``state``: asked, running, done, failed or cancelled; ``result`` is the answer's
#: JSON, ``error_class``/``error`` the typed error a failed one answers with.
ADMIN_REQUESTS = """
CREATE TABLE IF NOT EXISTS admin_requests (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    op TEXT NOT NULL,
    args TEXT NOT NULL,
    state TEXT NOT NULL,
    asked_by TEXT NOT NULL,
    asked_at DOUBLE PRECISION NOT NULL,
    node TEXT,
    started_at DOUBLE PRECISION,
    done_at DOUBLE PRECISION,
    result TEXT,
    error_class TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS admin_requests_state ON admin_requests (state, asked_at);
"""

SCHEMA += ADMIN_REQUESTS

#: ``execute(sql, params)`` on the migrating transaction's connection.
Execute = Callable[[str, tuple[Any, ...]], Any]
#: A step turns a database of version ``v`` into ``v + 1``.
Migration = Callable[[Execute], None]


def _v1_to_v2_relay_nodes(execute: Execute) -> None:
    """1 -> 2: ``relay_nodes`` and ``node_requests`` (the cluster's heartbeats and
    cross-node sync requests): new tables only, which :data:`SCHEMA` creates."""


def _v2_to_v3_review_leases(execute: Execute) -> None:
    """2 -> 3: the review workers' leases, cursors and log (new tables only)."""
    for statement in _split(REVIEW_LEASES):
        execute(statement, ())


def _v3_to_v4_generations(execute: Execute) -> None:
    """3 -> 4 (issue 14, document generations): numbers each document's generation
    (``docs.generation``, 0 for every document so far); :data:`SCHEMA` adds
    ``generation_cuts`` and ``late_updates``."""
    execute(
        "DO $$ BEGIN IF to_regclass('docs') IS NOT NULL THEN "
        "ALTER TABLE docs ADD COLUMN IF NOT EXISTS generation BIGINT NOT NULL DEFAULT 0; "
        "END IF; END $$",
        (),
    )


def _v4_to_v5_admin_requests(execute: Execute) -> None:
    """4 -> 5: ``admin_requests``, the admin operations forwarded to the reviewing node
    (a new table only, which :data:`SCHEMA` creates)."""


#: ``{version: step}``: step ``v`` turns a database of version ``v`` into ``v + 1``.
MIGRATIONS: dict[int, Migration] = {
    1: _v1_to_v2_relay_nodes,
    2: _v2_to_v3_review_leases,
    3: _v3_to_v4_generations,
    4: _v4_to_v5_admin_requests,
}


def _split(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def statements() -> list[str]:
    """:data:`SCHEMA` as single statements."""
    return _split(SCHEMA)


def migrate(execute: Execute, found: int | None, where: str) -> int:
    """Bring a database at version ``found`` (``None``: new) to :data:`SCHEMA_VERSION`.

    Runs each step inside the caller's transaction and returns the version
    reached; raises :class:`StorageError` for a database of a newer
    tiendasync or a version no step leads from.
    """
    if found is None:
        return SCHEMA_VERSION
    if found > SCHEMA_VERSION:
        raise StorageError(
            f"{where} was written by a newer tiendasync (relay schema {found}, this one "
            f"writes {SCHEMA_VERSION}); upgrade tiendasync"
        )
    version = found
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise StorageError(
                f"{where} has relay schema {version}, which cannot be upgraded by this tiendasync"
            )
        step(execute)
        version += 1
    return version
