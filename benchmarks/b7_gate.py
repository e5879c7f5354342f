"""7. The ownership gate: what checking every update costs the relay.

Every update a store sends is parsed item by item and checked against the
ownership rule (``tiendasync.relay.ownership.check_update``) before the relay
applies it.  Baseline, measured in the same run on the same updates: what the
relay did per update before the rule, a plain parse of the update plus the
pycrdt apply it always does.  The workload is a till's live stream: each
1-line sale is one update to its sales document and one to its stock
document.  Rounds alternate the two so the machine's noise hits both.
"""

from __future__ import annotations

import time
from typing import Any

import pycrdt

from tiendasync.crdt.counter import PNCounter
from tiendasync.crdt.ledger import Ledger
from tiendasync.model.docnames import parse_doc
from tiendasync.model.sales import new_sale_id
from tiendasync.protocol.yjs_update import parse_update
from tiendasync.relay.ownership import Writer, check_update

from .common import Figure, emit

CLIENT = 7_000_001
#: 2026-01-15 12:00 UTC: the month the sales document is named for.
WALL_MS = 1_768_478_400_000
SALES_DOC = "sales/tienda-1/2026-01"
STOCK_DOC = "stock/tienda-1"


def _stream(sales: int) -> list[tuple[str, bytes]]:
    """The updates a till streams for ``sales`` one-line sales, in order."""
    docs = {SALES_DOC: pycrdt.Doc(client_id=CLIENT), STOCK_DOC: pycrdt.Doc(client_id=CLIENT)}
    out: list[tuple[str, bytes]] = []
    for name, doc in docs.items():
        doc.observe(lambda event, name=name: out.append((name, bytes(event.update))))
    for n in range(sales):
        sku = f"SKU-{n % 20:03d}"
        sale_id = new_sale_id(WALL_MS + n, n, CLIENT)
        with docs[SALES_DOC].transaction():
            Ledger(docs[SALES_DOC]).add(sale_id, {"by": "caja-1", "l": [[sku, 1, 450]]})
        with docs[STOCK_DOC].transaction():
            PNCounter(docs[STOCK_DOC]).add(sku, -1)
    return out


def _apply_all(updates: list[tuple[str, bytes]], *, gated: bool) -> float:
    """Seconds to take every update as the relay does (with or without the gate)."""
    writer = Writer(frozenset({CLIENT}), "caja-1", "tienda-1")
    targets = {SALES_DOC: pycrdt.Doc(), STOCK_DOC: pycrdt.Doc()}
    names = {name: parse_doc(name) for name in targets}
    clocks: dict[str, dict[int, int]] = {name: {} for name in targets}
    now_ms = WALL_MS + 10 * 60 * 1000
    started = time.perf_counter()
    for name, update in updates:
        parsed = parse_update(update, items=gated)
        if gated:
            refusal = check_update(
                names[name],
                parsed,
                writer,
                known=clocks[name],
                deleted=lambda r: False,
                now_ms=now_ms,
            )
            if refusal is not None:
                raise AssertionError(f"an honest update was refused: {refusal.reason}")
        targets[name].apply_update(update)
        for r in parsed.structs:
            clocks[name][r.client] = max(clocks[name].get(r.client, 0), r.end)
    return time.perf_counter() - started


def run(*, sales: int, rounds: int, sink: list[Figure] | None = None) -> list[Figure]:
    updates = _stream(sales)
    plain: list[float] = []
    gated: list[float] = []
    for _ in range(rounds):
        plain.append(_apply_all(updates, gated=False))
        gated.append(_apply_all(updates, gated=True))
    plain_s, gated_s = sorted(plain)[len(plain) // 2], sorted(gated)[len(gated) // 2]
    per = 1e6 / len(updates)
    extra: dict[str, Any] = {"updates": len(updates), "rounds": rounds}
    figs = [
        Figure(
            "7-gate",
            "take one update with the ownership check",
            gated_s * per,
            "µs/update",
            baseline=plain_s * per,
            baseline_name="parse + apply, no check",
            ratio=gated_s / plain_s,
            extra=extra,
        )
    ]
    for fig in figs:
        emit(fig, sink)
    return figs


if __name__ == "__main__":
    run(sales=2000, rounds=5)
