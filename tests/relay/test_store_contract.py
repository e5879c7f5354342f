"""One contract, two stores of record: every test runs on SQLite and on PostgreSQL.

:class:`~tiendasync.relay.storage.RelayStore` is what the relay needs from
its store of record; :class:`SqliteRelayStore` (one file) and
:class:`PostgresRelayStore` (a server several relays can share) both keep it.
The PostgreSQL side runs against a real server started for the session
(``pg_server`` in tests/conftest.py: it fails, never skips, without one).
Concurrency tests open the same store of record twice (two connections), as
two relay processes would.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.relay_client import Client, Writer, values, with_relay
from tiendasync.errors import InvalidArgument, NotFound, StorageError
from tiendasync.protocol import Ack, UpdateReceived
from tiendasync.relay import RelayServer, RelayStore, SqliteRelayStore, pgschema, schema
from tiendasync.relay.auth import authenticate, hash_token, issue_token, token_id_of
from tiendasync.relay.pgstore import PostgresRelayStore, describe_url
from tiendasync.relay.storage import (
    AppendEntry,
    ConflictRecord,
    NodeRecord,
    SessionRecord,
    SyncRequest,
    is_postgresql_url,
    open_relay_store,
)

KINDS = ["sqlite", "postgresql"]
_EXAMPLES = itertools.count()


class Backend:
    """One store of record: open it (again), and reach its rows behind the contract's back."""

    def __init__(self, kind: str, spec: str) -> None:
        self.kind, self.spec = kind, spec
        self.opened: list[RelayStore] = []

    def open(self) -> RelayStore:
        store = open_relay_store(self.spec)
        self.opened.append(store)
        return store

    def raw(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Run ``sql`` (``?`` placeholders) on the rows, as damage or an old tiendasync would."""
        if self.kind == "sqlite":
            with sqlite3.connect(self.spec) as conn:
                conn.execute(sql, params)
        else:
            with psycopg.connect(self.spec, autocommit=True) as conn:
                conn.execute(sql.replace("?", "%s"), params)

    @property
    def version(self) -> int:
        return schema.SCHEMA_VERSION if self.kind == "sqlite" else pgschema.SCHEMA_VERSION


@pytest.fixture(params=KINDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        b = Backend("sqlite", str(tmp_path / "relay.db"))
    else:
        b = Backend("postgresql", request.getfixturevalue("pg_url"))
    yield b
    for store in b.opened:
        store.close()


@pytest.fixture
def store(backend: Backend) -> RelayStore:
    return backend.open()


def test_both_conform_to_the_protocol(store: RelayStore) -> None:
    assert isinstance(store, RelayStore)
    assert isinstance(store, (SqliteRelayStore, PostgresRelayStore))


def test_tokens_are_hashed_and_revocable(store: RelayStore) -> None:
    token = issue_token(store, tenant="acme", replica_id="t1", location="tienda-1")
    admin = issue_token(store, admin=True)
    rec = authenticate(store, token)
    assert rec is not None and (rec.tenant, rec.replica_id, rec.location) == (
        "acme",
        "t1",
        "tienda-1",
    )
    assert rec.admin is False and rec.token_hash == hash_token(token)
    arec = authenticate(store, admin)
    assert arec is not None and arec.admin is True and arec.tenant is None
    assert token not in repr(store.list_tokens())  # the secret is never stored
    token_id = token_id_of(token)
    assert token_id is not None
    store.revoke_token(token_id)
    [revoked] = [r for r in store.list_tokens() if r.id == token_id]
    first = revoked.revoked_at
    assert first is not None and authenticate(store, token) is None
    store.revoke_token(token_id)  # again: the first revocation time stays
    assert store.get_token(token_id) == revoked and revoked.revoked_at == first
    with pytest.raises(NotFound):
        store.revoke_token("000000000000")
    assert store.get_token("000000000000") is None


def test_writer_ids_belong_to_one_replica(store: RelayStore) -> None:
    assert store.claim_client_ids("acme", "t1", [1, 2]) == []
    assert store.claim_client_ids("acme", "t1", [2, 1, 3, 3]) == []  # again: fine
    assert store.client_ids_of("acme", "t1") == {1, 2, 3}
    # all or nothing: 5 is free, but 1 is t1's, so 5 is not registered either
    assert store.claim_client_ids("acme", "t2", [5, 1]) == [1]
    assert store.client_ids_of("acme", "t2") == set()
    assert store.claim_client_ids("globex", "t1", [3, 2]) == [3, 2]  # in the asked order
    assert store.claim_client_ids("acme", "t2", []) == []


def test_updates_snapshots_and_state_vectors(store: RelayStore) -> None:
    res = store.append_many(
        [
            AppendEntry("acme", "catalog", b"u1", "t1", b"\x00", 10.0),
            AppendEntry("acme", "catalog", None, "t1", b"\x01\x01\x01", 11.0),
            AppendEntry("acme", "stock/t1", b"s1", "t1", b"\x01\x02\x01", 12.0),
            AppendEntry("acme", "catalog", b"u2", "t2", b"\x01\x01\x02", 13.0),
            AppendEntry("globex", "catalog", b"g1", "x", b"\x00", 14.0),
        ]
    )
    s1, none, s_stock, s2, _ = res.seqs
    assert none is None and s1 is not None and s2 is not None and s_stock is not None
    assert s1 < s_stock < s2  # one batch: in its order
    assert res.log_counts == {
        ("acme", "catalog"): 2,
        ("acme", "stock/t1"): 1,
        ("globex", "catalog"): 1,
    }
    assert store.state_vectors("acme") == {"catalog": b"\x01\x01\x02", "stock/t1": b"\x01\x02\x01"}
    assert store.all_state_vectors()[("globex", "catalog")] == b"\x00"
    assert store.update_origins("acme", "catalog", 0) == {s1: ("t1", 10.0), s2: ("t2", 13.0)}
    assert store.update_origins("acme", "catalog", s1) == {s2: ("t2", 13.0)}
    assert sorted(store.doc_writers("acme")) == [
        ("catalog", "t1", 10.0),
        ("catalog", "t2", 13.0),
        ("stock/t1", "t1", 12.0),
    ]
    hist = store.load_doc("acme", "catalog")
    assert hist.snapshot is None and hist.updates == [(s1, b"u1"), (s2, b"u2")]
    assert hist.last_seq == s2 and hist.damaged == []
    assert store.stored_bytes("acme", "catalog") == len(b"u1") + len(b"u2")
    store.put_snapshot("acme", "catalog", b"snap", s1)
    hist = store.load_doc("acme", "catalog")
    assert (hist.snapshot, hist.upto_seq, hist.updates) == (b"snap", s1, [(s2, b"u2")])
    assert store.log_size("acme", "catalog") == 1
    assert store.stored_bytes("acme", "catalog") == len(b"snap") + len(b"u2")
    assert store.append_many([AppendEntry("acme", "catalog", b"u3", "t1", b"\x02")]).log_counts == {
        ("acme", "catalog"): 2
    }
    empty = store.load_doc("acme", "nothing")
    assert (empty.snapshot, empty.updates, empty.last_seq) == (None, [], 0)
    assert store.log_size("acme", "nothing") == 0
    assert store.stored_bytes("acme", "nothing") == 0
    assert store.append_many([]).seqs == []


def test_a_damaged_row_is_left_out_and_quarantined_on_repair(
    backend: Backend, store: RelayStore
) -> None:
    res = store.append_many(
        [AppendEntry("acme", "catalog", data, "t1", b"\x00") for data in (b"a", b"b", b"c")]
    )
    a, b, c = res.seqs
    store.put_snapshot("acme", "catalog", b"snap", 0)
    backend.raw("UPDATE updates SET data = ? WHERE seq = ?", (b"X", b))
    backend.raw("UPDATE snapshots SET data = ? WHERE doc = 'catalog'", (b"snaX",))
    hist = store.load_doc("acme", "catalog")
    assert hist.snapshot is None and [s for s, _ in hist.updates] == [a, c]
    assert [s for s, _ in hist.damaged] == [0, b]
    store.repair_doc("acme", "catalog", b"\x01\x05\x01", hist.damaged)
    assert [(s, r[:14]) for _, _, s, r in store.quarantined()] == [
        (0, "stored snapsho"),
        (b, "stored update "),
    ]
    assert store.state_vectors("acme") == {"catalog": b"\x01\x05\x01"}
    assert store.log_size("acme", "catalog") == 2
    assert store.load_doc("acme", "catalog").damaged == []


def test_configs_grants_and_reported(backend: Backend, store: RelayStore) -> None:
    grants = {"read": ["catalog", "stock/*"], "write": ["stock/t1"], "interval_s": 5.0}
    assert store.get_replica_config("acme", "t1") is None
    store.set_replica_config("acme", "t1", grants)
    store.set_replica_config("acme", "t1", {**grants, "interval_s": 7.5})
    assert store.get_replica_config("acme", "t1") == {**grants, "interval_s": 7.5}
    assert store.get_replica_config("globex", "t1") is None
    assert store.get_reported_config("acme", "t1") is None
    store.set_reported_config("acme", "t1", {"batch": 3}, 42.0)
    assert store.get_reported_config("acme", "t1") == ({"batch": 3}, 42.0)
    backend.raw("UPDATE reported_config SET json = '{not json'")
    assert store.get_reported_config("acme", "t1") is None  # a display hint: as if absent


def test_sync_log_newest_first_filtered(store: RelayStore) -> None:
    store.log_session(SessionRecord("s1", "acme", "t1", 1.0, 2.0, "ok", updates_received=3))
    store.log_session(SessionRecord("s2", "acme", "t2", 3.0, None, "error", error="boom"))
    store.log_session(SessionRecord("s3", None, None, 5.0, 6.0, "refused", kind="yjs"))
    assert [r.session_id for r in store.list_sessions()] == ["s3", "s2", "s1"]
    assert [r.session_id for r in store.list_sessions(tenant="acme")] == ["s2", "s1"]
    assert [r.session_id for r in store.list_sessions(tenant="acme", limit=1)] == ["s2"]
    [one] = store.list_sessions(replica_id="t1")
    assert one == SessionRecord("s1", "acme", "t1", 1.0, 2.0, "ok", updates_received=3)
    [two] = store.list_sessions(tenant="acme", replica_id="t2")
    assert (two.ended_at, two.error) == (None, "boom")


def test_old_sessions_are_pruned_keeping_each_replicas_newest(store: RelayStore) -> None:
    store.log_session(SessionRecord("a1", "acme", "t1", 1.0, 2.0, "ok"))
    store.log_session(SessionRecord("a2", "acme", "t1", 3.0, 4.0, "error"))
    store.log_session(SessionRecord("b1", "acme", "t2", 1.0, 2.0, "ok"))
    store.log_session(SessionRecord("c1", "acme", "t3", 1.0, None, "error"))
    store.log_session(SessionRecord("c2", "acme", "t3", 9.0, 10.0, "ok"))
    store.log_session(SessionRecord("x1", None, None, 1.0, 2.0, "refused"))
    store.log_session(SessionRecord("x2", None, None, 2.0, 3.0, "refused"))
    assert store.prune_sessions(0.5) == 0  # nothing ended (or started) before 0.5
    assert store.prune_sessions(5.0) == 3  # a1, c1 (never ended, started at 1), x1
    assert [r.session_id for r in store.list_sessions()] == ["x2", "c2", "b1", "a2"]
    assert store.prune_sessions(100.0) == 0  # each one is its replica's newest
    assert store.prune_sessions(100.0) == 0


def _conflict(
    cid: str, status: str = "open", at: float = 1.0, seq: int | None = 7
) -> ConflictRecord:
    return ConflictRecord("acme", cid, "no_negative_stock", "tienda-1", "CAFE", status, at, at, seq)


def test_a_conflict_is_opened_once(store: RelayStore) -> None:
    assert store.record_conflict(_conflict("c1")) is True
    assert store.record_conflict(_conflict("c2", at=2.0)) is True
    assert store.record_conflict(_conflict("c1", "resolved", at=9.0, seq=99)) is False
    [c1, c2] = store.list_conflicts("acme")
    assert (c1.id, c1.status, c1.opened_at, c1.updated_at, c1.source_seq) == (
        "c1",
        "resolved",
        1.0,
        9.0,
        7,
    )
    assert [c.id for c in store.list_conflicts("acme", status="open")] == [c2.id]
    assert store.list_conflicts("globex") == []


def test_nodes_beat_take_their_requests_once_and_age_out(store: RelayStore) -> None:
    a = NodeRecord("node-a", 100.0, 110.0, (("acme", "t1"), ("acme", "t2")), {"connections": 2})
    assert store.beat_node(a) == []
    assert store.beat_node(NodeRecord("node-b", 100.0, 104.0)) == []
    assert store.live_nodes(0.0) == [a, NodeRecord("node-b", 100.0, 104.0)]
    assert [n.node_id for n in store.live_nodes(105.0)] == ["node-a"]  # b stopped beating
    store.request_node_sync("node-a", SyncRequest("acme", "t1"))
    store.request_node_sync("node-a", SyncRequest("acme", "t2", full=True))
    store.request_node_sync("node-b", SyncRequest("acme", "t9"))
    later = NodeRecord("node-a", 100.0, 111.0, (("acme", "t1"),), {"connections": 1})
    assert store.beat_node(later) == [SyncRequest("acme", "t1"), SyncRequest("acme", "t2", True)]
    assert store.beat_node(later) == []  # handed over once
    assert store.live_nodes(111.0) == [later]
    store.forget_node("node-b")
    assert [n.node_id for n in store.live_nodes(0.0)] == ["node-a"]
    assert store.beat_node(NodeRecord("node-b", 200.0, 200.0)) == []  # its request went too


def test_a_damaged_node_row_is_left_out(pg_url: str) -> None:
    """Another process (or damage) may leave any bytes in ``relay_nodes``: a row that
    does not decode is as if absent; the others still read."""
    store = PostgresRelayStore(pg_url)
    try:
        for node in ("node-a", "node-b", "node-c"):
            store.beat_node(NodeRecord(node, 1.0, 2.0, (("acme", "t1"),), {"connections": 1}))
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE relay_nodes SET replicas = 'not json' WHERE node_id = 'node-a'")
            conn.execute("UPDATE relay_nodes SET metrics = '[1]' WHERE node_id = 'node-b'")
        assert [n.node_id for n in store.live_nodes(0.0)] == ["node-c"]
    finally:
        store.close()


def test_schema_version_and_data_survive_reopen(backend: Backend, store: RelayStore) -> None:
    assert store.schema_version() == backend.version
    issue_token(store, tenant="acme", replica_id="t1")
    [seq] = store.append_many([AppendEntry("acme", "catalog", b"u", "t1", b"\x00")]).seqs
    store.close()
    again = backend.open()
    assert again.schema_version() == backend.version
    assert len(again.list_tokens()) == 1
    assert again.load_doc("acme", "catalog").updates == [(seq, b"u")]


def test_a_newer_schema_is_refused(backend: Backend, store: RelayStore) -> None:
    store.close()
    if backend.kind == "sqlite":
        backend.raw("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(99),))
    else:
        backend.raw("UPDATE schema_version SET version = ?", (99,))
    with pytest.raises(StorageError, match="newer tiendasync"):
        backend.open()


def _race(workers: list[Callable[[], Any]]) -> list[Any]:
    """Run the callables at once, one thread each; their results in order."""
    start = threading.Barrier(len(workers))
    results: list[Any] = [None] * len(workers)

    def run(i: int) -> None:
        start.wait()
        results[i] = workers[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_two_processes_claiming_one_writer_id_at_once(backend: Backend) -> None:
    stores = [backend.open() for _ in range(4)]
    for round_ in range(5):
        ids = [1000 + round_, 2000 + round_]
        results = _race(
            [partial(s.claim_client_ids, "acme", f"r{i}", ids) for i, s in enumerate(stores)]
        )
        winners = [i for i, foreign in enumerate(results) if foreign == []]
        assert len(winners) == 1, results
        assert stores[0].client_ids_of("acme", f"r{winners[0]}") >= set(ids)
        assert all(results[i] == ids for i in range(4) if i != winners[0])


def test_two_processes_opening_one_conflict_at_once(backend: Backend) -> None:
    stores = [backend.open() for _ in range(4)]
    for round_ in range(5):
        results = _race([partial(s.record_conflict, _conflict(f"c{round_}")) for s in stores])
        assert sorted(results) == [False, False, False, True]
    assert len(stores[0].list_conflicts("acme")) == 5


def test_a_documents_updates_are_seen_in_commit_order(backend: Backend) -> None:
    """A reader following one document by seq never finds, later, a committed update
    below the highest seq it has seen: per document, seq order is commit order."""
    writers = [backend.open() for _ in range(3)]
    reader = backend.open()
    per_writer = 15
    stop = threading.Event()
    problems: list[str] = []
    seen: list[int] = []

    def follow() -> None:
        deadline = time.monotonic() + 30
        while not stop.is_set() or len(seen) < per_writer * len(writers):
            if time.monotonic() > deadline:
                return
            after = seen[-1] if seen else 0
            for seq, _ in reader.load_doc("acme", "sales").updates:
                if seq in seen:
                    continue
                if seq < after:
                    problems.append(f"seq {seq} appeared after {after} was read")
                seen.append(seq)
            if problems:
                return

    def write(i: int, s: RelayStore) -> None:
        for n in range(per_writer):
            s.append_many([AppendEntry("acme", "sales", f"{i}:{n}".encode(), f"t{i}", b"\x00")])

    follower = threading.Thread(target=follow)
    follower.start()
    _race([partial(write, i, s) for i, s in enumerate(writers)])
    stop.set()
    follower.join(30)
    assert problems == []
    assert len(seen) == per_writer * len(writers) == len(set(seen))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(0, 2), st.binary(min_size=1, max_size=8)),
            st.tuples(st.just("none"), st.integers(0, 2), st.just(b"")),
            st.tuples(st.just("snapshot"), st.integers(0, 2), st.binary(max_size=8)),
        ),
        max_size=25,
    )
)
def test_load_doc_is_the_snapshot_and_every_update_after_it(
    store: RelayStore, steps: list[tuple[str, int, bytes]]
) -> None:
    """Against a model: whatever appends and snapshots, a document loads as its last
    snapshot and exactly the updates logged after it, in order."""
    tenant = f"h{next(_EXAMPLES)}"  # every example its own tenant, in the one store
    model: dict[str, tuple[bytes | None, list[tuple[int, bytes]]]] = {}
    logged: set[str] = set()  # docs with a state vector: appended to at least once
    for kind, d, data in steps:
        doc = f"doc{d}"
        snap, log = model.get(doc, (None, []))
        if kind == "snapshot":
            upto = log[-1][0] if log else 0
            store.put_snapshot(tenant, doc, data, upto)
            model[doc] = (data, [])
            continue
        [seq] = store.append_many(
            [AppendEntry(tenant, doc, data if kind == "append" else None, "t1", bytes([d]))]
        ).seqs
        logged.add(doc)
        if kind == "append":
            assert seq is not None and all(seq > s for s, _ in log)
            log = [*log, (seq, data)]
        model[doc] = (snap, log)
    for doc, (snap, log) in model.items():
        hist = store.load_doc(tenant, doc)
        assert (hist.snapshot, hist.updates) == (snap, log)
        assert store.log_size(tenant, doc) == len(log)
    assert set(store.state_vectors(tenant)) == logged


def test_the_relay_serves_sync_on_either_store(backend: Backend, tmp_path: Path) -> None:
    """The whole relay on the store of record: an update is acknowledged once stored,
    fanned out, and still there for a replica that connects after a restart."""

    async def scenario(server: RelayServer, store: RelayStore, tokens: dict[str, str]) -> None:
        a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        b = await Client.open(server.port, replica="t2", token=tokens["t2"], client_id=22)
        for cl in (a, b):
            await cl.until_synced()
        w = Writer(11)
        for i in range(3):
            await a.send_update("catalog", w.set(f"k{i}", i))
        for _ in range(3):
            ack = await a.wait_for(Ack)
            assert len(store.load_doc("acme", "catalog").updates) >= ack.clock  # acked: stored
        got = [await b.wait_for(UpdateReceived) for _ in range(3)]
        assert {u.doc for u in got} == {"catalog"}
        for cl in (a, b):
            await cl.close()

    with_relay(tmp_path, scenario, store=backend.open())

    async def later(server: RelayServer, store: RelayStore, tokens: dict[str, str]) -> None:
        c = await Client.open(server.port, replica="t3", token=tokens["t3"], client_id=33)
        _, diffs = await c.until_synced()
        assert [d.doc for d in diffs] == ["catalog"]
        import pycrdt

        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(diffs[0].data)
        assert values(doc) == {"k0": 0, "k1": 1, "k2": 2}
        await c.close()

    with_relay(tmp_path, later, store=backend.open())


# -- PostgreSQL only: what a server adds ------------------------------------------------------


def test_urls_select_postgresql_and_hide_passwords(pg_url: str) -> None:
    assert is_postgresql_url(pg_url) and is_postgresql_url("postgres://h/db")
    assert not is_postgresql_url("relay.db")
    assert describe_url("postgresql://ana:s3cret@db.example:6543/relay") == (
        "postgresql://ana@db.example:6543/relay"
    )
    bad = pg_url.replace("postgresql://postgres@/", "postgresql://nobody:s3cret@/missing_db_")
    with pytest.raises(StorageError) as err:
        PostgresRelayStore(bad)
    assert "s3cret" not in str(err.value) and "cannot connect" in str(err.value)


def test_a_lost_connection_fails_one_call_then_reconnects(pg_url: str) -> None:
    with PostgresRelayStore(pg_url) as store:
        store.set_replica_config("acme", "t1", {"x": 1})
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(StorageError, match="failed"):
            store.set_replica_config("acme", "t1", {"x": 2})
        assert store.get_replica_config("acme", "t1") == {"x": 1}  # nothing half-written
        store.set_replica_config("acme", "t1", {"x": 3})
        assert store.get_replica_config("acme", "t1") == {"x": 3}


def test_a_stuck_transaction_elsewhere_fails_the_write_in_time(pg_url: str) -> None:
    with PostgresRelayStore(pg_url, statement_timeout_s=0.3) as store:
        store.append_many([AppendEntry("acme", "catalog", b"u1", "t1", b"\x00")])
        with psycopg.connect(pg_url) as other:  # a transaction that holds the doc's row
            other.execute("SELECT 1 FROM docs WHERE doc = 'catalog' FOR UPDATE")
            began = time.monotonic()
            with pytest.raises(StorageError, match="write failed"):
                store.append_many([AppendEntry("acme", "catalog", b"u2", "t1", b"\x01")])
            assert time.monotonic() - began < 5
            other.rollback()
        store.append_many([AppendEntry("acme", "catalog", b"u3", "t1", b"\x02")])
        assert [d for _, d in store.load_doc("acme", "catalog").updates] == [b"u1", b"u3"]


def test_many_relays_starting_at_once_migrate_once(pg_url: str) -> None:
    stores = _race([partial(PostgresRelayStore, pg_url) for _ in range(4)])
    try:
        assert {s.schema_version() for s in stores} == {pgschema.SCHEMA_VERSION}
        with psycopg.connect(pg_url) as conn:
            row = conn.execute("SELECT count(*) FROM schema_version").fetchone()
        assert row == (1,)
    finally:
        for s in stores:
            s.close()


# -- document generations (docs/generations.md) ----------------------------------------------


def test_a_rollover_keeps_the_cut_and_starts_the_next_generation(
    backend: Backend, store: RelayStore
) -> None:
    key = ("acme", "stock/t1")
    res = store.append_many(
        [AppendEntry(*key, b"u1", "t1", b"\x01"), AppendEntry(*key, b"u2", "t2", b"\x02")]
    )
    last = store.load_doc(*key).last_seq
    assert store.generations("acme") == {}
    roll = partial(store.roll_over, *key, cut=b"cut", seed=b"seed", state_vector=b"\x03")
    assert roll(generation=1, upto_seq=last) is False  # not at generation 1
    assert roll(generation=0, upto_seq=last - 1) is False  # an update after what was cut
    assert store.load_doc(*key).updates == list(zip(res.seqs, [b"u1", b"u2"], strict=True))
    assert roll(generation=0, upto_seq=last) is True
    assert roll(generation=0, upto_seq=last) is False  # once
    assert store.generations("acme") == {"stock/t1": 1} and store.generations("globex") == {}
    current = store.load_doc(*key)
    assert (current.snapshot, current.updates) == (b"seed", [])
    assert store.state_vectors("acme")["stock/t1"] == b"\x03"
    assert store.log_size(*key) == 0
    past = store.load_generation(*key, 0)
    assert (past.snapshot, past.updates, past.last_seq, past.damaged) == (b"cut", [], 0, [])
    with pytest.raises(NotFound):
        store.load_generation(*key, 1)  # the current generation is not a past one
    # the next generation's log goes on as before, and survives a reopen
    [s3] = store.append_many([AppendEntry(*key, b"u3", "t1", b"\x04")]).seqs
    store.close()
    again = backend.open()
    assert again.generations("acme") == {"stock/t1": 1}
    assert again.load_doc(*key).updates == [(s3, b"u3")]
    assert again.load_generation(*key, 0).snapshot == b"cut"


def test_a_locked_rollover_cuts_what_is_stored_while_the_writers_wait(
    backend: Backend, store: RelayStore
) -> None:
    """``roll_over_locked`` hands ``build`` the doc as stored; a write another relay
    process makes meanwhile waits, then lands in the new generation's log."""
    from tiendasync.relay.records import DocHistory, RolloverCut

    key = ("acme", "stock/t1")
    [s1, s2] = store.append_many(
        [AppendEntry(*key, b"u1", "t1", b"\x01"), AppendEntry(*key, b"u2", "t2", b"\x02")]
    ).seqs
    other = backend.open()
    seen: list[DocHistory] = []
    landed: list[int | None] = []

    def build(history: DocHistory) -> RolloverCut:
        seen.append(history)
        writer = threading.Thread(
            target=lambda: landed.extend(
                other.append_many([AppendEntry(*key, b"u3", "t1", b"\x04")]).seqs
            )
        )
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and not landed  # it waits for the cut
        threads.append(writer)
        return RolloverCut(b"cut", b"seed", b"\x03")

    threads: list[threading.Thread] = []
    assert store.roll_over_locked(*key, build) == 1
    threads[0].join(30)
    [history] = seen
    assert (history.generation, history.updates) == (0, [(s1, b"u1"), (s2, b"u2")])
    assert store.generations("acme") == {"stock/t1": 1}
    assert store.load_generation(*key, 0).snapshot == b"cut"
    current = store.load_doc(*key)
    assert (current.snapshot, current.updates) == (b"seed", [(landed[0], b"u3")])
    # again, at generation 1; and a doc never stored is not cut
    assert store.roll_over_locked(*key, lambda h: RolloverCut(b"c1", b"s1", b"\x05")) == 2
    assert store.load_generation(*key, 1).snapshot == b"c1"
    assert store.roll_over_locked("acme", "stock/nowhere", build) is None
    assert store.generations("acme") == {"stock/t1": 2}


def test_a_late_update_and_its_carry_are_logged_together_once(
    backend: Backend, store: RelayStore
) -> None:
    key = ("acme", "stock/t1")
    store.append_many([AppendEntry(*key, b"u1", "t1", b"\x01")])
    assert store.roll_over(
        *key,
        generation=0,
        upto_seq=store.load_doc(*key).last_seq,
        cut=b"cut",
        seed=b"seed",
        state_vector=b"\x02",
    )
    late = partial(store.append_late, *key, replica="t9", into_generation=1, received_at=5.0)
    seq = late(generation=0, data=b"late1", after_seq=0, carry=b"carry1", state_vector=b"\x05")
    assert seq is not None
    # computed on g as it was before late1: refused, nothing logged
    assert (
        late(generation=0, data=b"late2", after_seq=0, carry=b"carry2", state_vector=b"\x06")
        is None
    )
    seq2 = late(generation=0, data=b"dup", after_seq=seq, carry=None, state_vector=b"\x05")
    assert seq2 is not None and seq2 > seq
    assert store.load_generation(*key, 0).updates == [(seq, b"late1"), (seq2, b"dup")]
    assert [d for _, d in store.load_doc(*key).updates] == [b"carry1"]
    assert store.state_vectors("acme")["stock/t1"] == b"\x05"
    assert store.log_size(*key) == 1
    with pytest.raises(InvalidArgument):
        late(generation=1, data=b"x", after_seq=0, carry=None, state_vector=b"\x05")
    # a generation on: a carry computed on 1 is refused, one computed on 2 is logged,
    # and generation 0 still takes late updates
    upto = store.load_doc(*key).last_seq
    assert store.roll_over(
        *key, generation=1, upto_seq=upto, cut=b"cut1", seed=b"seed2", state_vector=b"\x07"
    )
    assert late(generation=0, data=b"l3", after_seq=seq2, carry=b"c3", state_vector=b"\x08") is None
    seq3 = late(
        generation=0,
        data=b"l3",
        after_seq=seq2,
        carry=b"c3",
        state_vector=b"\x08",
        into_generation=2,
    )
    assert seq3 is not None
    assert [d for _, d in store.load_generation(*key, 0).updates] == [b"late1", b"dup", b"l3"]
    assert [d for _, d in store.load_doc(*key).updates] == [b"c3"]
    assert store.load_generation(*key, 1).updates == []
    assert store.state_vectors("acme")["stock/t1"] == b"\x08"
    with pytest.raises(InvalidArgument):
        store.append_late(
            "acme",
            "catalog",
            generation=0,
            data=b"x",
            replica=None,
            after_seq=0,
            carry=None,
            into_generation=1,
            state_vector=b"\x00",
            received_at=1.0,
        )
    # a damaged late row or cut is left out and named, as load_doc does
    backend.raw("UPDATE late_updates SET data = ? WHERE seq = ?", (b"LATE1", seq))
    backend.raw("UPDATE generation_cuts SET data = ?", (b"CUT",))
    past = store.load_generation(*key, 0)
    assert past.snapshot is None and past.updates == [(seq2, b"dup"), (seq3, b"l3")]
    assert [s for s, _ in past.damaged] == [0, seq]


def test_two_relays_carrying_late_updates_at_once_log_one(backend: Backend) -> None:
    """Both computed their carry on the same state of g: only one may log it."""
    stores = [backend.open() for _ in range(3)]
    key = ("acme", "stock/t1")
    stores[0].append_many([AppendEntry(*key, b"u1", "t1", b"\x01")])
    assert stores[0].roll_over(
        *key,
        generation=0,
        upto_seq=stores[0].load_doc(*key).last_seq,
        cut=b"c",
        seed=b"s",
        state_vector=b"\x02",
    )
    results = _race(
        [
            partial(
                s.append_late,
                *key,
                generation=0,
                data=b"late%d" % i,
                replica="t",
                after_seq=0,
                carry=b"carry%d" % i,
                into_generation=1,
                state_vector=b"\x03",
                received_at=1.0,
            )
            for i, s in enumerate(stores)
        ]
    )
    assert sum(r is not None for r in results) == 1
    assert len(stores[0].load_generation(*key, 0).updates) == 1
    assert len(stores[0].load_doc(*key).updates) == 1


def test_a_version_1_postgresql_database_gains_generations(pg_url: str) -> None:
    with PostgresRelayStore(pg_url) as store:
        store.append_many([AppendEntry("acme", "stock/t1", b"u", "t1", b"\x00")])
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as pgschema 1 wrote it
        conn.execute("DROP TABLE generation_cuts")
        conn.execute("DROP TABLE late_updates")
        conn.execute("ALTER TABLE docs DROP COLUMN generation")
        conn.execute("UPDATE schema_version SET version = 1")
    with PostgresRelayStore(pg_url) as store:
        assert store.schema_version() == pgschema.SCHEMA_VERSION == 5
        assert store.generations("acme") == {}
        last = store.load_doc("acme", "stock/t1").last_seq
        assert store.roll_over(
            "acme",
            "stock/t1",
            generation=0,
            upto_seq=last,
            cut=b"c",
            seed=b"s",
            state_vector=b"\x01",
        )
        assert store.generations("acme") == {"stock/t1": 1}
