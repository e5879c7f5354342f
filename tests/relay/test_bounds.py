"""Bounds that hold per frame and per byte, not per message (sans I/O).

The relay's policy charges a token bucket per frame and one per byte, counts
documents per session, replica and tenant, keeps the WELCOME and HELLO within
what the peer decodes, and the doc cache holds gapped updates aside (never
applied, stored or served) within time, byte and count bounds per writer.
Over real websockets: ``tests/e2e/test_bounds_ws.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiendasync.crdt.counter import PNCounter
from tiendasync.errors import ConfigError
from tiendasync.protocol import (
    CLOSE_RATE_LIMIT,
    CLOSE_TOO_BIG,
    Hello,
    ProtocolFailure,
    RelayConnection,
    ReplicaConnection,
    UpdateReceived,
    Welcome,
)
from tiendasync.protocol.codes import MAX_DOCS_PER_HELLO, MAX_HELLO_BYTES
from tiendasync.protocol.frames import UpdateFrame, count_frames, fit_state_vectors
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.protocol.yjs_update import parse_update
from tiendasync.relay import SqliteRelayStore
from tiendasync.relay.auth import issue_token
from tiendasync.relay.core import PendingWrite, RelayCore, RelaySession
from tiendasync.relay.docs import DocCache, ends_of
from tiendasync.relay.lookups import answer_hello
from tiendasync.relay.policy import Policy, RateLimits
from tiendasync.relay.records import AppendEntry, SessionRecord

OPEN = {"read": ["*"], "write": ["*"]}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteRelayStore]:
    with SqliteRelayStore(str(tmp_path / "relay.db")) as s:
        yield s


class Counter:
    """A writer of stock slots (``PNCounter``), keeping each transaction's update."""

    def __init__(self, client_id: int) -> None:
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
        self.counter = PNCounter(self.doc)
        self.updates: list[bytes] = []
        self.doc.observe(lambda e: self.updates.append(bytes(e.update)))

    def add(self, sku: str, n: int = 1) -> bytes:
        with self.doc.transaction():
            self.counter.add(sku, n)
        return self.updates[-1]


def _session(name: str = "s") -> RelaySession:
    session = RelaySession(id=name, kind="sync", record=SessionRecord(name, "acme", "t1", 0.0))
    session.tenant, session.replica_id = "acme", "t1"
    return session


# -- frames and bytes: the buckets charge per frame and per byte ---------------------------


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=60),
    cuts=st.lists(st.integers(0, 60)),
    frame_burst=st.integers(1, 40),
    byte_burst=st.integers(1, 1500),
)
def test_policy_charges_per_frame_and_per_byte_whatever_the_grouping(
    sizes: list[int], cuts: list[int], frame_burst: int, byte_burst: int
) -> None:
    """At one instant, frames of ``sizes`` bytes grouped in any messages are refused
    at the first message where the frames or the bytes so far pass their burst."""
    policy = Policy(
        RateLimits(
            max_frames_per_s=1.0,
            frame_burst=frame_burst,
            max_bytes_per_s=1.0,
            byte_burst=byte_burst,
        )
    )
    bounds = sorted({0, len(sizes), *(c for c in cuts if c <= len(sizes))})
    messages = [sizes[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    session = _session()
    frames = nbytes = 0
    for message in messages:
        frames, nbytes = frames + len(message), nbytes + sum(message)
        refusal = policy.charge(session, len(message), sum(message), 5.0)
        if frames > frame_burst:
            assert refusal == (CLOSE_RATE_LIMIT, "more than 1 frames per second")
            return
        if nbytes > byte_burst:
            assert refusal is not None and refusal[0] == CLOSE_RATE_LIMIT
            assert "per second" in refusal[1] and "frames" not in refusal[1]
            return
        assert refusal is None


@settings(max_examples=100, deadline=None)
@given(
    rate=st.floats(1.0, 100.0),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=30),
)
def test_frame_bucket_refills_with_the_time_passed_in(rate: float, gaps: list[float]) -> None:
    """One frame per call, ``gap`` seconds apart: refused exactly when the bucket
    (``rate`` a second, burst 3) has less than one token."""
    policy = Policy(RateLimits(max_frames_per_s=rate, frame_burst=3, max_bytes_per_s=0))
    session = _session()
    tokens, now = 3.0, 0.0
    for gap in gaps:
        now += gap
        tokens = min(3.0, tokens + gap * rate)
        refusal = policy.charge(session, 1, 10, now)
        if tokens >= 1.0 - 1e-9:
            if refusal is None:
                tokens -= 1.0
            else:  # float rounding at the boundary only
                assert tokens < 1.0 + 1e-6
        else:
            assert refusal is not None


class Relay:
    """A relay core over a real store, its pump played inline."""

    def __init__(self, store: SqliteRelayStore, limits: RateLimits) -> None:
        self.store = store
        self.pending: list[PendingWrite] = []
        ids = itertools.count(1)
        self.core = RelayCore(
            store,
            clock=lambda: 1000.0,
            random_id=lambda: f"s{next(ids)}",
            limits=limits,
            on_write=self.pending.append,
        )

    def connect(
        self, replica: str, client_id: int, svs: dict[str, bytes] | None = None
    ) -> tuple[RelaySession, ReplicaConnection]:
        token = issue_token(self.store, tenant="acme", replica_id=replica)
        self.store.set_replica_config("acme", replica, OPEN)
        session = self.core.new_session()
        peer = ReplicaConnection()
        peer.hello(
            tenant="acme",
            replica_id=replica,
            token=token,
            client_id=client_id,
            state_vectors=svs or {},
        )
        self.send(session, peer, now=0.0)
        return session, peer

    def send(self, session: RelaySession, peer: ReplicaConnection, now: float | None = 0.0) -> None:
        data = peer.data_to_send()
        hello = self.core.receive(session, data, now)
        if hello is not None:
            answer_hello(self.core, self.store, session, hello)
        assert session.conn is not None
        peer.receive_data(session.conn.data_to_send())

    def flush(self) -> None:
        batch, self.pending[:] = list(self.pending), []
        batch = self.core.storable(batch)
        self.core.committed(batch, self.store.append_many([w.entry() for w in batch]))


def _closed_by(peer: ReplicaConnection) -> ProtocolFailure | None:
    return next((e for e in peer.events() if isinstance(e, ProtocolFailure)), None)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(messages=st.lists(st.integers(1, 40), min_size=1, max_size=8), burst=st.integers(5, 80))
def test_relay_refuses_frames_past_the_burst_however_they_are_grouped(
    tmp_path_factory: pytest.TempPathFactory, messages: list[int], burst: int
) -> None:
    """Messages of k UPDATE frames each, at one instant: the message rate limit is far
    away, yet the session is closed at the first message that takes the frames past
    the burst, and every frame before it was processed."""
    path = tmp_path_factory.mktemp("frames") / "relay.db"
    with SqliteRelayStore(str(path)) as store:
        relay = Relay(
            store,
            RateLimits(
                max_messages_per_s=1000, message_burst=1000, max_frames_per_s=1.0, frame_burst=burst
            ),
        )
        session, peer = relay.connect("t1", 11)
        assert any(isinstance(e, Welcome) for e in peer.events())
        update = Counter(11).add("CAFE")
        sent = 1  # the HELLO was a frame too
        for k in messages:
            for _ in range(k):
                peer.send_update("stock/t1", update)
            relay.send(session, peer)
            sent += k
            failure = _closed_by(peer)
            if sent > burst:
                assert failure is not None and failure.code == CLOSE_RATE_LIMIT
                assert failure.reason == "more than 1 frames per second"
                assert session.record.updates_received == sent - k - 1
                return
            assert failure is None
        assert session.record.updates_received == sent - 1


def test_relay_refuses_bytes_past_the_burst(store: SqliteRelayStore) -> None:
    relay = Relay(store, RateLimits(max_bytes_per_s=1.0, byte_burst=1000))
    session, peer = relay.connect("t1", 11)
    peer.events()
    writer = Counter(11)
    for i in range(3):  # three small messages fit
        peer.send_update("stock/t1", writer.add(f"S{i}"))
        relay.send(session, peer)
        assert _closed_by(peer) is None
    for i in range(40):  # one message of many frames: its bytes count, not its count
        peer.send_update("stock/t1", writer.add(f"T{i}"))
    relay.send(session, peer)
    failure = _closed_by(peer)
    assert failure is not None and failure.code == CLOSE_RATE_LIMIT
    assert "per second" in failure.reason and "frames" not in failure.reason


def test_count_frames_counts_whole_frames_without_building_them() -> None:
    frame = UpdateFrame("stock/t1", b"x" * 10).encode()
    assert count_frames(frame * 7) == (7, True)
    assert count_frames(frame * 3 + frame[:4]) == (3, False)
    assert count_frames(b"") == (0, True)


# -- documents per session, replica and tenant ------------------------------------------


def test_documents_are_counted_per_session_replica_and_tenant() -> None:
    policy = Policy(
        RateLimits(max_new_docs_per_session=3, max_docs_per_replica=5, max_docs_per_tenant=8)
    )
    policy.seed("acme", "t1", {"catalog": b"\x00", "locations": b"\x00"})
    s1 = _session("s1")
    # existing documents never count
    assert policy.doc_refusal(s1, "catalog") is None
    for i in range(3):
        assert policy.doc_refusal(s1, f"stock/x{i}") is None
    refusal = policy.doc_refusal(s1, "stock/x3")
    assert refusal is not None and refusal[0] == CLOSE_RATE_LIMIT
    assert "new documents in one session" in refusal[1]
    # nothing of s1's was stored: its creations are forgotten when it ends
    policy.stored("acme", "stock/x0")
    policy.session_ended(s1)
    book = policy.book("acme")
    assert book.docs == {"catalog", "locations", "stock/x0"}
    s2, s3 = _session("s2"), _session("s3")
    for i in range(3):
        assert policy.doc_refusal(s2, f"stock/y{i}") is None
    assert policy.doc_refusal(s3, "stock/z0") is None  # x0, y0-y2, z0: the replica's 5
    refusal = policy.doc_refusal(s3, "stock/z1")
    assert refusal is not None and "this replica already writes 5 documents" in refusal[1]
    # another replica fills the tenant
    other = _session("o1")
    other.replica_id = "t2"
    assert policy.doc_refusal(other, "stock/o1") is None
    refusal = policy.doc_refusal(other, "stock/o2")
    assert refusal is not None and "the tenant already holds 8 documents" in refusal[1]
    assert policy.doc_refusal(other, "stock/o1") is None  # known now: writing it is fine


def test_seeded_replica_documents_are_those_holding_its_writes() -> None:
    writer = Counter(11)
    writer.add("A")
    sv_11 = bytes(writer.doc.get_state())
    policy = Policy(RateLimits(max_docs_per_replica=1))
    policy.seed("acme", "t1", {"stock/a": sv_11, "catalog": b"\x00"}, owned={11})
    assert policy.book("acme").by_replica["t1"] == {"stock/a"}
    refusal = policy.doc_refusal(_session(), "stock/b")
    assert refusal is not None and "already writes 1 documents" in refusal[1]


def test_rate_limits_keep_every_welcome_and_hello_decodable() -> None:
    with pytest.raises(ConfigError, match="max_docs_per_tenant"):
        RateLimits(max_docs_per_tenant=MAX_DOCS_PER_HELLO + 1)
    with pytest.raises(ConfigError, match="max_hello_bytes"):
        RateLimits(max_hello_bytes=MAX_HELLO_BYTES - 1)
    with pytest.raises(ConfigError, match="must not be negative"):
        RateLimits(max_gap_bytes=-1)
    RateLimits(max_docs_per_tenant=0, max_hello_bytes=0)  # 0: no limit


# -- WELCOME and HELLO sizes -------------------------------------------------------------------


def _svs(n: int, sv_len: int = 4) -> dict[str, bytes]:
    return {f"stock/loc-{i:05d}": bytes([1]) * sv_len for i in range(n)}


def test_a_welcome_over_the_protocol_limits_still_decodes() -> None:
    """The incident: 10 052 documents in the WELCOME failed every store's sync."""
    relay, replica = RelayConnection(), ReplicaConnection()
    replica.hello(tenant="acme", replica_id="t1", token="t", client_id=1, state_vectors={})
    relay.receive_data(replica.data_to_send())
    relay.events()
    relay.accept("s1", _svs(10_052), None)
    replica.receive_data(relay.data_to_send())
    [welcome] = replica.events()
    assert isinstance(welcome, Welcome) and len(welcome.state_vectors) == MAX_DOCS_PER_HELLO


def test_welcome_is_bounded_and_keeps_the_documents_the_replica_named() -> None:
    policy = Policy(RateLimits(max_welcome_bytes=20_000))
    svs = _svs(2000, sv_len=8)
    named = [f"stock/loc-{i:05d}" for i in range(1500, 1600)]
    out = policy.welcome_state_vectors(svs, named)
    assert set(named) <= set(out) and len(out) < len(svs)
    assert sum(len(k) + len(v) + 10 for k, v in out.items()) <= 20_000
    small = _svs(10)
    assert policy.welcome_state_vectors(small) == small


@pytest.mark.parametrize("with_generations", [False, True])
def test_a_replica_hello_stays_within_what_the_relay_accepts(with_generations: bool) -> None:
    replica = ReplicaConnection()
    big = _svs(12_000, sv_len=400)  # ~5 MB of state vectors
    # the generation of every counter/LWW document held, long names: ~0.6 MB, never cut
    gens = {f"stock/{'l' * 50}-{i:05d}": 7 for i in range(MAX_DOCS_PER_HELLO)}
    replica.hello(
        tenant="acme",
        replica_id="t1",
        token="t",
        client_id=1,
        state_vectors=big,
        generations=gens if with_generations else None,
    )
    data = replica.data_to_send()
    assert len(data) <= MAX_HELLO_BYTES
    assert Policy().hello_refusal(len(data)) is None
    relay = RelayConnection()
    relay.receive_data(data)
    [hello] = relay.events()
    assert isinstance(hello, Hello)
    assert list(hello.state_vectors) == list(big)[: len(hello.state_vectors)]
    assert hello.generations == (gens if with_generations else None)
    assert fit_state_vectors(big, 100) == {}
    refusal = Policy(RateLimits(max_hello_bytes=MAX_HELLO_BYTES)).hello_refusal(MAX_HELLO_BYTES + 1)
    assert refusal is not None and refusal[0] == CLOSE_TOO_BIG


def test_a_relay_hello_over_its_limit_is_refused_too_big(store: SqliteRelayStore) -> None:
    core = RelayCore(store, clock=lambda: 0.0, random_id=lambda: "s1")
    session = core.new_session()
    hello = msgpack.packb([1, 1, "acme", "t1", "t", 1, {"x" * 200: b"y" * 9_000_000}, {}])
    core.receive(session, hello, 0.0)
    assert session.conn is not None and session.conn.close_code == CLOSE_TOO_BIG
    assert "HELLO of" in session.conn.close_reason


def test_many_frames_in_one_message_beyond_the_frame_buffer_decode() -> None:
    """A message may carry any number of frames; each is bounded, not the message."""
    relay = RelayConnection(max_frame_bytes=4096)
    replica = ReplicaConnection(max_frame_bytes=4096)
    replica.hello(tenant="acme", replica_id="t1", token="t", client_id=1, state_vectors={})
    relay.receive_data(replica.data_to_send())
    relay.events()
    relay.accept("s1", {}, None)
    for i in range(50):
        relay.send_update(f"stock/{i}", b"u" * 1000)
    data = relay.data_to_send()
    assert len(data) > 40_000
    replica.receive_data(data)
    events = replica.events()
    assert not replica.closed and sum(isinstance(e, UpdateReceived) for e in events) == 50


def test_messages_are_cut_at_frame_boundaries_and_aliases_never_run_out() -> None:
    relay = RelayConnection()
    replica = ReplicaConnection()
    replica.hello(tenant="acme", replica_id="t1", token="t", client_id=1, state_vectors={})
    relay.receive_data(replica.data_to_send())
    relay.events()
    relay.accept("s1", {}, None)
    n = MAX_DOCS_PER_HELLO + 50
    for i in range(n):
        relay.send_update(f"stock/{i}", b"\x00\x00")
    assert relay.pending_bytes > 0
    messages = relay.messages_to_send(64 * 1024)
    assert len(messages) > 1 and all(len(m) <= 64 * 1024 for m in messages)
    assert relay.pending_bytes == 0
    got: list[str] = []
    for m in messages:
        assert count_frames(m)[1]
        replica.receive_data(m)
        got += [e.doc for e in replica.events() if isinstance(e, UpdateReceived)]
    assert not replica.closed and got == [f"stock/{i}" for i in range(n)]


# -- gapped updates ------------------------------------------------------------------------


def _reach(data: bytes) -> Any:
    return ends_of(parse_update(data))


def test_a_gapped_update_is_held_never_served_and_applies_when_it_fills(
    store: SqliteRelayStore,
) -> None:
    writer = Counter(7)
    u1, u2, u3 = writer.add("A"), writer.add("B"), writer.add("C")
    cache = DocCache(store)
    r3 = cache.apply("acme", "stock/x", u3, _reach(u3))
    assert r3.pending and r3.held is not None and r3.changed is None
    # not applied: no diff, for anyone, carries it
    fresh: pycrdt.Doc[Any] = pycrdt.Doc()
    fresh.apply_update(cache.get("acme", "stock/x").diff())
    fresh.apply_update(u1)
    fresh.apply_update(u2)
    assert dict(PNCounter(fresh).items()) == {"A": 1, "B": 1}
    cache.apply("acme", "stock/x", u1, _reach(u1))
    r2 = cache.apply("acme", "stock/x", u2, _reach(u2))
    [released] = r2.released
    assert decode_state_vector(released.state_vector) == {7: 3}
    assert cache.held("acme", "stock/x") == []


def test_a_gap_the_parser_cannot_see_is_taken_back_out_of_the_doc(
    store: SqliteRelayStore,
) -> None:
    """Without ``Reach`` (plain ends), the engine's pending part is removed by a rebuild."""
    writer = Counter(7)
    u1, u2 = writer.add("A"), writer.add("B")
    cache = DocCache(store)
    r2 = cache.apply("acme", "stock/x", u2, {7: 2})
    assert r2.pending and r2.rebuilt and r2.held is not None
    probe: pycrdt.Doc[Any] = pycrdt.Doc()
    probe.apply_update(cache.get("acme", "stock/x").diff())
    probe.apply_update(u1)
    assert dict(PNCounter(probe).items()) == {"A": 1}  # B was never served


def test_held_updates_are_bounded_per_writer_and_in_time(store: SqliteRelayStore) -> None:
    now = [0.0]
    cache = DocCache(store, clock=lambda: now[0], gap_seconds=10, gap_bytes=10**6, gap_updates=3)
    dropped: list[tuple[object, list[str], str]] = []
    cache.on_gap_dropped = lambda holder, tenant, docs, reason: dropped.append(
        (holder, list(docs), reason)
    )
    writer = Counter(9)
    writer.add("first")  # never sent: every later update is gapped
    gapped = [writer.add(f"k{i}") for i in range(5)]
    holder = object()
    for i, u in enumerate(gapped):
        r = cache.apply("acme", f"stock/{i % 2}", u, _reach(u))
        assert r.held is not None
        cache.hold_for(r.held, holder)
    assert len(cache.held("acme", "stock/0")) + len(cache.held("acme", "stock/1")) == 3
    assert [d[2] for d in dropped] == [
        "more updates with missing dependencies than the relay holds"
    ] * 2
    now[0] = 11.0
    assert cache.expire_gaps() == 3
    assert cache.held_bytes() == 0 and "did not arrive within 10 s" in dropped[-1][2]
    r = cache.apply("acme", "stock/0", gapped[0], _reach(gapped[0]))
    assert r.held is not None
    cache.hold_for(r.held, holder)
    assert cache.drop_held(holder, "its session ended") == 1 and cache.held_bytes() == 0


def test_stored_gapped_updates_of_earlier_relays_are_not_served(
    store: SqliteRelayStore,
) -> None:
    writer = Counter(5)
    u1, _, u3 = writer.add("A"), writer.add("B"), writer.add("C")
    store.append_many([AppendEntry("acme", "stock/x", u, "t1", b"\x00") for u in (u1, u3)])
    rdoc = DocCache(store).get("acme", "stock/x")
    probe: pycrdt.Doc[Any] = pycrdt.Doc()
    probe.apply_update(rdoc.diff())
    probe.apply_update(writer.updates[1])
    assert dict(PNCounter(probe).items()) == {"A": 1, "B": 1}
