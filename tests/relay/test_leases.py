"""The review leases' rules as a state machine (sans-I/O: relay/leases.py).

Hypothesis drives several workers and one partition on a shared clock: a
worker reads the lease, decides (:func:`decide`), acquires, renews, reviews
a batch from the cursor it read when it took the lease and commits it,
pauses (time passes without it), or dies.  A model store applies the
rules' transitions atomically, as the database does, and accepts a commit
only when :func:`may_commit` says so, moving the cursor in the same step.
The invariants: at most one worker is told to review at any instant; epochs
only grow; the cursor only moves forward; every update is reviewed by
exactly one accepted commit, whoever died or paused on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tiendasync.relay.leases import (
    CATALOG_PARTITION,
    Lease,
    Step,
    acquired,
    decide,
    may_commit,
    partition_docs,
    partitions_of,
    released,
    renewed,
)

TTL = 10.0
RENEW_WITHIN = TTL / 3
WORKERS = ["w0", "w1", "w2"]


@dataclass
class Worker:
    name: str
    epoch: int | None = None
    #: the cursor it resumes from (read when it took the lease, or its last commit)
    cursor: int = 0
    #: a batch reviewed and not committed yet: (from, upto)
    batch: tuple[int, int] | None = None
    alive: bool = True


@dataclass
class Store:
    lease: Lease | None = None
    cursor: int = 0
    log: int = 0  # updates 1..log are committed
    reviewed: list[int] = field(default_factory=list)


class LeaseMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.store = Store()
        self.workers = {n: Worker(n) for n in WORKERS}
        self.epochs_seen: list[int] = []

    def _step(self, w: Worker) -> Step:
        return decide(self.store.lease, w.name, w.epoch, self.now, renew_within=RENEW_WITHIN)

    @rule(n=st.integers(1, 5))
    def updates_arrive(self, n: int) -> None:
        self.store.log += n

    @rule(dt=st.sampled_from([0.5, 1.0, 3.0, 7.0, 11.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule(name=st.sampled_from(WORKERS))
    def tick(self, name: str) -> None:
        """One worker's turn: what :class:`ReviewWorker.tick` does for the partition."""
        w = self.workers[name]
        if not w.alive:
            return
        step = self._step(w)
        store = self.store
        if step is Step.ACQUIRE:
            new = acquired(store.lease, "acme", "t1", w.name, self.now, TTL)
            assert new is not None  # decide said it is free
            store.lease = new
            w.epoch, w.cursor, w.batch = new.epoch, store.cursor, None
            self.epochs_seen.append(new.epoch)
        elif step is Step.RENEW:
            assert w.epoch is not None
            new = renewed(store.lease, w.name, w.epoch, self.now, TTL)
            assert new is not None
            store.lease = new
        elif step is Step.LOST:
            w.epoch, w.batch = None, None
        elif step is Step.REVIEW and w.batch is None and w.cursor < store.log:
            w.batch = (w.cursor, min(store.log, w.cursor + 3))

    @rule(name=st.sampled_from(WORKERS))
    def commit(self, name: str) -> None:
        """A worker commits its batch, whatever it believes: the store decides."""
        w = self.workers[name]
        if not w.alive or w.batch is None or w.epoch is None:
            return
        store = self.store
        start, upto = w.batch
        w.batch = None
        if may_commit(store.lease, w.name, w.epoch, self.now):
            assert store.cursor == start, "a lease holder resumes from the committed cursor"
            store.reviewed.extend(range(start + 1, upto + 1))
            store.cursor = upto
            w.cursor = upto
        else:
            w.epoch = None  # LeaseLost: it drops the partition

    @rule(name=st.sampled_from(WORKERS))
    def dies(self, name: str) -> None:
        self.workers[name].alive = False

    @rule(name=st.sampled_from(WORKERS))
    def restarts(self, name: str) -> None:
        w = self.workers[name]
        if not w.alive:
            self.workers[name] = Worker(name + "'")  # a new process: a new owner name

    @rule(name=st.sampled_from(WORKERS))
    def stops_cleanly(self, name: str) -> None:
        w = self.workers[name]
        if w.alive and w.epoch is not None:
            self.store.lease = released(self.store.lease, w.name, w.epoch)
            w.epoch, w.batch = None, None

    @invariant()
    def one_reviewer_at_a_time(self) -> None:
        reviewing = [
            w
            for w in self.workers.values()
            if w.alive and w.epoch is not None and self._step(w) in (Step.REVIEW, Step.RENEW)
        ]
        assert len(reviewing) <= 1

    @invariant()
    def epochs_grow(self) -> None:
        assert self.epochs_seen == sorted(self.epochs_seen)
        assert len(set(self.epochs_seen)) == len(self.epochs_seen)

    @invariant()
    def each_update_reviewed_once_in_order(self) -> None:
        assert self.store.reviewed == list(range(1, self.store.cursor + 1))
        assert self.store.cursor <= self.store.log


LeaseMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestLeaseMachine = LeaseMachine.TestCase


def test_a_lease_is_taken_renewed_and_lost_by_the_rules() -> None:
    free = acquired(None, "acme", "t1", "a", 0.0, TTL)
    assert free == Lease("acme", "t1", "a", 1, TTL)
    assert acquired(free, "acme", "t1", "b", 5.0, TTL) is None  # held by a
    assert acquired(free, "acme", "t1", "a", 5.0, TTL) == Lease("acme", "t1", "a", 1, 15.0)
    taken = acquired(free, "acme", "t1", "b", TTL, TTL)  # expired at exactly TTL
    assert taken is not None and (taken.owner, taken.epoch) == ("b", 2)
    assert renewed(taken, "a", 1, 11.0, TTL) is None  # a's epoch is gone
    assert not may_commit(taken, "a", 1, 11.0) and may_commit(taken, "b", 2, 11.0)
    assert not may_commit(taken, "b", 2, 2 * TTL)  # b's own lease ran out
    assert decide(taken, "a", 1, 11.0, renew_within=RENEW_WITHIN) is Step.LOST
    assert decide(taken, "a", None, 11.0, renew_within=RENEW_WITHIN) is Step.WAIT
    assert decide(taken, "b", 2, 11.0, renew_within=RENEW_WITHIN) is Step.REVIEW
    assert decide(taken, "b", 2, 17.0, renew_within=RENEW_WITHIN) is Step.RENEW
    back = released(taken, "b", 2)
    assert back is not None and back.owner is None
    assert decide(back, "a", None, 11.0, renew_within=RENEW_WITHIN) is Step.ACQUIRE
    assert released(taken, "a", 1) == taken  # not a's to release


def test_partitions_are_locations_plus_the_catalogs() -> None:
    docs = ["catalog", "conflicts", "locations", "sales/t1/2026-12", "stock/t1", "stock/t2"]
    assert partitions_of(docs) == [CATALOG_PARTITION, "t1", "t2"]
    assert partitions_of([]) == []
    assert partition_docs("t1", docs) == [
        "catalog",
        "conflicts",
        "locations",
        "sales/t1/2026-12",
        "stock/t1",
    ]
    assert partition_docs(CATALOG_PARTITION, docs) == ["catalog", "conflicts"]
