"""Compensating writes: what each resolution action does to the data.

Every action of :data:`tiendasync.model.actions.ACTIONS` becomes ordinary
writes through the facets (an adjustment, a stocktake, a transfer, voids, a
product edit, remaps): history is never edited, and the writes replicate
like any other.  Parameters arrive checked by
:func:`tiendasync.model.actions.check_params`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tiendasync.errors import InvalidArgument
from tiendasync.store.core import ReplicaCore

if TYPE_CHECKING:
    from tiendasync.store.catalog import Catalog
    from tiendasync.store.conflicts import Conflict
    from tiendasync.store.inventory import Inventory
    from tiendasync.store.sales import Sales

__all__ = ["Compensator"]


class Compensator:
    """Turns a resolution action into writes on one replica."""

    def __init__(
        self, core: ReplicaCore, inventory: Inventory, catalog: Catalog, sales: Sales
    ) -> None:
        self._core = core
        self._inventory = inventory
        self._catalog = catalog
        self._sales = sales
        self._actions: dict[str, Callable[[Conflict, dict[str, Any]], None]] = {
            "accept": lambda c, p: None,
            "adjust": self._adjust,
            "recount": self._recount,
            "transfer": self._transfer,
            "void": self._void,
            "restore": self._restore,
            "remap": self._remap,
            "keep_central": lambda c, p: self._keep(c, local=False, field_name=p.get("field")),
            "keep_local": lambda c, p: self._keep(c, local=True, field_name=p.get("field")),
        }

    def apply(self, c: Conflict, action: str, params: dict[str, Any]) -> None:
        """Write what ``action`` with checked ``params`` does for conflict ``c``."""
        self._actions[action](c, params)

    def _adjust(self, c: Conflict, p: dict[str, Any]) -> None:
        self._inventory.adjust(c.sku, p["quantity"], reason=f"conflict {c.id}", location=c.location)

    def _recount(self, c: Conflict, p: dict[str, Any]) -> None:
        self._inventory.count(c.sku, p["count"], location=c.location)

    def _transfer(self, c: Conflict, p: dict[str, Any]) -> None:
        self._inventory.transfer(
            c.sku, p["quantity"], to_location=c.location, from_location=p["from_location"]
        )

    def _void(self, c: Conflict, p: dict[str, Any]) -> None:
        ids: list[str] = p["sale_ids"]
        unknown = [i for i in ids if i not in c.sales]
        if unknown:
            raise InvalidArgument(f"sales {', '.join(unknown)} are not part of conflict {c.id}")
        self._sales.void(ids, reason=f"conflict {c.id}")

    def _restore(self, c: Conflict, p: dict[str, Any]) -> None:
        self._catalog.put(c.sku, p.get("fields") or {"name": c.sku, "restored": True})

    def _remap(self, c: Conflict, p: dict[str, Any]) -> None:
        target: str = p["sku"]
        if self._catalog.get(target) is None:
            raise InvalidArgument(f"cannot remap to {target!r}: not a product")
        for sale_id in c.sales:
            self._sales.remap(sale_id, c.sku, target)

    def _keep(self, c: Conflict, *, local: bool, field_name: Any) -> None:
        catalog = self._core.catalog()
        changes: dict[str, Any] = {}
        for name, writes in catalog.concurrent_losers(c.sku).items():
            if field_name is not None and name != field_name:
                continue
            winner = catalog.winner(c.sku, name)
            if local and writes:
                changes[name] = max(writes).value
            elif winner is not None:
                changes[name] = winner.value
        if changes:
            self._catalog.put(c.sku, changes)
