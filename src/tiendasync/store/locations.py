"""Locations (stores, warehouses): LWW records, so transfers name known places."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tiendasync.errors import InvalidArgument
from tiendasync.model.docnames import LOCATIONS
from tiendasync.model.names import check_name
from tiendasync.store.boundary import public_api
from tiendasync.store.core import ReplicaCore, WriteSpec

__all__ = ["Locations"]


@public_api
class Locations:
    """``replica.locations``: the places stock can be in."""

    def __init__(self, core: ReplicaCore) -> None:
        self._core = core

    def get(self, name: str) -> dict[str, Any] | None:
        check_name(name, "location")
        with self._core.locked():
            return self._core.locations().get(name)

    def list(self) -> list[str]:
        with self._core.locked():
            return sorted(self._core.locations().records())

    def put(self, name: str, fields: Mapping[str, Any] | None = None) -> None:
        """Declare a location (e.g. ``put("almacen", {"name": "Almacén central"})``)."""
        check_name(name, "location")
        values = dict(fields or {"name": name})
        if not values:
            raise InvalidArgument("a location needs at least one field")

        def mutate() -> None:
            with self._core.docs.doc(LOCATIONS).transaction(origin="local"):
                self._core.locations().set(name, values, self._core.hlc.now())

        self._core.local_write(
            WriteSpec("location_put", "locations", f"location {name}", ref=name), mutate
        )
