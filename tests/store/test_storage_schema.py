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


def _layout(path: Path) -> tuple[int, dict[str, bool]]:
    """The file's page size and, per table of a sale, whether it is WITHOUT ROWID."""
    conn = sqlite3.connect(path)
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    tables = {
        name: "WITHOUT ROWID" in sql
        for name, sql in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
        if name in ("queue_clocks", "sales", "sale_lines")
    }
    conn.close()
    return int(page_size), tables


def test_a_new_file_gets_the_small_sale_layout(tmp_path: Path) -> None:
    Replica.open(tmp_path / "a.db", tenant="acme", replica_id="a", location="t1").close()
    assert _layout(tmp_path / "a.db") == (
        1024,
        {"queue_clocks": True, "sales": True, "sale_lines": True},
    )


def test_a_file_of_the_earlier_layout_keeps_it_and_works(tmp_path: Path) -> None:
    """A file made before the layout change (rowid tables, 4 KiB pages) is read and
    written by the same SQL, and keeps its layout."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(schema.SCHEMA.replace(") WITHOUT ROWID;", ");"))
    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    conn.commit()
    conn.close()
    with Replica.open(path, tenant="acme", replica_id="a", location="t1") as r:
        r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
        sales = [r.record_sale([("CAFE", 2)]) for _ in range(3)]
        r.sales.void(sales[0].id)
    with Replica.open(path) as r:
        assert r.sales.count() == 3 and r.inventory.stock("CAFE") == -4
        assert [s.id for s in r.sales.list()] == [s.id for s in reversed(sales)]
        voided = r.sales.get(sales[0].id)
        assert voided is not None and voided.voided
    assert _layout(path) == (4096, {"queue_clocks": False, "sales": False, "sale_lines": False})
