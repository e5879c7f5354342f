"""Sales months leave the replicas after ``sales_months`` (kept at the relay).

A till keeps this month's sales document and the ``sales_months - 1`` before
it; older ones leave the file at the end of a sync once every local write to
them is acknowledged, and the relay, told the floor in the HELLO, sends none
of them back.  The relay keeps every month.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.store.test_client import RelayThread
from tiendasync import ConfigError, Replica
from tiendasync.model.config import StoreConfig
from tiendasync.model.docnames import before_sales_floor, is_period, sales_floor
from tiendasync.relay.admin import RelayAdmin

DAY = 86_400.0


class Clock:
    """A wall clock in milliseconds that starts ``days_ago`` and moves forward."""

    def __init__(self, days_ago: float) -> None:
        self.ms = int((time.time() - days_ago * DAY) * 1000)

    def __call__(self) -> int:
        return self.ms

    def now(self) -> None:
        self.ms = int(time.time() * 1000)


def _sales_docs(r: Replica) -> list[str]:
    return [d for d in r.doc_names() if d.startswith("sales/")]


def _count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


@given(
    st.integers(min_value=0, max_value=4_102_444_800_000),  # 1970..2100
    st.integers(min_value=1, max_value=1200),
)
def test_the_floor_is_the_month_and_the_ones_before_it(wall_ms: int, months: int) -> None:
    floor = sales_floor(wall_ms, months)
    assert is_period(floor)
    this_month = time.strftime("%Y-%m", time.gmtime(wall_ms / 1000))
    year, month = int(this_month[:4]), int(this_month[5:])
    # counting the months from the floor to this one, both included
    assert (year * 12 + month) - (int(floor[:4]) * 12 + int(floor[5:])) + 1 == months
    assert not before_sales_floor(f"sales/t1/{this_month}", floor)
    assert not before_sales_floor(f"sales/t1/{floor}", floor)
    assert not before_sales_floor("stock/t1", floor) and not before_sales_floor("catalog", floor)
    assert not before_sales_floor(f"sales/t1/{this_month}", None)


@pytest.mark.parametrize("value", [-1, 1201, 1.5, True, "13", None])
def test_sales_months_is_validated(value: object) -> None:
    with pytest.raises(ConfigError, match="sales_months"):
        StoreConfig(sales_months=value)  # type: ignore[arg-type]


def test_old_months_leave_the_till_once_acknowledged_and_stay_at_the_relay(
    tmp_path: Path,
) -> None:
    relay = RelayThread(tmp_path)
    path = tmp_path / "shop.db"
    clock = Clock(days_ago=100)
    try:
        with Replica.open(
            path, tenant="acme", replica_id="t1", location="t1", wall_clock=clock
        ) as r:
            r.configure(sales_months=2)  # this month and the one before
            r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
            r.inventory.receive("CAFE", 100)
            old = [r.record_sale([("CAFE", 1)]) for _ in range(3)]
            [old_doc] = _sales_docs(r)
            # Offline for 100 days: the old month is past the floor, but not sent yet.
            clock.now()
            assert before_sales_floor(old_doc, r.sales_floor())
            assert r.prune()["sales_docs"] == 0
            assert _sales_docs(r) == [old_doc]
            new = r.record_sale([("CAFE", 2)])
            new_doc = f"sales/t1/{time.strftime('%Y-%m', time.gmtime())}"
            # The sync sends the old sales first; its end lets the old month go.
            assert r.sync_now(relay.url, token=relay.token("t1")).outcome == "ok"
            assert _sales_docs(r) == [new_doc]
            assert [s.id for s in r.sales.list()] == [new.id]
            assert r.sales.get(old[0].id) is None
            assert r.inventory.stock("CAFE") == 95  # stock keeps every sale
            # A later sync does not bring the old month back.
            assert r.sync_now(relay.url, token=relay.token("t1")).outcome == "ok"
            assert old_doc not in r.doc_names()
            assert r.sync_now(relay.url, token=relay.token("t1"), full=True).outcome == "ok"
            assert old_doc not in r.doc_names()
        assert _count(path, f"SELECT COUNT(*) FROM updates WHERE doc = '{old_doc}'") == 0
        assert _count(path, "SELECT COUNT(*) FROM sale_lines") == 1
        # The relay keeps the old month: a new till that keeps every month gets it.
        assert relay.store.state_vectors("acme").get(old_doc)
        with Replica.open(
            tmp_path / "office.db", tenant="acme", replica_id="office", location="office"
        ) as office:
            office.configure(sales_months=0)
            assert office.sales_floor() is None
            assert office.sync_now(relay.url, token=relay.token("office")).outcome == "ok"
            assert old_doc in office.doc_names()
            assert {s.id for s in office.sales.list(location="t1")} == {
                *(s.id for s in old),
                new.id,
            }
        # One that keeps a year does not get what its floor excludes.
        with Replica.open(
            tmp_path / "till2.db", tenant="acme", replica_id="t2", location="t1"
        ) as till2:
            till2.configure(sales_months=1)
            assert till2.sync_now(relay.url, token=relay.token("t2")).outcome == "ok"
            assert old_doc not in till2.doc_names()
            assert [s.id for s in till2.sales.list(location="t1")] == [new.id]
        # The relay's admin API reads every month from the store of record.
        admin = RelayAdmin(relay.server)
        old_period, new_period = old_doc.rsplit("/", 1)[1], new_doc.rsplit("/", 1)[1]
        assert relay.call(lambda: admin.sales_months("acme", "t1")) == [
            {"location": "t1", "period": old_period},
            {"location": "t1", "period": new_period},
        ]
        page = relay.call(lambda: admin.month_sales("acme", "t1", old_period, limit=2, offset=1))
        assert page["count"] == 3 and page["invalid_records"] == 0
        assert [s["id"] for s in page["results"]] == [s.id for s in old[1:]]
        assert page["results"][0]["lines"] == [
            {"sku": "CAFE", "quantity": 1, "unit_price_cents": 450}
        ]
    finally:
        relay.close()
    # ... and so does the export, with the relay stopped.
    out = tmp_path / "sales.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiendasync",
            "relay",
            "export-sales",
            "--db",
            str(tmp_path / "relay.db"),
            "--tenant",
            "acme",
            "--until",
            old_period,
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "exported 3 sales from 1 months" in done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["period"], r["id"], r["total_cents"]) for r in rows] == [
        (old_period, s.id, 450) for s in old
    ]
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "tiendasync",
            "relay",
            "export-sales",
            "--db",
            str(tmp_path / "relay.db"),
            "--tenant",
            "acme",
            "--since",
            "2025-13",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode != 0 and "since must be a month" in bad.stderr


def test_the_archive_leaves_out_stored_records_that_are_not_sales(tmp_path: Path) -> None:
    """A peer (or an older tiendasync) may have stored anything in a sales document:
    the admin API and the export read the valid sales and count the others."""
    import pycrdt

    from tiendasync.crdt import Ledger
    from tiendasync.model.sales import Sale, SaleLine, new_sale_id
    from tiendasync.relay import SqliteRelayStore
    from tiendasync.relay.sales_archive import read_month, sales_months
    from tiendasync.relay.storage import AppendEntry

    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=7)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(bytes(event.update)))
    good = new_sale_id(int(time.time() * 1000), 0, 7)
    with doc.transaction():
        ledger = Ledger(doc)
        ledger.add(good, Sale(good, "t1", "t1", 0, (SaleLine("CAFE", 2, 450),)).to_record())
        ledger.add("not-a-sale-id", {"by": "t1", "l": [["CAFE", 1, 450]]})
        ledger.add(new_sale_id(1, 1, 7), {"by": "t1", "l": [["CAFE", -5, 450]]})
    name = f"sales/t1/{time.strftime('%Y-%m', time.gmtime())}"
    with SqliteRelayStore(str(tmp_path / "relay.db")) as store:
        store.append_many([AppendEntry("acme", name, updates[0], "t1", doc.get_state())])
        [month] = sales_months(store, "acme", location="t1")
        sales, invalid = read_month(store, "acme", month)
    assert [(s.id, s.total_cents) for s in sales] == [(good, 900)]
    assert invalid == 2
