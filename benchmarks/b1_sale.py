"""1. Durable sale: ``record_sale`` (synchronous=FULL) vs raw SQLite single-row commits.

Both write to files in the same directory (same disk), WAL, synchronous=FULL,
one transaction per sale.  Rounds alternate between the two so that noise on
a shared machine hits both alike; the ratio is the median of per-round ratios.
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from pathlib import Path

from tiendasync import Replica

from . import wal_per_sale
from .common import Figure, emit

SKUS = 100


def raw_commits(path: Path, n: int) -> float:
    """Sales/s of single-row INSERT+COMMIT in WAL, synchronous=FULL."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS sales (id INTEGER PRIMARY KEY, at REAL, "
        "location TEXT, sku TEXT, quantity INTEGER, unit_price_cents INTEGER)"
    )
    t0 = time.perf_counter()
    for i in range(n):
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO sales (at, location, sku, quantity, unit_price_cents) "
            "VALUES (?, ?, ?, ?, ?)",
            (time.time(), "tienda-1", f"SKU-{i % SKUS:05d}", 1, 450),
        )
        conn.execute("COMMIT")
    rate = n / (time.perf_counter() - t0)
    conn.close()
    return rate


def open_store(path: Path, durability: str = "full") -> Replica:
    r = Replica.open(
        path, tenant="acme", replica_id="tienda-1", location="tienda-1", durability=durability
    )
    if r.catalog.get("SKU-00000") is None:
        r.catalog.put_many(
            {f"SKU-{i:05d}": {"name": f"Producto {i}", "price_cents": 100 + i} for i in range(SKUS)}
        )
    return r


def record_sales(r: Replica, n: int, start: int = 0) -> float:
    t0 = time.perf_counter()
    for i in range(start, start + n):
        r.record_sale([(f"SKU-{i % SKUS:05d}", 1)])
    return n / (time.perf_counter() - t0)


def run(workdir: Path, *, sales: int = 300, rounds: int = 3) -> list[Figure]:
    figs: list[Figure] = []
    r = open_store(workdir / "b1-replica.db")
    ours: list[float] = []
    raw: list[float] = []
    ratios: list[float] = []
    try:
        record_sales(r, min(50, sales))  # warm up: docs loaded, first pages allocated
        raw_commits(workdir / "b1-raw.db", min(50, sales))
        done = 0
        for _ in range(rounds):
            a = record_sales(r, sales, done)
            done += sales
            b = raw_commits(workdir / "b1-raw.db", sales)
            ours.append(a)
            raw.append(b)
            ratios.append(a / b)
    finally:
        r.close()
    ratio = statistics.median(ratios)
    wal = wal_per_sale.measure(min(200, max(sales, 20)))
    emit(
        Figure(
            "1-durable-sale",
            "record_sale (synchronous=FULL)",
            statistics.median(ours),
            "sales/s",
            baseline=statistics.median(raw),
            baseline_name="raw sqlite3 1-row commit, WAL+FULL",
            ratio=ratio,
            target=">= 0.8",
            met=ratio >= 0.8,
            extra={
                "rounds": rounds,
                "sales_per_round": sales,
                "round_ratios": [round(x, 3) for x in ratios],
                "wal_bytes_per_sale": round(wal.pop("bytes")),
                "wal_pages_per_sale": round(sum(wal.values()), 1),
            },
        ),
        figs,
    )
    return figs
