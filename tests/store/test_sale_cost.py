"""What one sale costs does not grow with the till's age (issue 14).

A till restarted every day is a new writer every day: the month's sales
document gains a writer with every restart (sales documents do not roll
over), and the file gains every sale's rows.  These tests count work, not
time: a sale on a till restarted many times in its month reads as many
state-vector varuints as on a till restarted once, runs the same statements,
and none of them scans a table that grows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tiendasync import Replica
from tiendasync.model.docnames import sales_doc, stock_doc
from tiendasync.protocol import statevector
from tiendasync.protocol.statevector import decode_state_vector

#: 2026-03-02 00:00 UTC: every sale of these tests falls in March.
MARCH_MS = 1_772_409_600_000
SKUS = [f"SKU{i:03d}" for i in range(40)]


class Clock:
    """Milliseconds inside March, a minute more at each read."""

    def __init__(self) -> None:
        self.ms = MARCH_MS

    def __call__(self) -> int:
        self.ms += 60_000
        return self.ms


def _till(path: Path, restarts: int, clock: Clock) -> Replica:
    """A till opened ``restarts`` times, selling two sales each time; the last open."""
    with Replica.open(path, tenant="acme", replica_id="t1", location="shop", wall_clock=clock) as r:
        r.catalog.put_many({s: {"name": s, "price_cents": 100} for s in SKUS})
        r.inventory.receive_many({s: 1000 for s in SKUS})
    for n in range(restarts):
        with Replica.open(path, wall_clock=clock) as r:
            r.record_sale([(SKUS[n % 40], 1)])
            r.record_sale([(SKUS[(n + 7) % 40], 2), (SKUS[(n + 9) % 40], 1)])
    r = Replica.open(path, wall_clock=clock)
    r.record_sale([(SKUS[0], 1)])  # the first sale of an open loads the month's document
    return r


@contextmanager
def _counting_varuints(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls = [0]
    real = statevector.read_varuint

    def counting(data: bytes, pos: int, what: str = "state vector") -> tuple[int, int]:
        calls[0] += 1
        return real(data, pos, what)

    with monkeypatch.context() as m:
        m.setattr(statevector, "read_varuint", counting)
        yield calls


def _one_sale_varuints(r: Replica, monkeypatch: pytest.MonkeyPatch) -> int:
    with _counting_varuints(monkeypatch) as calls:
        r.record_sale([(SKUS[3], 1), (SKUS[4], 2)])
    return calls[0]


def test_a_sale_reads_no_more_state_vector_for_a_month_of_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    young = _till(tmp_path / "young.db", 1, Clock())
    old = _till(tmp_path / "old.db", 30, Clock())
    try:
        month = sales_doc("shop", MARCH_MS)
        assert len(decode_state_vector(old.state_vector(month))) == 31  # a writer per open
        assert len(decode_state_vector(old.state_vector(stock_doc("shop")))) == 32
        assert len(decode_state_vector(young.state_vector(month))) == 2
        counts = {_one_sale_varuints(r, monkeypatch) for r in (young, old)}
        assert len(counts) == 1, counts  # the same work, whatever the writers
        # and the queue holds the clock each document reached with the sale
        for r in (young, old):
            row = r.core.storage.conn.execute(
                "SELECT doc, client_id, clock FROM queue_clocks ORDER BY entry_id DESC LIMIT 2"
            ).fetchall()
            for doc, client, clock in row:
                assert client == r.core.client_id
                assert decode_state_vector(r.state_vector(doc))[client] == clock
    finally:
        young.close()
        old.close()


def _statements_of_a_sale(r: Replica) -> list[str]:
    seen: list[str] = []
    conn = r.core.storage.conn
    conn.set_trace_callback(seen.append)
    try:
        r.record_sale([(SKUS[5], 1), (SKUS[6], 3)])
    finally:
        conn.set_trace_callback(None)
    return seen


def _scans(conn: sqlite3.Connection, sql: str) -> list[str]:
    """The tables ``sql`` reads row by row (``SCAN`` in its plan), but ``sqlite_sequence``:
    one row per AUTOINCREMENT table of the schema."""
    head = sql.lstrip().split(None, 1)[0].upper()
    if head not in {"SELECT", "UPDATE", "DELETE", "INSERT"}:
        return []
    plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    return [
        str(detail)
        for *_, detail in plan
        if str(detail).startswith("SCAN") and "sqlite_sequence" not in str(detail)
    ]


def test_a_sale_runs_the_same_statements_and_scans_no_growing_table(tmp_path: Path) -> None:
    young = _till(tmp_path / "young.db", 1, Clock())
    old = _till(tmp_path / "old.db", 30, Clock())
    try:
        assert old.sales.count() > 20 * young.sales.count()
        shapes = []
        for r in (young, old):
            statements = _statements_of_a_sale(r)
            conn = r.core.storage.conn
            assert [s for s in statements if _scans(conn, s)] == []
            shapes.append([s.split("(", 1)[0].split(" VALUES", 1)[0] for s in statements])
        assert shapes[0] == shapes[1]
    finally:
        young.close()
        old.close()
