"""Sale tickets as data: lines, the record stored in the ledger, sortable ids.

Pure: no documents, no storage.  :mod:`tiendasync.store.sales` records and
reads them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tiendasync.errors import InvalidArgument
from tiendasync.model.names import MAX_SAFE_INTEGER, check_name, check_safe_int

__all__ = [
    "MAX_SALE_LINES",
    "Sale",
    "SaleLine",
    "new_sale_id",
    "parse_lines",
    "sale_id_writer",
    "sale_record_problem",
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


def sale_id_writer(sale_id: str) -> int | None:
    """The client id a sale id carries (its writer), or ``None`` if it is not a sale id."""
    parts = sale_id.split("-")
    if len(parts) != 3 or len(parts[0]) != 11:
        return None
    try:
        int(parts[0], 16)
        int(parts[1], 16)
        writer = int(parts[2], 16)
    except ValueError:
        return None
    if f"{int(parts[0], 16):011x}-{int(parts[1], 16):x}-{writer:x}" != sale_id:
        return None  # not canonical: one sale, one spelling
    return writer


def _exact(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and 0 <= value <= MAX_SAFE_INTEGER else None


def sale_record_problem(sale_id: str, record: object) -> str | None:  # noqa: PLR0911  (first problem)
    """Why ``record`` is not a valid stored sale (``None`` if it is).

    Valid: ``{"by": replica id, "l": [[sku, quantity >= 1, unit price >= 0], ...]}``
    with 1 to :data:`MAX_SALE_LINES` lines, exact integers and line totals
    below 2**53, under a canonical sale id.
    """
    if sale_id_writer(sale_id) is None:
        return f"{sale_id[:40]!r} is not a sale id"
    if not isinstance(record, dict) or set(record) != {"by", "l"}:
        return "a sale record has exactly the keys 'by' and 'l'"
    if not isinstance(record["by"], str) or not record["by"]:
        return "a sale's 'by' is a replica id"
    lines = record["l"]
    if not isinstance(lines, list) or not 1 <= len(lines) <= MAX_SALE_LINES:
        return f"a sale has 1 to {MAX_SALE_LINES} lines"
    for line in lines:
        if not isinstance(line, list) or len(line) != 3:
            return "a sale line is [sku, quantity, unit_price_cents]"
        sku, qty, price = line[0], _exact(line[1]), _exact(line[2])
        try:
            check_name(sku, "SKU")
        except InvalidArgument as exc:
            return str(exc)
        if qty is None or qty < 1 or price is None or qty * price > MAX_SAFE_INTEGER:
            return "a sale line has a quantity >= 1 and a unit price >= 0 (exact, below 2**53)"
    return None


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
