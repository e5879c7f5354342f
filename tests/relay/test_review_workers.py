"""Invariant review as partitioned workers with leases, on a real PostgreSQL server.

The store of record is a throwaway server (``pg_url``); the updates are real
ones, made by real replicas (two tills per shop selling the last unit of
each product while apart), logged as a relay logs them.  Workers run in this
process (``ReviewWorker``) and as real ``tiendasync relay worker`` processes
that the tests SIGKILL mid-review.  What must hold: one owner per partition,
each update reviewed by exactly one committed batch (``review_log`` tiles
every document's seqs), each conflict opened exactly once (its rows and the
conflicts document agree, one per key).
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pycrdt
import pytest

from tests.support.processes import wait_until
from tiendasync import Replica
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.relay import pgschema
from tiendasync.relay.central import CENTRAL_REPLICA_ID
from tiendasync.relay.docs import compact
from tiendasync.relay.generations import Generations
from tiendasync.relay.leases import Lease, LeaseLost, partition_docs
from tiendasync.relay.pgstore import PostgresRelayStore
from tiendasync.relay.records import AppendEntry, ConflictRecord
from tiendasync.relay.workers import ReviewWorker, conflict_id

SKUS = [f"P{i:02d}" for i in range(12)]
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresRelayStore]:
    with PostgresRelayStore(pg_url) as s:
        yield s


def _oversell(tmp_path: Path, store: PostgresRelayStore, location: str) -> int:
    """Two tills at ``location`` each sell the one unit of every SKU while apart: every
    SKU ends at -1 there.  Logs their updates one by one; returns how many."""
    made: list[tuple[str, str, bytes]] = []
    tills = [
        Replica.open(
            tmp_path / f"{location}-{n}.db",
            tenant="acme",
            replica_id=f"{location}-{n}",
            location=location,
        )
        for n in (1, 2)
    ]
    try:
        for till in tills:

            def keep(ups: list[tuple[str, bytes]], rid: str = till.replica_id) -> None:
                made.extend((rid, d, u) for d, u in ups)

            till.on_local_update(keep)
        first, second = tills
        for sku in SKUS:
            first.catalog.put(sku, {"name": sku, "price_cents": 100})
        first.inventory.receive_many({sku: 1 for sku in SKUS})
        for _, doc, data in list(made):
            second.apply_remote(doc, data)
        for sku in SKUS:
            first.record_sale([(sku, 1, 100)])
            second.record_sale([(sku, 1, 100)])
    finally:
        for till in tills:
            till.close()
    store.append_many([AppendEntry("acme", d, u, r, b"\x00") for r, d, u in made])
    return len(made)


def _add_product(tmp_path: Path, store: PostgresRelayStore) -> None:
    """A third till at t1 adds a product and its update is logged: every partition has
    the catalog to review again; no stock moves, no conflict opens or heals."""
    made: list[tuple[str, bytes]] = []
    till = Replica.open(tmp_path / "t1-3.db", tenant="acme", replica_id="t1-3", location="t1")
    try:
        till.on_local_update(made.extend)
        till.catalog.put("NEW", {"name": "new", "price_cents": 150})
    finally:
        till.close()
    assert made
    store.append_many([AppendEntry("acme", d, u, "t1-3", b"\x00") for d, u in made])


def _max_seqs(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT doc, MAX(seq) FROM updates GROUP BY doc").fetchall()
    return {d: int(s) for d, s in rows}


def _review_log(url: str) -> list[tuple[str, str, int, int, int, str]]:
    with psycopg.connect(url) as conn:
        return [
            (r[0], r[1], int(r[2]), int(r[3]), int(r[4]), r[5])
            for r in conn.execute(
                "SELECT location, doc, after_seq, upto_seq, epoch, owner FROM review_log "
                "ORDER BY id"
            ).fetchall()
        ]


def _waiting_on_a_lock(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'INSERT INTO review_log%'"
        ).fetchone()
    return row is not None and row[0] > 0


def _reviewed_exactly_once(url: str, location: str, docs: list[str]) -> None:
    """Each doc's committed batches chain from 0 to (at least) its last seq, never
    overlapping: every update of it reviewed by exactly one committed batch.  (The
    conflicts document is read too: its last rows, the review's own, may come after.)"""
    top = _max_seqs(url)
    for doc in docs:
        ranges = sorted(
            (a, b) for loc, d, a, b, _, _ in _review_log(url) if (loc, d) == (location, doc)
        )
        assert ranges, f"{location}: {doc} never reviewed"
        assert ranges[0][0] == 0
        for (_, upto), (after, _) in itertools.pairwise(ranges):
            assert after == upto, f"{location}/{doc}: batches {ranges} overlap or leave a gap"
        if doc != "conflicts":
            assert ranges[-1][1] == top[doc], f"{location}/{doc}: not all reviewed"


def _conflicts_doc(tmp_path: Path, store: PostgresRelayStore, name: str) -> list[Any]:
    """The conflicts as a replica reading the stored conflicts document sees them."""
    reader = Replica.open(tmp_path / f"{name}.db", tenant="acme", replica_id=name, location="x")
    try:
        history = store.load_doc("acme", "conflicts")
        updates = ([history.snapshot] if history.snapshot else []) + [u for _, u in history.updates]
        reader.apply_remote_many([("conflicts", u) for u in updates])
        return reader.conflicts.list(limit=10**6)
    finally:
        reader.close()


def _one_conflict_per_sku(
    tmp_path: Path, store: PostgresRelayStore, locations: list[str], name: str
) -> None:
    rows = store.list_conflicts("acme")
    assert sorted((r.location, r.sku) for r in rows) == sorted(
        (loc, sku) for loc in locations for sku in SKUS
    )
    assert {r.status for r in rows} == {"open"}
    seen = _conflicts_doc(tmp_path, store, name)
    assert sorted(c.id for c in seen) == sorted(r.id for r in rows)  # no second copy anywhere
    assert all(c.invariant == "non_negative_stock" and c.observed == -1 for c in seen)


# -- the store's side of the contract ---------------------------------------------------------


def test_leases_fence_commits_and_cursors_move_by_compare_and_set(
    store: PostgresRelayStore, pg_url: str
) -> None:
    other = PostgresRelayStore(pg_url)  # a second worker process's connection
    try:
        a, _ = store.acquire_lease("acme", "t1", "a", 0.5)
        assert a is not None and a.epoch == 1
        none, _ = other.acquire_lease("acme", "t1", "b", 0.5)
        assert none is None  # held by a
        assert store.commit_review(a, {}, {"stock/t1": 3}, [], []) == []
        assert store.review_cursor("acme", "t1") == {"stock/t1": 3}
        with pytest.raises(LeaseLost):  # the cursor it started from is not the stored one
            store.commit_review(a, {"stock/t1": 0}, {"stock/t1": 5}, [], [])
        time.sleep(0.6)
        with pytest.raises(LeaseLost):  # expired: refused even though nobody took it
            store.commit_review(a, {"stock/t1": 3}, {"stock/t1": 5}, [], [])
        b, _ = other.acquire_lease("acme", "t1", "b", 30)
        assert b is not None and b.epoch == 2
        renewed, _ = store.renew_lease(a, 30)
        assert renewed is None  # a's epoch is over
        entry = AppendEntry("acme", "conflicts", b"\x00\x00", CENTRAL_REPLICA_ID, b"\x00")
        with pytest.raises(LeaseLost):  # the zombie's write never lands
            store.commit_review(a, {"stock/t1": 3}, {"stock/t1": 9}, [entry], [])
        assert store.review_cursor("acme", "t1") == {"stock/t1": 3}
        assert store.state_vectors("acme") == {}
        record = ConflictRecord("acme", "C-1", "non_negative_stock", "t1", "P", "open", 1.0, 1.0)
        other.commit_review(b, {"stock/t1": 3}, {"stock/t1": 4}, [], [(record, True)])
        with pytest.raises(LeaseLost):  # opening it again: refused, nothing committed
            other.commit_review(b, {"stock/t1": 4}, {"stock/t1": 6}, [], [(record, True)])
        assert store.review_cursor("acme", "t1") == {"stock/t1": 4}
        other.release_lease(b)
        free = store.read_lease("acme", "t1")
        assert free is not None and free.owner is None
        again, _ = store.acquire_lease("acme", "t1", "a", 30)
        assert again is not None and (again.owner, again.epoch) == ("a", 3)
    finally:
        other.close()


def test_a_version_1_database_gains_the_review_tables(pg_url: str) -> None:
    with PostgresRelayStore(pg_url):
        pass
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for table in ("review_leases", "review_cursors", "review_log"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("UPDATE schema_version SET version = 1")
    with PostgresRelayStore(pg_url) as migrated:
        assert migrated.schema_version() == pgschema.SCHEMA_VERSION
        assert migrated.review_cursor("acme", "t1") == {}


# -- workers in this process ----------------------------------------------------------------


class DiesBeforeCommit:
    """The store as a worker sees it, except that its commit of ``location`` never
    happens: the worker "dies" after reviewing that batch, before it commits."""

    def __init__(self, store: PostgresRelayStore, location: str) -> None:
        self._store, self._location = store, location

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def commit_review(self, lease: Lease, *args: Any) -> list[int]:
        if lease.location == self._location:
            raise SystemExit("killed mid-batch")
        return self._store.commit_review(lease, *args)


def test_a_worker_dying_mid_batch_loses_nothing_and_opens_nothing_twice(
    store: PostgresRelayStore, pg_url: str, tmp_path: Path
) -> None:
    _oversell(tmp_path, store, "t1")
    dying = DiesBeforeCommit(store, "t1")
    doomed = ReviewWorker(dying, tmp_path / "w1", owner="w1", lease_seconds=1.0)
    with pytest.raises(SystemExit):
        doomed.tick()  # took both leases, committed "-", reviewed t1 and died before committing
    assert doomed.held == [("acme", "-"), ("acme", "t1")]
    assert store.list_conflicts("acme") == []
    assert {loc for loc, *_ in _review_log(pg_url)} == {"-"}
    heir = ReviewWorker(store, tmp_path / "w2", owner="w2", lease_seconds=1.0, batch=7)
    assert heir.tick() == 0 and heir.held == []  # w1's leases still run
    time.sleep(1.05)
    wait_until(lambda: heir.tick() == 0 and heir.commits > 0, "w2 reviewed everything", 20)
    assert heir.held == [("acme", "-"), ("acme", "t1")]
    _reviewed_exactly_once(pg_url, "t1", partition_docs("t1", list(_max_seqs(pg_url))))
    assert {(loc, e) for loc, _, _, _, e, o in _review_log(pg_url) if o == "w2"} == {
        ("-", 2),
        ("t1", 2),
    }
    _one_conflict_per_sku(tmp_path, store, ["t1"], "reader1")
    # a restart of the review from scratch (a new worker, a new replica) opens nothing new
    heir.close()
    again = ReviewWorker(store, tmp_path / "w3", owner="w3")
    wait_until(lambda: again.tick() == 0 and again.held != [], "w3 took over", 10)
    again.close()
    _one_conflict_per_sku(tmp_path, store, ["t1"], "reader2")
    ids = {r.id for r in store.list_conflicts("acme")}
    assert ids == {conflict_id("acme", f"non_negative_stock|t1|{sku}", 0) for sku in SKUS}


def test_a_stock_receipt_heals_what_the_worker_opened(
    store: PostgresRelayStore, tmp_path: Path
) -> None:
    _oversell(tmp_path, store, "t1")
    worker = ReviewWorker(store, tmp_path / "w", owner="w")
    try:
        wait_until(lambda: worker.tick() == 0 and worker.commits > 0, "reviewed", 20)
        made: list[tuple[str, bytes]] = []
        restock = Replica.open(tmp_path / "r.db", tenant="acme", replica_id="t1-3", location="t1")
        try:
            restock.on_local_update(made.extend)
            restock.inventory.receive(SKUS[0], 5)
        finally:
            restock.close()
        store.append_many([AppendEntry("acme", d, u, "t1-3", b"\x00") for d, u in made])
        wait_until(lambda: worker.tick() == 0 and worker.reviewed > 0, "reviewed again", 20)
        healed = {r.sku: r.status for r in store.list_conflicts("acme")}
        assert healed[SKUS[0]] == "self_healed"
        assert {healed[s] for s in SKUS[1:]} == {"open"}
    finally:
        worker.close()


def test_a_log_compacted_past_the_cursor_is_reviewed_from_its_snapshot(
    store: PostgresRelayStore, tmp_path: Path
) -> None:
    _oversell(tmp_path, store, "t1")
    for doc in store.state_vectors("acme"):  # nothing reviewed yet: every log folded
        compact(store, "acme", doc)
    worker = ReviewWorker(store, tmp_path / "w", owner="w")
    try:
        wait_until(lambda: worker.tick() == 0 and worker.commits > 0, "reviewed", 20)
        assert len(store.list_conflicts("acme")) == len(SKUS)
        made: list[tuple[str, bytes]] = []
        restock = Replica.open(tmp_path / "r.db", tenant="acme", replica_id="t1-3", location="t1")
        try:
            restock.on_local_update(made.extend)
            restock.inventory.receive_many({sku: 5 for sku in SKUS[:3]})
        finally:
            restock.close()
        store.append_many([AppendEntry("acme", d, u, "t1-3", b"\x00") for d, u in made])
        assert compact(store, "acme", "stock/t1") > 0  # folded before the worker read it
        wait_until(lambda: worker.tick() == 0 and worker.reviewed > 0, "reviewed again", 20)
        status = {r.sku: r.status for r in store.list_conflicts("acme")}
        assert [status[s] for s in SKUS[:3]] == ["self_healed"] * 3
        assert {status[s] for s in SKUS[3:]} == {"open"}
        assert len(status) == len(SKUS)  # nothing opened twice by the rebuilds
    finally:
        worker.close()


def test_a_worker_rebuilds_its_partition_when_a_document_is_cut(
    store: PostgresRelayStore, tmp_path: Path
) -> None:
    """After a rollover of ``stock/t1`` (docs/generations.md), rows of the new generation
    do not apply to the worker's replica of the old one (they build on the seed): the
    worker rebuilds from the cut's seed, so a restock written there heals its conflict,
    and nothing is opened twice."""
    _oversell(tmp_path, store, "t1")
    worker = ReviewWorker(store, tmp_path / "w", owner="w")
    try:
        wait_until(lambda: worker.tick() == 0 and worker.commits > 0, "reviewed", 20)
        assert Generations(store).roll_over("acme", "stock/t1") == 1
        assert worker.tick() == 0
        made: list[tuple[str, bytes]] = []
        restock = Replica.open(tmp_path / "r.db", tenant="acme", replica_id="t1-3", location="t1")
        try:
            seed = store.load_doc("acme", "stock/t1").snapshot
            assert seed is not None
            restock.apply_remote("stock/t1", seed)  # what a store at generation 1 holds
            restock.on_local_update(made.extend)
            restock.inventory.receive(SKUS[0], 5)
        finally:
            restock.close()
        assert made
        store.append_many([AppendEntry("acme", d, u, "t1-3", b"\x00") for d, u in made])
        wait_until(lambda: worker.tick() == 0 and worker.reviewed > 0, "reviewed again", 20)
        status = {r.sku: r.status for r in store.list_conflicts("acme")}
        assert status[SKUS[0]] == "self_healed"
        assert {status[s] for s in SKUS[1:]} == {"open"}
        assert len(status) == len(SKUS)
        # It reviews on the new generation: the seed's writer is in its replica (its old
        # one took this restock only because counters add a slot per writer; an LWW
        # edit of a seeded value would wait there for the seed for ever).
        writer = worker._held[("acme", "t1")].writer
        assert writer is not None
        reviewed = decode_state_vector(writer.replica.state_vector("stock/t1"))
        assert set(decode_state_vector(bytes(pycrdt.get_state(seed)))) <= set(reviewed)
    finally:
        worker.close()


# -- real worker processes ------------------------------------------------------------------


def _worker(url: str, owner: str, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": SRC}
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tiendasync",
                "relay",
                "worker",
                "--store",
                url,
                "--owner",
                owner,
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=out,
            env=env,
        )


def test_sigkilled_worker_process_hands_its_partitions_over(
    store: PostgresRelayStore, pg_url: str, tmp_path: Path
) -> None:
    for location in ("t1", "t2"):
        _oversell(tmp_path, store, location)
    log = tmp_path / "workers.log"
    first = _worker(pg_url, "first", log, "--lease-seconds", "1.5", "--review-batch", "2")
    try:

        def holds_all() -> bool:
            leases = [store.read_lease("acme", loc) for loc in ("-", "t1", "t2")]
            held = all(lease is not None and lease.owner == "first" for lease in leases)
            return held and len(_review_log(pg_url)) >= 1

        wait_until(holds_all, "the first worker holding every partition, having committed", 30)
        with psycopg.connect(pg_url) as blocker:
            # Hold the worker inside its next commit: its last insert (review_log) waits
            # on this lock, after its conflicts, updates and cursor rows are written.  The
            # update logged after the lock is taken leaves it a commit to make even if it
            # had reviewed everything before (its first batches take all there is).
            blocker.execute("LOCK TABLE review_log IN SHARE MODE")
            _add_product(tmp_path, store)
            wait_until(lambda: _waiting_on_a_lock(pg_url), "the first worker mid-commit", 20)
            done_by_first = _review_log(pg_url)
            cursors = {loc: store.review_cursor("acme", loc) for loc in ("t1", "t2")}
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        # its transaction died with it: nothing of the batch it was committing is there
        assert _review_log(pg_url) == done_by_first
        assert {loc: store.review_cursor("acme", loc) for loc in ("t1", "t2")} == cursors
        second = _worker(pg_url, "second", log, "--lease-seconds", "1.5", "--review-batch", "5")
        try:

            def caught_up() -> bool:
                top = _max_seqs(pg_url)
                for loc in ("t1", "t2"):
                    lease = store.read_lease("acme", loc)
                    if lease is None or lease.owner != "second":
                        return False
                    cursor = store.review_cursor("acme", loc)
                    docs = [d for d in partition_docs(loc, list(top)) if d != "conflicts"]
                    if any(cursor.get(d, 0) < top[d] for d in docs):
                        return False
                return True

            wait_until(caught_up, "the second worker took over and caught up", 40)
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0  # a clean stop: its leases released
        finally:
            if second.poll() is None:
                second.kill()
                second.wait(5)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(5)
    assert all(
        lease.owner is None for loc in ("-", "t1", "t2") if (lease := store.read_lease("acme", loc))
    )
    assert len(_review_log(pg_url)) > len(done_by_first) > 0
    assert {o for *_, o in _review_log(pg_url)} == {"first", "second"}
    for loc in ("t1", "t2"):
        _reviewed_exactly_once(pg_url, loc, partition_docs(loc, list(_max_seqs(pg_url))))
    _one_conflict_per_sku(tmp_path, store, ["t1", "t2"], "reader")
    assert "Traceback" not in log.read_text()
