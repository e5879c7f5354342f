"""The product catalog: one last-writer-wins record per SKU.

Fields are merged one by one: if one store changes the price while another
changes the name, both changes survive.  When two stores change the *same*
field at the same time, the later write (by hybrid logical clock) wins.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from tiendasync.crdt.keys import paused_gc
from tiendasync.crdt.lww import columns
from tiendasync.errors import InvalidArgument
from tiendasync.model.docnames import CATALOG, PRODUCT_INTEGER_FIELDS, stock_doc
from tiendasync.model.names import all_safe_ints, check_name, check_names, check_safe_int
from tiendasync.store.boundary import public_api
from tiendasync.store.core import ReplicaCore, WriteSpec

__all__ = ["Catalog"]


def validate_product(fields: Mapping[str, Any], names_ok: set[str] | None = None) -> dict[str, Any]:
    """Check a product dict; raise InvalidArgument with a clear message.

    ``names_ok``: field names already checked (a bulk import checks each once).
    """
    if not isinstance(fields, Mapping):
        raise InvalidArgument(f"product fields must be a dict, got {type(fields).__name__}")
    if not fields:
        raise InvalidArgument("a product needs at least one field (e.g. name, price_cents)")
    for name, value in fields.items():
        if names_ok is None or name not in names_ok:
            check_name(name, "field name")
            if names_ok is not None:
                names_ok.add(name)
        if name in PRODUCT_INTEGER_FIELDS:
            check_safe_int(value, name)
            if value < 0:
                raise InvalidArgument(f"{name} must not be negative, got {value}")
    return dict(fields)


def _valid_columns(names: tuple[str, ...], values: list[list[Any]]) -> bool:
    """Whether products given as columns (:func:`~tiendasync.crdt.lww.columns`) pass
    :func:`validate_product`, checked a column at a time; ``False`` also when a column
    needs the row-by-row check to say what is wrong (or to accept an ``int`` subclass)."""
    check_names(names, "field name")
    return all(
        all_safe_ints(col, 0)
        for name, col in zip(names, values, strict=True)
        if name in PRODUCT_INTEGER_FIELDS
    )


@public_api
class Catalog:
    """``replica.catalog``: products keyed by SKU."""

    def __init__(self, core: ReplicaCore) -> None:
        self._core = core

    def get(self, sku: str) -> dict[str, Any] | None:
        """The product's fields, or ``None`` if it does not exist or was deleted."""
        check_name(sku, "SKU")
        with self._core.locked():
            return self._core.catalog().get(sku)

    def __contains__(self, sku: object) -> bool:
        return isinstance(sku, str) and self.get(sku) is not None

    def skus(self) -> list[str]:
        """Every live SKU, sorted."""
        with self._core.locked():
            return sorted(self._core.catalog().records())

    def items(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(sku, fields)`` for every live product, sorted by SKU."""
        with self._core.locked():
            m = self._core.catalog()
            rows = [(sku, m.get(sku)) for sku in sorted(m.records())]
        return ((sku, fields) for sku, fields in rows if fields is not None)

    def put(self, sku: str, fields: Mapping[str, Any]) -> None:
        """Create or update a product: the given fields are set, others kept."""
        check_name(sku, "SKU")
        values = validate_product(fields)

        core = self._core

        def mutate() -> None:
            ts = core.hlc.now()
            with core.docs.doc(CATALOG).transaction(origin="local"):
                core.catalog().set(sku, values, ts)

        self._core.local_write(
            WriteSpec(
                "product_put", "catalog", f"product {sku}: set {', '.join(sorted(values))}", ref=sku
            ),
            mutate,
        )

    def put_many(
        self,
        products: Mapping[str, Mapping[str, Any]],
        *,
        stock: Mapping[str, int] | None = None,
        location: str | None = None,
    ) -> int:
        """Create or update many products in one durable transaction (bulk import).

        ``stock``: ``{sku: units > 0}`` received at ``location`` (default: this
        replica's) in the same write, so a catalog with its opening stock is one
        commit.  Everything is checked before anything is written; the slots of
        each document are written in one pass (see :meth:`LWWMap.set_many`).
        Returns the number of products written.
        """
        if not isinstance(products, Mapping):
            raise InvalidArgument(f"products must be a dict of SKU to fields, got {products!r}")
        if stock is not None and not isinstance(stock, Mapping):
            raise InvalidArgument(f"stock must be a dict of SKU to units, got {stock!r}")
        with paused_gc():
            return self._put_many(products, stock or {}, location)

    def _put_many(
        self,
        products: Mapping[str, Mapping[str, Any]],
        stock: Mapping[str, int],
        location: str | None,
    ) -> int:
        check_names(products.keys(), "SKU")
        table = columns(products)
        if table is None or not _valid_columns(*table):
            names_ok: set[str] = set()
            for fields in products.values():  # raises naming the product's refusal
                validate_product(fields, names_ok)
        if not stock.keys() <= products.keys():
            check_names(stock.keys() - products.keys(), "SKU")
        if not all_safe_ints(stock.values(), 1):
            for sku, n in stock.items():  # raises naming the SKU
                check_safe_int(n, f"stock of {sku}", positive=True)
        units = dict(stock)
        if not products and not units:
            return 0

        core = self._core
        with core.locked():
            loc = core.resolve_location(location) if units else None

            def mutate() -> None:
                if products:
                    core.catalog().set_many(products, core.hlc.now_many, table=table)
                if loc is not None:
                    core.docs.doc(stock_doc(loc))
                    core.counter(loc).add_many(units)

            summary = f"import of {len(products)} products"
            if loc is not None:
                summary += f", {len(units)} SKU(s) received at {loc}"
            core.local_write(WriteSpec("product_import", "catalog", summary), mutate)
        return len(products)

    def delete(self, sku: str) -> None:
        """Delete a product (an LWW tombstone: a later edit anywhere revives it)."""
        check_name(sku, "SKU")

        core = self._core

        def mutate() -> None:
            ts = core.hlc.now()
            with core.docs.doc(CATALOG).transaction(origin="local"):
                core.catalog().delete(sku, ts)

        self._core.local_write(
            WriteSpec("product_delete", "catalog", f"product {sku}: delete", ref=sku), mutate
        )
