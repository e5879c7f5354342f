"""The product catalog: one last-writer-wins record per SKU.

Fields are merged one by one: if one store changes the price while another
changes the name, both changes survive.  When two stores change the *same*
field at the same time, the later write (by hybrid logical clock) wins.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from tiendasync.crdt import LWWMap, check_name, check_safe_int
from tiendasync.errors import InvalidArgument
from tiendasync.model.docnames import CATALOG

if TYPE_CHECKING:
    from tiendasync.store.replica import Replica

__all__ = ["Catalog"]

#: Fields with a fixed meaning; any other JSON field is allowed.
_INTEGER_FIELDS = ("price_cents", "cost_cents")


def validate_product(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check a product dict; raise InvalidArgument with a clear message."""
    if not isinstance(fields, Mapping):
        raise InvalidArgument(f"product fields must be a dict, got {type(fields).__name__}")
    if not fields:
        raise InvalidArgument("a product needs at least one field (e.g. name, price_cents)")
    out: dict[str, Any] = {}
    for name, value in fields.items():
        check_name(name, "field name")
        if name in _INTEGER_FIELDS:
            check_safe_int(value, name)
            if value < 0:
                raise InvalidArgument(f"{name} must not be negative, got {value}")
        out[name] = value
    return out


class Catalog:
    """``replica.catalog``: products keyed by SKU."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def _map(self) -> LWWMap:
        return self._replica._docs.view(CATALOG, LWWMap)

    def get(self, sku: str) -> dict[str, Any] | None:
        """The product's fields, or ``None`` if it does not exist or was deleted."""
        check_name(sku, "SKU")
        with self._replica._lock:
            self._replica._check_open()
            return self._map().get(sku)

    def __contains__(self, sku: object) -> bool:
        return isinstance(sku, str) and self.get(sku) is not None

    def skus(self) -> list[str]:
        """Every live SKU, sorted."""
        with self._replica._lock:
            self._replica._check_open()
            return sorted(self._map().records())

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(sku, fields)`` for every live product, sorted by SKU."""
        with self._replica._lock:
            self._replica._check_open()
            m = self._map()
            rows = [(sku, m.get(sku)) for sku in sorted(m.records())]
        return ((sku, fields) for sku, fields in rows if fields is not None)

    def put(self, sku: str, fields: Mapping[str, Any]) -> None:
        """Create or update a product: the given fields are set, others kept."""
        check_name(sku, "SKU")
        values = validate_product(fields)

        def mutate() -> None:
            ts = self._replica._hlc.now()
            doc = self._replica._docs.doc(CATALOG)
            with doc.transaction(origin="local"):
                self._map().set(sku, values, ts)

        self._replica._local_write(
            "product_put",
            "catalog",
            f"product {sku}: set {', '.join(sorted(values))}",
            mutate,
            ref=sku,
        )

    def put_many(self, products: Mapping[str, Mapping[str, Any]]) -> int:
        """Create or update many products in one durable transaction (bulk import)."""
        checked = {check_name(sku, "SKU"): validate_product(f) for sku, f in products.items()}
        if not checked:
            return 0

        def mutate() -> None:
            doc = self._replica._docs.doc(CATALOG)
            with doc.transaction(origin="local"):
                m = self._map()
                for sku, values in checked.items():
                    m.set(sku, values, self._replica._hlc.now())

        self._replica._local_write(
            "product_import", "catalog", f"import of {len(checked)} products", mutate
        )
        return len(checked)

    def delete(self, sku: str) -> None:
        """Delete a product (an LWW tombstone: a later edit anywhere revives it)."""
        check_name(sku, "SKU")

        def mutate() -> None:
            ts = self._replica._hlc.now()
            doc = self._replica._docs.doc(CATALOG)
            with doc.transaction(origin="local"):
                self._map().delete(sku, ts)

        self._replica._local_write(
            "product_delete", "catalog", f"product {sku}: delete", mutate, ref=sku
        )
