"""The relay's decision core driven directly: ids, clock and storage results passed in."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pycrdt
import pytest

from tests.support.relay_client import Writer
from tiendasync.protocol import (
    CLOSE_AUTH,
    CLOSE_FORBIDDEN,
    CLOSE_PROTOCOL,
    Ack,
    ProtocolFailure,
    Synced,
    Welcome,
)
from tiendasync.protocol.replica_side import ReplicaConnection
from tiendasync.protocol.yprotocols import (
    SyncType,
    decode_sync,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
)
from tiendasync.relay import SqliteRelayStore
from tiendasync.relay.auth import issue_token
from tiendasync.relay.core import PendingWrite, RelayCore, RelaySession
from tiendasync.relay.lookups import answer_hello, log_session, lookup_follower
from tiendasync.relay.policy import RateLimits
from tiendasync.relay.state import HelloFacts
from tiendasync.relay.storage import TokenRecord

NO_LIMITS = RateLimits(0, 0, 0, 0, 0)


def _counter(prefix: str) -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


class Harness:
    def __init__(self, store: SqliteRelayStore, **core_args: object) -> None:
        self.store = store
        self.now = 1000.0
        self.pending: list[PendingWrite] = []
        self.core = RelayCore(
            store,
            clock=lambda: self.now,
            random_id=_counter("s"),
            limits=NO_LIMITS,
            on_write=self.pending.append,
            **core_args,  # type: ignore[arg-type]
        )

    def connect(
        self, replica: str, token: str, client_id: int
    ) -> tuple[RelaySession, ReplicaConnection]:
        session = self.core.new_session()
        peer = ReplicaConnection()
        peer.hello(
            tenant="acme", replica_id=replica, token=token, client_id=client_id, state_vectors={}
        )
        self.send(session, peer)
        return session, peer

    def send(self, session: RelaySession, peer: ReplicaConnection) -> None:
        hello = self.core.receive(session, peer.data_to_send())
        if hello is not None:
            answer_hello(self.core, self.store, session, hello)
        assert session.conn is not None
        peer.receive_data(session.conn.data_to_send())

    def flush(self) -> None:
        batch, self.pending[:] = list(self.pending), []
        self.core.committed(batch, self.store.append_many([w.entry() for w in batch]))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteRelayStore]:
    with SqliteRelayStore(str(tmp_path / "relay.db")) as s:
        yield s


def _update(client_id: int, key: str, value: int) -> bytes:
    """A catalog write of replica t1 under ``client_id``, at the harness's time."""
    return Writer(client_id, clock=lambda: 1000.0).set(key, value)


def test_ids_and_clock_are_passed_in(store: SqliteRelayStore) -> None:
    h = Harness(store)
    token = issue_token(store, tenant="acme", replica_id="t1")
    session, peer = h.connect("t1", token, 11)
    assert session.id == "s1" and session.record.started_at == 1000.0
    events = peer.events()
    assert isinstance(events[0], Welcome) and events[0].session_id == "s1"
    assert isinstance(events[-1], Synced)
    peer.send_update("catalog", _update(11, "a", 1))
    h.send(session, peer)
    assert peer.events() == [] and len(h.pending) == 1  # nothing acknowledged before storage
    h.flush()
    assert session.conn is not None
    peer.receive_data(session.conn.data_to_send())
    [ack] = peer.events()
    assert isinstance(ack, Ack) and (ack.client_id, ack.clock) == (11, 1)
    h.now = 1005.0
    record = h.core.end_session(session)
    assert (record.started_at, record.ended_at, record.outcome) == (1000.0, 1005.0, "ok")
    assert store.list_sessions() == []  # the pump stores the row
    log_session(store, record)
    assert [r.session_id for r in store.list_sessions()] == ["s1"]


def test_hello_steps_take_storage_results(store: SqliteRelayStore) -> None:
    h = Harness(store)
    token = issue_token(store, tenant="acme", replica_id="t1")
    record = next(t for t in store.list_tokens() if t.replica_id == "t1")
    session = h.core.new_session()
    peer = ReplicaConnection()
    peer.hello(tenant="acme", replica_id="t1", token=token, client_id=11, state_vectors={})
    hello = h.core.receive(session, peer.data_to_send())
    assert hello is not None and session.conn is not None
    # a storage answer made up by the test: the ids belong to another replica
    assert h.core.authenticated(session, hello, record)
    h.core.welcome(session, hello, record, HelloFacts(foreign=(11,)))
    peer.receive_data(session.conn.data_to_send())
    [failure] = peer.events()
    assert isinstance(failure, ProtocolFailure) and failure.code == CLOSE_FORBIDDEN
    assert session.record.outcome == "rejected"
    # no token at all
    other = h.core.new_session()
    peer = ReplicaConnection()
    peer.hello(tenant="acme", replica_id="t1", token="ts_x", client_id=12, state_vectors={})
    hello = h.core.receive(other, peer.data_to_send())
    assert hello is not None
    assert not h.core.authenticated(other, hello, None)
    assert other.conn is not None and other.conn.close_code == CLOSE_AUTH


def test_admin_or_foreign_token_cannot_sync(store: SqliteRelayStore) -> None:
    h = Harness(store)
    admin = issue_token(store, admin=True)
    session, peer = h.connect("t1", admin, 11)
    assert [type(e) for e in peer.events()] == [ProtocolFailure]
    assert session.conn is not None and session.conn.close_code == CLOSE_AUTH
    t2 = issue_token(store, tenant="acme", replica_id="t2")
    session, peer = h.connect("t1", t2, 12)
    assert session.conn is not None and session.conn.close_code == CLOSE_AUTH


def test_yprotocols_encoders_match_pycrdt() -> None:
    doc: pycrdt.Doc[pycrdt.Map[int]] = pycrdt.Doc(client_id=5)
    doc["root"] = root = pycrdt.Map[int]()
    root["x"] = 1
    sv = bytes(doc.get_state())
    assert encode_sync_step1(sv) == bytes(pycrdt.create_sync_message(doc))
    update = bytes(doc.get_update())
    assert encode_update(update) == bytes(pycrdt.create_update_message(update))
    empty: pycrdt.Doc[pycrdt.Map[int]] = pycrdt.Doc(client_id=6)
    reply = pycrdt.handle_sync_message(encode_sync_step1(bytes(empty.get_state()))[1:], doc)
    assert reply is not None
    assert encode_sync_step2(bytes(doc.get_update(bytes(empty.get_state())))) == bytes(reply)
    big = b"u" * 300  # a two-byte length
    message = encode_update(big)
    parsed = decode_sync(message)
    assert parsed is not None and parsed.sync_type == SyncType.UPDATE and parsed.payload == big


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"\x00", "truncated sync message"),
        (b"\x00\x00\x05ab", "sync message length does not match its payload"),
        (b"\x00\x01\xff", "truncated sync message"),
    ],
)
def test_yprotocols_malformed_sync_messages(message: bytes, reason: str) -> None:
    with pytest.raises(Exception, match=reason) as info:
        decode_sync(message)
    assert getattr(info.value, "code", None) == CLOSE_PROTOCOL


def test_yprotocols_other_message_types_are_not_sync() -> None:
    assert decode_sync(b"") is None
    assert decode_sync(b"\x01\x00") is None  # awareness


def test_follower_driven_directly(store: SqliteRelayStore) -> None:
    h = Harness(store, yjs_writable=True)
    token = issue_token(store, tenant="acme", replica_id="t1")
    facts = lookup_follower(store, "acme", "catalog", token)
    status, record, grants = h.core.yjs_auth("acme", "catalog", facts)
    assert status == 200 and isinstance(record, TokenRecord)
    assert (
        h.core.yjs_auth("acme", "catalog", lookup_follower(store, "acme", "catalog", None))[0]
        == 401
    )
    assert h.core.yjs_auth("acme", "nope!", facts)[0] == 404
    session = h.core.new_session("yjs")
    h.core.yjs_open(session, "acme", "catalog", record, grants)
    first = decode_sync(session.outbox.pop(0))
    assert first is not None and first.sync_type == SyncType.STEP1
    h.core.yjs_receive(session, encode_update(_update(77, "k", 3)))
    assert len(h.pending) == 1 and h.pending[0].replica == "t1"
    h.core.yjs_receive(session, encode_sync_step1(b"\x00"))
    answer = decode_sync(session.outbox.pop(0))
    assert answer is not None and answer.sync_type == SyncType.STEP2
    h.core.yjs_receive(session, b"\x00\x07\x00")
    assert (session.close_code, session.close_reason) == (
        4400,  # CLOSE_PROTOCOL in y-websocket's "do not retry" form
        "unknown sync message type 7",
    )
