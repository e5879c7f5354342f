"""Typed frames: the bytes on the wire, encode/decode round trips, and what decoding refuses."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiendasync import protocol
from tiendasync.errors import RemoteProtocolError
from tiendasync.model.docnames import is_period
from tiendasync.protocol import (
    CLOSE_AUTH,
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_RATE_LIMIT,
    CLOSE_TOO_BIG,
    CLOSE_VERSION,
    CloseCode,
    Event,
    Hello,
    ProtocolFailure,
    RelayConnection,
    ReplicaConnection,
)
from tiendasync.protocol.frames import (
    FRAME_CLASSES,
    AckFrame,
    ByeFrame,
    DocRef,
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
    decode_frame,
    encode,
    validate,
)

# -- the wire format is pinned ----------------------------------------------------------------

#: Bytes produced by the implementation before frames became typed records.
GOLDEN: list[tuple[Frame, str]] = [
    (
        HelloFrame(
            1, "acme", "tienda-1", "tok", 7, {"catalog": b"\x01\x07\x03"}, past_client_ids=(3, 4)
        ),
        "980101a461636d65a87469656e64612d31a3746f6b0781a7636174616c6f67c403010703"
        "82a466756c6cc2a470617374920304",
    ),
    (
        WelcomeFrame(1, "sess-1", {"catalog": b"\x00"}, {"interval_s": 5.0}),
        "950201a6736573732d3181a7636174616c6f67c4010081aa696e74657276616c5f73cb4014000000000000",
    ),
    (WelcomeFrame(1, "s", {}, None), "950201a17380c0"),
    (
        UpdateFrame((0, "stock/tienda-1"), b"\x00\x00"),
        "93039200ae73746f636b2f7469656e64612d31c4020000",
    ),
    (UpdateFrame(0, b"\x00\x00"), "930300c4020000"),
    (UpdateFrame("catalog", b"\x01"), "9303a7636174616c6f67c40101"),
    (AckFrame(0, 7, 42), "940400072a"),
    (SyncedFrame(), "9105"),
    (ErrorFrame(CloseCode.PROTOCOL, "unexpected"), "9306cd03eaaa756e6578706563746564"),
    (SyncNowFrame(True), "9207c3"),
    (ByeFrame(""), "9208a0"),
]


@pytest.mark.parametrize(("frame", "hexbytes"), GOLDEN, ids=lambda v: type(v).__name__)
def test_wire_bytes_are_unchanged(frame: Frame, hexbytes: str) -> None:
    assert frame.encode().hex() == hexbytes
    assert encode(frame.TYPE, *frame.fields()) == frame.encode()
    decoder = FrameDecoder()
    decoder.feed(bytes.fromhex(hexbytes))
    assert decoder.records() == [frame]


def test_connections_send_the_same_bytes_as_before() -> None:
    replica = ReplicaConnection()
    replica.hello(
        tenant="acme",
        replica_id="tienda-1",
        token="tok",
        client_id=7,
        state_vectors={"catalog": b"\x01\x07\x03"},
        past_client_ids=(3, 4),
    )
    assert replica.data_to_send().hex() == GOLDEN[0][1]
    relay = RelayConnection()
    relay.receive_data(GOLDEN[0][0].encode())
    relay.accept("s", {}, None)
    relay.send_update("stock/tienda-1", b"\x00\x00")
    relay.send_update("stock/tienda-1", b"\x00\x00")
    relay.fail(CLOSE_PROTOCOL, "unexpected")
    assert relay.data_to_send().hex() == "".join(GOLDEN[i][1] for i in (2, 3, 4, 8))


def test_every_frame_type_has_one_record_class() -> None:
    assert set(FRAME_CLASSES) == set(FrameType)
    for frame_type, cls in FRAME_CLASSES.items():
        assert cls.TYPE is frame_type


def test_close_code_aliases() -> None:
    aliases = {
        CLOSE_NORMAL: 1000,
        CLOSE_PROTOCOL: 1002,
        CLOSE_TOO_BIG: 1009,
        CLOSE_INTERNAL: 1011,
        CLOSE_AUTH: 4001,
        CLOSE_FORBIDDEN: 4003,
        CLOSE_VERSION: 4010,
        CLOSE_RATE_LIMIT: 4029,
    }
    for alias, number in aliases.items():
        assert isinstance(alias, CloseCode) and alias == number
        assert getattr(protocol, f"CLOSE_{alias.name}") is alias


# -- round trips --------------------------------------------------------------------------------

uints = st.integers(0, 2**53 - 1)
names = st.text(max_size=300)
svs = st.dictionaries(names, st.binary(max_size=20), max_size=4)
doc_refs: st.SearchStrategy[DocRef] = st.one_of(
    names, st.integers(0, 9_999), st.tuples(st.integers(0, 9_999), names)
)
config_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False), names
)
configs = st.one_of(st.none(), st.dictionaries(names, config_values, max_size=4))
reasons = st.text(max_size=1024)

FRAMES: st.SearchStrategy[Frame] = st.one_of(
    st.builds(
        HelloFrame,
        uints,
        names,
        names,
        st.text(max_size=512),
        uints,
        svs,
        full=st.booleans(),
        past_client_ids=st.lists(uints, max_size=5).map(tuple),
        generations=st.one_of(st.none(), st.dictionaries(names, uints, max_size=3)),
    ),
    st.builds(WelcomeFrame, uints, names, svs, configs),
    st.builds(UpdateFrame, doc_refs, st.binary(max_size=50)),
    st.builds(AckFrame, doc_refs, uints, uints),
    st.just(SyncedFrame()),
    st.builds(ErrorFrame, uints, reasons),
    st.builds(SyncNowFrame, st.booleans()),
    st.builds(ByeFrame, reasons),
    st.builds(GenerationsFrame, st.dictionaries(names, uints, max_size=3)),
    st.builds(NextUpdateFrame, doc_refs, uints, st.binary(max_size=50)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(FRAMES, min_size=1, max_size=4), cut=st.integers(0, 10**4))
def test_encode_then_decode_is_the_identity(frames: list[Frame], cut: int) -> None:
    data = b"".join(f.encode() for f in frames)
    decoder = FrameDecoder()
    cut %= len(data) + 1
    decoder.feed(data[:cut])
    got = decoder.records()
    decoder.feed(data[cut:])
    got += decoder.records()
    assert got == frames
    for frame in frames:
        obj = msgpack.unpackb(frame.encode(), raw=False)
        assert decode_frame(obj) == frame
        assert validate(obj) == (frame.TYPE, frame.fields())


# -- mutated bytes ------------------------------------------------------------------------------


def _mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    out = bytearray(data)
    for op, pos, value in edits:
        pos %= len(out) + 1
        if op == "set" and pos < len(out):
            out[pos] = value
        elif op == "insert":
            out.insert(pos, value)
        elif op == "delete" and pos < len(out):
            del out[pos]
        elif op == "truncate":
            del out[pos:]
    return bytes(out)


edits = st.lists(
    st.tuples(
        st.sampled_from(["set", "insert", "delete", "truncate"]),
        st.integers(0, 10**4),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(FRAMES, min_size=1, max_size=3), changes=edits)
def test_decoding_mutated_bytes_only_raises_protocol_errors(
    frames: list[Frame], changes: list[tuple[str, int, int]]
) -> None:
    data = _mutate(b"".join(f.encode() for f in frames), changes)
    decoder = FrameDecoder(max_frame_bytes=4096)
    try:
        decoder.feed(data)
        for frame in decoder.records():
            assert isinstance(frame, Frame)
            assert type(frame) is FRAME_CLASSES[frame.TYPE]
    except RemoteProtocolError as exc:
        assert exc.code in (CloseCode.PROTOCOL, CloseCode.TOO_BIG) and exc.reason


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    relay=st.booleans(),
    frames=st.lists(FRAMES, min_size=1, max_size=3),
    changes=edits,
)
def test_connections_turn_mutated_bytes_into_events(
    relay: bool, frames: list[Frame], changes: list[tuple[str, int, int]]
) -> None:
    conn: ReplicaConnection | RelayConnection
    if relay:
        conn = RelayConnection(max_frame_bytes=4096)
    else:
        conn = ReplicaConnection(max_frame_bytes=4096)
        conn.hello(tenant="a", replica_id="r", token="t", client_id=1, state_vectors={})
    conn.receive_data(_mutate(b"".join(f.encode() for f in frames), changes))  # never raises
    events: list[Event] = conn.events()
    failures = [e for e in events if isinstance(e, ProtocolFailure)]
    if failures:
        assert conn.closed and events[-1] is failures[-1] and len(failures) == 1


# -- what decoding refuses, and how it says so ------------------------------------------------


def _hello(**change: Any) -> list[Any]:
    fields: dict[str, Any] = {
        "version": 1,
        "tenant": "acme",
        "replica": "r",
        "token": "t",
        "client": 1,
        "svs": {},
        "flags": {},
    }
    fields.update(change)
    return [1, *fields.values()]


REFUSED: dict[str, tuple[Any, str]] = {
    "not an array": ({"a": 1}, "a frame must be a non-empty array"),
    "empty array": ([], "a frame must be a non-empty array"),
    "bool frame type": ([True], "a frame must start with an integer frame type"),
    "unknown frame type": ([11], "unknown frame type 11"),
    "short HELLO": ([1, 1], "HELLO frame must have 7 fields"),
    "long SYNCED": ([5, 0], "SYNCED frame must have 0 fields"),
    "HELLO flags": (_hello(flags=[]), "HELLO flags must be a map"),
    "HELLO past": (_hello(flags={"past": 3}), "HELLO past client ids must be an array"),
    "HELLO past id": (_hello(flags={"past": [-1]}), "past client id must be a non-negative"),
    "HELLO version": (_hello(version="1"), "version must be a non-negative integer"),
    "HELLO tenant": (_hello(tenant=3), "tenant must be a string of at most 300"),
    "HELLO token": (_hello(token="t" * 513), "token must be a string of at most 512"),
    "HELLO client id": (_hello(client=2**53), "client id must be a non-negative integer"),
    "HELLO state vector": (_hello(svs={"d": "x"}), "state vector must be binary"),
    "WELCOME config": ([2, 1, "s", {}, []], "WELCOME config must be a map or nil"),
    "WELCOME session": ([2, 1, 5, {}, None], "session id must be a string"),
    "WELCOME svs": ([2, 1, "s", [], None], "state vectors must be a map"),
    "UPDATE doc": ([3, None, b""], "document name must be a string"),
    "UPDATE alias": ([3, 10_000, b""], "document alias must be an integer below 10000"),
    "UPDATE declaration": ([3, [0], b""], "a document alias declaration is [alias, name]"),
    "UPDATE data": ([3, "d", "text"], "update must be binary"),
    "ACK clock": ([4, "d", 1, -1], "clock must be a non-negative integer"),
    "ERROR code": ([6, "1002", "x"], "close code must be a non-negative integer"),
    "ERROR reason": ([6, 1002, "x" * 1025], "reason must be a string of at most 1024"),
    "SYNC_NOW full": ([7, 1], "SYNC_NOW full must be a boolean"),
    "BYE reason": ([8, None], "reason must be a string of at most 1024"),
    "GENERATIONS map": ([9, []], "generations must be a map"),
    "GENERATIONS value": ([9, {"d": -1}], "generation must be a non-negative integer"),
    "NEXT generation": ([10, "stock/t1", -1, b""], "generation must be a non-negative integer"),
    "NEXT update": ([10, "stock/t1", 2, "x"], "update must be binary"),
    "HELLO generations": (
        [1, 1, "a", "r", "t", 1, {}, {"gens": {"d": "1"}}],
        "generation must be a non-negative integer",
    ),
}


@pytest.mark.parametrize(("obj", "message"), REFUSED.values(), ids=list(REFUSED))
def test_decoding_names_the_bad_field(obj: Any, message: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_frame(obj)
    assert info.value.code == CloseCode.PROTOCOL
    assert info.value.reason.startswith(message)
    relay = RelayConnection()
    relay.receive_data(msgpack.packb(obj, use_bin_type=True))
    events = relay.events()
    assert relay.closed and len(events) == 1 and isinstance(events[0], ProtocolFailure)
    assert events[0].code == CloseCode.PROTOCOL and events[0].reason.startswith(message)


def test_a_frame_too_large_for_the_buffer_is_too_big() -> None:
    decoder = FrameDecoder(max_frame_bytes=100)
    with pytest.raises(RemoteProtocolError) as info:
        decoder.feed(UpdateFrame("d", b"x" * 2000).encode())
    assert info.value.code == CloseCode.TOO_BIG


def test_hello_full_flag_is_read_leniently_as_before() -> None:
    frame = decode_frame([1, 1, "a", "r", "t", 1, {}, {"full": 1, "past": [2]}])
    assert frame == HelloFrame(1, "a", "r", "t", 1, {}, full=True, past_client_ids=(2,))


def test_hello_tells_the_config_the_store_runs_with() -> None:
    config = {"interval_s": 45, "priorities": {"sales": 9}}
    frame = decode_frame([1, 1, "a", "r", "t", 1, {}, {"config": config}])
    assert isinstance(frame, HelloFrame) and frame.config == config
    assert decode_frame(msgpack.unpackb(frame.encode())) == frame
    assert decode_frame([1, 1, "a", "r", "t", 1, {}, {}]) == HelloFrame(1, "a", "r", "t", 1, {})


@pytest.mark.parametrize(
    "config",
    [[], "x", 1, {1: 2}, {"k" * 301: 1}, {f"k{i}": i for i in range(33)}],
    ids=["array", "text", "int", "int-key", "long-key", "33-keys"],
)
def test_a_hello_config_that_is_not_a_small_map_of_names_is_refused(config: Any) -> None:
    with pytest.raises(RemoteProtocolError, match="HELLO config"):
        decode_frame([1, 1, "a", "r", "t", 1, {}, {"config": config}])


@given(st.integers(min_value=0, max_value=9999), st.integers(min_value=1, max_value=12))
def test_hello_tells_the_oldest_sales_month_the_store_keeps(year: int, month: int) -> None:
    period = f"{year:04d}-{month:02d}"
    frame = decode_frame([1, 1, "a", "r", "t", 1, {}, {"sales_from": period}])
    assert isinstance(frame, HelloFrame) and frame.sales_from == period
    assert decode_frame(msgpack.unpackb(frame.encode())) == frame


@given(
    st.one_of(
        st.text(max_size=12).filter(lambda s: not is_period(s)),
        st.integers(),
        st.binary(max_size=8),
        st.lists(st.integers(), max_size=2),
    )
)
def test_a_hello_sales_from_that_is_not_a_month_is_refused(value: Any) -> None:
    with pytest.raises(RemoteProtocolError, match="sales_from"):
        decode_frame([1, 1, "a", "r", "t", 1, {}, {"sales_from": value}])


def test_hello_tells_generations_only_when_the_replica_knows_them() -> None:
    """A replica that knows generations says so with the key, even with nothing in it;
    an older replica's HELLO has no key (and an older relay ignores it)."""
    old = decode_frame([1, 1, "a", "r", "t", 1, {}, {}])
    assert isinstance(old, HelloFrame) and old.generations is None
    assert "gens" not in msgpack.unpackb(old.encode())[7]
    new = HelloFrame(1, "a", "r", "t", 1, {}, generations={})
    assert msgpack.unpackb(new.encode())[7]["gens"] == {}
    assert decode_frame(msgpack.unpackb(new.encode())) == new
    replica = ReplicaConnection()
    replica.hello(
        tenant="a",
        replica_id="r",
        token="t",
        client_id=1,
        state_vectors={},
        generations={"stock/t1": 3},
    )
    relay = RelayConnection()
    relay.receive_data(replica.data_to_send())
    [hello] = relay.events()
    assert isinstance(hello, Hello) and hello.generations == {"stock/t1": 3}
