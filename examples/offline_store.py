"""A store selling with no network at all.

Run it:  python examples/offline_store.py

Everything below is stored durably in one SQLite file before each call
returns; the queue keeps every local write until a relay acknowledges it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tiendasync import Replica


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "tienda-1.db"
        with Replica.open(db, tenant="acme", replica_id="tienda-1", location="tienda-1") as r:
            # The product catalog (prices in cents).
            r.catalog.put("CAFE-500", {"name": "Café 500 g", "price_cents": 450})
            r.catalog.put("LECHE-1L", {"name": "Leche 1 l", "price_cents": 120})

            # Goods arrive.
            r.inventory.receive("CAFE-500", 10)
            r.inventory.receive("LECHE-1L", 24)

            # Customers buy: each sale and its stock movement is one durable write.
            tickets = [
                r.record_sale([("CAFE-500", 2), ("LECHE-1L", 6)]),
                r.record_sale([("LECHE-1L", 1)]),
                r.record_sale([("CAFE-500", 9)]),  # more than we have: recorded and flagged
            ]
            for sale in tickets:
                print(f"sale {sale.id}: {sale.total_cents / 100:.2f} EUR")
                for warning in sale.warnings:
                    print(f"  ! {warning}")

            print("\nstock at tienda-1:")
            for sku, units in r.inventory.levels().items():
                print(f"  {sku:<10} {units:>4}")

            print("\nwaiting to be sent (newest first):")
            for entry in r.queue.list():
                print(f"  #{entry.id:<3} {entry.status:<8} {entry.summary}")

            status = r.status
            print(
                f"\nstatus: {status.state}, {status.pending} pending, "
                f"{status.open_conflicts} open conflicts"
            )


if __name__ == "__main__":
    main()
