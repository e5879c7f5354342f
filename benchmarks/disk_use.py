"""Disk use per sale, in a store's replica file and in the relay's files.

    python -m benchmarks.disk_use [--sales 5000] [--products 500] [--every 100]

Starts a real relay process (``tiendasync relay``) in a temporary directory,
opens one store replica with a catalog of ``--products`` products, records
``--sales`` two-line sales (each taking stock out) and syncs every
``--every`` sales, as a till that is online most of the time would.  It
prints the bytes per sale in the store's file and in the relay's files
(``relay.db`` and the central replicas), each after a WAL checkpoint, and
what that means per year for a few sales-per-day figures.  docs/operations.md
quotes its output.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tiendasync import Replica


def _size(path: Path) -> int:
    """Bytes of a SQLite file (after a checkpoint) or of every file under a directory."""
    if path.is_dir():
        return sum(_size(p) for p in path.rglob("*.db"))
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(
        p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
    )


def _tables(path: Path) -> dict[str, int]:
    """Bytes per table (with its indexes) of a SQLite file, from the ``dbstat`` table."""
    with sqlite3.connect(path) as conn:
        try:
            rows = conn.execute(
                "SELECT coalesce(m.tbl_name, s.name), sum(s.pgsize) FROM dbstat s "
                "LEFT JOIN sqlite_master m ON m.name = s.name GROUP BY 1 ORDER BY 2 DESC"
            ).fetchall()
        except sqlite3.OperationalError:  # SQLite built without dbstat
            return {}
    return {str(name): int(size) for name, size in rows}


def _relay_sizes(home: Path) -> tuple[int, int]:
    return _size(home / "relay.db"), _size(home / "relay.db.central")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=5000)
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--every", type=int, default=100, help="sync every N sales")
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="tiendasync-disk-"))
    cli = [sys.executable, "-m", "tiendasync"]
    token = subprocess.run(
        [*cli, "relay", "token", "add", "--db", str(home / "relay.db"), "--tenant", "acme",
         "--replica", "tienda-1"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    log_path = home / "relay.log"
    with log_path.open("w") as log:
        relay = subprocess.Popen(
            [*cli, "relay", "--db", str(home / "relay.db"), "--host", "127.0.0.1", "--port", "0",
             "--admin-port", "0"],
            stderr=log,
        )  # fmt: skip
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None:
            if relay.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the relay did not start:\n{log_path.read_text()}")
            found = re.search(r"listening on (ws://\S+)", log_path.read_text())
            url = found.group(1) if found else None
            time.sleep(0.05)
        rng = random.Random(7)
        store_db = home / "tienda-1.db"
        with Replica.open(store_db, tenant="acme", replica_id="tienda-1", location="tienda-1") as r:
            skus = [f"SKU-{n:05d}" for n in range(args.products)]
            r.catalog.put_many(
                {s: {"name": f"Product {s}", "price_cents": rng.randint(50, 5000)} for s in skus}
            )
            r.inventory.receive_many({s: 10_000 for s in skus})
            r.sync_now(url, token=token)
            store0, (relay0, central0) = _size(store_db), _relay_sizes(home)
            tables0 = _tables(store_db)
            for n in range(1, args.sales + 1):
                r.record_sale([(rng.choice(skus), rng.randint(1, 3)), (rng.choice(skus), 1)])
                if n % args.every == 0:
                    r.sync_now(url, token=token)
            r.sync_now(url, token=token)
        time.sleep(1.5)  # the relay stores applied updates in batches; let the last one land
        store1, (relay1, central1) = _size(store_db), _relay_sizes(home)
        tables1 = _tables(store_db)
    finally:
        relay.terminate()
        relay.wait(10)
    per_sale = {
        "store replica": (store1 - store0) / args.sales,
        "relay.db": (relay1 - relay0) / args.sales,
        "relay central replicas": (central1 - central0) / args.sales,
    }
    print(f"{args.sales} two-line sales, {args.products} products, a sync every {args.every}:")
    for what, b in per_sale.items():
        print(f"  {what:24s} {b:7.0f} bytes per sale")
    grown = {t: tables1[t] - tables0.get(t, 0) for t in tables1}
    top = sorted(grown.items(), key=lambda kv: -kv[1])[:4]
    print("  store replica by table: " + ", ".join(f"{t} {b / args.sales:.0f}" for t, b in top))
    print("per year (365 days), store replica / relay.db + central, per store:")
    for per_day in (200, 1000, 5000):
        year = per_day * 365
        store_mb = per_sale["store replica"] * year / 1e6
        relay_mb = (per_sale["relay.db"] + per_sale["relay central replicas"]) * year / 1e6
        print(f"  {per_day:5d} sales/day: {store_mb:8.0f} MB / {relay_mb:8.0f} MB")
    for p in sorted(home.rglob("*")):
        if p.is_file():
            p.unlink()
    for p in sorted(home.rglob("*"), reverse=True):
        p.rmdir()
    home.rmdir()
    os.sync()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
