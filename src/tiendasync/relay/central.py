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
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tiendasync.errors import TiendaSyncError
from tiendasync.model.docnames import parse_doc, sales_doc
from tiendasync.store.conflicts import Conflict
from tiendasync.store.invariants import Invariant
from tiendasync.store.replica import Replica

__all__ = ["CENTRAL_LOCATION", "CENTRAL_REPLICA_ID", "CentralWriter"]

log = logging.getLogger("tiendasync.relay.central")

CENTRAL_REPLICA_ID = "relay"
CENTRAL_LOCATION = "central"
#: Sales documents a writer keeps loaded between merges, at most (see
#: :meth:`CentralWriter.trim`).
MAX_SALES_DOCS = 16

Publish = Callable[[str, bytes], None]


class CentralWriter:
    """The relay-side replica of one tenant."""

    def __init__(self, replica: Replica, publish: Publish) -> None:
        self.replica = replica
        self._publish = publish
        #: keys and SKUs drained for a review that failed: reviewed again next time
        self._keys: set[tuple[str, str]] = set()
        self._products: set[str] = set()
        #: a merge failed, or a write of ours did not reach the relay's storage: the
        #: two must be caught up again (``CentralReviews.retry``)
        self.behind = False
        #: a retry is queued and has not run yet
        self.retry_queued = False
        #: Sales documents kept loaded after a merge, at most: the ones merged most
        #: recently, of the current month (:meth:`trim`).
        self.max_sales_docs = MAX_SALES_DOCS
        self._sales_used: OrderedDict[str, None] = OrderedDict()
        replica.conflicts.make_authoritative()
        replica.on_local_update(self._on_local)

    @property
    def needs_retry(self) -> bool:
        """A review or a merge failed and was not retried with success yet."""
        return self.behind or bool(self._keys or self._products)

    @classmethod
    def open(
        cls,
        directory: str | Path,
        tenant: str,
        publish: Publish,
        invariants: Iterable[Invariant] = (),
        *,
        client_id_source: Callable[[int], int] | None = None,
        wall_clock: Callable[[], int] | None = None,
    ) -> CentralWriter:
        """Open (or create) the writer of ``tenant`` under ``directory``.

        ``client_id_source``, ``wall_clock``: see :meth:`tiendasync.Replica.open`
        (deterministic tests).
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
            wall_clock=wall_clock,
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
        self._used([doc])
        if not review:
            self.trim()
            return 0, 0, 0
        return self.review()

    def merge_many(self, updates: list[tuple[str, bytes]]) -> None:
        """Merge updates the relay stored (several documents) in one local transaction,
        all or nothing; no review (see :meth:`review`)."""
        self.replica.apply_remote_many(updates)
        self._used(doc for doc, _ in updates)
        self.trim()

    def _used(self, docs: Iterable[str]) -> None:
        for doc in docs:
            if parse_doc(doc).data_type == "sales":
                self._sales_used[doc] = None
                self._sales_used.move_to_end(doc)

    def trim(self) -> list[str]:
        """Unload the sales documents the review does not need; returns them.

        The invariant review reads stock counters, the catalog, the locations
        and the conflicts, loaded as it needs them, and sale lines from the
        replica's file (its sales index), never a sales document.  A sales
        document is loaded only to merge into it (or to compensate a sale), so
        after each merge and review the writer keeps at most
        :attr:`max_sales_docs` of them, the most recently merged, and none of a
        month before the current one: its memory follows the stores that are
        selling, not the tenant's history.  An unloaded document is read from
        the file again when the next update to it arrives.
        """
        core = self.replica.core
        current = sales_doc("x", int(core.now() * 1000)).rpartition("/")[2]
        loaded = [d for d in core.loaded_docs() if parse_doc(d).data_type == "sales"]
        keep = [
            d
            for d in reversed(self._sales_used)
            if d in loaded and (parse_doc(d).period or "") >= current
        ][: self.max_sales_docs]
        drop = [d for d in loaded if d not in keep]
        for doc in [d for d in self._sales_used if d not in keep]:
            del self._sales_used[doc]
        if drop:
            core.unload_docs(drop)
        return drop

    def review(self) -> tuple[int, int, int]:
        """Review what changed since the last review that succeeded.

        A failure (its directory's storage: disk full) is logged and the keys
        it was to review are kept for the next review (``needs_retry``).
        """
        core = self.replica.core
        with core.lock:
            keys = self._keys | core.changes.drain_touched()
            products = self._products | core.changes.drain_changed_products()
        try:
            result = self.replica.conflicts.review(keys=keys, products=products)
        except TiendaSyncError as exc:
            self._keys, self._products = keys, products
            log.error(
                "invariant review of %s failed, %d keys kept to retry: %s",
                self.replica.tenant,
                len(keys) + len(products),
                exc,
            )
            return 0, 0, 0
        self._keys, self._products = set(), set()
        self.apply_requests()
        self.trim()
        return result

    def apply_requests(self) -> int:
        """Apply the stores' resolution requests merged since last time; returns how many
        were refused (each logged, and recorded in its conflict's history)."""
        core = self.replica.core
        with core.lock:
            requested = core.changes.drain_changed_requests()
        refused = 0
        for location, conflict_id in sorted(requested):
            try:
                reason = self.replica.conflicts.apply_request(location, conflict_id)
            except TiendaSyncError as exc:  # its storage: retried with the next request
                log.error("request to resolve %s failed: %s", conflict_id, exc)
                with core.lock:
                    core.changes.changed_requests.add((location, conflict_id))
                continue
            if reason is not None:
                refused += 1
                log.warning(
                    "request of %s to resolve %s refused: %s", location, conflict_id, reason
                )
        return refused

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
