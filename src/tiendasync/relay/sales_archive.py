"""Every month of sales, read from the relay's store of record.

Replicas keep only their last ``sales_months`` months of sales documents
(see :mod:`tiendasync.store.retention`); the relay keeps every month.  This
module reads them back, straight from the store of record (not from the
central writer's memory), for the admin API (``GET /api/sync/sales/``) and
``tiendasync relay export-sales``.  A stored record that is not a valid sale
(written by an older or hostile peer) is left out and counted, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tiendasync.crdt import Ledger
from tiendasync.errors import InvalidArgument
from tiendasync.model.docnames import is_period, parse_doc
from tiendasync.model.sales import Sale, sale_record_problem
from tiendasync.relay.docs import replay
from tiendasync.relay.storage import RelayStore

__all__ = ["SalesMonth", "read_month", "sale_json", "sales_months"]


@dataclass(frozen=True)
class SalesMonth:
    """One sales document: a location's sales in one month."""

    doc: str
    location: str
    period: str


def sales_months(
    store: RelayStore,
    tenant: str,
    *,
    location: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> list[SalesMonth]:
    """The tenant's sales documents, by location then month, within ``since``..``until``
    (``YYYY-MM``, both included; ``None``: open)."""
    for bound, option in ((since, "since"), (until, "until")):
        if bound is not None and not is_period(bound):
            raise InvalidArgument(f"{option} must be a month YYYY-MM, got {bound!r}")
    months = []
    for doc in store.state_vectors(tenant):
        if not doc.startswith("sales/"):
            continue
        name = parse_doc(doc)
        assert name.location is not None and name.period is not None
        if location is not None and name.location != location:
            continue
        if (since is not None and name.period < since) or (
            until is not None and name.period > until
        ):
            continue
        months.append(SalesMonth(doc, name.location, name.period))
    return sorted(months, key=lambda m: (m.location, m.period))


def read_month(store: RelayStore, tenant: str, month: SalesMonth) -> tuple[list[Sale], int]:
    """The month's sales (oldest first, voids applied) and how many stored records
    were left out as invalid."""
    doc, _ = replay(store.load_doc(tenant, month.doc), tenant, month.doc, origin="export")
    ledger = Ledger(doc)
    sales: list[Sale] = []
    invalid = 0
    for sale_id in sorted(ledger.ids()):
        record = ledger.get(sale_id)
        if record is None or sale_record_problem(sale_id, record) is not None:
            invalid += 1
            continue
        voided = ledger.annotation(sale_id, "void") is not None
        sales.append(Sale.from_record(sale_id, record, location=month.location, voided=voided))
    return sales, invalid


def sale_json(sale: Sale) -> dict[str, Any]:
    """A sale as the admin API and the export show it."""
    return {
        "id": sale.id,
        "location": sale.location,
        "replica": sale.replica_id,
        "at_ms": sale.created_at_ms,
        "voided": sale.voided,
        "total_cents": sale.total_cents,
        "lines": [
            {"sku": ln.sku, "quantity": ln.quantity, "unit_price_cents": ln.unit_price_cents}
            for ln in sale.lines
        ],
    }
