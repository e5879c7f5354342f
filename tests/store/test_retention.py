"""Retention: acknowledged queue entries and sync-log rows leave the store after
``retention_days``; what is pending, refused or in conflict stays however old."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.store.test_client import RelayThread
from tiendasync import ConfigError, Replica
from tiendasync.model.config import StoreConfig

DAY = 86_400.0


class Clock:
    """A wall clock in milliseconds the test moves forward, from 25 days ago (the
    relay refuses writes dated after its own clock)."""

    def __init__(self) -> None:
        self.ms = int((time.time() - 25 * DAY) * 1000)

    def __call__(self) -> int:
        return self.ms

    def advance_days(self, days: float) -> None:
        self.ms += int(days * DAY * 1000)


def _rows(path: Path, table: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def test_acknowledged_entries_and_old_sessions_are_pruned_after_the_window(
    tmp_path: Path,
) -> None:
    relay = RelayThread(tmp_path)
    path = tmp_path / "shop.db"
    clock = Clock()
    try:
        with Replica.open(
            path, tenant="acme", replica_id="t1", location="t1", wall_clock=clock
        ) as r:
            r.configure(retention_days=10)
            r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
            r.inventory.receive("CAFE", 100)
            for _ in range(5):
                r.record_sale([("CAFE", 1)])
            assert r.sync_now(relay.url, token=relay.token("t1")).outcome == "ok"
            acked = len(r.queue.list(status="acknowledged"))
            assert acked >= 7
            clock.advance_days(4)
            r.record_sale([("CAFE", 1)])  # stays pending: never synced
            assert r.prune() == {"queue": 0, "sync_log": 0, "sales_docs": 0}  # in the window
            clock.advance_days(7)  # the first entries are 11 days old now
            # the last ok session stays
            assert r.prune() == {"queue": acked, "sync_log": 0, "sales_docs": 0}
            assert [e.status for e in r.queue.list()] == ["pending"]
            assert r.inventory.stock("CAFE") == 94  # pruning the queue changes no data
            assert r.sync_now(relay.url, token=relay.token("t1")).outcome == "ok"
            clock.advance_days(11)
            assert r.sync_now(relay.url, token=relay.token("t1")).outcome == "ok"
            # That sync's end pruned the entry it acknowledged 11 days ago and the
            # two old sessions; its own session is kept.
            assert len(r.log.list()) == 1
            assert r.queue.list() == []
        assert _rows(path, "queue_clocks") == 0
    finally:
        relay.close()


def test_the_window_is_kept_for_what_is_not_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    clock = Clock()
    with Replica.open(path, tenant="acme", replica_id="t1", location="t1", wall_clock=clock) as r:
        r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
        clock.advance_days(400)
        assert r.prune() == {"queue": 0, "sync_log": 0, "sales_docs": 0}
        assert len(r.queue.list(status="pending")) == 2  # its location, the product


def test_default_window_is_thirty_days() -> None:
    assert StoreConfig().retention_days == 30.0


@given(st.one_of(st.floats(allow_nan=True), st.integers(), st.booleans(), st.text()))
def test_retention_days_is_validated(value: object) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 1 <= value <= 36_500
    if ok:
        assert StoreConfig(retention_days=value).retention_days == value  # type: ignore[arg-type]
    else:
        with pytest.raises(ConfigError, match="retention_days"):
            StoreConfig(retention_days=value)  # type: ignore[arg-type]


def test_the_relay_prunes_its_sync_log_keeping_each_stores_newest(tmp_path: Path) -> None:
    from tests.store.test_client import wait_until

    relay = RelayThread(tmp_path)
    try:
        with Replica.open(tmp_path / "shop.db", tenant="acme", replica_id="t1", location="t1") as r:
            for _ in range(3):
                assert r.sync_now(relay.url, token=relay.token("t1")).outcome == "ok"
            wait_until(lambda: len(relay.store.list_sessions(replica_id="t1")) == 3)
            # One session ends within the hour: that prune already ran (nothing old).
            relay.server.sync_log_days = 1e-9  # every session is now older than the window
            relay.server._pruned_at = None  # and an hour has passed
            assert r.sync_now(relay.url, token=relay.token("t1")).outcome == "ok"
            wait_until(lambda: len(relay.store.list_sessions(replica_id="t1")) == 1)
            time.sleep(0.2)
            assert r.sync_now(relay.url, token=relay.token("t1")).outcome == "ok"
            # Pruned at most once an hour: this session's end did not prune.
            wait_until(lambda: len(relay.store.list_sessions(replica_id="t1")) == 2)
    finally:
        relay.close()


def test_the_relay_refuses_a_window_that_is_not_positive(tmp_path: Path) -> None:
    from tiendasync.relay.server import RelayServer
    from tiendasync.relay.storage import SqliteRelayStore

    store = SqliteRelayStore(str(tmp_path / "relay.db"))
    try:
        with pytest.raises(ConfigError, match="sync_log_days"):
            RelayServer(store, sync_log_days=0)
    finally:
        store.close()
