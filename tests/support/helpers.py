"""Test doubles and helpers shared by the suite: a fake wall clock, raw captured docs,
in-process replica exchange and state snapshots."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import pycrdt

from tiendasync import Replica
from tiendasync.protocol.statevector import decode_state_vector

# -- a controllable wall clock -------------------------------------------------


class FakeWall:
    """A wall clock (milliseconds) that tests move by hand, also backwards."""

    def __init__(self, start: int = 1_700_000_000_000) -> None:
        self.ms = start

    def __call__(self) -> int:
        return self.ms


# -- raw pycrdt docs whose per-transaction updates are captured ------------------


class LocalUpdate(NamedTuple):
    """One update emitted by a local transaction of ``writer``.

    ``start`` is the writer's Yjs clock before the transaction: the update
    can be integrated once the receiver holds every item of ``writer`` below
    ``start``.
    """

    writer: int
    start: int
    data: bytes


def clock_of(doc: pycrdt.Doc[Any], client_id: int) -> int:
    return decode_state_vector(bytes(doc.get_state())).get(client_id, 0)


class CapturedDoc:
    """A pycrdt doc plus every update its *local* transactions emitted, in order.

    Updates produced by applying remote updates are not captured: only what
    a replica would send (``outbox``).
    """

    def __init__(self, client_id: int) -> None:
        self.client_id = client_id
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
        self.outbox: list[LocalUpdate] = []
        self.held: list[LocalUpdate] = []
        self._local_start: int | None = None
        self._sub = self.doc.observe(self._on_update)

    def _on_update(self, event: pycrdt.TransactionEvent) -> None:
        update = bytes(event.update)
        if self._local_start is not None and update and update != b"\x00\x00":
            self.outbox.append(LocalUpdate(self.client_id, self._local_start, update))

    @contextmanager
    def local(self) -> Iterator[None]:
        """``with cd.local(): ...`` runs one local transaction and captures its update."""
        self._local_start = clock_of(self.doc, self.client_id)
        try:
            with self.doc.transaction(origin="local"):
                yield
        finally:
            self._local_start = None

    def receive(self, update: bytes) -> None:
        """Apply an update as is (pycrdt decides what to do with missing deps)."""
        with self.doc.transaction(origin="remote"):
            self.doc.apply_update(update)

    def receive_in_writer_order(self, update: LocalUpdate) -> None:
        """Apply ``update`` once every earlier update of its writer is in; hold it until then.

        Updates of different writers still arrive in any order (cross-writer
        dependencies are left to pycrdt).  This is the buffering Yjs does for
        a same-client clock gap, which pycrdt 0.14 does not do reliably (see
        ``test_pycrdt_0_14_*`` in test_crdt_properties.py).
        """
        self.held.append(update)
        progress = True
        while progress:
            progress = False
            for held in list(self.held):
                if clock_of(self.doc, held.writer) >= held.start:
                    self.held.remove(held)
                    self.receive(held.data)
                    progress = True


# -- replicas ------------------------------------------------------------------------


def sync_pair(a: Replica, b: Replica) -> int:
    """Exchange state-vector diffs for every document, both directions.

    Returns how many ``apply_remote`` calls changed something.
    """
    changed = 0
    for src, dst in ((a, b), (b, a)):
        for name in src.doc_names():
            sv = dst.state_vector(name)  # creates the doc on dst if it lacks it
            if dst.apply_remote(name, src.diff(name, sv)):
                changed += 1
    return changed


def replica_state(r: Replica) -> dict[str, Any]:
    """Everything observable about a replica, for before/after comparisons."""
    locations = r.inventory.locations()
    return {
        "stock": {loc: r.inventory.levels(loc) for loc in locations},
        "catalog": dict(r.catalog.items()),
        "locations": r.locations.list(),
        "sales": sorted(
            (s.id, s.location, s.lines, s.voided, s.total_cents)
            for s in r.sales.list(limit=1_000_000)
        ),
        "sales_count": r.sales.count(),
        "queue": [
            (e.id, e.kind, e.data_type, e.status, e.summary, e.ref)
            for e in r.queue.list(limit=1_000_000)
        ],
    }
