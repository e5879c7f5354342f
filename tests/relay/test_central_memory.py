"""The relay's writer holds what is active, not the tenant's history (issue 14 part 4).

A till sells for a year of months; every update it makes is merged into the
relay's central writer and reviewed, as :class:`~tiendasync.relay.reviews.ReviewWork`
does.  After each review the writer keeps no sales document of a past month
and at most ``max_sales_docs`` of the current one, and the review still sees
what it needs: negative stock with the sales behind it, a sale of a product
that does not exist.  Real SQLite files; the clocks are injected.
"""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from tiendasync import Replica
from tiendasync.model.docnames import parse_doc
from tiendasync.relay.central import CentralWriter

DAY_MS = 86_400_000
JAN_2026 = 1_767_225_600_000  # 2026-01-01T00:00Z


def _sales_loaded(writer: CentralWriter) -> list[str]:
    return sorted(d for d in writer.replica.core.loaded_docs() if parse_doc(d).data_type == "sales")


def test_the_writer_unloads_sales_documents_after_each_review(tmp_path: Path) -> None:
    now = {"ms": JAN_2026}
    till = Replica.open(
        tmp_path / "till.db",
        tenant="acme",
        replica_id="till",
        location="shop",
        durability="normal",
        wall_clock=lambda: now["ms"],
    )
    central = Replica.open(
        tmp_path / "central.db",
        tenant="acme",
        replica_id="relay",
        location="central",
        durability="normal",
        wall_clock=lambda: now["ms"] + 1,
    )
    published: list[tuple[str, bytes]] = []
    writer = CentralWriter(central, lambda doc, data: published.append((doc, data)))
    writer.max_sales_docs = 2
    sent: list[tuple[str, bytes]] = []
    till.on_local_update(sent.extend)

    def relay_round() -> None:
        writer.merge_many(sent)
        sent.clear()
        writer.review()

    try:
        till.catalog.put_many({f"SKU{i}": {"name": f"P{i}", "price_cents": 100} for i in range(5)})
        till.inventory.receive_many({f"SKU{i}": 1_000 for i in range(5)})
        relay_round()
        held: list[weakref.ref[object]] = []
        for month in range(12):
            now["ms"] = JAN_2026 + month * 31 * DAY_MS
            for i in range(5):
                till.record_sale([(f"SKU{i}", 1)])
            relay_round()
            loaded = _sales_loaded(writer)
            period = f"2026-{month + 1:02d}"
            # only the current month's sales document stays (the bound is 2)
            assert loaded == [f"sales/shop/{period}"], loaded
            # per-document state of the core goes with the document: bounded by
            # what is loaded, not by the months gone by
            core = writer.replica.core
            assert set(core._log_counts) <= set(core.loaded_docs()), core._log_counts
            held.append(weakref.ref(writer.replica.core.docs.doc(loaded[0])))
        # Past months' documents are freed, not only forgotten (pycrdt observers
        # keep a document alive until they are removed).
        gc.collect()
        assert [r() is None for r in held] == [True] * 11 + [False]
        # a late sale of a past month (an offline till): merged, then unloaded again
        late = Replica.open(tmp_path / "till.db", wall_clock=lambda: JAN_2026 + 40 * DAY_MS)
        late.on_local_update(sent.extend)
        sale = late.record_sale([("SKU0", 1)])
        late.close()
        relay_round()
        assert _sales_loaded(writer) == ["sales/shop/2026-12"]
        assert central.sales.get(sale.id) is not None
        assert central.sales.count() == 12 * 5 + 1

        # The review still has what it needs, with the sales documents unloaded.
        till.record_sale([("SKU1", 2_000)])  # oversold: stock -1013
        till.record_sale([("GHOST", 1)])  # a product nobody created
        relay_round()
        opened = {(c.invariant, c.sku): c for c in writer.conflicts(status="open")}
        oversold = opened[("non_negative_stock", "SKU1")]
        assert oversold.observed == 1_000 - 12 - 2_000
        assert len(oversold.sales) == 1  # the sale that took the stock below zero
        ghost = opened[("unknown_product", "GHOST")]
        assert len(ghost.sales) == 1
        assert len(_sales_loaded(writer)) <= writer.max_sales_docs
        assert published  # the conflict records went to the relay
    finally:
        till.close()
        writer.close()


def test_recent_documents_of_the_current_month_stay_loaded_up_to_the_bound(
    tmp_path: Path,
) -> None:
    now = JAN_2026 + 5 * DAY_MS
    central = Replica.open(
        tmp_path / "central.db",
        tenant="acme",
        replica_id="relay",
        location="central",
        wall_clock=lambda: now,
    )
    writer = CentralWriter(central, lambda doc, data: None)
    writer.max_sales_docs = 3
    try:
        for n in range(6):
            shop = Replica.open(
                tmp_path / f"shop{n}.db",
                tenant="acme",
                replica_id=f"shop{n}",
                location=f"shop{n}",
                wall_clock=lambda: now,
            )
            sent: list[tuple[str, bytes]] = []
            shop.on_local_update(sent.extend)
            shop.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
            shop.record_sale([("CAFE", 1)])
            shop.close()
            writer.merge_many(sent)
            writer.review()
        # the three merged last, newest first in the writer's order
        assert _sales_loaded(writer) == [f"sales/shop{n}/2026-01" for n in (3, 4, 5)]
        assert writer.replica.inventory.stock("CAFE", location="shop0") == -1  # still read
    finally:
        writer.close()
