"""What each committed update changed: index rows and the keys to review.

After every local write and every remote merge, :class:`ChangeIndex` reads
what the CRDT views report as changed, updates the sales index (inside the
same transaction) and remembers the (location, SKU) keys, products and
conflicts that changed, until someone drains them (the relay's review, the
conflict mirror on the queue).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import repeat

from tiendasync.crdt import Ledger, LWWMap, PNCounter
from tiendasync.crdt.keys import SEP
from tiendasync.model.docnames import CATALOG, CONFLICTS, parse_doc
from tiendasync.model.sales import Sale, sale_record_problem
from tiendasync.store.docset import DocSet
from tiendasync.store.storage import ReplicaStore

__all__ = ["ChangeIndex", "Key"]

#: A (location, SKU) pair: what invariants are evaluated on.
Key = tuple[str, str]


class ChangeIndex:
    """Derived rows and change sets of one replica (used under the replica's lock)."""

    def __init__(self, storage: ReplicaStore, docs: DocSet) -> None:
        self._storage = storage
        self._docs = docs
        self.touched: set[Key] = set()
        self.changed_products: set[str] = set()
        self.changed_conflicts: set[str] = set()
        #: Collect the resolution requests that changed (the relay's writer does).
        self.collect_requests = False
        self.changed_requests: set[tuple[str, str]] = set()
        #: Sales this process is writing, by id: indexed from here rather than read
        #: back from the ledger and validated again (see :meth:`forget_pending`).
        self.known_sales: dict[str, Sale] = {}

    def index(self, doc_names: Iterable[str]) -> None:
        """Index what changed in ``doc_names`` (call inside the write's transaction)."""
        for doc in dict.fromkeys(doc_names):
            name = parse_doc(doc)
            if name.data_type == "stock" and name.location is not None:
                counter = self._docs.view(doc, PNCounter)
                changed = counter.drain_changed()
                self.touched.update(zip(repeat(name.location), changed, strict=False))
            elif name.data_type == "sales" and name.location is not None:
                ledger = self._docs.view(doc, Ledger)
                for key in ledger.drain_added():
                    self.touched.update(self._index_ledger_key(doc, name.location, ledger, key))
            elif name.data_type == "catalog":
                changed = self._docs.view(CATALOG, LWWMap).drain_changed()
                self.changed_products |= changed
                self.touched.update(self._stocked_or_sold(changed))
            elif name.data_type == "conflicts":
                self.changed_conflicts.update(self._docs.view(CONFLICTS, LWWMap).drain_changed())
            elif name.data_type == "resolutions" and name.location is not None:
                changed = self._docs.view(doc, LWWMap).drain_changed()
                if self.collect_requests:
                    self.changed_requests.update((name.location, cid) for cid in changed)
            else:
                self._docs.view(doc, LWWMap).drain_changed()

    def moved(self, doc: str) -> None:
        """``doc`` was replaced by its next generation (docs/generations.md), which no
        CRDT event reports: count every entity it holds as changed, so the review,
        the conflict mirror and the resolution requests look at all of them."""
        name = parse_doc(doc)
        if name.data_type == "stock" and name.location is not None:
            counter = self._docs.view(doc, PNCounter)
            counter.drain_changed()
            self.touched.update((name.location, sku) for sku, _ in counter.items())
            return
        view = self._docs.view(doc, LWWMap)
        view.drain_changed()
        records = set(view.records())
        if name.data_type == "catalog":
            self.changed_products |= records
            self.touched.update(self._stocked_or_sold(records))
        elif name.data_type == "conflicts":
            self.changed_conflicts |= records
        elif name.data_type == "resolutions" and name.location and self.collect_requests:
            self.changed_requests.update((name.location, cid) for cid in records)

    def _index_ledger_key(self, doc: str, location: str, ledger: Ledger, key: str) -> set[Key]:
        sale_id, _, rest = key.partition(SEP)
        tag = rest.partition(SEP)[0]
        sale = self.known_sales.pop(sale_id, None) if not tag else None
        if sale is None or sale.location != location:
            record = ledger.get(sale_id)
            if record is None or sale_record_problem(sale_id, record) is not None:
                return set()  # not a sale (a foreign value): skipped
            sale = Sale.from_record(sale_id, record, location=location)
        sales = self._storage.sales
        if not tag:
            sales.add(
                sale_id,
                doc=doc,
                location=location,
                replica=sale.replica_id,
                created_at_ms=sale.created_at_ms,
                lines=[(ln.sku, ln.quantity, ln.unit_price_cents) for ln in sale.lines],
            )
        elif tag == "void":
            sales.mark_void(sale_id)
        elif tag.startswith("remap:"):
            from_sku = tag[len("remap:") :]
            to_sku = str((ledger.get(key) or {}).get("to"))
            sales.mark_remapped(sale_id, from_sku, to_sku)
            return {(location, from_sku), (location, to_sku)}
        return {(location, ln.sku) for ln in sale.lines}

    def _stocked_or_sold(self, skus: set[str]) -> set[Key]:
        """``(location, sku)`` of each of ``skus`` with stock or sales at a location.

        One pass over each stock document's entities, not one per SKU: an
        import changes thousands of products at once.  An entity whose only slots
        are not valid counts as stocked (it gets reviewed, which is harmless).
        """
        found = self._storage.sales.sold_keys(skus) if skus else set()
        for doc in self._docs.names():
            name = parse_doc(doc)
            if name.data_type == "stock" and name.location is not None:
                stocked = skus.intersection(self._docs.view(doc, PNCounter).keyed())
                found.update(zip(repeat(name.location), stocked, strict=False))
        return found

    def forget_pending(self) -> None:
        """A write failed: the sales it was writing are not to be indexed from memory."""
        self.known_sales.clear()

    def drain_touched(self) -> set[Key]:
        touched, self.touched = self.touched, set()
        return touched

    def drain_changed_products(self) -> set[str]:
        changed, self.changed_products = self.changed_products, set()
        return changed

    def drain_changed_requests(self) -> set[tuple[str, str]]:
        """``(location, conflict id)`` of the resolution requests that changed."""
        changed, self.changed_requests = self.changed_requests, set()
        return changed

    def drain_changed_conflicts(self) -> set[str]:
        changed, self.changed_conflicts = self.changed_conflicts, set()
        return changed
