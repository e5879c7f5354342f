"""WAL bytes one durable ``record_sale`` writes, and which B-trees they belong to.

A replica with a catalog and stock records warm-up sales, truncates its WAL,
turns off automatic checkpoints and records ``--sales`` more 1-line sales.
The WAL then holds one frame per page each commit wrote; each frame's page
number is mapped to its table or index through SQLite's ``dbstat``.  Run:
``python -m benchmarks.wal_per_sale [--sales N]``.  A size, not a speed: it
does not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import collections
import os
import struct
import tempfile
from pathlib import Path

from tiendasync import Replica

WAL_HEADER = 32
FRAME_HEADER = 24


def wal_pages(path: str) -> list[int]:
    """The page number of every frame in the WAL file at ``path``."""
    data = Path(path).read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    pages, offset = [], WAL_HEADER
    while offset + FRAME_HEADER + page_size <= len(data):
        pages.append(struct.unpack(">I", data[offset : offset + 4])[0])
        offset += FRAME_HEADER + page_size
    return pages


def measure(sales: int) -> dict[str, float]:
    """``{"bytes": per sale, "<table or index>": pages per sale, ...}``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "store.db")
        with Replica.open(path, tenant="acme", replica_id="t", location="s") as r:
            r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
            r.inventory.receive("CAFE", 10 * sales + 1000)
            for _ in range(50):
                r.record_sale([("CAFE", 1)])
            conn = r.core.storage.conn
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            for _ in range(sales):
                r.record_sale([("CAFE", 1)])
            pages = wal_pages(f"{path}-wal")
            owner = {page: name for name, page in conn.execute("SELECT name, pageno FROM dbstat")}
            result = {"bytes": os.path.getsize(f"{path}-wal") / sales}
            counts = collections.Counter(owner.get(page, "?") for page in pages)
            result.update({name: n / sales for name, n in counts.most_common()})
            return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sales", type=int, default=200)
    args = parser.parse_args()
    result = measure(args.sales)
    print(f"WAL per durable sale: {result.pop('bytes'):,.0f} bytes")
    for name, pages in result.items():
        print(f"  {name:34s} {pages:5.2f} pages")


if __name__ == "__main__":
    main()
