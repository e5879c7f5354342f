"""Sales: immutable tickets, one ledger document per location and month.

Recording a sale and taking its units out of stock is one local atomic write.
A sale is never refused for lack of stock (the goods are already in the
customer's hands): it is recorded and flagged, and the relay turns the
negative stock into a conflict for an administrator.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tiendasync.crdt import MAX_SAFE_INTEGER, Ledger, LWWMap, PNCounter, check_name, check_safe_int
from tiendasync.errors import InvalidArgument
from tiendasync.model.docnames import CATALOG, location_of, stock_doc

if TYPE_CHECKING:
    from tiendasync.store.replica import Replica

__all__ = [
    "MAX_SALE_LINES",
    "Sale",
    "SaleLine",
    "Sales",
    "new_sale_id",
    "parse_lines",
    "sale_time_ms",
]

MAX_SALE_LINES = 1000


@dataclass(frozen=True)
class SaleLine:
    sku: str
    quantity: int
    unit_price_cents: int

    @property
    def total_cents(self) -> int:
        return self.quantity * self.unit_price_cents


@dataclass(frozen=True)
class Sale:
    """A recorded ticket.  ``warnings`` says what needs review (never blocks)."""

    id: str
    location: str
    replica_id: str
    created_at_ms: int
    lines: tuple[SaleLine, ...]
    voided: bool = False
    negative_stock: tuple[str, ...] = field(default=())
    unknown_skus: tuple[str, ...] = field(default=())
    #: Messages of app-defined invariants this sale breaks (checked locally).
    notes: tuple[str, ...] = field(default=())

    @property
    def total_cents(self) -> int:
        return sum(line.total_cents for line in self.lines)

    @property
    def warnings(self) -> tuple[str, ...]:
        out = [
            f"stock of {sku} went negative: sale recorded, it will be reviewed"
            for sku in self.negative_stock
        ]
        out += [
            f"{sku} is not a product in the catalog: sale recorded, it will be reviewed"
            for sku in self.unknown_skus
        ]
        out += [f"{note}: sale recorded, it will be reviewed" for note in self.notes]
        return tuple(out)

    def to_record(self) -> dict[str, Any]:
        """The immutable JSON record stored in the ledger.

        Kept small because it crosses the network: the time is in the id and
        the location in the document's name.
        """
        return {
            "by": self.replica_id,
            "l": [[ln.sku, ln.quantity, ln.unit_price_cents] for ln in self.lines],
        }

    @classmethod
    def from_record(
        cls, sale_id: str, record: dict[str, Any], *, location: str, voided: bool = False
    ) -> Sale:
        lines = tuple(SaleLine(str(s), int(q), int(p)) for s, q, p in record["l"])
        return cls(
            sale_id, location, str(record["by"]), sale_time_ms(sale_id), lines, voided=voided
        )


def new_sale_id(wall_ms: int, counter: int, client_id: int) -> str:
    """A unique id that sorts by time: ``<wall ms, 11 hex>-<counter>-<client id>``.

    The client id (unique per replica incarnation) keeps ids unique even when
    a replica restored from a backup reissues a clock reading.
    """
    return f"{wall_ms:011x}-{counter:x}-{client_id:x}"


def sale_time_ms(sale_id: str) -> int:
    """The wall-clock milliseconds encoded in a sale id (0 if it has none)."""
    try:
        return int(sale_id[:11], 16)
    except ValueError:
        return 0


def parse_lines(lines: Iterable[Any], price_of: Any) -> tuple[SaleLine, ...]:
    """Validate sale lines: ``(sku, qty)``, ``(sku, qty, unit_price_cents)`` or dicts."""
    if isinstance(lines, (str, bytes)) or not isinstance(lines, Iterable):
        raise InvalidArgument("a sale needs a list of lines like [('CAFE-500', 2)]")
    out: list[SaleLine] = []
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, dict):
            sku, qty, price = raw.get("sku"), raw.get("quantity"), raw.get("unit_price_cents")
        elif isinstance(raw, Sequence) and not isinstance(raw, str) and len(raw) in (2, 3):
            sku, qty = raw[0], raw[1]
            price = raw[2] if len(raw) == 3 else None
        else:
            raise InvalidArgument(
                f"sale line {number} must be (sku, quantity) or (sku, quantity, unit_price_cents)"
            )
        check_name(sku, f"SKU on line {number}")
        quantity = check_safe_int(qty, f"quantity on line {number}", positive=True)
        if price is None:
            price = price_of(sku)
        cents = check_safe_int(price, f"unit price (cents) on line {number}")
        if cents < 0:
            raise InvalidArgument(f"unit price on line {number} cannot be negative")
        if quantity * cents > MAX_SAFE_INTEGER:
            raise InvalidArgument(f"line {number} total is too large (limit is 2**53 - 1 cents)")
        out.append(SaleLine(str(sku), quantity, cents))
    if not out:
        raise InvalidArgument("a sale needs at least one line")
    if len(out) > MAX_SALE_LINES:
        raise InvalidArgument(f"a sale may have at most {MAX_SALE_LINES} lines")
    return tuple(out)


class Sales:
    """``replica.sales``: read recorded sales."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def get(self, sale_id: str) -> Sale | None:
        """The sale with this id, or ``None``."""
        check_name(sale_id, "sale id")
        with self._replica._lock:
            self._replica._check_open()
            row = self._replica._store.conn.execute(
                "SELECT doc FROM sales WHERE id = ?", (sale_id,)
            ).fetchone()
            if row is None:
                return None
            ledger = self._replica._docs.view(str(row[0]), Ledger)
            record = ledger.get(sale_id)
            if record is None:
                return None
            return Sale.from_record(
                sale_id,
                record,
                location=location_of(str(row[0])) or "",
                voided=ledger.annotation(sale_id, "void") is not None,
            )

    def list(self, *, location: str | None = None, limit: int = 100) -> list[Sale]:
        """Most recent sales first (all locations unless ``location``)."""
        check_safe_int(limit, "limit", positive=True)
        with self._replica._lock:
            self._replica._check_open()
            sql = "SELECT id FROM sales"
            params: list[Any] = []
            if location is not None:
                sql += " WHERE location = ?"
                params.append(location)
            sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
            params.append(limit)
            ids = [str(i) for (i,) in self._replica._store.conn.execute(sql, params)]
        return [s for s in (self.get(i) for i in ids) if s is not None]

    def count(self, *, location: str | None = None) -> int:
        with self._replica._lock:
            self._replica._check_open()
            if location is None:
                row = self._replica._store.conn.execute("SELECT COUNT(*) FROM sales").fetchone()
            else:
                row = self._replica._store.conn.execute(
                    "SELECT COUNT(*) FROM sales WHERE location = ?", (location,)
                ).fetchone()
            return int(row[0])

    def void(self, sale_ids: Iterable[str], *, reason: str = "void") -> builtins.list[Sale]:
        """Void sales: mark them void and put their units back in stock (one write).

        The sale records stay (history is never edited); a void annotation and
        the restocking replicate like any other write.  Already-voided sales
        are skipped.
        """
        replica = self._replica
        ids = [
            check_name(i, "sale id")
            for i in ([sale_ids] if isinstance(sale_ids, str) else list(sale_ids))
        ]
        if not ids:
            raise InvalidArgument("give at least one sale id to void")
        with replica._lock:
            sales = []
            for sale_id in ids:
                sale = self.get(sale_id)
                if sale is None:
                    raise InvalidArgument(f"no sale {sale_id!r}")
                if not sale.voided:
                    sales.append(sale)
            if not sales:
                return []

            def mutate() -> None:
                for sale in sales:
                    name = self._doc_of(sale.id)
                    with replica._docs.doc(name).transaction(origin="local"):
                        replica._docs.view(name, Ledger).annotate(
                            sale.id, "void", {"reason": reason, "by": replica.replica_id}
                        )
                    stock = stock_doc(sale.location)
                    with replica._docs.doc(stock).transaction(origin="local"):
                        counter = replica._docs.view(stock, PNCounter)
                        for line in sale.lines:
                            counter.add(line.sku, line.quantity)

            replica._local_write(
                "void",
                "sales",
                f"void {', '.join(s.id for s in sales)} ({reason})",
                mutate,
                ref=sales[0].id,
            )
            return [s for s in (self.get(sale.id) for sale in sales) if s is not None]

    def remap(self, sale_id: str, from_sku: str, to_sku: str) -> Sale:
        """Re-point a sale's lines from ``from_sku`` to ``to_sku`` (moving the stock too)."""
        replica = self._replica
        check_name(from_sku, "SKU")
        check_name(to_sku, "SKU")
        with replica._lock:
            sale = self.get(sale_id)
            if sale is None:
                raise InvalidArgument(f"no sale {sale_id!r}")
            qty = sum(ln.quantity for ln in sale.lines if ln.sku == from_sku)
            if qty == 0:
                raise InvalidArgument(f"sale {sale_id} has no line for {from_sku}")

            def mutate() -> None:
                name = self._doc_of(sale_id)
                with replica._docs.doc(name).transaction(origin="local"):
                    replica._docs.view(name, Ledger).annotate(
                        sale_id, f"remap:{from_sku}", {"to": to_sku, "by": replica.replica_id}
                    )
                stock = stock_doc(sale.location)
                with replica._docs.doc(stock).transaction(origin="local"):
                    counter = replica._docs.view(stock, PNCounter)
                    counter.add(from_sku, qty)
                    counter.add(to_sku, -qty)

            replica._local_write(
                "remap", "sales", f"remap {sale_id}: {from_sku} -> {to_sku}", mutate, ref=sale_id
            )
            return sale

    def _doc_of(self, sale_id: str) -> str:
        row = self._replica._store.conn.execute(
            "SELECT doc FROM sales WHERE id = ?", (sale_id,)
        ).fetchone()
        if row is None:
            raise InvalidArgument(f"no sale {sale_id!r}")
        return str(row[0])


def catalog_price(replica: Replica, sku: str) -> int:
    """Price of ``sku`` from the catalog, 0 when unknown (the sale gets flagged)."""
    product = replica._docs.view(CATALOG, LWWMap).get(sku)
    price = (product or {}).get("price_cents", 0)
    return price if isinstance(price, int) and not isinstance(price, bool) else 0
