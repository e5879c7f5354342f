"""Every (state, frame type) pair of both roles' transition tables, walked from the tables.

The pairs are generated from ``transitions.STATES`` and ``FrameType``, not
listed by hand: adding a state, a frame type or a table row changes what is
walked.  The verdict of each pair is read from ``RECEIVE`` (frames received)
and ``SEND`` (frames sent through the public API).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from tiendasync.errors import LocalProtocolError
from tiendasync.protocol import (
    PROTOCOL_VERSION,
    Ack,
    CloseCode,
    ConnectionClosed,
    Event,
    ProtocolFailure,
    RelayConnection,
    ReplicaConnection,
    Synced,
    SyncRequested,
    UpdateReceived,
    Welcome,
)
from tiendasync.protocol.events import GenerationsAnnounced, Hello, NextGenerationUpdate
from tiendasync.protocol.frames import (
    AckFrame,
    ByeFrame,
    ErrorFrame,
    Frame,
    FrameDecoder,
    FrameType,
    GenerationsFrame,
    HelloFrame,
    NextUpdateFrame,
    SyncedFrame,
    SyncNowFrame,
    UpdateFrame,
    WelcomeFrame,
)
from tiendasync.protocol.transitions import (
    CLOSED,
    INITIAL,
    RECEIVE,
    SEND,
    STATES,
    RelayState,
    ReplicaState,
    Role,
    State,
)

Conn = ReplicaConnection | RelayConnection

#: One well-formed frame of every type, and the event it becomes where it is allowed.
SAMPLES: dict[FrameType, tuple[Frame, Event]] = {
    FrameType.HELLO: (
        HelloFrame(PROTOCOL_VERSION, "acme", "tienda-1", "tok", 7, {"catalog": b"\x00"}),
        Hello("acme", "tienda-1", "tok", 7, {"catalog": b"\x00"}),
    ),
    FrameType.WELCOME: (
        WelcomeFrame(PROTOCOL_VERSION, "sess", {"catalog": b"\x00"}, {"interval_s": 5.0}),
        Welcome("sess", {"catalog": b"\x00"}, {"interval_s": 5.0}),
    ),
    FrameType.UPDATE: (UpdateFrame("catalog", b"\x00\x00"), UpdateReceived("catalog", b"\x00\x00")),
    FrameType.ACK: (AckFrame("catalog", 7, 3), Ack("catalog", 7, 3)),
    FrameType.SYNCED: (SyncedFrame(), Synced()),
    FrameType.ERROR: (ErrorFrame(4003, "nope"), ProtocolFailure(4003, "nope", remote=True)),
    FrameType.SYNC_NOW: (SyncNowFrame(True), SyncRequested(True)),
    FrameType.BYE: (ByeFrame("done"), ConnectionClosed("done")),
    FrameType.GENERATIONS: (
        GenerationsFrame({"stock/t1": 2}),
        GenerationsAnnounced({"stock/t1": 2}),
    ),
    FrameType.NEXT_UPDATE: (
        NextUpdateFrame("stock/t1", 2, b"\x00\x00"),
        NextGenerationUpdate("stock/t1", 2, b"\x00\x00"),
    ),
}


def new_connection(role: Role) -> Conn:
    return ReplicaConnection() if role is Role.REPLICA else RelayConnection()


def _replica_to(conn: ReplicaConnection, state: State) -> None:
    if state == "closed":
        conn.bye()
        return
    if state == "new":
        return
    conn.hello(tenant="acme", replica_id="r", token="t", client_id=7, state_vectors={})
    if state == "hello_sent":
        return
    conn.receive_data(WelcomeFrame(PROTOCOL_VERSION, "s", {}, None).encode())
    if state == "catching_up":
        return
    conn.receive_data(SyncedFrame().encode())


def _relay_to(conn: RelayConnection, state: State) -> None:
    if state == "closed":
        conn.bye()
        return
    if state == "new":
        return
    conn.receive_data(SAMPLES[FrameType.HELLO][0].encode())
    if state == "authenticating":
        return
    conn.accept("s", {}, None)


def connection_in(role: Role, state: State) -> Conn:
    """A connection of ``role`` driven to ``state`` through the public API, output drained."""
    conn = new_connection(role)
    if isinstance(conn, ReplicaConnection):
        _replica_to(conn, state)
    else:
        _relay_to(conn, state)
    assert conn.state == state
    conn.events()
    conn.data_to_send()
    return conn


def sent_frames(conn: Conn) -> list[Frame]:
    decoder = FrameDecoder()
    decoder.feed(conn.data_to_send())
    return decoder.records()


PAIRS = [
    (role, state, frame_type)
    for role in Role
    for state, frame_type in itertools.product(STATES[role], FrameType)
]


def test_the_walk_covers_every_state_and_frame_type() -> None:
    assert set(SAMPLES) == set(FrameType)
    assert len(PAIRS) == sum(len(STATES[r]) for r in Role) * len(FrameType)
    for role, state, frame_type in itertools.chain(RECEIVE, SEND):
        assert (role, state, frame_type) in PAIRS
    for (role, _, _), transition in RECEIVE.items():
        assert transition.next_state in STATES[role]
    for (role, _, _), next_state in SEND.items():
        assert next_state in STATES[role]


@pytest.mark.parametrize(("role", "state", "frame_type"), PAIRS, ids=lambda v: str(v))
def test_receiving_each_frame_in_each_state(
    role: Role, state: State, frame_type: FrameType
) -> None:
    conn = connection_in(role, state)
    frame, expected_event = SAMPLES[frame_type]
    verdict = RECEIVE.get((role, state, frame_type))

    conn.receive_data(frame.encode())  # never raises
    events = conn.events()

    if state == CLOSED[role]:  # a closed connection ignores all input
        assert verdict is None
        assert events == [] and conn.closed and conn.data_to_send() == b""
        return
    if verdict is not None:
        assert conn.state == verdict.next_state
        assert [type(e) for e in events] == [verdict.event]
        assert events == [expected_event]
        if verdict.next_state == CLOSED[role]:
            expected_code = frame.code if isinstance(frame, ErrorFrame) else CloseCode.NORMAL
            assert conn.close_code == expected_code
        else:
            assert not conn.closed and conn.close_code is None
        assert conn.data_to_send() == b""  # receiving never answers by itself
        return
    # not in the table: a protocol error, told to the peer, and the connection is closed
    assert len(events) == 1 and isinstance(events[0], ProtocolFailure)
    failure = events[0]
    assert failure.code == CloseCode.PROTOCOL and failure.remote
    assert f"unexpected {frame_type.name} frame in state {state}" == failure.reason
    assert conn.closed and conn.state == CLOSED[role] and conn.close_code == CloseCode.PROTOCOL
    assert sent_frames(conn) == [ErrorFrame(CloseCode.PROTOCOL, failure.reason)]
    conn.receive_data(SAMPLES[FrameType.BYE][0].encode())  # and stays closed, silent
    assert conn.events() == [] and conn.closed


def _senders(conn: Conn) -> dict[FrameType, Callable[[], None]]:
    """The public call that sends each frame type, for the role of ``conn``."""
    common: dict[FrameType, Callable[[], None]] = {
        FrameType.UPDATE: lambda: conn.send_update("catalog", b"\x00\x00"),
        FrameType.ERROR: lambda: conn.fail(CloseCode.INTERNAL, "boom"),
        FrameType.BYE: lambda: conn.bye("done"),
    }
    if isinstance(conn, ReplicaConnection):
        replica = conn
        return {
            **common,
            FrameType.HELLO: lambda: replica.hello(
                tenant="acme", replica_id="r", token="t", client_id=7, state_vectors={}
            ),
        }
    relay = conn
    return {
        **common,
        FrameType.WELCOME: lambda: relay.accept("s", {}, None),
        FrameType.ACK: lambda: relay.ack("catalog", 7, 3),
        FrameType.SYNCED: relay.synced,
        FrameType.SYNC_NOW: lambda: relay.request_sync(True),
        FrameType.GENERATIONS: lambda: relay.announce_generations({"stock/t1": 2}),
        FrameType.NEXT_UPDATE: lambda: relay.send_next("stock/t1", 2, b"\x00\x00"),
    }


def test_send_table_names_only_frames_the_api_can_send() -> None:
    for role in Role:
        senders = _senders(new_connection(role))
        for r, _, frame_type in SEND:
            if r is role:
                assert frame_type in senders, (role, frame_type)


@pytest.mark.parametrize(("role", "state", "frame_type"), PAIRS, ids=lambda v: str(v))
def test_sending_each_frame_in_each_state(role: Role, state: State, frame_type: FrameType) -> None:
    conn = connection_in(role, state)
    sender = _senders(conn).get(frame_type)
    if sender is None:
        assert (role, state, frame_type) not in SEND  # no API sends it
        return
    next_state = SEND.get((role, state, frame_type))
    if next_state is not None:
        sender()
        assert conn.state == next_state
        assert [f.TYPE for f in sent_frames(conn)] == [frame_type]
    elif state == CLOSED[role] and frame_type in (FrameType.ERROR, FrameType.BYE):
        sender()  # fail() / bye() on a closed connection do nothing
        assert conn.closed and conn.data_to_send() == b"" and conn.events() == []
    else:
        with pytest.raises(LocalProtocolError, match="not allowed in state"):
            sender()
        assert conn.state == state and conn.data_to_send() == b""


def test_a_refused_send_update_does_not_use_up_an_alias() -> None:
    replica = connection_in(Role.REPLICA, INITIAL[Role.REPLICA])
    assert isinstance(replica, ReplicaConnection)
    with pytest.raises(LocalProtocolError, match=r"'new' \(needs catching_up or live\)"):
        replica.send_update("catalog", b"\x00\x00")
    replica.hello(tenant="acme", replica_id="r", token="t", client_id=7, state_vectors={})
    replica.receive_data(WelcomeFrame(PROTOCOL_VERSION, "s", {}, None).encode())
    replica.data_to_send()
    replica.send_update("stock", b"\x00\x00")
    assert sent_frames(replica) == [UpdateFrame((0, "stock"), b"\x00\x00")]


@pytest.mark.parametrize("role", list(Role))
def test_another_protocol_version_closes_with_the_version_code(role: Role) -> None:
    conn = connection_in(role, RelayState.NEW if role is Role.RELAY else ReplicaState.HELLO_SENT)
    frame: Frame = (
        HelloFrame(PROTOCOL_VERSION + 1, "acme", "r", "t", 7, {})
        if role is Role.RELAY
        else WelcomeFrame(PROTOCOL_VERSION + 1, "s", {}, None)
    )
    conn.receive_data(frame.encode())
    events = conn.events()
    assert len(events) == 1 and isinstance(events[0], ProtocolFailure)
    assert events[0].code == CloseCode.VERSION and str(PROTOCOL_VERSION + 1) in events[0].reason
    assert conn.closed and conn.close_code == CloseCode.VERSION
    assert [f.TYPE for f in sent_frames(conn)] == [FrameType.ERROR]


def test_states_compare_equal_to_their_names() -> None:
    relay = connection_in(Role.RELAY, RelayState.OPEN)
    assert relay.state == "open" and relay.state in ("open",) and f"{relay.state}" == "open"
    replica = connection_in(Role.REPLICA, ReplicaState.LIVE)
    assert replica.state in ("catching_up", "live")


def test_frames_after_a_closing_frame_in_the_same_data_are_ignored() -> None:
    replica = connection_in(Role.REPLICA, ReplicaState.LIVE)
    replica.receive_data(ByeFrame("bye").encode() + UpdateFrame("catalog", b"\x00").encode())
    assert replica.events() == [ConnectionClosed("bye")]
    assert replica.close_code == CloseCode.NORMAL and replica.close_reason == "bye"
