"""A relay cluster in the simulated network: several relay nodes, one store of record.

Extends :mod:`tests.support.simnet` (read its docstring first).  Each node is a
:class:`SimNodeRelay`: its own :class:`~tiendasync.relay.core.RelayCore` (its
own in-memory docs, sessions and pending writes), its own
:class:`~tiendasync.relay.pgstore.PostgresRelayStore` connection to one shared
PostgreSQL database, and the real :class:`~tiendasync.relay.cluster.ClusterNode`
deciding what to read of the others, driven through its sans-I/O methods.
Only the pump is simulated, mirroring ``relay.server`` and ``ClusterNode``'s
asyncio tasks:

* the feed (:class:`SimFeed`) reads with the real
  :class:`~tiendasync.relay.pgfeed.PgFeed` (``latest_seqs``, ``rows_after``:
  the SQL a node runs); LISTEN is simulated: each node's commit puts one
  pointer per stored row (``pgstore.update_notice``, the payload the store's
  commit sends) in the :attr:`SimNodeRelay.inbox` of every node whose LISTEN
  connection is up, its own included, as PostgreSQL does;
* notifications are delivered one at a time, in order or not (reordered), and
  may be duplicated; they are lost only with the LISTEN connection
  (:meth:`SimNodeRelay.listen_drop`: everything in flight is gone and the node
  is deaf until :meth:`SimNodeRelay.listen_reconnect`, which runs
  ``ClusterNode.connected`` with the table's ``latest_seqs``: the catch-up);
* :meth:`SimNodeRelay.tick` is the puller's wake-up (``ClusterNode.due`` then
  ``pull_now``); a HELLO is answered as ``RelayServer._answer_hello`` does on a
  cluster: the node's loaded docs of the tenant are pulled (``serving``), then
  the state vectors are read again and the session welcomed;
* the review lock is a token the simulation hands to the first live node that
  checks it (``ClusterNode.review_lock_checked``); a crashed holder loses it.
  (The advisory lock itself is PostgreSQL's: its release on a dead connection
  is asynchronous, which a deterministic replay cannot wait for.)

A crash of a node (:meth:`ClusterNet.crash_node`) loses its pending writes,
its memory (docs, sessions, cursors) and its LISTEN connection; it starts
again at once with a new ``ClusterNode`` over the same database.  Replicas
are assigned to a node (:meth:`ClusterNet.move`: the load balancer sends
the next connection elsewhere).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psycopg

from tests.support.simnet import NotConverged, SimClock, SimNet, SimRelay, doc_content, replica_docs
from tiendasync.protocol import Hello
from tiendasync.protocol.yjs_update import parse_update
from tiendasync.relay.auth import check_token
from tiendasync.relay.cluster import ClusterNode, Pulled
from tiendasync.relay.core import PendingWrite, RelayCore, RelaySession
from tiendasync.relay.docs import DocCache, compact
from tiendasync.relay.generations import RolloverPolicy
from tiendasync.relay.lookups import lookup_hello
from tiendasync.relay.pgfeed import PgFeed
from tiendasync.relay.pgstore import PostgresRelayStore, update_notice
from tiendasync.relay.storage import RelayStore

__all__ = ["ClusterNet", "SimFeed", "SimNodeRelay", "reset_database"]

Key = tuple[str, str]


def reset_database(url: str) -> None:
    """Empty every table of the relay schema at ``url`` (a fresh database per case
    costs more than the case); the schema stays."""
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename <> 'schema_version'"
            ).fetchall()
        ]
        if tables:
            conn.execute(
                "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
            )


class SimFeed:
    """One node's :class:`~tiendasync.relay.cluster.Feed`: the real PgFeed's reads; the
    simulation carries the notifications and the review lock."""

    def __init__(self, url: str, node: SimNodeRelay) -> None:
        self.node_id = node.node_id
        self._node = node
        self.pg = PgFeed(url, node.node_id)

    def latest_seqs(self) -> dict[Key, int]:
        return self.pg.latest_seqs()

    def rows_after(self, cursors: Mapping[Key, int], exclude: Iterable[int] = ()) -> Pulled:
        return self.pg.rows_after(cursors, exclude)

    def send(self, kind: str, fields: Mapping[str, Any]) -> None:
        payload = json.dumps({**fields, "k": kind, "n": self.node_id}, separators=(",", ":"))
        self._node.cluster_net.notify(payload)

    def hold_review_lock(self) -> bool:
        return self._node.cluster_net.review_lock(self._node)

    def listen(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the simulation delivers the notifications itself")

    def close(self) -> None:
        self.pg.close()


class SimNodeRelay(SimRelay):
    """One relay node: a SimRelay on the shared PostgreSQL store, with its ClusterNode."""

    def __init__(self, directory: Path, *, url: str, node_id: str, net: ClusterNet, **kw: Any):
        self.url = url
        self.node_id = node_id
        self.cluster_net = net
        #: notifications delivered to this node's LISTEN connection, not read yet
        self.inbox: list[str] = []
        #: per pending write (by id), :attr:`ClusterNet.rows_stored` when it was accepted
        self.accepted_at: dict[int, int] = {}
        self.listening = False
        self.crashes = 0
        super().__init__(directory, **kw)
        self.session_prefix = node_id

    def _open_store(self) -> RelayStore:
        return PostgresRelayStore(self.url, node_id=self.node_id)

    def _on_write(self, write: PendingWrite) -> None:
        """The core applied an update (pending storage): note how many rows the cluster
        had stored by then (see :meth:`ClusterNet.stored`)."""
        self.accepted_at[id(write)] = self.cluster_net.rows_stored
        super()._on_write(write)

    def _build_core(self) -> RelayCore:
        core = super()._build_core()
        self.cluster = ClusterNode(SimFeed(self.url, self))
        self.cluster.attach(core, lambda: [self.tenant])
        return core

    # -- the node's loop -------------------------------------------------------------------

    def listen_connect(self) -> int:
        """LISTEN is (again) active, then the catch-up from the table; returns how many
        documents were behind."""
        self.listening = True
        return self.cluster.connected(self.cluster.feed.latest_seqs())

    def listen_drop(self) -> int:
        """The LISTEN connection dies: what was in flight on it is lost.  Returns how many."""
        lost = len(self.inbox)
        self.inbox.clear()
        self.listening = False
        return lost

    def deliver_notice(self, index: int = 0) -> None:
        self.cluster.notice(self.inbox.pop(index))

    def tick(self) -> bool:
        """The puller wakes: reads what is due.  False if nothing was due."""
        due = self.cluster.due()
        if not due:
            return False
        self.cluster.pull_now(due)
        return True

    def review_check(self) -> None:
        """The review watch's turn: take the lock if free, then retry what failed."""
        self.cluster.review_lock_checked(self.cluster.feed.hold_review_lock())
        if self.cluster.reviewer:
            self.core.retry_reviews()  # the server's review-retry loop

    def answer_hello(self, session: RelaySession, hello: Hello) -> None:
        """``RelayServer._answer_hello`` on a cluster, inline."""
        store, core = self.store, self.core
        token, refused = check_token(store, hello.token)
        if not core.authenticated(session, hello, token, refused):
            return
        assert token is not None
        facts = lookup_hello(store, hello)
        keys = self.cluster.serving(hello.tenant, None)
        if keys:
            self.cluster.pull_now(keys, force=True)
        if not facts.foreign:
            facts = dataclasses.replace(facts, state_vectors=store.state_vectors(hello.tenant))
        core.welcome(session, hello, token, facts)

    def flush_storage(self, limit: int | None = None) -> list[PendingWrite]:
        """The group commit: store, tell the cluster node (``after_commit``), acknowledge
        and fan out, then the commit's notifications."""
        n = len(self.pending) if limit is None else max(0, min(limit, len(self.pending)))
        batch, self.pending[:n] = self.pending[:n], []
        batch = self.core.storable(batch)
        if not batch:
            return batch
        result = self.store.append_many([w.entry() for w in batch])
        self.cluster.committed(batch, result)
        self.core.committed(batch, result)
        self.committed_writes += len(batch)
        self.cluster_net.stored(self, batch, result.seqs)
        return batch

    def crash(self) -> int:
        lost = super().crash()
        self.accepted_at.clear()
        self.cluster.feed.close()
        self.listen_drop()
        self.crashes += 1
        return lost

    def start(self) -> None:
        super().start()
        self.listen_connect()

    def close(self) -> None:
        super().close()
        with contextlib.suppress(Exception):
            self.cluster.feed.close()

    def loaded_docs(self) -> dict[str, dict[str, Any]]:
        """Raw content of the docs this node holds in memory now (none loaded here)."""
        out = {}
        for tenant, name in self.core.docs.loaded():
            current = self.core.docs.current(tenant, name)
            if tenant == self.tenant and current is not None:
                content = doc_content(current.doc)
                if content:
                    out[name] = content
        return out


class ClusterNet(SimNet):
    """Replicas, ``nodes`` relay nodes on one PostgreSQL database, and the links."""

    def __init__(
        self,
        directory: Path,
        url: str,
        *,
        nodes: int = 3,
        seed: int = 0,
        clock: SimClock | None = None,
        max_docs: int = 1000,
        **kw: Any,
    ) -> None:
        self.url = url
        self.node_count = nodes
        self.lock_holder: SimNodeRelay | None = None
        #: where each replica's next connection goes (the load balancer)
        self.assignment: dict[str, int] = {}
        #: rows stored so far (every node), the cluster's logical commit clock
        self.rows_stored = 0
        #: per (doc, writer client), the clock ranges stored: ``(start, end, node, seq, n)``
        #: (``n``: :attr:`rows_stored` after that row)
        self.stored_items: dict[tuple[str, int], list[tuple[int, int, str, int, int]]] = {}
        #: rows holding items a row stored before the node accepted them (a bug: it
        #: should have known them), as text
        self.duplicates: list[str] = []
        #: rows holding items another node stored after this node accepted them (two
        #: nodes held the same upload uncommitted: at-least-once storage, harmless)
        self.concurrent_duplicates = 0
        super().__init__(directory, seed=seed, clock=clock, max_docs=max_docs, **kw)
        for node in self.cluster_nodes:
            node.listen_connect()
        for node in self.cluster_nodes:
            node.review_check()

    def _make_relays(
        self, *, central: bool, invariants: tuple[Any, ...], durability: str, max_docs: int
    ) -> list[SimRelay]:
        return [
            SimNodeRelay(
                self.directory / f"node{i}",
                url=self.url,
                node_id=f"n{i}",
                net=self,
                tenant=self.tenant,
                central=central,
                invariants=invariants,
                durability=durability,
                max_docs=max_docs,
                clock=self.clock.seconds,
                client_id_source=self.rng.randrange,
                # the central writers stamp with the simulation's clock: replays are exact
                central_wall_clock=self.clock,
            )
            for i in range(self.node_count)
        ]

    @property
    def cluster_nodes(self) -> list[SimNodeRelay]:
        return [r for r in self.relays if isinstance(r, SimNodeRelay)]

    @property
    def all_listening(self) -> bool:
        return all(n.listening for n in self.cluster_nodes)

    def node(self, i: int) -> SimNodeRelay:
        return self.cluster_nodes[i % self.node_count]

    # -- the load balancer -------------------------------------------------------------------

    def relay_for(self, name: str) -> SimRelay:
        if name not in self.assignment:
            self.assignment[name] = len(self.assignment) % self.node_count
        return self.node(self.assignment[name])

    def move(self, name: str, i: int) -> None:
        """The replica's connection breaks; its next one reaches node ``i``."""
        self.disconnect(name)
        self.assignment[name] = i % self.node_count
        self._log(f"move {name} -> n{i % self.node_count}")

    # -- notifications and the review lock ---------------------------------------------------

    def notify(self, payload: str) -> None:
        """A NOTIFY committed: every node LISTENing now receives it."""
        for node in self.cluster_nodes:
            if node.listening:
                node.inbox.append(payload)

    def stored(self, node: SimNodeRelay, batch: list[PendingWrite], seqs: list[int | None]) -> None:
        """``node`` committed ``batch``: note which items each row holds (an update
        stored twice, see :attr:`duplicates`), then the commit's notifications."""
        for write, seq in zip(batch, seqs, strict=False):
            accepted = node.accepted_at.pop(id(write), 0)
            if seq is None or write.data is None:
                continue
            self.rows_stored += 1
            concurrent = False
            for struct in parse_update(write.data).structs:
                held = self.stored_items.setdefault((write.doc, struct.client), [])
                lo, hi = struct.clock, struct.clock + struct.length
                for a, b, who, other, when in held:
                    if not (a < hi and lo < b):
                        continue
                    if when <= accepted or who == node.node_id:
                        self.duplicates.append(
                            f"{write.doc} {struct.client}:{max(a, lo)}..{min(b, hi) - 1} in "
                            f"row {other} ({who}) and row {seq} ({node.node_id}, accepted "
                            f"after {accepted} rows, the first was row #{when})"
                        )
                    else:
                        concurrent = True
                held.append((lo, hi, node.node_id, seq, self.rows_stored))
            self.concurrent_duplicates += concurrent
            self.notify(update_notice(node.node_id, write.tenant, write.doc, seq))

    def review_lock(self, node: SimNodeRelay) -> bool:
        if self.lock_holder is None:
            self.lock_holder = node
        return self.lock_holder is node

    @property
    def reviewer(self) -> SimNodeRelay | None:
        return next((n for n in self.cluster_nodes if n.cluster.reviewer), None)

    # -- nodes ---------------------------------------------------------------------------------

    def crash_node(self, i: int) -> int:
        """Node ``i`` dies (SIGKILL) and starts again: returns its writes lost uncommitted."""
        node = self.node(i)
        for link in list(self.links):
            if link.relay is node:
                self._break(link, "relay node killed", relay_alive=False)
        lost = node.crash()
        if self.lock_holder is node:
            self.lock_holder = None  # its connection, and the advisory lock, are gone
        node.start()
        self._fault("node_crash")
        self._log(f"node {node.node_id} killed: {lost} uncommitted writes lost")
        return lost

    def restart_relay(self, rollover: RolloverPolicy | None = None) -> int:
        """Node 0 dies and starts again (rollover on a cluster is not built: refused)."""
        if rollover is not None:
            raise NotImplementedError("rollover on a cluster is not built (docs/generations.md)")
        return self.crash_node(0)

    def flush_storage(self, limit: int | None = None, node: int | None = None) -> int:
        total = 0
        for n in self.cluster_nodes if node is None else [self.node(node)]:
            total += len(n.flush_storage(limit))
        if total:
            self._log(f"flush {total}")
        self._settle()
        return total

    def relay_unload_idle_docs(self, node: int = 0) -> int:
        docs = self.node(node).core.docs
        saved, docs.idle_seconds = docs.idle_seconds, -1.0
        try:
            return docs.sweep()
        finally:
            docs.idle_seconds = saved

    def relay_compact(self) -> int:
        folded = sum(
            compact(self.relay.store, self.tenant, doc)
            for doc in self.relay.store.state_vectors(self.tenant)
        )
        self._log(f"relay compacted {folded} updates")
        return folded

    def request_sync(self, name: str, full: bool = False) -> bool:
        sent = any(n.core.request_sync(self.tenant, name, full) for n in self.cluster_nodes)
        self._settle()
        return sent

    def deliver_notice(self, i: int, index: int = 0) -> bool:
        node = self.node(i)
        if not node.inbox:
            return False
        if index:
            self._fault("notice_reorder")
        node.deliver_notice(min(index, len(node.inbox) - 1))
        self._settle()
        return True

    def tick(self, i: int) -> bool:
        moved = self.node(i).tick()
        self._settle()
        return moved

    # -- running -------------------------------------------------------------------------------

    def run(self, *, flush: bool = True, max_steps: int = 100_000) -> int:
        """Deliver everything, flush every node, deliver every notification, let every
        puller run, until nothing moves."""
        steps = 0
        while steps < max_steps:
            steps += 1
            if self.step():
                continue
            if flush and any(n.pending for n in self.cluster_nodes):
                self.flush_storage()
                continue
            busy = [i for i, n in enumerate(self.cluster_nodes) if n.inbox]
            if busy:
                self.deliver_notice(busy[0])
                continue
            if any(self.tick(i) for i in range(self.node_count)):
                continue
            return steps
        raise NotConverged(f"the cluster was still busy after {max_steps} steps")

    def quiesce(self) -> list[str]:
        """The final quiescent round: partitions lifted, every replica on a fresh
        connection to its node, everything delivered and stored; then every deaf
        node's LISTEN reconnects (its catch-up is the only way it learns what it
        missed) and everything runs again, with no new HELLO.  Returns
        :meth:`divergences` plus :meth:`node_divergences`."""
        for replica in self.nodes.values():
            replica.partitioned = False
        for name in self.nodes:
            self.disconnect(name)
        for name in self.nodes:
            self.connect(name)
        self.run()
        for node in self.cluster_nodes:
            node.review_check()
        self._settle()
        self.run()
        for node in self.cluster_nodes:
            if not node.listening:
                node.listen_connect()
        self.run()
        return self.divergences() + self.node_divergences()

    def heal(self, *, max_rounds: int = 4) -> int:
        for node in self.cluster_nodes:
            if not node.listening:
                node.listen_connect()
        for replica in self.nodes.values():
            replica.partitioned = False
        for rnd in range(1, max_rounds + 1):
            for name in self.nodes:
                self.disconnect(name)
            for name in self.nodes:
                self.connect(name)
            self.run()
            for node in self.cluster_nodes:
                node.review_check()
            reviewer = self.reviewer
            if reviewer is not None and reviewer.central_dir is not None:
                reviewer.central()
                self._settle()
            self.run()
            problems = self.divergences() + self.node_divergences()
            if not problems:
                return rnd
            self._log(f"heal round {rnd}: {problems[:3]}")
        raise NotConverged(
            f"not converged after {max_rounds} heal rounds: "
            f"{(self.divergences() + self.node_divergences())[:10]}"
        )

    # -- what must hold -----------------------------------------------------------------------

    def stored_docs(self) -> dict[str, dict[str, Any]]:
        """Every doc as a fresh load from the store of record rebuilds it."""
        cache = DocCache(self.relay.store)
        out = {}
        for name in self.relay.store.state_vectors(self.tenant):
            content = doc_content(cache.get(self.tenant, name).doc)
            if content:
                out[name] = content
        cache.clear()
        return out

    def stored_clocks(self) -> dict[str, dict[int, int]]:
        """Per doc, the clocks its stored rows hold (rebuilt, not the state-vector rows)."""
        cache = DocCache(self.relay.store)
        try:
            return {
                name: cache.get(self.tenant, name).clocks()
                for name in self.relay.store.state_vectors(self.tenant)
            }
        finally:
            cache.clear()

    def node_divergences(self) -> list[str]:
        """Docs a node holds in memory that differ from the store of record, and replicas
        (honest ones, and the reviewer's central writer) whose docs differ from it."""
        problems: list[str] = []
        stored = self.stored_docs()
        for node in self.cluster_nodes:
            for doc, content in node.loaded_docs().items():
                if content != stored.get(doc):
                    problems.append(f"{node.node_id}: {doc} in memory differs from the store")
        holders = {n.name: n.replica for n in self._honest()}
        reviewer = self.reviewer
        if reviewer is not None and reviewer.central_dir is not None:
            holders["central"] = reviewer.central().replica
        for name, r in holders.items():
            mine = replica_docs(r)
            for doc in sorted(set(stored) | set(mine)):
                if mine.get(doc) != stored.get(doc):
                    problems.append(f"{name}: {doc} differs from the store of record")
        return problems

    def content_divergences(self) -> list[str]:
        return self.node_divergences()

    def acknowledged_not_stored(self) -> list[str]:
        """Queue clocks a replica holds as acknowledged that the store of record lacks
        (rebuilt from its rows, not from the state-vector rows)."""
        cache = DocCache(self.relay.store)
        problems = []
        try:
            for node in self._honest():
                rows = node.replica.core.storage.conn.execute(
                    "SELECT DISTINCT c.doc, c.client_id, c.clock FROM queue_clocks c "
                    "WHERE c.acked = 1"
                ).fetchall()
                for doc, client, clock in rows:
                    have = cache.get(self.tenant, str(doc)).clocks().get(int(client), 0)
                    if have < int(clock):
                        problems.append(
                            f"{node.name}: {doc} {client}:{clock} acknowledged, store has {have}"
                        )
        finally:
            cache.clear()
        return problems

    def close(self) -> None:
        super().close()
        for node in self.cluster_nodes:
            node.close()
