"""Stock: one PN-counter per (location, SKU).

Every movement is a delta, never an overwrite, so movements made at the same
time in different stores all count.  A stocktake (``count``) is turned into
the delta between what was counted and what this replica saw at that moment,
so a sale made elsewhere meanwhile is not erased when the two merge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from tiendasync.crdt import PNCounter
from tiendasync.crdt.keys import paused_gc
from tiendasync.errors import InvalidArgument
from tiendasync.model.docnames import stock_doc
from tiendasync.model.names import check_name, check_safe_int
from tiendasync.store.boundary import public_api
from tiendasync.store.core import ReplicaCore, WriteSpec

__all__ = ["Inventory", "StockMovement"]


@dataclass(frozen=True)
class StockMovement:
    """What one inventory call did."""

    sku: str
    location: str
    delta: int
    stock: int
    warnings: tuple[str, ...] = field(default=())


@public_api
class Inventory:
    """``replica.inventory``: receipts, adjustments, stocktakes, transfers."""

    def __init__(self, core: ReplicaCore) -> None:
        self._core = core

    # -- reading ---------------------------------------------------------------

    def stock(self, sku: str, location: str | None = None) -> int:
        """Units of ``sku`` at ``location`` (default: this replica's)."""
        check_name(sku, "SKU")
        with self._core.locked():
            loc = self._location(location)
            return self._counter(loc).value(sku)

    def levels(self, location: str | None = None) -> dict[str, int]:
        """Every SKU with stock history at ``location`` and its units."""
        with self._core.locked():
            return dict(sorted(self._counter(self._location(location)).items()))

    def locations(self) -> list[str]:
        """Every known location."""
        with self._core.locked():
            return sorted(self._core.known_locations())

    # -- writing ---------------------------------------------------------------

    def receive(
        self, sku: str, quantity: int, *, location: str | None = None, reason: str | None = None
    ) -> StockMovement:
        """Goods arrived: add ``quantity`` (> 0) units."""
        check_safe_int(quantity, "quantity", positive=True)
        return self._move("receive", sku, quantity, location, reason or "receipt")

    def receive_many(
        self,
        quantities: Mapping[str, int] | Iterable[tuple[str, int]],
        *,
        location: str | None = None,
        reason: str | None = None,
    ) -> int:
        """Goods arrived for many SKUs at once: one durable write (bulk import, deliveries).

        ``quantities``: ``{sku: units}`` or ``[(sku, units), ...]`` with units > 0
        (the same SKU twice adds up).  All are checked before anything is
        written.  Returns the number of SKUs changed.
        """
        if isinstance(quantities, (str, bytes)) or not isinstance(quantities, Iterable):
            raise InvalidArgument(f"quantities must be {{sku: units}} or pairs, got {quantities!r}")
        with paused_gc():
            return self._receive_many(quantities, location, reason)

    def _receive_many(
        self,
        quantities: Mapping[str, int] | Iterable[tuple[str, int]],
        location: str | None,
        reason: str | None,
    ) -> int:
        items = list(quantities.items() if isinstance(quantities, Mapping) else quantities)
        totals: dict[str, int] = {}
        for n, item in enumerate(items, start=1):
            if not isinstance(item, tuple) or len(item) != 2:
                raise InvalidArgument(f"item {n} must be (sku, quantity)")
            sku = check_name(item[0], f"SKU of item {n}")
            totals[sku] = totals.get(sku, 0) + check_safe_int(
                item[1], f"quantity of item {n}", positive=True
            )
        if not totals:
            return 0
        with self._core.locked():
            loc = self._location(location)

            mutate = self._adding([(loc, totals)])
            self._core.local_write(
                WriteSpec(
                    "receive",
                    "stock",
                    f"receive {len(totals)} SKU(s), {sum(totals.values())} units at {loc} "
                    f"({reason or 'receipt'})",
                ),
                mutate,
            )
            return len(totals)

    def adjust(
        self, sku: str, delta: int, *, reason: str, location: str | None = None
    ) -> StockMovement:
        """Correct stock by ``delta`` (non-zero; negative for breakage, theft...)."""
        check_safe_int(delta, "delta")
        if delta == 0:
            raise InvalidArgument("an adjustment of 0 units does nothing; give a non-zero delta")
        if not isinstance(reason, str) or not reason.strip():
            raise InvalidArgument("an adjustment needs a reason (e.g. 'broken')")
        return self._move("adjust", sku, delta, location, reason)

    def count(self, sku: str, counted: int, *, location: str | None = None) -> StockMovement:
        """Stocktake: we counted ``counted`` units (>= 0) right now.

        Writes the difference with the stock this replica sees now; sales
        made concurrently elsewhere still count after merging.
        """
        check_safe_int(counted, "counted quantity")
        if counted < 0:
            raise InvalidArgument(f"a counted quantity cannot be negative, got {counted}")
        check_name(sku, "SKU")
        with self._core.locked():
            loc = self._location(location)
            delta = counted - self._counter(loc).value(sku)
            return self._move("count", sku, delta, loc, f"stocktake: counted {counted}")

    def count_many(
        self,
        levels: Mapping[str, int] | Iterable[tuple[str, int]],
        *,
        location: str | None = None,
    ) -> dict[str, int]:
        """Stocktake of many SKUs at once: one durable write (a stock CSV import).

        ``levels``: ``{sku: counted}`` or pairs, counted >= 0; a SKU may
        appear once.  All are checked before anything is written.  Like
        :meth:`count`, each SKU gets the delta between what was counted and
        what this replica sees now, so counting the same levels again writes
        nothing.  Returns ``{sku: delta}`` of the SKUs that changed.
        """
        if isinstance(levels, (str, bytes)) or not isinstance(levels, Iterable):
            raise InvalidArgument(f"levels must be {{sku: counted}} or pairs, got {levels!r}")
        items = list(levels.items() if isinstance(levels, Mapping) else levels)
        counted: dict[str, int] = {}
        for n, item in enumerate(items, start=1):
            if not isinstance(item, tuple) or len(item) != 2:
                raise InvalidArgument(f"item {n} must be (sku, counted)")
            sku = check_name(item[0], f"SKU of item {n}")
            units = check_safe_int(item[1], f"counted quantity of item {n}")
            if units < 0:
                raise InvalidArgument(f"a counted quantity cannot be negative, got {units}")
            if sku in counted:
                raise InvalidArgument(f"SKU {sku} is counted twice (item {n})")
            counted[sku] = units
        with self._core.locked():
            loc = self._location(location)
            current = self._counter(loc)
            deltas = {sku: units - current.value(sku) for sku, units in counted.items()}
            deltas = {sku: delta for sku, delta in deltas.items() if delta != 0}
            if not deltas:
                return {}

            mutate = self._adding([(loc, deltas)])
            self._core.local_write(
                WriteSpec(
                    "count",
                    "stock",
                    f"stocktake of {len(counted)} SKU(s) at {loc}: {len(deltas)} changed",
                ),
                mutate,
            )
            return deltas

    def transfer(
        self,
        sku: str,
        quantity: int,
        *,
        to_location: str,
        from_location: str | None = None,
    ) -> StockMovement:
        """Move ``quantity`` units between two locations in one atomic write."""
        check_name(sku, "SKU")
        check_safe_int(quantity, "quantity", positive=True)
        with self._core.locked():
            src = self._location(from_location)
            dst = self._location(to_location)
            if src == dst:
                raise InvalidArgument(f"cannot transfer from {src!r} to itself")
            warnings = self._product_warnings(sku)

            mutate = self._adding([(src, {sku: -quantity}), (dst, {sku: quantity})])
            self._core.local_write(
                WriteSpec(
                    "transfer", "stock", f"transfer {quantity} x {sku}: {src} -> {dst}", ref=sku
                ),
                mutate,
            )
            after = self._counter(src).value(sku)
            if after < 0:
                warnings.append(f"stock of {sku} at {src} is now {after}")
            return StockMovement(sku, src, -quantity, after, tuple(warnings))

    # -- helpers ---------------------------------------------------------------

    def _move(
        self, kind: str, sku: str, delta: int, location: str | None, reason: str
    ) -> StockMovement:
        check_name(sku, "SKU")
        with self._core.locked():
            loc = self._location(location)
            warnings = self._product_warnings(sku)
            if delta != 0:
                mutate = self._adding([(loc, {sku: delta})])
                self._core.local_write(
                    WriteSpec(
                        kind, "stock", f"{kind} {delta:+d} x {sku} at {loc} ({reason})", ref=sku
                    ),
                    mutate,
                )
            after = self._counter(loc).value(sku)
            if after < 0:
                warnings.append(f"stock of {sku} at {loc} is now {after}")
            return StockMovement(sku, loc, delta, after, tuple(warnings))

    def _adding(self, changes: Iterable[tuple[str, Mapping[str, int]]]) -> Callable[[], None]:
        """The mutation adding each ``{sku: delta}`` to its location's stock counters."""

        def mutate() -> None:
            for loc, deltas in changes:
                self._core.docs.doc(stock_doc(loc))
                self._counter(loc).add_many(deltas)

        return mutate

    def _counter(self, location: str) -> PNCounter:
        return self._core.counter(location)

    def _location(self, location: str | None) -> str:
        return self._core.resolve_location(location)

    def _product_warnings(self, sku: str) -> list[str]:
        product = self._core.catalog().get(sku)
        return [] if product is not None else [f"{sku} is not a product in the catalog"]
