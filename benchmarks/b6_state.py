"""6. State size: per (location x SKU) counter, after many sales, before and after
an epoch rollover; relay memory per counter; replica open time with N SKUs.

* A replica records ``sales`` 1-line sales spread over ``locations`` x
  ``skus`` counters (offline, durability=normal).  Figures: the encoded
  size of the stock docs (what a new replica downloads) per counter, next
  to the size of the same counters seeded fresh (an epoch rollover: one
  ``[inc, dec]`` slot per counter, no history); the replica's database
  before and after ``Replica.compact()`` plus VACUUM.
* The replica then syncs to a relay subprocess: relay RSS growth per
  counter and per sale, next to the encoded size of the state it holds.
* Open time: ``Replica.open`` + the first catalog and stock read (which load
  the catalog and stock docs) on a replica with ``open_skus`` products in
  stock, next to reading the same rows from a plain SQLite table.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pycrdt

from tiendasync import Replica

from .common import TENANT, Figure, Relay, emit


def _db_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def _rollover_bytes(levels: dict[str, dict[str, int]], writer: int) -> int:
    """Encoded size of fresh stock docs seeded with the current totals."""
    total = 0
    for values in levels.values():
        doc: Any = pycrdt.Doc(client_id=writer)
        root = doc.get("root", type=pycrdt.Map)
        with doc.transaction():
            for sku, value in values.items():
                root[f"{sku}\x1f{writer}"] = [max(value, 0), max(-value, 0)]
        total += len(doc.get_update())
    return total


def state_size(workdir: Path, *, sales: int, locations: int, skus: int) -> list[Figure]:
    figs: list[Figure] = []
    wd = workdir / "b6"
    wd.mkdir(parents=True, exist_ok=True)
    path = wd / "state.db"
    r = Replica.open(path, tenant=TENANT, replica_id="hq", location="loc-00", durability="normal")
    locs = [f"loc-{i:02d}" for i in range(locations)]
    try:
        for loc in locs[1:]:
            r.locations.put(loc, {"name": loc})
        r.catalog.put_many(
            {f"SKU-{i:05d}": {"name": f"P{i}", "price_cents": 450} for i in range(skus)}
        )
        t0 = time.perf_counter()
        for n in range(sales):
            r.record_sale([(f"SKU-{(n // locations) % skus:05d}", 1)], location=locs[n % locations])
        t_sales = time.perf_counter() - t0
        stock_docs = [d for d in r.doc_names() if d.startswith("stock/")]
        sales_docs = [d for d in r.doc_names() if d.startswith("sales/")]
        stock_bytes = sum(len(r.diff(d)) for d in stock_docs)
        sales_bytes = sum(len(r.diff(d)) for d in sales_docs)
        counters = locations * skus
        levels = {loc: r.inventory.levels(loc) for loc in locs}
        rollover = _rollover_bytes(levels, r.client_id)
        before = _db_bytes(path)
        r.compact()
        conn = sqlite3.connect(str(path))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        conn.close()
        after = _db_bytes(path)
        extra: dict[str, Any] = {
            "sales": sales,
            "locations": locations,
            "skus": skus,
            "counters": counters,
            "record_sales_s": t_sales,
            "stock_doc_bytes": stock_bytes,
            "sales_doc_bytes": sales_bytes,
            "sales_doc_bytes_per_sale": sales_bytes / sales,
            "rollover_bytes": rollover,
            "replica_db_before_compact": before,
            "replica_db_after_compact_vacuum": after,
        }
        emit(
            Figure(
                "6-state",
                f"stock doc bytes per counter after {sales} sales",
                stock_bytes / counters,
                "B/counter",
                baseline=rollover / counters,
                baseline_name="epoch rollover (fresh doc seeded with totals)",
                ratio=stock_bytes / rollover,
                extra=extra,
            ),
            figs,
        )
        emit(
            Figure(
                "6-state",
                "replica DB bytes per sale, before/after compact+VACUUM",
                before / sales,
                "B/sale",
                baseline=after / sales,
                baseline_name="after compact + VACUUM",
                ratio=before / max(1, after),
                extra=extra,
            ),
            figs,
        )
        with Relay(wd) as relay:
            token = relay.token("hq")
            idle_kb = relay.rss_kb()[0]
            t0 = time.perf_counter()
            try:
                report = r.sync_now(relay.url, token=token, timeout=600)
            except Exception as exc:  # reported as a figure: it is a finding
                emit(
                    Figure(
                        "6-state",
                        "relay: catch-up of the whole state FAILED",
                        time.perf_counter() - t0,
                        "s",
                        extra={
                            **extra,
                            "error": f"{type(exc).__name__}: {exc}",
                            "relay_peak_kb": relay.rss_kb()[1],
                        },
                    ),
                    figs,
                )
                return figs
            t_sync = time.perf_counter() - t0
            loaded_kb = relay.rss_kb()[0]
    finally:
        r.close()
    extra.update(sync_s=t_sync, sync_bytes_sent=report.bytes_sent)
    delta_kb = max(0, loaded_kb - idle_kb)
    emit(
        Figure(
            "6-state",
            "relay RSS growth per counter (state of all sales loaded)",
            delta_kb * 1024 / counters,
            "B/counter",
            baseline=(stock_bytes + sales_bytes) / counters,
            baseline_name="encoded state (stock + sales docs) per counter",
            ratio=delta_kb * 1024 / max(1, stock_bytes + sales_bytes),
            extra={
                **extra,
                "relay_idle_kb": idle_kb,
                "relay_loaded_kb": loaded_kb,
                "relay_growth_per_sale_b": delta_kb * 1024 / sales,
            },
        ),
        figs,
    )
    return figs


def open_time(workdir: Path, replica_db: Path, raw_db: Path, skus: int) -> list[Figure]:
    """Open a replica with ``skus`` products in stock; read one product and its stock."""
    figs: list[Figure] = []
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        r = Replica.open(replica_db)
        try:
            product = r.catalog.get("SKU-000000")
            stock = r.inventory.stock("SKU-000000")
            elapsed = time.perf_counter() - t0
            levels = len(r.inventory.levels())
        finally:
            r.close()
        times.append(elapsed)
    t_raw = []
    for _ in range(3):
        t0 = time.perf_counter()
        conn = sqlite3.connect(str(raw_db))
        rows = {
            s: (n, p, q)
            for s, n, p, q in conn.execute("SELECT sku, name, price_cents, stock FROM products")
        }
        conn.close()
        t_raw.append(time.perf_counter() - t0)
    best, raw = min(times), min(t_raw)
    emit(
        Figure(
            "6-state",
            f"replica open + first read, {skus} SKUs in stock",
            best,
            "s",
            baseline=raw,
            baseline_name="read the same rows from a SQLite table",
            ratio=best / raw,
            target="~1 s",
            met=best <= 1.5,
            extra={
                "runs_s": times,
                "skus_in_stock": levels,
                "raw_rows": len(rows),
                "product": json.dumps(product),
                "stock": stock,
                "db_bytes": os.path.getsize(replica_db),
            },
        ),
        figs,
    )
    return figs
