"""Locations (stores, warehouses): LWW records, so transfers name known places."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tiendasync.crdt import LWWMap, check_name
from tiendasync.errors import InvalidArgument
from tiendasync.model.docnames import LOCATIONS

if TYPE_CHECKING:
    from tiendasync.store.replica import Replica

__all__ = ["Locations"]


class Locations:
    """``replica.locations``: the places stock can be in."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def get(self, name: str) -> dict[str, Any] | None:
        check_name(name, "location")
        with self._replica._lock:
            self._replica._check_open()
            return self._replica._docs.view(LOCATIONS, LWWMap).get(name)

    def list(self) -> list[str]:
        with self._replica._lock:
            self._replica._check_open()
            return sorted(self._replica._docs.view(LOCATIONS, LWWMap).records())

    def put(self, name: str, fields: Mapping[str, Any] | None = None) -> None:
        """Declare a location (e.g. ``put("almacen", {"name": "Almacén central"})``)."""
        check_name(name, "location")
        values = dict(fields or {"name": name})
        if not values:
            raise InvalidArgument("a location needs at least one field")

        def mutate() -> None:
            doc = self._replica._docs.doc(LOCATIONS)
            with doc.transaction(origin="local"):
                view = self._replica._docs.view(LOCATIONS, LWWMap)
                view.set(name, values, self._replica._hlc.now())

        self._replica._local_write(
            "location_put", "locations", f"location {name}", mutate, ref=name
        )
