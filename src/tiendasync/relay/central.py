"""The relay's own writer: one embedded replica per tenant.

The relay is authoritative for conflicts, and resolutions are compensating
CRDT writes.  Rather than a second write path, the relay keeps a regular
:class:`~tiendasync.Replica` per tenant (replica id ``relay``, location
``central``) that merges every update the relay stores, reviews invariants on
the keys each one touched, and makes the relay's own writes (conflict
records, resolutions).  Its writes are handed to ``publish`` so the relay
stores and fans them out like any replica's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tiendasync.errors import TiendaSyncError
from tiendasync.store.conflicts import Conflict
from tiendasync.store.invariants import Invariant
from tiendasync.store.replica import Replica

__all__ = ["CENTRAL_LOCATION", "CENTRAL_REPLICA_ID", "CentralWriter"]

log = logging.getLogger("tiendasync.relay.central")

CENTRAL_REPLICA_ID = "relay"
CENTRAL_LOCATION = "central"

Publish = Callable[[str, bytes], None]


class CentralWriter:
    """The relay-side replica of one tenant."""

    def __init__(self, replica: Replica, publish: Publish) -> None:
        self.replica = replica
        self._publish = publish
        replica.on_local_update(self._on_local)

    @classmethod
    def open(
        cls,
        directory: str | Path,
        tenant: str,
        publish: Publish,
        invariants: Iterable[Invariant] = (),
        *,
        client_id_source: Callable[[int], int] | None = None,
    ) -> CentralWriter:
        """Open (or create) the writer of ``tenant`` under ``directory``.

        ``client_id_source``: see :meth:`tiendasync.Replica.open` (deterministic tests).
        """
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        replica = Replica.open(
            path / f"{tenant}.db",
            tenant=tenant,
            replica_id=CENTRAL_REPLICA_ID,
            location=CENTRAL_LOCATION,
            durability="normal",
            client_id_source=client_id_source,
        )
        writer = cls(replica, publish)
        for inv in invariants:
            writer.replica.conflicts.add_invariant(inv)
        return writer

    @property
    def client_ids(self) -> set[int]:
        return self.replica.own_client_ids()

    def close(self) -> None:
        self.replica.close()

    def _on_local(self, updates: list[tuple[str, bytes]]) -> None:
        for doc, data in updates:
            self._publish(doc, data)

    def state_vector(self, doc: str) -> bytes | None:
        return self.replica.state_vector(doc) if doc in self.replica.doc_names() else None

    def merge(self, doc: str, update: bytes, *, review: bool = True) -> tuple[int, int, int]:
        """Merge an update the relay stored; review invariants on what it touched.

        Returns ``(opened, updated, healed)`` conflicts.
        """
        self.replica.apply_remote(doc, update)
        if not review:
            return 0, 0, 0
        return self.review()

    def review(self) -> tuple[int, int, int]:
        try:
            products = self.replica.drain_changed_products()
            return self.replica.conflicts.review(products=products)
        except TiendaSyncError:
            log.exception("invariant review failed")
            return 0, 0, 0

    def resolve(
        self,
        conflict_id: str,
        action: str,
        *,
        by: str = "admin",
        note: str | None = None,
        **params: Any,
    ) -> Conflict:
        return self.replica.conflicts.resolve(conflict_id, action, by=by, note=note, **params)

    def conflicts(self, **filters: Any) -> list[Conflict]:
        return self.replica.conflicts.list(**filters)
