"""Convergence under faults with a relay cluster: the state machine of
``test_convergence_stateful`` on 2 or 3 relay nodes sharing one PostgreSQL store
of record (``tests/support/simcluster.py``: the real ``ClusterNode`` decides what
each node reads of the others; LISTEN is simulated).

Every rule of :class:`SyncConvergence` runs here too (writes, the malicious
replica, connections, the network, maintenance with compaction of the updates
table, replica crashes; its relay restart kills node 0).  The cluster's own
rules are in their own section below: move a replica to another node (its next
connection goes there), deliver, reorder, duplicate the node-to-node
notifications or let a node's puller run, drop a node's LISTEN connection
(what was in flight on it is lost) and reconnect it, kill a node (its pending
writes, docs, sessions and cursors are lost; it starts again at once), check
the review lock.

Checked:

* right after a LISTEN reconnection and its catch-up (no HELLO in between),
  every doc the node holds in memory holds every row stored (the cursor
  catch-up is the only way it learns what it missed while deaf);
* the final quiescent round (``teardown``): every node's writes stored, each
  deaf node reconnected and caught up, notifications delivered and pullers
  run, with no replica connecting: every node's in-memory docs equal the
  store of record;
* then the network heals (fresh connections, bounded rounds): every replica,
  every node's loaded docs and the reviewer's central writer equal the store
  of record; every queue entry a replica holds as acknowledged is in the
  store's rows; no node stored an update it (or an earlier row) already held;
  stock totals equal the sequential model (each sale counted once) and every
  sale is everywhere once;
* conflicts: the review runs on the holder of the review lock, handed over
  when it dies; at the end each (invariant, key) has at most one open
  conflict, and the open ones are exactly the invariants' verdict.

Profiles: CI ``max_examples=15, stateful_step_count=30``; ``TIENDASYNC_SOAK=1``
(``make soak``) 300 cases of up to 80 steps.  A failure prints its steps and a
``@reproduce_failure`` blob, as the single-relay machine does.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, precondition, rule, run_state_machine_as_test

from tests.convergence.test_convergence_stateful import (
    CI_SETTINGS,
    LOCS,
    MALLORY,
    RELAY_MAX_DOCS,
    SKUS,
    START_MS,
    WRITES,
    SyncConvergence,
    replica_index,
    skus,
)
from tests.convergence.test_convergence_stateful import SOAK_SETTINGS as BASE_SOAK_SETTINGS
from tests.support.postgres import PgServer
from tests.support.simcluster import ClusterNet
from tests.support.simnet import SimClock, replica_snapshot
from tiendasync.store.invariants import evaluate

#: The single-relay machine's bounds; the soak runs fewer cases (each starts PostgreSQL work).
SOAK_SETTINGS = settings(BASE_SOAK_SETTINGS, max_examples=300)

#: Figures over every case run in this process (printed by the tests; ``-s`` shows them).
FIGURES: Counter[str] = Counter()

node_index = st.integers(min_value=0, max_value=2)
NOTICE_OPS = (
    "deliver",
    "deliver",
    "deliver",
    "tick",
    "tick",
    "reorder",
    "duplicate",
    "flush",
    "listen_drop",
    "listen_reconnect",
)


class ClusterConvergence(SyncConvergence):
    """:class:`SyncConvergence` with 2 or 3 relay nodes (see the module docstring)."""

    #: the PostgreSQL server of the test (set by the test function)
    pg: PgServer | None = None

    def __init__(self) -> None:
        super().__init__()
        self.url: str | None = None
        self.node_crashes = 0

    @property
    def c(self) -> ClusterNet:
        assert isinstance(self.net, ClusterNet)
        return self.net

    # -- set-up ---------------------------------------------------------------------------

    @initialize(
        nodes=st.integers(min_value=2, max_value=3),
        replicas=st.integers(min_value=2, max_value=5),
        seed=st.integers(min_value=0, max_value=2**32 - 1),
        max_docs=st.sampled_from(RELAY_MAX_DOCS),
    )
    def start(self, replicas: int, seed: int, max_docs: int, nodes: int = 3) -> None:
        assert self.pg is not None
        self.url = self.pg.new_database()
        self.net = ClusterNet(
            self.dir, self.url, nodes=nodes, seed=seed, clock=SimClock(START_MS), max_docs=max_docs
        )
        for i in range(replicas):
            name = f"r{i}"
            node = self.net.add_replica(name, LOCS[i % 2])
            node.replica.locations.put(LOCS[(i + 1) % 2])  # so transfers can name it
            self.names.append(name)
        self.net.add_replica(MALLORY, LOCS[0])
        self.net.hostile.add(MALLORY)
        for name in self.names:  # the stores open online, spread over the nodes
            self.net.connect(name)
        self.net.run()
        FIGURES["cases"] += 1
        FIGURES[f"nodes_{nodes}"] += 1

    # -- the cluster's rules ----------------------------------------------------------------

    @rule(i=replica_index, to=node_index)
    def move(self, i: int, to: int) -> None:
        """The replica's connection breaks; the load balancer sends the next one to ``to``."""
        self.c.move(self.name(i), to)
        self.c.connect(self.name(i))
        FIGURES["moves"] += 1

    @rule(
        ops=st.lists(
            st.tuples(st.sampled_from(NOTICE_OPS), node_index, st.integers(0, 3)),
            min_size=1,
            max_size=10,
        )
    )
    def notices(self, ops: list[tuple[str, int, int]]) -> None:
        """A burst of the nodes' own events: (op, node, index in its inbox).  The LISTEN
        connection of a node drops (what was in flight on it is lost) and comes back
        (its catch-up, then a check that it holds every stored row)."""
        net = self.c
        for op, i, index in ops:
            node = net.node(i)
            if op == "deliver":
                net.deliver_notice(i)
            elif op == "reorder":
                net.deliver_notice(i, index)
            elif op == "duplicate":
                if node.inbox:
                    index = min(index, len(node.inbox) - 1)
                    node.inbox.insert(index + 1, node.inbox[index])
                    net._fault("notice_duplicate")
            elif op == "tick":
                net.tick(i)
            elif op == "flush":
                net.flush_storage(None if index == 0 else index, node=i)
            elif op == "listen_drop":
                self._listen_drop(i)
            elif op == "listen_reconnect":
                self._listen_reconnect(i)
            else:  # pragma: no cover
                raise AssertionError(op)

    def _listen_drop(self, i: int) -> None:
        """The node's LISTEN connection dies: the notifications in flight on it are lost."""
        FIGURES["notices_lost_with_listen"] += self.c.node(i).listen_drop()
        FIGURES["listen_drops"] += 1

    def _listen_reconnect(self, i: int) -> None:
        """LISTEN is back: the catch-up from the table, and the puller's run.  Then every
        doc the node holds must hold every stored row: it had no other way to learn them."""
        net = self.c
        node = net.node(i)
        if node.listening:
            return
        FIGURES["catch_up_docs"] += node.listen_connect()
        while node.tick():
            pass
        net._settle()
        self._assert_node_current(i, "after its LISTEN reconnected")

    @rule(
        i=node_index,
        batch=st.lists(
            st.tuples(
                st.sampled_from(WRITES), replica_index, skus, st.integers(1, 6), st.booleans()
            ),
            max_size=4,
        ),
        flush=st.booleans(),
        compact=st.booleans(),
    )
    def listen_outage(
        self, i: int, batch: list[tuple[str, int, str, int, bool]], flush: bool, compact: bool
    ) -> None:
        """A LISTEN outage while the others work: the node's connection drops, replicas
        of the other nodes write and sync (stored with ``flush``) while it is deaf, the
        updates table is compacted (``compact``: rows the node never read are folded
        into snapshots, so it must reload those docs), then it comes back and catches
        up (checked at once)."""
        net = self.c
        self._listen_drop(i)
        deaf = net.node(i)
        for kind, j, sku, qty, flag in batch:
            name = self.name(j)
            if net.relay_for(name) is not deaf:
                self._write(kind, j, sku, qty, flag)
                net.connect(name)
        net.run(flush=flush)
        if compact:
            net.relay_compact()
        self._listen_reconnect(i)

    def _assert_node_current(self, i: int, when: str) -> None:
        net = self.c
        node = net.node(i)
        stored = net.stored_clocks()
        for tenant, doc in node.core.docs.loaded():
            current = node.core.docs.current(tenant, doc)
            if current is None or tenant != net.tenant:
                continue
            mine = current.clocks()
            missing = {c: k for c, k in stored.get(doc, {}).items() if mine.get(c, 0) < k}
            assert not missing, (
                f"{node.node_id} {when}: its {doc} lacks stored clocks {missing} (has {mine})"
            )

    @precondition(lambda self: self.net is not None and self.node_crashes < 3)
    @rule(i=node_index, mid_stream=st.booleans())
    def kill_node(self, i: int, mid_stream: bool) -> None:
        """The node is SIGKILLed (``mid_stream``: right after every message in flight was
        applied and before its group commit, so its pending writes are lost)."""
        self.node_crashes += 1
        if mid_stream:
            self.c.run(flush=False)
        FIGURES["node_writes_lost_uncommitted"] += self.c.crash_node(i)

    @rule(i=node_index)
    def review_watch(self, i: int) -> None:
        """The node's review watch checks the lock (taken if free)."""
        self.c.node(i).review_check()
        self.c._settle()

    # -- the end -------------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            if self.url is not None and self.pg is not None:
                self.pg.drop_database(self.url)

    def _heal_and_check(self) -> None:
        net = self.c
        note(f"model: {dict(sorted(self.model.items()))}")
        try:
            self._final_quiescent_round()
            rounds = net.heal()
        finally:
            note("last network events: " + " | ".join(net.trace[-25:]))
        event(f"heal rounds: {rounds}")
        FIGURES[f"heal_rounds_{rounds}"] += 1
        for kind, count in net.faults.items():
            FIGURES[f"fault_{kind}"] += count
        for node in net.cluster_nodes:
            for k, v in node.cluster.metrics().items():
                if k.endswith("_total"):
                    FIGURES[k.removeprefix("cluster_").removesuffix("_total")] += int(v)
        FIGURES["writes"] += self.write_count

        assert not net.duplicates, (
            "updates stored twice:\n"
            + "\n".join(net.duplicates[:10])
            + "\n"
            + " | ".join(net.trace)
        )
        FIGURES["rows_stored_by_two_nodes_concurrently"] += net.concurrent_duplicates
        lost = net.acknowledged_not_stored()
        assert not lost, "acknowledged but not stored:\n" + "\n".join(lost[:10])

        reviewer = net.reviewer
        assert reviewer is not None, "no node holds the review lock after healing"
        central = reviewer.central()
        book = central.replica.conflicts
        keys = [(loc, sku) for loc in (*LOCS, "central") for sku in SKUS]
        names = {inv.name for inv in book.invariants}

        def open_conflicts() -> Counter[tuple[str, str]]:
            return Counter(
                (c.invariant, c.key)
                for c in book.list(status="open", limit=10**9)
                if c.invariant in names
            )

        twice = {k: n for k, n in open_conflicts().items() if n > 1}
        assert not twice, f"conflicts open more than once: {twice}"
        verdict, _ = evaluate(book.invariants, book.state, keys)
        if {k for _, k in open_conflicts()} != set(verdict):
            FIGURES["conflicts_stale_before_full_review"] += 1
        book.review(keys)  # as the reviewer would on the next touch of those keys
        net.heal()
        verdict, _ = evaluate(book.invariants, book.state, keys)
        open_now = open_conflicts()
        assert {k for _, k in open_now} == set(verdict), (
            f"open conflicts {sorted(open_now)} != invariants' verdict {sorted(verdict)}"
        )
        assert all(n == 1 for n in open_now.values()), f"conflicts open twice: {open_now}"
        FIGURES["open_conflicts"] += len(open_now)

        states = {name: replica_snapshot(net.replica(name), list(LOCS)) for name in self.names}
        states["central"] = replica_snapshot(central.replica, list(LOCS))
        reference = states["central"]
        for name, state in states.items():
            for part in reference:
                assert state[part] == reference[part], (
                    f"{name} diverged from the central writer in {part}: "
                    f"{state[part]} != {reference[part]}"
                )
        totals = {(loc, sku): reference["stock"][loc].get(sku, 0) for loc in LOCS for sku in SKUS}
        expected = {key: self.model.get(key, 0) for key in totals}
        assert totals == expected, f"stock {totals} != sequential model {expected}"
        sale_ids = [sale_id for sale_id, _ in reference["sales"]]
        assert len(sale_ids) == len(set(sale_ids)), "a sale listed twice"
        assert set(sale_ids) == self.sales, (
            f"sales lost {sorted(self.sales - set(sale_ids))}, "
            f"unknown {sorted(set(sale_ids) - self.sales)}"
        )
        FIGURES["cases_converged"] += 1

    def _final_quiescent_round(self) -> None:
        """Every node stores what it holds, each deaf node reconnects and catches up,
        notifications and pullers run, with no replica connecting: every node's
        in-memory docs must then equal the store of record."""
        net = self.c
        for link in list(net.links):
            net._break(link, "final round")  # no more uploads, no HELLO
        for _ in range(100):
            moved = net.flush_storage() > 0
            for i, node in enumerate(net.cluster_nodes):
                if not node.listening:
                    FIGURES["catch_up_docs"] += node.listen_connect()
                    moved = True
                while node.inbox:
                    net.deliver_notice(i)
                    moved = True
                moved = net.tick(i) or moved
            if not moved:
                break
        else:  # pragma: no cover
            raise AssertionError("the nodes did not go quiet")
        for i in range(net.node_count):
            self._assert_node_current(i, "in the final quiescent round")
        problems = [p for p in net.node_divergences() if p.startswith("n")]
        assert not problems, "nodes differ from the store of record:\n" + "\n".join(problems[:10])


def _run(profile: settings, title: str, pg_server: PgServer) -> None:
    FIGURES.clear()
    ClusterConvergence.pg = pg_server
    try:
        run_state_machine_as_test(ClusterConvergence, settings=profile)
    finally:
        ClusterConvergence.pg = None
    print(f"\n{title}: " + ", ".join(f"{k}={v}" for k, v in sorted(FIGURES.items())))


def test_cluster_convergence_under_faults(pg_server: PgServer) -> None:
    """CI profile: 15 cases of up to 30 steps on 2-3 relay nodes."""
    _run(CI_SETTINGS, "cluster convergence (CI profile)", pg_server)


@pytest.mark.soak
@pytest.mark.timeout(6 * 3600)
def test_cluster_convergence_under_faults_soak(pg_server: PgServer) -> None:
    """Soak profile: 300 cases of up to 80 steps."""
    _run(SOAK_SETTINGS, "cluster convergence (soak profile)", pg_server)
