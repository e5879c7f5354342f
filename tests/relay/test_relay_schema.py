"""The relay database's schema versions and migration hook."""

from __future__ import annotations

import sqlite3
import zlib
from pathlib import Path

import pytest

from tiendasync.errors import StorageError
from tiendasync.relay import SqliteRelayStore, schema
from tiendasync.relay.auth import issue_token
from tiendasync.relay.records import AppendEntry
from tiendasync.relay.storage import SCHEMA_VERSION


def _version(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return str(
            conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        )


def _set_version(path: Path, value: str) -> None:
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (value,))
    conn.close()


def _columns(path: Path, table: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
    finally:
        conn.close()


def test_new_database_records_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    with SqliteRelayStore(str(path)) as store:
        assert store.schema_version() == SCHEMA_VERSION == schema.SCHEMA_VERSION
    assert _version(path) == str(SCHEMA_VERSION)
    with SqliteRelayStore(str(path)) as store:  # reopening changes nothing
        assert store.schema_version() == SCHEMA_VERSION


def test_newer_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    SqliteRelayStore(str(path)).close()
    _set_version(path, str(SCHEMA_VERSION + 1))
    with pytest.raises(StorageError, match="newer"):
        SqliteRelayStore(str(path))
    assert _version(path) == str(SCHEMA_VERSION + 1)


def test_version_zero_runs_the_identity_migration(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    SqliteRelayStore(str(path)).close()
    _set_version(path, "0")
    with SqliteRelayStore(str(path)) as store:
        assert store.schema_version() == SCHEMA_VERSION
    assert 0 in schema.MIGRATIONS


def test_migrations_run_in_order_inside_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "relay.db"
    SqliteRelayStore(str(path)).close()
    _set_version(path, "1")  # a file of version 1, as written before the quarantine table
    ran: list[int] = []

    def v1_to_v2(conn: sqlite3.Connection) -> None:
        ran.append(1)
        conn.execute("ALTER TABLE tokens ADD COLUMN note TEXT")

    def v2_to_v3(conn: sqlite3.Connection) -> None:
        ran.append(2)
        conn.execute("ALTER TABLE tokens ADD COLUMN label TEXT")
        raise sqlite3.OperationalError("disk full")

    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(schema, "MIGRATIONS", {**schema.MIGRATIONS, 1: v1_to_v2, 2: v2_to_v3})
    with pytest.raises(StorageError, match="disk full"):
        SqliteRelayStore(str(path))
    assert ran == [1, 2]
    # the failed open changed nothing: neither step's column, nor the version
    assert "note" not in _columns(path, "tokens") and "label" not in _columns(path, "tokens")
    assert _version(path) == "1"

    def v2_to_v3_fixed(conn: sqlite3.Connection) -> None:
        ran.append(3)
        conn.execute("ALTER TABLE tokens ADD COLUMN label TEXT")

    monkeypatch.setattr(schema, "MIGRATIONS", {**schema.MIGRATIONS, 2: v2_to_v3_fixed})
    with SqliteRelayStore(str(path)) as store:
        assert store.schema_version() == 3
    assert ran == [1, 2, 1, 3]
    assert {"note", "label"} <= set(_columns(path, "tokens"))


def test_a_version_without_a_migration_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "relay.db"
    SqliteRelayStore(str(path)).close()
    _set_version(path, "1")
    monkeypatch.setattr(schema, "MIGRATIONS", {0: schema.MIGRATIONS[0]})
    with pytest.raises(StorageError, match="cannot be upgraded"):
        SqliteRelayStore(str(path))
    assert _version(path) == "1"


def test_a_version_1_file_is_upgraded_to_the_current_version(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    SqliteRelayStore(str(path)).close()
    _set_version(path, "1")
    with SqliteRelayStore(str(path)) as store:
        assert store.schema_version() == SCHEMA_VERSION == 7
    assert "reason" in _columns(path, "quarantine")


def test_a_version_5_file_gains_the_conflicts_table(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    with SqliteRelayStore(str(path)) as store:
        store.set_replica_config("acme", "t1", {"x": 1})
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE conflicts")  # as relay schema 5 wrote it
    _set_version(path, "5")
    with SqliteRelayStore(str(path)) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.get_replica_config("acme", "t1") == {"x": 1}
        assert store.list_conflicts("acme") == []
    assert "source_seq" in _columns(path, "conflicts")


def test_a_version_6_file_gains_generations_and_keeps_its_documents(tmp_path: Path) -> None:
    """Relay schema 7 (document generations): every existing document is generation 0."""
    path = tmp_path / "relay.db"
    with SqliteRelayStore(str(path)) as store:
        store.append_many([AppendEntry("acme", "stock/t1", b"u", "t1", b"\x00")])
    with sqlite3.connect(path) as conn:  # as relay schema 6 wrote it
        conn.execute("DROP TABLE generation_cuts")
        conn.execute("DROP TABLE late_updates")
        conn.execute("ALTER TABLE docs DROP COLUMN generation")
    _set_version(path, "6")
    with SqliteRelayStore(str(path)) as store:
        assert store.schema_version() == 7
        assert store.generations("acme") == {}
        assert [d for _, d in store.load_doc("acme", "stock/t1").updates] == [b"u"]
    assert "generation" in _columns(path, "docs")
    assert "generation" in _columns(path, "late_updates")


def test_version_two_tokens_gain_a_location_and_keep_working(tmp_path: Path) -> None:
    """A relay file of version 2 (tokens without a location) upgrades in place."""
    path = tmp_path / "relay.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE tokens (id TEXT PRIMARY KEY, token_hash TEXT NOT NULL, tenant TEXT, "
            "replica_id TEXT, admin INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, "
            "revoked_at REAL)"
        )
        conn.execute("INSERT INTO tokens VALUES ('000000000001', 'h', 'acme', 't1', 0, 1.0, NULL)")
        conn.execute(schema.META_TABLE)
        conn.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    with SqliteRelayStore(str(path)) as store:
        assert store.schema_version() == SCHEMA_VERSION
        issue_token(store, tenant="acme", replica_id="t2", location="tienda-2")
        by_replica = {r.replica_id: r for r in store.list_tokens()}
        assert by_replica["t1"].location is None and by_replica["t2"].location == "tienda-2"
    assert "location" in _columns(path, "tokens")


def test_version_three_rows_gain_their_checksums(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    with SqliteRelayStore(str(path)) as store:
        store.append_many([AppendEntry("acme", "stock", b"\x00\x00", "t1", b"\x00", 1.0)])
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE updates DROP COLUMN checksum")  # the version 3 layout
    _set_version(path, "3")
    with SqliteRelayStore(str(path)) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.load_doc("acme", "stock").damaged == []
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT data, checksum FROM updates").fetchall()
    assert rows == [(b"\x00\x00", zlib.crc32(b"\x00\x00"))]
