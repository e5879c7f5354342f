"""A simulated network for the sans-I/O sync protocol: no sockets, no asyncio.

The pieces are the real ones: :class:`~tiendasync.Replica` objects on SQLite
files, :class:`~tiendasync.store.sync_session.ReplicaSync` (what the websocket
client drives), and :class:`~tiendasync.relay.core.RelayCore` over a
:class:`~tiendasync.relay.storage.SqliteRelayStore` file with a central writer
(``central_dir``), so conflicts are reviewed as on the real relay.  Only the
pumps are simulated, mirroring ``tiendasync.store.client`` and
``tiendasync.relay.server``:

* a :class:`Link` (one websocket connection) joins one ``ReplicaSync`` and
  one ``RelaySession`` with two in-flight queues, ``up`` (replica -> relay)
  and ``down`` (relay -> replica); each message is the bytes of one
  ``data_to_send()`` call, as one websocket message;
* the relay's ``on_write`` hook parks applied updates in
  :attr:`SimRelay.pending`; nothing is acknowledged or fanned out until the
  test "flushes storage" (:meth:`SimNet.flush_storage`), which stores a batch
  with ``store.append_many`` and reports it with ``RelayCore.committed`` --
  the server's group commit;
* live mode (the background client) streams every committed local write via
  ``replica.on_local_update`` straight into ``ReplicaSync.send_local``.

Faults: deliver out of order within a window, duplicate, lose a message
silently (unrealistic over TCP, but the next reconnect must repair it), break
a connection (a dropped message: everything after it on that connection is
lost and it closes), partition a replica (it keeps writing offline), crash a
replica (its SQLite connection is closed without ``Replica.close`` and it is
reopened from its file: a new incarnation with a new Yjs client id), restart
the relay (pending, not yet stored writes are lost; a new ``RelayCore`` over
the same store file).

Everything is deterministic given the sequence of calls: Yjs client ids come
from a seeded generator (passed as ``client_id_source`` to every replica and
to the relay's central writers), relay session ids from a counter, HLC wall
clocks and the relay's clock from a :class:`SimClock` that the tests move.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pycrdt

from tiendasync import Replica
from tiendasync.crdt import ROOT, PNCounter
from tiendasync.crdt.generations import crdt_of
from tiendasync.model.docnames import stock_doc
from tiendasync.protocol import FrameType, Hello
from tiendasync.protocol.frames import FrameDecoder
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.relay.auth import issue_token
from tiendasync.relay.central import CentralWriter
from tiendasync.relay.core import PendingWrite, RelayCore, RelaySession
from tiendasync.relay.docs import DocCache, compact
from tiendasync.relay.generations import Generations, RolloverPolicy
from tiendasync.relay.lookups import answer_hello, log_session
from tiendasync.relay.storage import RelayStore, SqliteRelayStore
from tiendasync.store.sync_session import ReplicaSync
from tiendasync.store.synclog import finish_session, start_session

__all__ = [
    "DOWN",
    "UP",
    "Link",
    "NotConverged",
    "SimClock",
    "SimNet",
    "SimNode",
    "SimRelay",
    "decode_frames",
    "doc_content",
    "frame_types",
    "replica_docs",
    "replica_snapshot",
    "unacknowledged",
]

UP = "up"  # replica -> relay
DOWN = "down"  # relay -> replica
RELAY_URL = "sim://relay"


class NotConverged(AssertionError):
    """Healing did not reach a quiet, identical state within its bound."""


# -- helpers -------------------------------------------------------------------------------


def decode_frames(message: bytes) -> list[tuple[FrameType, list[Any]]]:
    """The frames one websocket message carries."""
    decoder = FrameDecoder()
    decoder.feed(message)
    return decoder.frames()


def frame_types(message: bytes) -> list[str]:
    return [t.name for t, _ in decode_frames(message)]


class SimClock:
    """A wall clock in milliseconds that every simulated replica shares."""

    def __init__(self, start_ms: int | None = None) -> None:
        self.ms = int(time.time() * 1000) if start_ms is None else start_ms

    def __call__(self) -> int:
        return self.ms

    def tick(self, ms: int = 1) -> None:
        self.ms += ms

    def seconds(self) -> float:
        return self.ms / 1000


def replica_snapshot(r: Replica, locations: list[str] | None = None) -> dict[str, Any]:
    """What must be identical everywhere after healing.

    Catalog items, stock per location (every SKU with a slot), sales ids
    (with voids), locations and the conflict records (id -> key and status).
    Read straight from the CRDT views / indexes a POS app would use.
    """
    locs = sorted(locations) if locations is not None else r.inventory.locations()
    stock: dict[str, dict[str, int]] = {}
    for loc in locs:
        name = stock_doc(loc)
        if name in r.core.docs:
            levels = dict(r.core.docs.view(name, PNCounter).items())
            stock[loc] = {k: v for k, v in sorted(levels.items())}
        else:
            stock[loc] = {}
    return {
        "catalog": dict(r.catalog.items()),
        "stock": stock,
        "sales": sorted((s.id, s.voided) for s in r.sales.list(limit=10**9)),
        "locations": r.locations.list(),
        "conflicts": sorted((c.id, c.key, c.status) for c in r.conflicts.list(limit=10**9)),
    }


def unacknowledged(r: Replica) -> list[tuple[int, str, int, int]]:
    """(entry id, doc, client id, clock) of every queue entry not acknowledged yet."""
    rows = r.core.storage.conn.execute(
        "SELECT q.id, c.doc, c.client_id, c.clock FROM queue q JOIN queue_clocks c "
        "ON c.entry_id = q.id WHERE q.status IN ('pending', 'sent') AND c.acked = 0 "
        "ORDER BY q.id"
    ).fetchall()
    return [(int(i), str(d), int(c), int(k)) for i, d, c, k in rows]


def doc_content(doc: pycrdt.Doc[Any]) -> dict[str, Any]:
    """The raw root map of a pycrdt doc (every slot, tombstones and pruned slots aside)."""
    return dict(doc.get(ROOT, type=pycrdt.Map).to_py() or {})


def replica_docs(r: Replica) -> dict[str, dict[str, Any]]:
    """Raw content of every document a replica holds (non-empty ones)."""
    out = {}
    for name in r.doc_names():
        content = doc_content(r.core.docs.doc(name))
        if content:
            out[name] = content
    return out


def _diff(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    a, b = a or {}, b or {}
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return "; ".join(
        f"{k!r}: {a.get(k, '<absent>')!r} vs {b.get(k, '<absent>')!r}" for k in keys[:4]
    ) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")


# -- the relay -----------------------------------------------------------------------------


class SimRelay:
    """A RelayCore over a SQLite store file, with storage flushes under test control."""

    def __init__(
        self,
        directory: Path,
        *,
        tenant: str = "acme",
        central: bool = True,
        invariants: tuple[Any, ...] = (),
        durability: str = "normal",
        max_docs: int = 1000,
        clock: Callable[[], float] = time.time,
        client_id_source: Callable[[int], int] | None = None,
        central_wall_clock: Callable[[], int] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.client_id_source = client_id_source
        self._session_ids = itertools.count(1)
        #: session ids are ``<prefix>-<n>`` (a cluster's nodes: one prefix each)
        self.session_prefix = "sim"
        #: the central writers' wall clock in ms (None: the system clock)
        self.central_wall_clock = central_wall_clock
        self.max_docs = max_docs
        self.db_path = self.directory / "relay.db"
        self.central_dir = self.directory / "central" if central else None
        self.tenant = tenant
        self.invariants = invariants
        self.durability = durability
        #: applied updates waiting for storage (the server's writer queue)
        self.pending: list[PendingWrite] = []
        self.dirty: dict[str, RelaySession] = {}
        self.restarts = 0
        self.lost_writes = 0
        self.committed_writes = 0
        #: late updates (docs/generations.md) waiting to be carried, in arrival order
        self.late: list[tuple[RelaySession, str, int, bytes, list[int]]] = []
        self.rollovers = 0
        self.store: RelayStore = self._open_store()
        self.core = self._build_core()

    def _open_store(self) -> RelayStore:
        """The store of record (a cluster's nodes share one, ``tests/support/simcluster.py``)."""
        return SqliteRelayStore(str(self.db_path), durability=self.durability)

    def _build_core(self) -> RelayCore:
        return RelayCore(
            self.store,
            clock=self.clock,
            random_id=lambda: f"{self.session_prefix}-{next(self._session_ids):06d}",
            client_id_source=self.client_id_source,
            central_dir=self.central_dir,
            invariants=self.invariants,
            max_docs=self.max_docs,
            on_output=self._on_output,
            on_write=self._on_write,
            on_late=lambda *late: self.late.append(late),
            central_wall_clock=self.central_wall_clock,
        )

    def _on_write(self, write: PendingWrite) -> None:
        self.pending.append(write)

    def _generations(self, policy: RolloverPolicy | None = None) -> Generations:
        draw = self.client_id_source
        return Generations(
            self.store, policy, writer_id=None if draw is None else lambda: draw(2**32)
        )

    def carry_late(self) -> int:
        """Carry the late updates received so far, in order, as the server's pump does
        (``RelayServer._on_late``): each stored with its carry, then acknowledged."""
        done = 0
        while self.late:
            session, doc, generation, data, acks = self.late.pop(0)
            if not session.open or session.tenant is None:
                continue  # closed meanwhile: it re-sends on its next sync
            work = self.core.late_carry(
                self._generations(), session, doc, generation, data, now=self.clock()
            )
            self.core.late_done(session, doc, acks, work())
            done += 1
        return done

    def roll_over(self, policy: RolloverPolicy) -> list[tuple[str, str, int]]:
        """Roll over every stored document past ``policy`` (only while stopped, as the
        server does at start)."""
        rolled = self._generations(policy).roll_over_due()
        self.rollovers += bool(rolled)
        return rolled

    def _on_output(self, session: RelaySession) -> None:
        self.dirty[session.id] = session

    def issue_token(self, replica_id: str, location: str | None = None) -> str:
        return issue_token(self.store, tenant=self.tenant, replica_id=replica_id, location=location)

    def flush_storage(self, limit: int | None = None) -> list[PendingWrite]:
        """Store the oldest ``limit`` pending writes (all by default), then commit them."""
        n = len(self.pending) if limit is None else max(0, min(limit, len(self.pending)))
        batch, self.pending[:n] = self.pending[:n], []
        if batch:
            result = self.store.append_many([w.entry() for w in batch])
            self.core.committed(batch, result)
            self.committed_writes += len(batch)
        self.carry_late()
        return batch

    def crash(self) -> int:
        """The process dies: pending writes are lost.  Returns how many."""
        lost = len(self.pending) + len(self.late)
        self.pending.clear()
        self.late.clear()
        self.dirty.clear()
        self.lost_writes += lost
        # Releases the central writers' SQLite handles; it stores nothing of ``pending``.
        self.core.close()
        self.store.close()
        return lost

    def start(self) -> None:
        self.store = self._open_store()
        self.core = self._build_core()
        self.restarts += 1

    def answer_hello(self, session: RelaySession, hello: Hello) -> None:
        """The server's lookups for a HELLO, inline."""
        answer_hello(self.core, self.store, session, hello)

    def central(self) -> CentralWriter:
        return self.core.central(self.tenant)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.core.close()
        with contextlib.suppress(Exception):
            self.store.close()

    def doc_clocks(self) -> dict[str, dict[int, int]]:
        """Committed state vectors of every doc of the tenant."""
        return {
            d: decode_state_vector(sv) for d, sv in self.store.state_vectors(self.tenant).items()
        }

    def memory_clocks(self, doc: str) -> dict[int, int]:
        return self.core.docs.get(self.tenant, doc).clocks()

    def memory_docs(self) -> dict[str, dict[str, Any]]:
        """Raw content of the relay's in-memory docs (loaded on demand)."""
        out = {}
        for name in self.store.state_vectors(self.tenant):
            content = doc_content(self.core.docs.get(self.tenant, name).doc)
            if content:
                out[name] = content
        return out

    def stored_docs(self) -> dict[str, dict[str, Any]]:
        """Raw content of every doc as a fresh load from the store rebuilds it."""
        cache = DocCache(self.store)
        out = {}
        for name in self.store.state_vectors(self.tenant):
            content = doc_content(cache.get(self.tenant, name).doc)
            if content:
                out[name] = content
        cache.clear()
        return out


# -- replicas and links --------------------------------------------------------------------


@dataclass
class Link:
    """One websocket connection between a replica and the relay."""

    id: int
    node: SimNode
    sync: ReplicaSync
    session: RelaySession
    live: bool
    #: the relay (a cluster: the relay node) the connection reached
    relay: SimRelay
    up: list[bytes] = field(default_factory=list)
    down: list[bytes] = field(default_factory=list)
    replica_closed: bool = False
    relay_closed: bool = False
    outcome: str | None = None
    unsubscribe: Callable[[], None] = lambda: None
    log_id: int | None = None
    sent: list[bytes] = field(default_factory=list)  # everything the replica queued
    received: list[bytes] = field(default_factory=list)  # everything the relay queued

    @property
    def current(self) -> bool:
        return self.node.link is self

    def queue(self, direction: str) -> list[bytes]:
        return self.up if direction == UP else self.down


@dataclass
class SimNode:
    """A replica (one store or terminal) and its connection state."""

    name: str
    path: Path
    location: str
    token: str
    replica: Replica
    link: Link | None = None
    partitioned: bool = False
    full_next: bool = False
    incarnations: int = 1
    client_ids: list[int] = field(default_factory=list)


class SimNet:
    """Replicas, a relay and the links between them.  See the module docstring."""

    def __init__(
        self,
        directory: Path,
        *,
        tenant: str = "acme",
        central: bool = True,
        invariants: tuple[Any, ...] = (),
        durability: str = "normal",
        max_docs: int = 1000,
        seed: int = 0,
        clock: SimClock | None = None,
        auto_reconnect: bool = True,
        strict_acks: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.tenant = tenant
        self.durability = durability
        self.rng = random.Random(seed)
        self.clock = clock or SimClock()
        self.auto_reconnect = auto_reconnect
        #: see :meth:`divergences`
        self.strict_acks = strict_acks
        self.stale_acks = 0
        self.nodes: dict[str, SimNode] = {}
        #: Names of malicious nodes: they take part in the network, but
        #: convergence (:meth:`divergences`) is asked only of the others.
        self.hostile: set[str] = set()
        self.links: list[Link] = []
        self._link_ids = 0
        self.faults: dict[str, int] = {}
        self.trace: list[str] = []
        #: every relay process (one here; a cluster's nodes, ``tests/support/simcluster.py``)
        self.relays: list[SimRelay] = self._make_relays(
            central=central, invariants=invariants, durability=durability, max_docs=max_docs
        )
        #: the relay (a cluster: its first node, which the tokens are issued through)
        self.relay = self.relays[0]
        self._by_session: dict[str, Link] = {}

    def _make_relays(
        self, *, central: bool, invariants: tuple[Any, ...], durability: str, max_docs: int
    ) -> list[SimRelay]:
        return [
            SimRelay(
                self.directory / "relay",
                tenant=self.tenant,
                central=central,
                invariants=invariants,
                durability=durability,
                max_docs=max_docs,
                clock=self.clock.seconds,
                client_id_source=self.rng.randrange,
                # (the system clock would stamp the relay's conflict records in real time:
                # a run longer than the relay's clock bound then refuses the replicas'
                # writes as ahead of its simulated clock)
                central_wall_clock=self.clock,
            )
        ]

    # -- determinism -------------------------------------------------------------------

    def _log(self, text: str) -> None:
        self.trace.append(text)

    def _fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    # -- replicas ----------------------------------------------------------------------

    def add_replica(
        self, name: str, location: str | None = None, *, bound: bool = False
    ) -> SimNode:
        """A new replica ``name`` at ``location`` (default: its name); ``bound``: its
        token is tied to its location (least-privilege grants)."""
        path = self.directory / f"{name}.db"
        r = Replica.open(
            path,
            tenant=self.tenant,
            replica_id=name,
            location=location or name,
            durability=self.durability,
            wall_clock=self.clock,
            client_id_source=self.rng.randrange,
        )
        node = SimNode(
            name,
            path,
            r.location,
            self.relay.issue_token(name, r.location if bound else None),
            r,
            client_ids=[r.client_id],
        )
        self.nodes[name] = node
        return node

    def replica(self, name: str) -> Replica:
        return self.nodes[name].replica

    def crash_replica(self, name: str) -> Replica:
        """Kill the replica (no ``close()``) and reopen it from its file."""
        node = self.nodes[name]
        for link in self.links_of(name):
            self._break(link, "replica crashed")
        node.replica.core.storage.close()  # the OS closes the file; nothing else runs
        node.replica = Replica.open(
            node.path,
            durability=self.durability,
            wall_clock=self.clock,
            client_id_source=self.rng.randrange,
        )
        node.incarnations += 1
        node.client_ids.append(node.replica.client_id)
        node.full_next = False
        self._fault("replica_crash")
        self._log(f"crash {name} -> client id {node.replica.client_id}")
        return node.replica

    # -- the relay ------------------------------------------------------------------------

    def restart_relay(self, rollover: RolloverPolicy | None = None) -> int:
        """Kill the relay (pending writes lost, every link broken) and start a new one,
        rolling documents past ``rollover`` over to new generations before it serves."""
        for link in list(self.links):
            self._break(link, "relay restarted", relay_alive=False)
        lost = self.relay.crash()
        self._by_session.clear()
        if rollover is not None:
            self.relay.store = self.relay._open_store()
            rolled = self.relay.roll_over(rollover)
            self.relay.store.close()
            self._log(f"rollover: {len(rolled)} documents")
        self.relay.start()
        self._fault("relay_restart")
        self._log(f"relay restart: {lost} uncommitted writes lost")
        return lost

    def roll_over_live(self, policy: RolloverPolicy) -> list[tuple[str, str, int]]:
        """Roll every stored document past ``policy`` over while the relay runs, in the
        steps the server takes (``relay.rollover.LiveRollover``), one document at a time."""
        relay, rolled = self.relay, []
        generations = relay._generations(policy)
        for tenant, doc in sorted(relay.store.all_state_vectors()):
            if crdt_of(doc) is None or not generations.due(tenant, doc):
                continue
            relay.core.begin_rollover(tenant, doc)
            self._settle()  # SYNC_NOW and BYE go out; what the stores send is not read
            self.flush_storage()  # every queued write committed, late updates carried
            relay.core.hold_central(tenant)  # (its reviews run at once here)
            rolled.append((tenant, doc, generations.roll_over(tenant, doc)))
            relay.core.end_rollover(tenant, doc)
            self._settle()
        relay.rollovers += bool(rolled)
        self._log(f"live rollover: {len(rolled)} documents")
        return rolled

    def flush_storage(self, limit: int | None = None) -> int:
        batch = self.relay.flush_storage(limit)  # the central writer may open here
        if batch:
            self._log(f"flush {len(batch)}")
        self._settle()
        return len(batch)

    def relay_unload_idle_docs(self) -> int:
        """The server's sweeper, as if every doc had been idle long enough."""
        docs = self.relay.core.docs
        saved, docs.idle_seconds = docs.idle_seconds, -1.0
        try:
            dropped = docs.sweep()
        finally:
            docs.idle_seconds = saved
        self._log(f"relay unloaded {dropped} docs")
        return dropped

    def relay_compact(self) -> int:
        """Fold every doc's update log into a snapshot (the server does it past a threshold)."""
        folded = 0
        for doc in self.relay.store.state_vectors(self.tenant):
            folded += compact(self.relay.store, self.tenant, doc)
        self._log(f"relay compacted {folded} updates")
        return folded

    def request_sync(self, name: str, full: bool = False) -> bool:
        sent = self.relay.core.request_sync(self.tenant, name, full)
        self._settle()
        return sent

    # -- links -----------------------------------------------------------------------------

    def links_of(self, name: str) -> list[Link]:
        return [link for link in self.links if link.node.name == name]

    def relay_for(self, name: str) -> SimRelay:
        """The relay a new connection of replica ``name`` reaches."""
        return self.relay

    def connect(
        self,
        name: str,
        *,
        live: bool = True,
        full: bool | None = None,
        relay: SimRelay | None = None,
    ) -> Link | None:
        """Open a connection (the client's ``_run_session``) to ``relay`` (default:
        :meth:`relay_for`); None if partitioned."""
        node = self.nodes[name]
        if node.partitioned:
            return None
        if node.link is not None:
            return node.link
        if full is None:
            full, node.full_next = node.full_next, False
        r = node.replica
        self._link_ids += 1
        sync = ReplicaSync(
            r, node.token, relay=RELAY_URL, full=full, live=live, clock=self.clock.seconds
        )
        relay = relay if relay is not None else self.relay_for(name)
        session = relay.core.new_session()
        link = Link(self._link_ids, node, sync, session, live, relay)
        self.links.append(link)
        self._by_session[session.id] = link
        node.link = link
        if live:
            link.unsubscribe = r.on_local_update(lambda updates: self._on_local(link, updates))
        link.log_id = start_session(
            r.core, RELAY_URL, "full" if full else ("continuous" if live else "once")
        )
        r.core.set_connection_state("connecting")
        sync.start()
        self._pull_replica(link)
        self._log(f"connect {name} #{link.id} live={live} full={full}")
        self._settle()
        return link

    def disconnect(self, name: str) -> None:
        """The network connection dies (everything in flight is lost)."""
        for link in self.links_of(name):
            self._break(link, "disconnected")

    def partition(self, name: str) -> None:
        self.nodes[name].partitioned = True
        self.disconnect(name)
        self._fault("partition")

    def unpartition(self, name: str) -> None:
        self.nodes[name].partitioned = False

    def pending_messages(self) -> int:
        return sum(len(link.up) + len(link.down) for link in self.links)

    def deliver(self, link: Link, direction: str, index: int = 0) -> bytes:
        """Hand the message at ``index`` of a queue to its receiver (index > 0: reordering)."""
        queue = link.queue(direction)
        message = queue.pop(index)
        if index:
            self._fault("reorder")
        if direction == UP:
            assert not link.relay_closed
            hello = link.relay.core.receive(link.session, message)
            if hello is not None:  # the server's lookups, inline
                link.relay.answer_hello(link.session, hello)
        else:
            assert not link.replica_closed
            link.sync.receive_data(message)
            self._pull_replica(link)
        self._settle()
        return message

    def duplicate(self, link: Link, direction: str, index: int = 0) -> None:
        queue = link.queue(direction)
        queue.insert(index + 1, queue[index])
        self._fault("duplicate")

    def lose(self, link: Link, direction: str, index: int = 0) -> bytes:
        """Lose one message but keep the connection up (not possible over TCP)."""
        self._fault("lose")
        return link.queue(direction).pop(index)

    def drop(self, link: Link, direction: str, index: int = 0) -> None:
        """A message is dropped: it and everything after it is lost, the link closes."""
        self._fault("drop")
        self._break(link, f"dropped a message {direction}")

    # -- running ---------------------------------------------------------------------------

    def step(self) -> bool:
        """Deliver the oldest message of the first busy link; False if nothing moved."""
        for link in list(self.links):
            for direction in (UP, DOWN):
                if link in self.links and link.queue(direction):
                    self.deliver(link, direction)
                    return True
        return False

    def run(self, *, flush: bool = True, max_steps: int = 100_000) -> int:
        """Deliver everything (and flush storage) until nothing moves."""
        steps = 0
        while steps < max_steps:
            if self.step():
                steps += 1
                continue
            if flush and (self.relay.pending or self.relay.late):
                self.flush_storage()
                steps += 1
                continue
            return steps
        raise NotConverged(f"the network was still busy after {max_steps} steps")

    def heal(self, *, max_rounds: int = 4) -> int:
        """Lift partitions, reconnect everyone, deliver and flush until identical.

        Every round starts with fresh connections (so the state-vector
        exchange repairs whatever an earlier message loss left behind).
        Returns the number of rounds it took.
        """
        for node in self.nodes.values():
            node.partitioned = False
        for rnd in range(1, max_rounds + 1):
            for name in self.nodes:
                self.disconnect(name)
            for name in self.nodes:
                self.connect(name)
            self.run()
            if self.relay.central_dir is not None:
                self.relay.central()  # opens (and catches up) the writer after a restart
                self._settle()
                self.run()
            problems = self.divergences()
            if not problems:
                return rnd
            self._log(f"heal round {rnd}: {problems[:3]}")
        raise NotConverged(
            f"not converged after {max_rounds} heal rounds: {self.divergences()[:10]}"
        )

    def divergences(self, *, strict_acks: bool | None = None) -> list[str]:
        """Why the net is not (yet) converged; empty if it is.

        A queue entry still unacknowledged although the relay's *stored* state
        vector covers its write is a stale ACK (data safe, bookkeeping wrong);
        with ``strict_acks`` false those are only counted in
        :attr:`stale_acks` (default: :attr:`strict_acks`).
        """
        strict = self.strict_acks if strict_acks is None else strict_acks
        problems: list[str] = []
        self.stale_acks = 0
        unstored = sum(len(relay.pending) for relay in self.relays)
        if unstored:
            problems.append(f"{unstored} writes not stored")
        late = sum(len(relay.late) for relay in self.relays)
        if late:
            problems.append(f"{late} late updates not carried")
        if self.pending_messages():
            problems.append(f"{self.pending_messages()} messages in flight")
        relay = self.relay.doc_clocks()
        relay_gens = self.relay.store.generations(self.tenant)
        for node in self._honest():
            r = node.replica
            link = node.link
            if link is None or link.sync.conn.state != "live":
                problems.append(f"{node.name}: not live")
            held = r.core.generations()
            for doc in r.doc_names():
                if held.get(doc, 0) != relay_gens.get(doc, 0):
                    problems.append(
                        f"{node.name}: holds generation {held.get(doc, 0)} of {doc}, "
                        f"the relay {relay_gens.get(doc, 0)}"
                    )
            for doc, clocks in relay.items():
                mine = decode_state_vector(r.state_vector(doc)) if doc in r.doc_names() else {}
                if mine != clocks:
                    problems.append(f"{node.name}: {doc} at {mine}, relay at {clocks}")
            for doc in r.doc_names():
                if doc not in relay and decode_state_vector(r.state_vector(doc)):
                    problems.append(f"{node.name}: relay lacks {doc}")
            for entry_id, doc, client, clock in unacknowledged(r):
                if relay.get(doc, {}).get(client, 0) >= clock:
                    self.stale_acks += 1
                    if not strict:
                        continue
                    problems.append(
                        f"{node.name}: queue entry {entry_id} ({doc} up to "
                        f"{client}:{clock}) is stored but not acknowledged"
                    )
                else:
                    problems.append(
                        f"{node.name}: queue entry {entry_id} ({doc} up to "
                        f"{client}:{clock}) is not stored on the relay"
                    )
        return problems

    def _honest(self) -> list[SimNode]:
        """The nodes convergence is asked of: all but :attr:`hostile` ones."""
        return [node for name, node in self.nodes.items() if name not in self.hostile]

    def content_divergences(self) -> list[str]:
        """Raw document contents that differ: relay memory vs its store, replicas vs relay."""
        problems: list[str] = []
        stored = self.relay.stored_docs()
        memory = self.relay.memory_docs()
        for doc in sorted(set(stored) | set(memory)):
            if stored.get(doc) != memory.get(doc):
                problems.append(
                    f"relay: {doc} in memory differs from a reload of its store: "
                    f"{_diff(memory.get(doc), stored.get(doc))}"
                )
        holders = {node.name: node.replica for node in self._honest()}
        if self.relay.central_dir is not None:
            holders["central"] = self.relay.central().replica
        for name, r in holders.items():
            mine = replica_docs(r)
            for doc in sorted(set(stored) | set(mine)):
                if mine.get(doc) != stored.get(doc):
                    problems.append(
                        f"{name}: {doc} differs from the relay: "
                        f"{_diff(mine.get(doc), stored.get(doc))}"
                    )
        return problems

    # -- the pumps ---------------------------------------------------------------------------

    def _on_local(self, link: Link, updates: list[tuple[str, bytes]]) -> None:
        """``replica.on_local_update`` listener: the client's live streaming."""
        if link.current and not link.replica_closed:
            link.sync.send_local(list(updates))
            self._pull_replica(link)
            self._settle()

    def _pull_replica(self, link: Link) -> None:
        """What the client does after each call into ReplicaSync."""
        data = link.sync.data_to_send()
        if data:
            link.sent.append(data)
            if not link.replica_closed and not link.relay_closed:
                link.up.append(data)  # (after the relay closed, the server reads no more)
        sync = link.sync
        if sync.error is not None or sync.resync is not None or sync.done or sync.closed:
            self._replica_side_ends(link)

    def _replica_side_ends(self, link: Link) -> None:
        if link.replica_closed:
            return
        link.replica_closed = True
        link.down.clear()  # the client stops reading
        sync = link.sync
        if sync.error is not None:
            link.outcome = f"error: {sync.error}"
        elif sync.resync is not None:
            link.outcome = f"resync (full={sync.resync})"
        else:
            link.outcome = "ok"
        node = link.node
        if link.current:
            node.link = None
            link.unsubscribe()
            if sync.resync is not None:
                node.full_next = node.full_next or bool(sync.resync)
            self._finish_replica(link)
            if sync.resync is not None and self.auto_reconnect:
                # BackgroundSync / sync_once start the next session at once
                self.connect(node.name, live=link.live)

    def _finish_replica(self, link: Link) -> None:
        r = link.node.replica
        if r.core.closed or r is not link.sync.replica:
            return
        report = link.sync.report
        error = (
            None
            if link.outcome in ("ok", None) or link.outcome.startswith("resync")
            else link.outcome
        )
        r.core.set_connection_state("offline", error)
        if link.log_id is not None:
            finish_session(
                r.core,
                link.log_id,
                "error" if error else "ok",
                docs=report.docs,
                updates_sent=report.updates_sent,
                updates_received=report.updates_received,
                bytes_sent=report.bytes_sent,
                bytes_received=report.bytes_received,
                error=error,
            )

    def _settle(self) -> None:
        """Move the relay's output to links and end the connections that are over."""
        for relay in self.relays:
            while relay.dirty:
                _, session = relay.dirty.popitem()
                link = self._by_session.get(session.id)
                if session.conn is None:
                    continue
                data = session.conn.data_to_send()
                session.queued_bytes = 0
                if link is None:
                    continue  # the session ended; its socket is gone
                if data:
                    link.received.append(data)
                    if not link.relay_closed and not link.replica_closed:
                        link.down.append(data)  # (a closed client reads no more)
                if session.conn.closed and not link.relay_closed:
                    link.relay_closed = True
                    link.up.clear()  # the server stops reading
        for link in list(self.links):
            if (link.replica_closed and not link.up) or (link.relay_closed and not link.down):
                self._end(link)

    def _end(self, link: Link) -> None:
        """The websocket is closed: both ends clean up."""
        if link not in self.links:
            return
        self.links.remove(link)
        self._by_session.pop(link.session.id, None)
        if link.session.id in link.relay.core.sessions:
            log_session(link.relay.store, link.relay.core.end_session(link.session))
        if link.current:
            # closed by the relay (or the network) while the replica was still in it
            link.outcome = link.outcome or "closed by the relay"
            link.node.link = None
            link.unsubscribe()
            self._finish_replica(link)
        self._log(f"end #{link.id} {link.node.name}: {link.outcome}")

    def _break(self, link: Link, reason: str, *, relay_alive: bool = True) -> None:
        """The connection dies at once: in-flight messages are lost on both sides."""
        if link not in self.links:
            return
        link.up.clear()
        link.down.clear()
        link.outcome = link.outcome or f"broken: {reason}"
        if not relay_alive:
            # a dead relay writes no session log; just forget the session
            self.links.remove(link)
            self._by_session.pop(link.session.id, None)
            if link.current:
                link.node.link = None
                link.unsubscribe()
                self._finish_replica(link)
            return
        link.replica_closed = link.relay_closed = True
        self._end(link)

    # -- cleanup -----------------------------------------------------------------------------

    def close(self) -> None:
        for link in list(self.links):
            self._break(link, "closing")
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.replica.close()
        self.relay.close()
