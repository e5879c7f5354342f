"""Business invariants: merged state in, violations out.  Pure: no I/O.

Merging never needs a person; only a merged state that breaks a business
rule does.  An invariant looks at one *key* — a (location, SKU) pair — of
the merged state and says whether it holds.  The relay evaluates the keys
each applied update touched (never a full scan) and is authoritative; a
replica evaluates the same rules locally to warn at once.

Built in: :class:`NonNegativeStock` and :class:`ReferentialIntegrity`.  An
application adds its own with :func:`invariant` (a decorator) or any object
with ``name`` and ``check(state, location, sku)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "FunctionInvariant",
    "Invariant",
    "NonNegativeStock",
    "ReferentialIntegrity",
    "SaleRef",
    "StateView",
    "Violation",
    "default_invariants",
    "evaluate",
    "invariant",
]


@dataclass(frozen=True)
class SaleRef:
    """A live (not voided, not remapped) sale line on a key."""

    sale_id: str
    replica_id: str
    quantity: int
    unit_price_cents: int
    at_ms: int


class StateView(Protocol):
    """Read access to merged state that invariants need (relay and replica both give it)."""

    def stock(self, location: str, sku: str) -> int: ...

    def product(self, sku: str) -> dict[str, Any] | None: ...

    def sale_lines(self, location: str, sku: str) -> list[SaleRef]: ...

    def location(self, name: str) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Violation:
    """One broken rule on one key."""

    invariant: str
    location: str
    sku: str
    observed: int | None
    message: str
    severity: int = 1
    contributors: tuple[SaleRef, ...] = field(default=())

    @property
    def key(self) -> str:
        return f"{self.invariant}|{self.location}|{self.sku}"


class Invariant(Protocol):
    """A rule over one (location, SKU) key of the merged state."""

    name: str
    #: Data types whose changes can break it ("stock", "sales", "catalog").
    watches: tuple[str, ...]

    def check(self, state: StateView, location: str, sku: str) -> Violation | None: ...


def _oversold(lines: list[SaleRef], short: int) -> tuple[SaleRef, ...]:
    """The sales that competed for the last units.

    Walking back from the newest sale, take sales until they account for
    more than the ``short`` missing units: the ones that oversold plus the
    one that took the last unit really there (in the classic case, two
    stores each selling the last unit, both sales).
    """
    picked: list[SaleRef] = []
    covered = 0
    for ref in sorted(lines, key=lambda r: (r.at_ms, r.sale_id), reverse=True):
        if covered > short:
            break
        picked.append(ref)
        covered += ref.quantity
    return tuple(sorted(picked, key=lambda r: (r.at_ms, r.sale_id)))


class NonNegativeStock:
    """Stock of a (location, SKU) must not be below zero.

    Negative stock is fine at locations named in ``allow_negative`` and at
    locations whose record says so (``replica.locations.put("web",
    {"allow_negative": True})``: replicated, so every store and the relay
    agree), e.g. a location that sells on backorder.
    """

    name: str = "non_negative_stock"
    watches: tuple[str, ...] = ("stock", "sales")

    def __init__(self, allow_negative: Iterable[str] = ()) -> None:
        self.allow_negative = frozenset(allow_negative)

    def check(self, state: StateView, location: str, sku: str) -> Violation | None:
        if location in self.allow_negative:
            return None
        units = state.stock(location, sku)
        if units >= 0 or (state.location(location) or {}).get("allow_negative") is True:
            return None
        if units >= 0:
            return None
        lines = state.sale_lines(location, sku)
        contributors = _oversold(lines, -units)
        price = max((r.unit_price_cents for r in contributors), default=0)
        at_stake = -units * price
        return Violation(
            self.name,
            location,
            sku,
            units,
            f"stock of {sku} at {location} is {units}",
            severity=-units + at_stake // 1000,
            contributors=contributors,
        )


class ReferentialIntegrity:
    """Sales and stock may only reference products that exist and are not deleted."""

    name: str = "unknown_product"
    watches: tuple[str, ...] = ("stock", "sales", "catalog")

    def check(self, state: StateView, location: str, sku: str) -> Violation | None:
        if state.product(sku) is not None:
            return None
        lines = state.sale_lines(location, sku)
        units = state.stock(location, sku)
        if not lines and units == 0:
            return None
        return Violation(
            self.name,
            location,
            sku,
            units,
            f"{sku} is not a product (unknown or deleted) but {len(lines)} sale(s) and "
            f"stock {units} at {location} reference it",
            severity=max(1, sum(r.quantity for r in lines)),
            contributors=tuple(lines),
        )


@dataclass(frozen=True)
class FunctionInvariant:
    """An app-defined invariant made from a plain function."""

    name: str
    func: Callable[[StateView, str, str], str | None]
    watches: tuple[str, ...] = ("stock", "sales", "catalog")

    def check(self, state: StateView, location: str, sku: str) -> Violation | None:
        message = self.func(state, location, sku)
        if message is None:
            return None
        return Violation(self.name, location, sku, state.stock(location, sku), message)


def invariant(
    name: str, *, watches: tuple[str, ...] = ("stock", "sales", "catalog")
) -> Callable[[Callable[[StateView, str, str], str | None]], FunctionInvariant]:
    """Decorator: ``@invariant("max_stock")`` over ``f(state, location, sku) -> message|None``."""

    def wrap(func: Callable[[StateView, str, str], str | None]) -> FunctionInvariant:
        return FunctionInvariant(name, func, watches)

    return wrap


def default_invariants(allow_negative: Iterable[str] = ()) -> list[Invariant]:
    return [NonNegativeStock(allow_negative), ReferentialIntegrity()]


def evaluate(
    invariants: Iterable[Invariant],
    state: StateView,
    keys: Iterable[tuple[str, str]],
    data_types: Iterable[str] | None = None,
) -> tuple[dict[str, Violation], set[str]]:
    """Check ``keys`` (location, sku) against every invariant watching ``data_types``.

    Returns (violations by key, keys that were checked and hold).
    """
    types = None if data_types is None else set(data_types)
    violated: dict[str, Violation] = {}
    holding: set[str] = set()
    for inv in invariants:
        if types is not None and not types.intersection(inv.watches):
            continue
        for location, sku in keys:
            found = inv.check(state, location, sku)
            key = f"{inv.name}|{location}|{sku}"
            if found is None:
                holding.add(key)
            else:
                violated[key] = found
    return violated, holding
