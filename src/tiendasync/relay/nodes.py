"""A relay node's heartbeat: which stores it serves, its figures, and requests for it.

Several relay processes on one PostgreSQL database form a cluster behind a
TCP load balancer, so a store may be connected to any node.  Each node
beats every :attr:`NodeBoard.beat_seconds` into the store of record
(:meth:`~tiendasync.relay.storage.RelayStore.beat_node`) with the stores
connected to it and its metrics, and takes in the same call the "sync now"
requests other nodes' admin APIs left for it.  So any node's admin API and
console can tell which stores are online and where, reach a store
connected elsewhere, and list every node's figures.  On a cluster the asking
node also sends the target a message (kind :data:`WAKE`, through
``ClusterNode.send``) that makes it beat at once: the store is asked within
milliseconds; the row is the durable fallback, taken at the next beat if the
message is lost.

A node that stops cleanly forgets its row; one that dies (SIGKILL, power)
leaves it behind, and readers ignore rows older than
:attr:`NodeBoard.live_beats` beats.  A request left for a node that died
before taking it is simply not served: the administrator sees the store
offline at the next look and the button is disabled, as for any offline
store.  On the SQLite relay (one process per file) the board is the one
node, kept in memory.

:class:`NodeBoard` decides (what to beat, who is live, where a store is);
:meth:`NodeBoard.run` is the small loop that does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping

from tiendasync.errors import StorageError
from tiendasync.relay.records import NodeRecord, SyncRequest
from tiendasync.relay.storage import RelayStore

__all__ = ["WAKE", "NodeBoard"]

#: The cluster message kind that wakes nodes to take their requests: ``{"to": [ids]}``.
WAKE = "wake"

log = logging.getLogger("tiendasync.relay.nodes")


class NodeBoard:
    """One node's view of the cluster through the store of record."""

    #: Seconds between heartbeats.
    beat_seconds = 1.0
    #: A node is live while its last heartbeat is at most this many beats old.
    live_beats = 3

    def __init__(self, store: RelayStore, node_id: str, started_at: float) -> None:
        self.store = store
        self.node_id = node_id
        self.started_at = started_at
        self._wake: asyncio.Event | None = None

    # -- decisions (no I/O) -------------------------------------------------------------------

    def record(
        self, now: float, replicas: Iterable[tuple[str, str]], metrics: Mapping[str, float]
    ) -> NodeRecord:
        """This node's heartbeat at ``now``."""
        return NodeRecord(
            self.node_id, self.started_at, now, tuple(sorted(set(replicas))), dict(metrics)
        )

    def live_since(self, now: float) -> float:
        """The oldest heartbeat time that still counts as live at ``now``."""
        return now - self.beat_seconds * self.live_beats

    @staticmethod
    def where(nodes: Iterable[NodeRecord], tenant: str, replica_id: str) -> list[str]:
        """Ids of the nodes (of ``nodes``) with a sync session of the replica open."""
        return [n.node_id for n in nodes if (tenant, replica_id) in n.replicas]

    # -- what the admin layer asks ------------------------------------------------------------

    def live(self, now: float) -> list[NodeRecord]:
        """The live nodes, this one included once it has beaten."""
        return self.store.live_nodes(self.live_since(now))

    def request_elsewhere(self, now: float, tenant: str, replica_id: str, full: bool) -> list[str]:
        """Leave a sync request with every other live node serving the replica; those
        nodes (to wake: :meth:`wake`)."""
        targets = [
            node for node in self.where(self.live(now), tenant, replica_id) if node != self.node_id
        ]
        for node in targets:
            self.store.request_node_sync(node, SyncRequest(tenant, replica_id, full))
        return targets

    def wake(self) -> None:
        """Beat now (take the requests left for this node) instead of at the next beat."""
        if self._wake is not None:
            self._wake.set()

    # -- the loop -----------------------------------------------------------------------------

    async def run(
        self,
        clock: Callable[[], float],
        snapshot: Callable[[], tuple[list[tuple[str, str]], dict[str, float]]],
        serve: Callable[[SyncRequest], object],
    ) -> None:
        """Beat until cancelled: ``snapshot()`` gives the connected pairs and metrics
        (read on the event loop), ``serve`` runs each request taken.  A failing
        store is logged and retried at the next beat; it never stops the relay.
        :meth:`wake` cuts the wait before the next beat short."""
        wake = self._wake = asyncio.Event()
        while True:
            wake.clear()
            replicas, metrics = snapshot()
            beat = self.record(clock(), replicas, metrics)
            try:
                requests = await asyncio.to_thread(self.store.beat_node, beat)
            except StorageError as exc:
                log.warning("node %s: heartbeat failed: %s", self.node_id, exc)
                requests = []
            for request in requests:
                serve(request)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.beat_seconds)

    def forget(self) -> None:
        """Remove this node's heartbeat (a clean stop); storage errors are only logged."""
        try:
            self.store.forget_node(self.node_id)
        except StorageError as exc:
            log.warning("node %s: could not remove its heartbeat: %s", self.node_id, exc)
