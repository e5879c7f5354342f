"""A tiny terminal point of sale that keeps selling offline.

    python examples/pos.py --db caja-1.db --tenant acme --replica caja-1 \\
        --location tienda-1 --relay ws://127.0.0.1:8765 --token TOKEN

Type ``help`` for the commands.  With ``--json`` every command answers one
JSON line (this is how ``examples/demo.py`` drives two of them).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from typing import Any

from tiendasync import Replica, TiendaSyncError

HELP = """commands:
  product SKU PRICE_CENTS NAME...   create or edit a product
  receive SKU QTY                   goods arrived
  sell SKU QTY [SKU QTY ...]        record a sale (works offline)
  stock [SKU]                       stock here (all SKUs without SKU)
  online | offline                  start / stop background sync
  wait-synced [SECONDS]             wait until nothing is pending
  status | queue | conflicts | log  what the store knows
  snapshot                          catalog, stock and sales count (for comparisons)
  quit"""


def snapshot(r: Replica) -> dict[str, Any]:
    return {
        "catalog": dict(r.catalog.items()),
        "stock": {loc: r.inventory.levels(loc) for loc in r.inventory.locations()},
        "sales": r.sales.count(),
        "voided": sorted(s.id for s in r.sales.list(limit=10_000) if s.voided),
        "conflicts": {c.id: c.status for c in r.conflicts.list(limit=10_000)},
    }


def run_command(r: Replica, words: list[str], relay: str | None, token: str | None) -> Any:
    cmd, args = words[0], words[1:]
    if cmd == "help":
        return HELP
    if cmd == "product":
        r.catalog.put(args[0], {"price_cents": int(args[1]), "name": " ".join(args[2:])})
        return r.catalog.get(args[0])
    if cmd == "receive":
        return r.inventory.receive(args[0], int(args[1])).stock
    if cmd == "sell":
        lines = [(args[i], int(args[i + 1])) for i in range(0, len(args), 2)]
        sale = r.record_sale(lines)
        return {"id": sale.id, "total_cents": sale.total_cents, "warnings": list(sale.warnings)}
    if cmd == "stock":
        return r.inventory.stock(args[0]) if args else r.inventory.levels()
    if cmd == "online":
        r.start_sync(relay, token=token)
        return "sync started"
    if cmd == "offline":
        r.stop_sync()
        return "offline: sales are kept locally"
    if cmd == "wait-synced":
        deadline = time.monotonic() + (float(args[0]) if args else 20.0)
        while time.monotonic() < deadline:
            status = r.status
            if status.pending == 0 and status.state == "online":
                return {"pending": 0}
            time.sleep(0.1)
        raise TiendaSyncError(f"still {r.status.pending} pending after waiting")
    if cmd == "status":
        s = r.status
        return {
            "state": s.state,
            "pending": s.pending,
            "open_conflicts": s.open_conflicts,
            "last_sync_at": s.last_sync_at,
        }
    if cmd == "queue":
        return [
            e.summary + f" [{e.status}{', conflict' if e.has_conflict else ''}]"
            for e in r.queue.list(limit=20)
        ]
    if cmd == "conflicts":
        return [c.to_dict() for c in r.conflicts.list()]
    if cmd == "log":
        return [
            f"{e.outcome}: sent {e.updates_sent}, received {e.updates_received}"
            for e in r.log.list(limit=10)
        ]
    if cmd == "snapshot":
        return snapshot(r)
    raise TiendaSyncError(f"unknown command {cmd!r} (type help)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--tenant")
    parser.add_argument("--replica")
    parser.add_argument("--location")
    parser.add_argument("--relay")
    parser.add_argument("--token")
    parser.add_argument("--json", action="store_true", help="answer one JSON line per command")
    args = parser.parse_args()
    with Replica.open(
        args.db, tenant=args.tenant, replica_id=args.replica, location=args.location
    ) as r:
        if not args.json:
            print(f"{r.replica_id} at {r.location}: ready (type help)")
        for line in sys.stdin:
            words = shlex.split(line)
            if not words:
                continue
            if words[0] == "quit":
                break
            try:
                result: Any = run_command(r, words, args.relay, args.token)
                ok = True
            except (TiendaSyncError, ValueError, IndexError) as exc:
                result, ok = str(exc), False
            if args.json:
                print(json.dumps({"ok": ok, "result": result}, default=str), flush=True)
            else:
                print(
                    result
                    if isinstance(result, str)
                    else json.dumps(result, indent=2, default=str),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
