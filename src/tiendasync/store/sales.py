"""Sales: immutable tickets, one ledger document per location and month.

Recording a sale and taking its units out of stock is one local atomic write.
A sale is never refused for lack of stock (the goods are already in the
customer's hands): it is recorded and flagged, and the relay turns the
negative stock into a conflict for an administrator.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from tiendasync.errors import InvalidArgument
from tiendasync.model.docnames import location_of, sales_doc, stock_doc
from tiendasync.model.names import check_name, check_safe_int
from tiendasync.model.sales import (
    MAX_SALE_LINES,
    Sale,
    SaleLine,
    new_sale_id,
    parse_lines,
    sale_record_problem,
    sale_time_ms,
)
from tiendasync.store.boundary import public_api
from tiendasync.store.core import ReplicaCore, WriteSpec

if TYPE_CHECKING:
    from tiendasync.store.conflicts import Rules

__all__ = [
    "MAX_SALE_LINES",
    "Sale",
    "SaleLine",
    "Sales",
    "new_sale_id",
    "parse_lines",
    "sale_time_ms",
]


@public_api
class Sales:
    """``replica.sales``: record and read sales; void and remap them."""

    def __init__(self, core: ReplicaCore, rules: Rules) -> None:
        self._core = core
        self._rules = rules

    def record(self, lines: Iterable[Any], *, location: str | None = None) -> Sale:
        """Record a sale and take its units out of stock, in one durable write.

        See :meth:`tiendasync.Replica.record_sale`.
        """
        core = self._core
        with core.locked():
            loc = core.resolve_location(location)
            catalog = core.catalog()
            products: dict[str, dict[str, Any] | None] = {}

            def product(sku: str) -> dict[str, Any] | None:
                if sku not in products:  # one catalog read per SKU and sale
                    products[sku] = catalog.get(sku)
                return products[sku]

            parsed = parse_lines(lines, lambda sku: _price_of(product(sku)))
            unknown = tuple(sorted({ln.sku for ln in parsed if product(ln.sku) is None}))
            ts = core.hlc.now()
            sale = Sale(
                new_sale_id(ts.wall_ms, ts.counter, core.client_id),
                loc,
                core.replica_id,
                ts.wall_ms,
                parsed,
            )
            ledger_name = sales_doc(loc, ts.wall_ms)
            per_sku: dict[str, int] = {}
            for ln in parsed:
                per_sku[ln.sku] = per_sku.get(ln.sku, 0) + ln.quantity

            def mutate() -> None:
                with core.docs.doc(ledger_name).transaction(origin="local"):
                    core.ledger(ledger_name).add(sale.id, sale.to_record())
                with core.docs.doc(stock_doc(loc)).transaction(origin="local"):
                    counter = core.counter(loc)
                    for sku, qty in per_sku.items():
                        counter.add(sku, -qty)

            summary = f"sale {sale.id}: {len(parsed)} line(s), {sale.total_cents} cents at {loc}"
            core.changes.known_sales[sale.id] = sale  # indexed without reading it back
            try:
                core.local_write(WriteSpec("sale", "sales", summary, ref=sale.id), mutate)
            finally:
                core.changes.known_sales.pop(sale.id, None)
            counter = core.counter(loc)
            negative = (
                ()
                if self._rules.allows_negative(loc)
                else tuple(sorted(s for s in per_sku if counter.value(s) < 0))
            )
            notes = self._rules.app_notes((loc, sku) for sku in per_sku)
            return replace(sale, negative_stock=negative, unknown_skus=unknown, notes=notes)

    def get(self, sale_id: str) -> Sale | None:
        """The sale with this id, or ``None``."""
        check_name(sale_id, "sale id")
        core = self._core
        with core.locked():
            doc = core.storage.sales.doc_of(sale_id)
            if doc is None:
                return None
            ledger = core.ledger(doc)
            record = ledger.get(sale_id)
            if record is None or sale_record_problem(sale_id, record) is not None:
                return None
            return Sale.from_record(
                sale_id,
                record,
                location=location_of(doc) or "",
                voided=ledger.annotation(sale_id, "void") is not None,
            )

    def list(self, *, location: str | None = None, limit: int = 100) -> list[Sale]:
        """Most recent sales first (all locations unless ``location``)."""
        check_safe_int(limit, "limit", positive=True)
        with self._core.locked():
            ids = self._core.storage.sales.recent_ids(location=location, limit=limit)
        return [s for s in (self.get(i) for i in ids) if s is not None]

    def count(self, *, location: str | None = None) -> int:
        with self._core.locked():
            return self._core.storage.sales.count(location=location)

    def void(self, sale_ids: Iterable[str], *, reason: str = "void") -> builtins.list[Sale]:
        """Void sales: mark them void and put their units back in stock (one write).

        The sale records stay (history is never edited); a void annotation and
        the restocking replicate like any other write.  Already-voided sales
        are skipped.
        """
        core = self._core
        if not isinstance(sale_ids, (str, Iterable)) or isinstance(sale_ids, bytes):
            raise InvalidArgument(f"give a sale id or a list of them, got {sale_ids!r}")
        ids = [
            check_name(i, "sale id")
            for i in ([sale_ids] if isinstance(sale_ids, str) else list(sale_ids))
        ]
        if not ids:
            raise InvalidArgument("give at least one sale id to void")
        with core.locked():
            sales = [sale for sale in map(self._existing, ids) if not sale.voided]
            if not sales:
                return []

            def mutate() -> None:
                for sale in sales:
                    name = self._doc_of(sale.id)
                    with core.docs.doc(name).transaction(origin="local"):
                        core.ledger(name).annotate(
                            sale.id, "void", {"reason": reason, "by": core.replica_id}
                        )
                    with core.docs.doc(stock_doc(sale.location)).transaction(origin="local"):
                        counter = core.counter(sale.location)
                        for line in sale.lines:
                            counter.add(line.sku, line.quantity)

            summary = f"void {', '.join(s.id for s in sales)} ({reason})"
            core.local_write(WriteSpec("void", "sales", summary, ref=sales[0].id), mutate)
            return [s for s in (self.get(sale.id) for sale in sales) if s is not None]

    def remap(self, sale_id: str, from_sku: str, to_sku: str) -> Sale:
        """Re-point a sale's lines from ``from_sku`` to ``to_sku`` (moving the stock too)."""
        core = self._core
        check_name(from_sku, "SKU")
        check_name(to_sku, "SKU")
        with core.locked():
            sale = self._existing(sale_id)
            qty = sum(ln.quantity for ln in sale.lines if ln.sku == from_sku)
            if qty == 0:
                raise InvalidArgument(f"sale {sale_id} has no line for {from_sku}")

            def mutate() -> None:
                name = self._doc_of(sale_id)
                with core.docs.doc(name).transaction(origin="local"):
                    core.ledger(name).annotate(
                        sale_id, f"remap:{from_sku}", {"to": to_sku, "by": core.replica_id}
                    )
                with core.docs.doc(stock_doc(sale.location)).transaction(origin="local"):
                    counter = core.counter(sale.location)
                    counter.add(from_sku, qty)
                    counter.add(to_sku, -qty)

            summary = f"remap {sale_id}: {from_sku} -> {to_sku}"
            core.local_write(WriteSpec("remap", "sales", summary, ref=sale_id), mutate)
            return sale

    def _existing(self, sale_id: str) -> Sale:
        sale = self.get(sale_id)
        if sale is None:
            raise InvalidArgument(f"no sale {sale_id!r}")
        return sale

    def _doc_of(self, sale_id: str) -> str:
        doc = self._core.storage.sales.doc_of(sale_id)
        if doc is None:
            raise InvalidArgument(f"no sale {sale_id!r}")
        return doc


def _price_of(product: dict[str, Any] | None) -> int:
    """The catalog price of a product, 0 when unknown (the sale gets flagged)."""
    price = (product or {}).get("price_cents", 0)
    return price if isinstance(price, int) and not isinstance(price, bool) else 0
