"""Fan-out hands an update only to the sessions that may read its document.

A chain's relay serves every store of a tenant, and a store reads its own
location's documents (its grants): an update of one store's stock goes to
HQ and that store's followers, not past the read check of every store of
the chain.  The relay core runs over a real store, its pump played inline.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relay.test_bounds import Counter, Relay
from tiendasync.protocol import ReplicaConnection, UpdateReceived
from tiendasync.relay import SqliteRelayStore
from tiendasync.relay.auth import issue_token
from tiendasync.relay.broker import InProcessBroker
from tiendasync.relay.core import RelaySession

ALL = {"read": ["*"], "write": ["*"]}


def _own(location: str) -> dict[str, list[str]]:
    return {"read": [f"stock/{location}"], "write": ["*"]}


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    from tiendasync.relay.policy import RateLimits

    with SqliteRelayStore(str(tmp_path / "relay.db")) as store:
        yield Relay(store, RateLimits())


def _connect(
    relay: Relay, replica: str, client_id: int, grants: dict[str, list[str]]
) -> tuple[RelaySession, ReplicaConnection]:
    token = issue_token(relay.store, tenant="acme", replica_id=replica)
    relay.store.set_replica_config("acme", replica, grants)
    session = relay.core.new_session()
    peer = ReplicaConnection()
    peer.hello(
        tenant="acme", replica_id=replica, token=token, client_id=client_id, state_vectors={}
    )
    relay.send(session, peer)
    peer.events()
    return session, peer


def _received(relay: Relay, session: RelaySession, peer: ReplicaConnection) -> list[str]:
    assert session.conn is not None
    peer.receive_data(session.conn.data_to_send())
    return [e.doc for e in peer.events() if isinstance(e, UpdateReceived)]


def _deliveries(relay: Relay) -> list[str]:
    """Record the session of every ``Fanout.deliver`` call from now on."""
    calls: list[str] = []
    fanout = relay.core.fanout
    deliver = fanout.deliver

    def counted(session: RelaySession, doc: str, update: bytes, origin: str | None) -> None:
        calls.append(session.replica_id or "")
        deliver(session, doc, update, origin)

    fanout.deliver = counted  # type: ignore[method-assign]
    return calls


def test_an_update_goes_only_to_the_sessions_that_read_its_document(relay: Relay) -> None:
    stores = {f"t{n}": _connect(relay, f"t{n}", 10 + n, _own(f"t{n}")) for n in range(1, 6)}
    hq = _connect(relay, "hq", 99, ALL)
    calls = _deliveries(relay)
    session, peer = stores["t1"]
    peer.send_update("stock/t1", Counter(11).add("CAFE"))
    relay.send(session, peer)
    relay.flush()
    assert sorted(calls) == ["hq", "t1"]  # t1 is its origin: skipped there
    assert _received(relay, *hq) == ["stock/t1"]
    for name in ("t2", "t3", "t4", "t5"):
        assert _received(relay, *stores[name]) == []


def test_a_session_that_joins_or_leaves_changes_who_gets_the_next_update(relay: Relay) -> None:
    t1 = _connect(relay, "t1", 11, _own("t1"))
    hq = _connect(relay, "hq", 99, ALL)
    writer = Counter(11)
    t1[1].send_update("stock/t1", writer.add("CAFE"))
    relay.send(*t1)
    relay.flush()  # the readers of stock/t1 are memoized now
    assert _received(relay, *hq) == ["stock/t1"]
    auditor = _connect(relay, "auditor", 98, ALL)
    relay.core.end_session(hq[0])
    t1[1].send_update("stock/t1", writer.add("CAFE"))
    relay.send(*t1)
    relay.flush()
    assert _received(relay, *auditor) == ["stock/t1"]
    assert _received(relay, *hq) == []
    broker = relay.core.broker
    assert isinstance(broker, InProcessBroker) and broker.subscriber_count("acme") == 1
    for s, _ in (t1, auditor):
        relay.core.end_session(s)
    assert broker.subscriber_count("acme") == 0  # the tenant's last session left


def test_one_session_failing_to_take_an_update_does_not_stop_the_others(relay: Relay) -> None:
    t1 = _connect(relay, "t1", 11, _own("t1"))
    hq = _connect(relay, "hq", 99, ALL)
    broken = _connect(relay, "broken", 97, ALL)
    fanout = relay.core.fanout
    deliver = fanout.deliver

    def failing(session: RelaySession, doc: str, update: bytes, origin: str | None) -> None:
        if session is broken[0]:
            raise RuntimeError("a bug in one session's delivery")
        deliver(session, doc, update, origin)

    fanout.deliver = failing  # type: ignore[method-assign]
    t1[1].send_update("stock/t1", Counter(11).add("CAFE"))
    relay.send(*t1)
    relay.flush()
    assert _received(relay, *hq) == ["stock/t1"]
