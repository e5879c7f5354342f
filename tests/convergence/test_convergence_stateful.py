"""Convergence under faults: a hypothesis state machine over the simulated network.

2 to 6 replicas (two locations, so several terminals share a location) and one
relay with its central writer.  Rules make sales, receipts, transfers,
stocktakes, product edits and deletes on a few SKUs; connect, disconnect and
partition replicas; deliver, reorder, duplicate, lose and drop messages; flush
the relay's storage; crash a replica (reopened from its file: a new Yjs
client id) and restart the relay (its uncommitted writes are lost).  One more
replica, Mallory, holds a valid token and attacks: it deletes or overwrites
another writer's stock slot, or writes garbage under its own id, straight into
its documents, and syncs.  Convergence is asked of the honest replicas only;
the relay must refuse every attack, so the model stays exact.

A model without invariants tracks the sequential totals: the stock of a
(location, SKU) is the sum of the deltas of every write whose call returned
(a stocktake counts with the delta it wrote, ``StockMovement.delta``).

At the end (``teardown``) the network heals -- partitions lifted, everyone
reconnected, everything delivered and flushed until quiet, a bounded loop --
and then every replica and the relay's central replica must hold identical
state (catalog, stock per location, sales, locations, conflict records),
the totals must equal the model, every sale whose call returned must be
everywhere, and the relay's open conflicts must be exactly the invariants'
verdict on the final state.

Profiles: CI runs ``max_examples=15, stateful_step_count=30``;
``TIENDASYNC_SOAK=1 pytest -m soak`` (``make soak``) runs the long one.

Reproducing a failure: hypothesis prints the failing steps as code (paste
them into a test) and, since ``print_blob=True``, a ``@reproduce_failure``
line; the failing example is also saved in ``.hypothesis/`` and replayed
first on the next run of this file.  The ``seed`` argument of the ``start``
step fixes the Yjs client ids, so a replay is exact.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from hypothesis import HealthCheck, event, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.support.simnet import DOWN, UP, SimClock, SimNet, replica_snapshot
from tiendasync import Replica
from tiendasync.crdt.keys import ROOT, SEP
from tiendasync.store.invariants import evaluate

SKUS = ("CAFE", "LECHE", "PAN")
LOCS = ("tienda-1", "tienda-2")
#: One start per process, so a replay within the run is exact (the relay's
#: central writer reads the real clock: replicas must not be far from it).
START_MS = int(time.time() * 1000)
#: The relay's doc cache size: 2 keeps it always full (docs loaded and
#: unloaded all the time, pinned docs with uncommitted writes crowding it).
RELAY_MAX_DOCS = (1000, 2)
SOAK = os.environ.get("TIENDASYNC_SOAK") == "1"

CI_SETTINGS = settings(
    max_examples=15,
    stateful_step_count=30,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SOAK_SETTINGS = settings(
    max_examples=500,
    stateful_step_count=80,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Figures over every case run in this process (printed by the tests; ``-s`` shows them).
FIGURES: Counter[str] = Counter()

replica_index = st.integers(min_value=0, max_value=5)
#: Weighted by repetition (hypothesis shrinks towards the first).
WRITES = (
    "sale",
    "sale",
    "sale",
    "receipt",
    "receipt",
    "transfer",
    "stocktake",
    "product_edit",
    "product_delete",
)
CONNECTION_OPS = (
    "connect",
    "connect",
    "connect",
    "connect_once",
    "disconnect",
    "partition",
    "unpartition",
    "sync_now",
)
NETWORK_OPS = (
    "deliver",
    "deliver",
    "deliver",
    "deliver",
    "deliver",
    "deliver",
    "flush",
    "reorder",
    "duplicate",
    "lose",
    "drop",
)
skus = st.sampled_from(SKUS)
#: The malicious replica, and what it tries (see ``SyncConvergence.attack``).
MALLORY = "mallory"
ATTACKS = ("delete_theirs", "overwrite_theirs", "garbage_own")


class SyncConvergence(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tiendasync-simnet-"))
        self.net: SimNet | None = None
        self.names: list[str] = []
        self.model: Counter[tuple[str, str]] = Counter()
        self.sales: set[str] = set()
        self.write_count = 0
        self.crashes = 0
        self.restarts = 0

    # -- set-up ---------------------------------------------------------------------------

    @initialize(
        replicas=st.integers(min_value=2, max_value=6),
        seed=st.integers(min_value=0, max_value=2**32 - 1),
        max_docs=st.sampled_from(RELAY_MAX_DOCS),
    )
    def start(self, replicas: int, seed: int, max_docs: int) -> None:
        self.net = SimNet(self.dir, seed=seed, clock=SimClock(START_MS), max_docs=max_docs)
        for i in range(replicas):
            name = f"r{i}"
            node = self.net.add_replica(name, LOCS[i % 2])
            node.replica.locations.put(LOCS[(i + 1) % 2])  # so transfers can name it
            self.names.append(name)
        # A store with a valid token that attacks the others (see ``attack``).
        self.net.add_replica(MALLORY, LOCS[0])
        self.net.hostile.add(MALLORY)
        FIGURES["cases"] += 1
        FIGURES["replicas"] += replicas

    @property
    def n(self) -> SimNet:
        assert self.net is not None
        return self.net

    def name(self, i: int) -> str:
        return self.names[i % len(self.names)]

    def replica(self, i: int) -> Replica:
        return self.n.replica(self.name(i))

    def _wrote(self) -> None:
        self.write_count += 1
        self.n.clock.tick(7)

    # -- writes ------------------------------------------------------------------------------

    @rule(
        batch=st.lists(
            st.tuples(
                st.sampled_from(WRITES), replica_index, skus, st.integers(1, 6), st.booleans()
            ),
            min_size=1,
            max_size=4,
        )
    )
    def writes(self, batch: list[tuple[str, int, str, int, bool]]) -> None:
        """1 to 4 local writes: (kind, replica, SKU, quantity, flag)."""
        for kind, i, sku, qty, flag in batch:
            self._write(kind, i, sku, qty, flag)

    def _write(self, kind: str, i: int, sku: str, qty: int, flag: bool) -> None:
        r = self.replica(i)
        here = r.location
        other = LOCS[1] if here == LOCS[0] else LOCS[0]
        if kind == "sale":
            sale = r.record_sale([(sku, qty, 100)])
            self.model[(here, sku)] -= qty
            self.sales.add(sale.id)
        elif kind == "receipt":
            assert r.inventory.receive(sku, qty).delta == qty
            self.model[(here, sku)] += qty
        elif kind == "transfer":
            src, dst = (here, other) if flag else (other, here)
            r.inventory.transfer(sku, qty, from_location=src, to_location=dst)
            self.model[(src, sku)] -= qty
            self.model[(dst, sku)] += qty
        elif kind == "stocktake":
            counted = qty - 1 if flag else qty + 3
            move = r.inventory.count(sku, counted)
            assert r.inventory.stock(sku) == counted  # what this replica sees now
            self.model[(here, sku)] += move.delta
        elif kind == "product_edit":
            fields: dict[str, Any] = {"price_cents": 50 * qty}
            if flag:
                fields["name"] = f"{sku.title()} {qty}"
            r.catalog.put(sku, fields)
        elif kind == "product_delete":
            r.catalog.delete(sku)
        else:  # pragma: no cover
            raise AssertionError(kind)
        self.write_count += 1
        self.n.clock.tick(7)

    # -- a malicious replica ---------------------------------------------------------------------

    @rule(attack=st.sampled_from(ATTACKS), i=replica_index, sku=skus)
    def attack(self, attack: str, i: int, sku: str) -> None:
        """The malicious store writes straight into its documents what the public
        API never would, then syncs: the relay must refuse all of it, so nothing
        of it may reach anyone (the teardown's checks and the model say so)."""
        net = self.n
        mallory = net.replica(MALLORY)
        net.disconnect(MALLORY)
        victim = self.replica(i)
        doc_name = f"stock/{victim.location}"
        # Mallory knows the victim's data (from the relay earlier, or a stolen file).
        mallory.apply_remote(doc_name, bytes(victim.core.docs.doc(doc_name).get_update()))
        own = {str(c) for c in net.nodes[MALLORY].client_ids}
        doc = mallory.core.docs.doc(doc_name)
        root = doc.get(ROOT, type=pycrdt.Map)
        foreign = sorted(k for k in root if k.rpartition(SEP)[2] not in own)
        with doc.transaction(origin="attack"):
            if attack == "delete_theirs" and foreign:
                del root[foreign[0]]
            elif attack == "overwrite_theirs" and foreign:
                root[foreign[0]] = [10**6, 0]
            else:  # garbage under its own id
                root[f"{sku}{SEP}{mallory.client_id}"] = ["abc", 1]
        FIGURES[f"attack_{attack}" if foreign else f"attack_{attack}_nothing_foreign"] += 1
        net.connect(MALLORY)  # the catch-up sends the attack
        net.run()

    # -- connections ---------------------------------------------------------------------------

    @rule(op=st.sampled_from(CONNECTION_OPS), i=replica_index, flag=st.booleans())
    def connection(self, op: str, i: int, flag: bool) -> None:
        name = self.name(i)
        if op == "connect":
            self.n.connect(name)
        elif op == "connect_once":
            self.n.connect(name, live=False)
        elif op == "disconnect":
            self.n.disconnect(name)
        elif op == "partition":
            self.n.partition(name)
        elif op == "unpartition":
            self.n.unpartition(name)
        elif op == "sync_now":
            self.n.request_sync(name, full=flag)
        else:  # pragma: no cover
            raise AssertionError(op)

    # -- the network -----------------------------------------------------------------------------

    @rule(
        ops=st.lists(
            st.tuples(st.sampled_from(NETWORK_OPS), st.integers(0, 63), st.integers(0, 3)),
            min_size=1,
            max_size=12,
        )
    )
    def network(self, ops: list[tuple[str, int, int]]) -> None:
        """A burst of network events: (op, which busy queue, index in it)."""
        net = self.n
        for op, which, index in ops:
            if op == "flush":
                net.flush_storage(None if index == 0 else index)
                continue
            busy = [(link, d) for link in net.links for d in (UP, DOWN) if link.queue(d)]
            if not busy:
                continue
            link, direction = busy[which % len(busy)]
            queue = link.queue(direction)
            index = min(index, len(queue) - 1)
            if op == "deliver":
                net.deliver(link, direction)
            elif op == "reorder":
                net.deliver(link, direction, index)  # within a window of 4
            elif op == "duplicate":
                net.duplicate(link, direction, index)
            elif op == "lose":
                net.lose(link, direction, index)
            elif op == "drop":
                net.drop(link, direction, index)
            else:  # pragma: no cover
                raise AssertionError(op)

    @rule(flush=st.booleans())
    def run_until_quiet(self, flush: bool) -> None:
        """Deliver everything (without flushing storage: the relay then holds pending writes)."""
        self.n.run(flush=flush)

    # -- maintenance -----------------------------------------------------------------------------

    @rule(op=st.sampled_from(("relay_unload", "relay_compact", "replica_compact")), i=replica_index)
    def maintenance(self, op: str, i: int) -> None:
        if op == "relay_unload":
            self.n.relay_unload_idle_docs()
        elif op == "relay_compact":
            self.n.relay_compact()
        else:
            self.replica(i).compact()

    # -- crashes -------------------------------------------------------------------------------

    @precondition(lambda self: self.net is not None and self.crashes < 3)
    @rule(i=replica_index)
    def crash_replica(self, i: int) -> None:
        self.crashes += 1
        self.n.crash_replica(self.name(i))

    @precondition(
        lambda self: (
            self.net is not None
            and self.restarts < 3
            and bool(self.net.links or self.net.relay.pending)
        )
    )
    @rule()
    def restart_relay(self) -> None:
        self.restarts += 1
        lost = self.n.restart_relay()
        FIGURES["relay_writes_lost_uncommitted"] += lost

    # -- the end -------------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.net is not None:
                self._heal_and_check()
        finally:
            if self.net is not None:
                self.net.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _heal_and_check(self) -> None:
        net = self.n
        note(f"model: {dict(sorted(self.model.items()))}")
        try:
            rounds = net.heal()
        finally:
            note("last network events: " + " | ".join(net.trace[-25:]))
        event(f"heal rounds: {rounds}")
        FIGURES[f"heal_rounds_{rounds}"] += 1
        for kind, count in net.faults.items():
            FIGURES[f"fault_{kind}"] += count
        FIGURES["writes"] += self.write_count
        FIGURES["stale_acks"] += net.stale_acks

        central = net.relay.central()
        book = central.replica.conflicts
        keys = [(loc, sku) for loc in (*LOCS, "central") for sku in SKUS]
        names = {inv.name for inv in book.invariants}

        def open_keys() -> set[str]:
            return {c.key for c in book.list(status="open", limit=10**9) if c.invariant in names}

        verdict, _ = evaluate(book.invariants, book.state, keys)
        if open_keys() != set(verdict):
            FIGURES["conflicts_stale_before_full_review"] += 1
            event("open conflicts differed from the verdict before the full review")
            note(f"before the full review: open {sorted(open_keys())}, verdict {sorted(verdict)}")
        book.review(keys)  # as the relay would on the next touch of those keys
        net.heal()  # spread what the review wrote

        verdict, _ = evaluate(book.invariants, book.state, keys)
        assert open_keys() == set(verdict), (
            f"relay's open conflicts {sorted(open_keys())} != invariants' verdict {sorted(verdict)}"
        )

        states = {name: replica_snapshot(net.replica(name), list(LOCS)) for name in self.names}
        states["relay"] = replica_snapshot(central.replica, list(LOCS))
        reference = states["relay"]
        for name, state in states.items():
            for part in reference:
                assert state[part] == reference[part], (
                    f"{name} diverged from the relay in {part}: {state[part]} != {reference[part]}"
                )

        raw = net.content_divergences()
        assert not raw, "raw document contents differ:\n" + "\n".join(raw[:10])

        totals = {(loc, sku): reference["stock"][loc].get(sku, 0) for loc in LOCS for sku in SKUS}
        expected = {key: self.model.get(key, 0) for key in totals}
        assert totals == expected, f"stock {totals} != sequential model {expected}"
        sale_ids = {sale_id for sale_id, _ in reference["sales"]}
        assert self.sales <= sale_ids, f"sales lost: {sorted(self.sales - sale_ids)}"
        assert sale_ids == self.sales, f"unknown sales: {sorted(sale_ids - self.sales)}"

        # The in-memory indexes (kept up to date by CRDT events) must equal
        # what a fresh open rebuilds from the file.
        for name in self.names:
            net.disconnect(name)
            before = replica_snapshot(net.replica(name), list(LOCS))
            reopened = net.crash_replica(name)
            after = replica_snapshot(reopened, list(LOCS))
            assert before == after, f"{name}: live indexes differ from a fresh open"
        FIGURES["cases_converged"] += 1


def _figures(title: str) -> None:
    print(f"\n{title}: " + ", ".join(f"{k}={v}" for k, v in sorted(FIGURES.items())))


def test_convergence_under_faults() -> None:
    """CI profile: 15 cases of up to 30 steps."""
    FIGURES.clear()
    run_state_machine_as_test(SyncConvergence, settings=CI_SETTINGS)
    _figures("convergence (CI profile)")


@pytest.mark.soak
@pytest.mark.timeout(6 * 3600)
def test_convergence_under_faults_soak() -> None:
    """Soak profile: 500 cases of up to 80 steps."""
    FIGURES.clear()
    run_state_machine_as_test(SyncConvergence, settings=SOAK_SETTINGS)
    _figures("convergence (soak profile)")
