"""7. The ownership gate: what checking every update costs the relay.

Every update a store sends is parsed item by item and checked against the
ownership rule (``tiendasync.relay.ownership.check_update``) before the relay
applies it.  Baseline, measured in the same run on the same updates: what the
relay did per update before the rule, a plain parse of the update plus the
pycrdt apply it always does.  The workload is a till's live stream: each
1-line sale is one update to its sales document and one to its stock
document.  Rounds alternate the two so the machine's noise hits both.

End to end (``end_to_end``): K light stores stream sales through a real relay
subprocess to durable storage and a follower (benchmark 3b's workload), once
through ``tiendasync relay`` and once through ``benchmarks.ungated_relay``
(the same relay with the gate taken out), alternating per round: sales/s
with the gate against sales/s without it, same run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pycrdt

from tiendasync.crdt.counter import PNCounter
from tiendasync.crdt.ledger import Ledger
from tiendasync.model.docnames import parse_doc
from tiendasync.model.sales import new_sale_id
from tiendasync.protocol.yjs_update import parse_update
from tiendasync.relay.ownership import Writer, check_update

from .b3_light import light_stream
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


def end_to_end(
    workdir: Path, *, k: int, sales: int, rounds: int, timeout: float = 120.0
) -> dict[str, Any]:
    """Sales/s through the relay with and without the gate, median of ``rounds`` each."""
    runs: dict[str, list[dict[str, Any]]] = {"gated": [], "ungated": []}
    modules = {"gated": "tiendasync", "ungated": "benchmarks.ungated_relay"}
    for i in range(rounds):
        order = ("ungated", "gated") if i % 2 else ("gated", "ungated")
        for which in order:
            result = light_stream(
                workdir / f"b7-e2e-{i}-{which}",
                k,
                max(1, sales // k),
                timeout,
                module=modules[which],
            )
            if not result["complete"]:
                raise RuntimeError(f"{which} relay did not take every sale: {result}")
            runs[which].append(result)

    def median(which: str) -> float:
        rates = sorted(r["sales_per_s"] for r in runs[which])
        return float(rates[len(rates) // 2])

    return {
        "gated": median("gated"),
        "ungated": median("ungated"),
        "k": k,
        "sales": max(1, sales // k) * k,
        "rounds": rounds,
        "per_round": {w: [round(r["sales_per_s"], 1) for r in rs] for w, rs in runs.items()},
    }


def run(
    *,
    sales: int,
    rounds: int,
    workdir: Path | None = None,
    e2e: dict[str, Any] | None = None,
    sink: list[Figure] | None = None,
) -> list[Figure]:
    """The per-update figure; with ``workdir`` and ``e2e`` (``k``, ``sales``,
    ``rounds``) also the end-to-end sales/s figure."""
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
    if workdir is not None and e2e is not None:
        through = end_to_end(workdir, **e2e)
        figs.append(
            Figure(
                "7-gate",
                f"K={through['k']} sales/s through the relay with the ownership gate",
                through["gated"],
                "sales/s",
                baseline=through["ungated"],
                baseline_name="the same relay with the gate taken out (benchmarks.ungated_relay)",
                ratio=through["gated"] / through["ungated"],
                extra=through,
            )
        )
    for fig in figs:
        emit(fig, sink)
    return figs


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory(prefix="tiendasync-b7-") as tmp:
        run(sales=2000, rounds=5, workdir=Path(tmp), e2e={"k": 10, "sales": 3000, "rounds": 3})
