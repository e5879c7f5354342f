"""The replica file's schema version and its migration hook."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tiendasync import CorruptData, Replica, StorageError
from tiendasync.store.storage import schema
from tiendasync.store.storage.schema import SCHEMA_VERSION, migrate


def _set_version(path: Path, version: str) -> None:
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    conn.commit()
    conn.close()


def _version(path: Path) -> str:
    conn = sqlite3.connect(path)
    (value,) = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    return str(value)


def test_a_new_file_records_the_current_version(tmp_path: Path) -> None:
    Replica.open(tmp_path / "a.db", tenant="acme", replica_id="a", location="t1").close()
    assert _version(tmp_path / "a.db") == str(SCHEMA_VERSION)


def test_a_file_of_a_newer_tiendasync_is_refused_and_left_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    Replica.open(path, tenant="acme", replica_id="a", location="t1").close()
    _set_version(path, str(SCHEMA_VERSION + 1))
    with pytest.raises(StorageError, match="newer tiendasync"):
        Replica.open(path)
    assert _version(path) == str(SCHEMA_VERSION + 1)


def test_a_garbage_version_is_corrupt_data(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    Replica.open(path, tenant="acme", replica_id="a", location="t1").close()
    _set_version(path, "vier")
    with pytest.raises(CorruptData):
        Replica.open(path)


def test_migrations_run_in_order_from_the_file_version(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[int] = []
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 4)
    monkeypatch.setattr(
        schema,
        "MIGRATIONS",
        {v: (lambda conn, v=v: ran.append(v)) for v in (1, 2, 3)},
    )
    conn = sqlite3.connect(":memory:")
    assert schema.migrate(conn, 2, "x.db") == 4
    assert ran == [2, 3]
    assert schema.migrate(conn, None, "x.db") == 4  # a new file needs no step
    assert ran == [2, 3]


def test_a_missing_step_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(schema, "MIGRATIONS", {2: lambda conn: None})
    with pytest.raises(StorageError, match="cannot be upgraded"):
        migrate(sqlite3.connect(":memory:"), 1, "x.db")
