"""Long life: a till restarted daily for a simulated year, and a chain at the relay.

``python -m benchmarks.long_life [--days 365] [--sales-per-day 300] [--skus 2000]
[--stores 5] [--chain-sales-per-day 20] [--json out.json]``.  The fast default
(``--days 30``) runs in about a minute; ``--days 365`` is the year of issue 14.

* **Till** (no relay): each simulated day opens the replica (a new
  incarnation), records ``sales_per_day`` 1-2 line sales over ``skus``
  products and closes.  On day 1 and at the end of every 30-day month it
  reports, each next to its baseline in the same run: the stock document's
  encoded bytes vs a freshly seeded document with the same totals (what a
  generation rollover would leave), slots per counter (the first 50 SKUs),
  state-vector entries of the stock document, open time (open + first stock
  read) and time per sale (both vs day 1), and the replica file size.
* **Chain** (``--stores`` tills and a relay subprocess): each simulated day
  every till opens, sells ``chain_sales_per_day``, syncs once and closes;
  at each month's end the relay's RSS, vs its RSS after day 1.

Targets (issue 14, "Done when"): stock bytes within 2x of fresh, time per
sale within 1.2x of day one, the state vector bounded, the relay's memory
flat.  Until document generations land, the first three are expected missed.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import pycrdt

from tiendasync import Replica
from tiendasync.crdt.keys import ROOT, SEP
from tiendasync.model.docnames import stock_doc
from tiendasync.protocol.statevector import decode_state_vector

from .b6_state import _db_bytes, _rollover_bytes
from .common import TENANT, Figure, Relay, emit, table

DAY_S = 86_400
MONTH_DAYS = 30


def _sell_day(r: Replica, skus: list[str], sales: int, rng: random.Random) -> float:
    """Record ``sales`` sales; seconds per sale."""
    t0 = time.perf_counter()
    for _ in range(sales):
        lines = [(rng.choice(skus), rng.randint(1, 3)) for _ in range(rng.randint(1, 2))]
        r.record_sale(lines)
    return (time.perf_counter() - t0) / sales


def _stock_state(r: Replica, skus: list[str]) -> dict[str, float]:
    name = stock_doc(r.location)
    doc = r.core.docs.doc(name)
    root = doc.get(ROOT, type=pycrdt.Map)
    first = set(skus[:50])
    slots = sum(1 for key, _ in root.items() if key.rpartition(SEP)[0] in first)
    levels = {r.location: r.inventory.levels()}
    return {
        "stock_bytes": float(len(doc.get_update())),
        "fresh_bytes": float(_rollover_bytes(levels, writer=1)),
        "slots_per_counter": slots / len(first),
        "sv_entries": float(len(decode_state_vector(r.state_vector(name)))),
    }


def till_year(
    workdir: Path, *, days: int, sales_per_day: int, skus: int, seed: int = 14
) -> list[Figure]:
    rng = random.Random(seed)
    path = workdir / "till.db"
    names = [f"SKU{i:05d}" for i in range(skus)]
    start_ms = 1_767_225_600_000  # 2026-01-01: one calendar year of monthly sales docs
    day = 0

    t_start = time.perf_counter()

    def clock() -> int:  # the simulated day, plus real time elapsed (a run is << a day)
        return start_ms + day * DAY_S * 1000 + int((time.perf_counter() - t_start) * 1000)

    with Replica.open(
        path,
        tenant=TENANT,
        replica_id="till",
        location="shop",
        durability="normal",
        wall_clock=clock,
    ) as r:
        r.catalog.put_many({s: {"name": s, "price_cents": 100} for s in names})
        r.inventory.receive_many({s: 1_000_000 for s in names})
    figs: list[Figure] = []
    base: dict[str, float] = {}
    for day in range(1, days + 1):
        t0 = time.perf_counter()
        r = Replica.open(path, durability="normal", wall_clock=clock)
        r.inventory.stock(names[0])
        open_s = time.perf_counter() - t0
        try:
            per_sale = _sell_day(r, names, sales_per_day, rng)
            if day != 1 and day % MONTH_DAYS != 0 and day != days:
                continue
            state = _stock_state(r, names)
        finally:
            r.close()
        row = {**state, "open_s": open_s, "sale_s": per_sale, "file_bytes": _db_bytes(path)}
        if not base:
            base = row
        month = day // MONTH_DAYS
        extra = {"day": day, "month": month}
        for fig in (
            Figure(
                "long_life",
                f"stock doc bytes, day {day}",
                row["stock_bytes"],
                "bytes",
                row["fresh_bytes"],
                "freshly seeded, same totals",
                row["stock_bytes"] / row["fresh_bytes"],
                "<= 2x",
                row["stock_bytes"] <= 2 * row["fresh_bytes"],
                extra,
            ),
            Figure(
                "long_life",
                f"slots per counter, day {day}",
                row["slots_per_counter"],
                "slots",
                1.0,
                "one slot",
                row["slots_per_counter"],
                extra=extra,
            ),
            Figure(
                "long_life",
                f"state-vector entries, day {day}",
                row["sv_entries"],
                "entries",
                base["sv_entries"],
                "day 1",
                row["sv_entries"] / base["sv_entries"],
                "bounded",
                extra=extra,
            ),
            Figure(
                "long_life",
                f"open time, day {day}",
                row["open_s"] * 1000,
                "ms",
                base["open_s"] * 1000,
                "day 1",
                row["open_s"] / base["open_s"],
                extra=extra,
            ),
            Figure(
                "long_life",
                f"time per sale, day {day}",
                row["sale_s"] * 1000,
                "ms",
                base["sale_s"] * 1000,
                "day 1",
                row["sale_s"] / base["sale_s"],
                "<= 1.2x",
                row["sale_s"] <= 1.2 * base["sale_s"],
                extra,
            ),
            Figure(
                "long_life",
                f"replica file, day {day}",
                row["file_bytes"] / 1e6,
                "MB",
                base["file_bytes"] / 1e6,
                "day 1",
                row["file_bytes"] / base["file_bytes"],
                extra=extra,
            ),
        ):
            emit(fig, figs)
    return figs


def chain_year(
    workdir: Path, *, days: int, stores: int, sales_per_day: int, skus: int, seed: int = 15
) -> list[Figure]:
    rng = random.Random(seed)
    names = [f"SKU{i:05d}" for i in range(skus)]
    ids = [f"store-{i:02d}" for i in range(stores)]
    # Days in the past: the relay refuses writes dated after its own clock.
    start_ms = int((time.time() - (days + 2) * DAY_S) * 1000)
    day = 0

    t_start = time.perf_counter()

    def clock() -> int:
        return start_ms + day * DAY_S * 1000 + int((time.perf_counter() - t_start) * 1000)

    # The tills live in simulated days behind the relay's real clock: its own
    # writes (the central writer's) must not read as a clock error.
    drift: dict[str, Any] = {"max_clock_drift_ms": (days + 3) * DAY_S * 1000, "wall_clock": clock}
    figs: list[Figure] = []
    with Relay(workdir / "chain", "relay") as relay:
        tokens = relay.tokens(ids)
        for rid in ids:
            with Replica.open(
                workdir / f"{rid}.db",
                tenant=TENANT,
                replica_id=rid,
                location=rid,
                durability="normal",
                **drift,
            ) as r:
                if rid == ids[0]:
                    r.catalog.put_many({s: {"name": s, "price_cents": 100} for s in names})
                r.sync_now(relay.url, token=tokens[rid])
        for rid in ids:  # everyone has the catalog; each receives its stock
            with Replica.open(workdir / f"{rid}.db", **drift) as r:
                r.sync_now(relay.url, token=tokens[rid])
                r.inventory.receive_many({s: 1_000_000 for s in names[:200]})
                r.sync_now(relay.url, token=tokens[rid])
        base_kb = 0
        for day in range(1, days + 1):
            for rid in ids:
                with Replica.open(workdir / f"{rid}.db", **drift) as r:
                    _sell_day(r, names[:200], sales_per_day, rng)
                    r.sync_now(relay.url, token=tokens[rid])
            if day != 1 and day % MONTH_DAYS != 0 and day != days:
                continue
            rss, _ = relay.rss_kb()
            base_kb = base_kb or rss
            emit(
                Figure(
                    "long_life",
                    f"relay RSS, {stores} stores, day {day}",
                    rss / 1024,
                    "MiB",
                    base_kb / 1024,
                    "day 1",
                    rss / base_kb,
                    "flat",
                    extra={"day": day, "month": day // MONTH_DAYS},
                ),
                figs,
            )
    return figs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_life", description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--sales-per-day", type=int, default=300)
    parser.add_argument("--skus", type=int, default=2000)
    parser.add_argument("--stores", type=int, default=5)
    parser.add_argument("--chain-sales-per-day", type=int, default=20)
    parser.add_argument("--no-chain", action="store_true", help="only the till")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="long_life-") as tmp:
        wd = Path(tmp)
        figs = till_year(wd, days=args.days, sales_per_day=args.sales_per_day, skus=args.skus)
        if not args.no_chain:
            (wd / "chain").mkdir()
            figs += chain_year(
                wd,
                days=args.days,
                stores=args.stores,
                sales_per_day=args.chain_sales_per_day,
                skus=args.skus,
            )
    print(table(figs, "long life"))
    if args.json is not None:
        args.json.write_text(json.dumps([f.to_dict() for f in figs], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
