"""Bad input: fuzz the frame decoder, the protocol state machines, a live relay
process and its admin HTTP API.

* Sans I/O (hypothesis): ``FrameDecoder`` only ever raises
  ``RemoteProtocolError``; ``ReplicaConnection`` / ``RelayConnection``
  ``receive_data`` never raise, whatever the bytes and their chunking, and a
  connection that closes on bad input ends with a ``ProtocolFailure``.
* A live relay (``tiendasync relay`` as a process, 127.0.0.1): random bytes,
  mutated valid frames, oversized frames, deeply nested msgpack, wrong types,
  authenticated sessions sending invalid or gapped Yjs updates.  Each
  connection is closed with a code and a reason, a well-behaved replica keeps
  getting its writes acknowledged throughout, and the relay's RSS stays
  bounded.
* The admin API: malformed JSON, wrong types, unknown ids, huge bodies get a
  4xx JSON error and change nothing.

``TIENDASYNC_FUZZ_EXAMPLES`` scales the example counts (default: CI size).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.support.processes import HOST, wait_until
from tests.support.relay_client import Writer
from tiendasync.errors import RemoteProtocolError
from tiendasync.protocol import (
    Ack,
    Event,
    Hello,
    ProtocolFailure,
    RelayConnection,
    ReplicaConnection,
    Synced,
    SyncRequested,
    UpdateReceived,
    Welcome,
)
from tiendasync.protocol import (
    ConnectionClosed as ProtoClosed,
)
from tiendasync.protocol.frames import FrameDecoder, FrameType, encode
from tiendasync.relay.central import CENTRAL_REPLICA_ID

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import itertools

import demo

SCALE = float(os.environ.get("TIENDASYNC_FUZZ_EXAMPLES", "1"))
TRIED: dict[str, int] = {}


def _count(what: str) -> None:
    TRIED[what] = TRIED.get(what, 0) + 1


def n(base: int) -> int:
    return max(1, int(base * SCALE))


# -- strategies -------------------------------------------------------------------------------

_DOC: pycrdt.Doc[Any] = pycrdt.Doc(client_id=424242)
with _DOC.transaction():
    _DOC.get("root", type=pycrdt.Map)["CAFE|t1"] = [3.0, 1.0]
VALID_UPDATE = bytes(_DOC.get_update())

VALID_FRAMES = [
    encode(
        FrameType.HELLO,
        1,
        "acme",
        "fz",
        "ts_000000000000_x",
        5,
        {"catalog": b"\x00"},
        {"full": False, "past": [1, 2]},
    ),
    encode(FrameType.WELCOME, 1, "sess", {"catalog": b"\x01\x05\x01"}, {"interval_s": 5.0}),
    encode(FrameType.UPDATE, "catalog", VALID_UPDATE),
    encode(FrameType.ACK, "catalog", 5, 3),
    encode(FrameType.SYNCED),
    encode(FrameType.ERROR, 4001, "no"),
    encode(FrameType.SYNC_NOW, True),
    encode(FrameType.BYE, "bye"),
]

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def mutated(draw: st.DrawFn, base: bytes | None = None) -> bytes:
    data = bytearray(base if base is not None else draw(st.sampled_from(VALID_FRAMES)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "dup"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 4))]
        elif op == "truncate":
            del data[pos:]
        elif op == "dup":
            data += data[pos:]
    return bytes(data)


wrong_types = st.builds(
    lambda t, fields: msgpack.packb([t, *fields], use_bin_type=True),
    st.integers(0, 9) | msgpack_values,
    st.lists(msgpack_values, max_size=8),
)

deeply_nested = st.builds(
    lambda d, c: c * d + b"\xc0",
    st.integers(200, 5000),
    st.sampled_from([b"\x91", b"\x81\xa1k", b"\xdc\x00\x01"]),
)

bad_bytes = st.one_of(
    st.binary(min_size=1, max_size=300), mutated(), wrong_types, deeply_nested
).filter(bool)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# -- sans I/O ----------------------------------------------------------------------------------


@settings(max_examples=n(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.lists(bad_bytes, min_size=1, max_size=4), cuts=st.lists(st.integers(0, 10**6)))
def test_frame_decoder_only_raises_protocol_errors(data: list[bytes], cuts: list[int]) -> None:
    _count("decoder")
    decoder = FrameDecoder(max_frame_bytes=4096)
    try:
        for chunk in _chunks(b"".join(data), cuts):
            decoder.feed(chunk)
            for frame_type, fields in decoder.frames():
                assert isinstance(frame_type, FrameType) and isinstance(fields, list)
    except RemoteProtocolError as exc:
        assert exc.code in (1002, 1009) and exc.reason


VALID_EVENTS = (
    Hello,
    Welcome,
    UpdateReceived,
    Ack,
    Synced,
    SyncRequested,
    ProtocolFailure,
    ProtoClosed,
)


def _check_events(conn: ReplicaConnection | RelayConnection, events: list[Event]) -> None:
    assert all(isinstance(e, VALID_EVENTS) for e in events), events
    failures = [e for e in events if isinstance(e, ProtocolFailure)]
    if conn.closed and conn.close_code not in (None, 1000) and failures:
        assert events[-1] is failures[-1]  # nothing after the failure
    if failures:
        assert conn.closed


@settings(max_examples=n(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    role=st.sampled_from(["replica-new", "replica-live", "relay-new", "relay-open"]),
    prefix=st.lists(st.sampled_from(VALID_FRAMES), max_size=3),
    data=st.lists(bad_bytes, min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 10**6), max_size=6),
)
def test_connections_never_raise(
    role: str, prefix: list[bytes], data: list[bytes], cuts: list[int]
) -> None:
    _count("state machine")
    conn: ReplicaConnection | RelayConnection
    if role.startswith("replica"):
        conn = ReplicaConnection(max_frame_bytes=4096)
        conn.hello(tenant="acme", replica_id="r", token="t", client_id=1, state_vectors={})
        if role == "replica-live":
            conn.receive_data(
                encode(FrameType.WELCOME, 1, "s", {}, None) + encode(FrameType.SYNCED)
            )
    else:
        conn = RelayConnection(max_frame_bytes=4096)
        if role == "relay-open":
            conn.receive_data(VALID_FRAMES[0])
            conn.accept("s", {}, None)
    conn.events()
    conn.data_to_send()
    for chunk in _chunks(b"".join(prefix + data), cuts):
        conn.receive_data(chunk)  # must never raise
    _check_events(conn, conn.events())
    out = conn.data_to_send()
    if conn.closed and conn.close_code not in (1000,) and out:
        # what we told the peer is a well-formed ERROR frame with a reason
        dec = FrameDecoder()
        dec.feed(out)
        last = dec.frames()[-1]
        assert last[0] in (FrameType.ERROR, FrameType.BYE)


def test_hard_limits_sans_io() -> None:
    """Oversized frames, huge containers, deep nesting: closed with a reason."""
    cases = {
        "oversized frame": encode(FrameType.UPDATE, "catalog", b"x" * 5000),
        "huge array header": b"\xdd\xff\xff\xff\xff",
        "huge map header": b"\xdf\xff\xff\xff\xff",
        "deep nesting": b"\x91" * 100_000 + b"\xc0",
        "ext type": b"\xd4\x01\x00",
        "non-str map key": msgpack.packb([1, 1, "a", "r", "t", 1, {1: b""}, {}]),
        "float client id": msgpack.packb([1, 1, "a", "r", "t", 1.5, {}, {}]),
        "bool version": msgpack.packb([1, True, "a", "r", "t", 1, {}, {}]),
        "negative clock": encode(FrameType.ACK, "d", 1, -1),
        "2**53 client id": encode(FrameType.ACK, "d", 2**53, 1),
        "long name": encode(FrameType.UPDATE, "x" * 301, b""),
        "text token too long": msgpack.packb([1, 1, "a", "r", "t" * 600, 1, {}, {}]),
    }
    for what, data in cases.items():
        for conn in (
            RelayConnection(max_frame_bytes=4096),
            ReplicaConnection(max_frame_bytes=4096),
        ):
            if isinstance(conn, ReplicaConnection):
                conn.hello(tenant="a", replica_id="r", token="t", client_id=1, state_vectors={})
                conn.receive_data(encode(FrameType.WELCOME, 1, "s", {}, None))
            conn.events()
            conn.receive_data(data)
            events = conn.events()
            assert conn.closed, what
            assert isinstance(events[-1], ProtocolFailure) and events[-1].reason, what
            assert events[-1].code in (1002, 1009), (what, events[-1])


def test_nested_frame_type_is_a_protocol_error() -> None:
    for depth in (1000, 1010, 1020):
        conn = RelayConnection()
        conn.receive_data(b"\x91" * depth + b"\xc0")  # raises RecursionError today
        events = conn.events()
        assert conn.closed and isinstance(events[-1], ProtocolFailure)


# -- a live relay process --------------------------------------------------------------------


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class LiveRelay:
    def __init__(self, tmp: Path) -> None:
        self.db = str(tmp / "relay.db")
        self.tokens = {
            r: demo.tiendasync(
                "relay", "token", "add", "--db", self.db, "--tenant", "acme", "--replica", r
            )
            for r in ("good", "fz")
        }
        self.admin = demo.tiendasync("relay", "token", "add", "--db", self.db, "--admin")
        self.port, self.admin_port = demo.free_port(), demo.free_port()
        self.log = (tmp / "relay.log").open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tiendasync",
                "relay",
                "--db",
                self.db,
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--admin-port",
                str(self.admin_port),
                "--max-new-conns-per-ip-per-s",
                "0",
                "--max-conns-per-token",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

        def up() -> bool:
            assert self.proc.poll() is None, "relay exited"
            with urllib.request.urlopen(f"http://{HOST}:{self.admin_port}/healthz", timeout=1):
                return True

        wait_until(up, "relay up", 20)
        self.url = f"ws://{HOST}:{self.port}/sync"

    def rss_kb(self) -> int:
        return _rss_kb(self.proc.pid)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRelay]:
    relay = LiveRelay(tmp_path_factory.mktemp("fuzzrelay"))
    try:
        yield relay
    finally:
        relay.close()


class GoodReplica(threading.Thread):
    """A well-behaved replica writing every 20 ms; records the longest ACK wait."""

    def __init__(self, relay: LiveRelay) -> None:
        super().__init__(daemon=True)
        self.relay = relay
        self.stop = threading.Event()
        self.acked = 0
        self.worst = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            writer = Writer(777001, "good")
            conn = ReplicaConnection()
            with connect(self.relay.url, max_size=None) as ws:
                conn.hello(
                    tenant="acme",
                    replica_id="good",
                    token=self.relay.tokens["good"],
                    client_id=777001,
                    state_vectors={},
                )
                ws.send(conn.data_to_send())
                i = 0
                while not self.stop.is_set():
                    update = writer.set(f"k{i}", i)
                    i += 1
                    if conn.state in ("catching_up", "live"):
                        conn.send_update("catalog", update)
                        ws.send(conn.data_to_send())
                        sent = time.monotonic()
                        while True:
                            conn.receive_data(ws.recv(timeout=10))  # type: ignore[arg-type]
                            if any(isinstance(e, Ack) and e.clock >= i for e in conn.events()):
                                break
                        self.acked += 1
                        self.worst = max(self.worst, time.monotonic() - sent)
                    else:
                        conn.receive_data(ws.recv(timeout=10))  # type: ignore[arg-type]
                        conn.events()
                        i -= 1
                        writer = Writer(777001, "good")
                    assert not conn.closed, conn.close_reason
                    time.sleep(0.02)
        except BaseException as exc:  # reported by the test
            self.error = exc


OK_CLOSE = {1000, 1002, 1003, 1007, 1008, 1009, 4001, 4003, 4010, 4029}
#: inputs the relay closed with 1011 "internal error" (a bug, see
#: test_nested_frame_type_is_a_protocol_error); the relay survives them
INTERNAL: list[bytes] = []


def _expect_close(ws: ClientConnection, timeout: float = 10.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    except ConnectionClosed:
        pass
    except TimeoutError as exc:
        raise AssertionError("the relay did not close a bad connection") from exc
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


def _send_bad(relay: LiveRelay, messages: list[bytes | str]) -> tuple[int, str]:
    with connect(relay.url, max_size=None, close_timeout=2) as ws:
        try:
            for m in messages:
                ws.send(m)
        except ConnectionClosed:
            pass
        code, reason = _expect_close(ws)
    if (code, reason) == (1011, "internal error"):
        INTERNAL.append(b"".join(m if isinstance(m, bytes) else m.encode() for m in messages))
        return code, reason
    assert code in OK_CLOSE, (code, reason, messages[:1])
    assert reason or code == 1000, (code, messages[:1])
    return code, reason


def _hello(relay: LiveRelay, client_id: int) -> bytes:
    return encode(
        FrameType.HELLO,
        1,
        "acme",
        "fz",
        relay.tokens["fz"],
        client_id,
        {},
        {"full": False, "past": []},
    )


@st.composite
def yjs_payloads(draw: st.DrawFn) -> tuple[str, bytes]:
    """(kind, update) sent by an authenticated replica under its own client id."""
    kind = draw(st.sampled_from(["garbage", "mutated", "gapped", "foreign"]))
    client = draw(st.integers(900_000, 900_050))
    d: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client)
    m = d.get("root", type=pycrdt.Map)
    updates = []
    for j in range(3):
        before = bytes(d.get_state())
        with d.transaction():
            m[f"x{j}"] = draw(st.integers(0, 9))
        updates.append(bytes(d.get_update(before)))
    if kind == "garbage":
        return kind, draw(st.binary(min_size=1, max_size=200))
    if kind == "mutated":
        return kind, draw(mutated(bytes(d.get_update())))
    if kind == "gapped":
        return kind, updates[-1]
    other: pycrdt.Doc[Any] = pycrdt.Doc(client_id=draw(st.integers(1, 800_000)))
    with other.transaction():
        other.get("root", type=pycrdt.Map)["evil"] = 1
    return kind, bytes(other.get_update())


@pytest.mark.slow
def test_live_relay_survives_bad_connections(live: LiveRelay) -> None:
    good = GoodReplica(live)
    good.start()
    wait_until(lambda: good.acked > 3 or good.error is not None, "good replica writing", 20)
    outcomes: dict[str, int] = {}

    def tally(kind: str, code: int) -> None:
        outcomes[f"{kind}->{code}"] = outcomes.get(f"{kind}->{code}", 0) + 1
        _count("live connections")

    @settings(
        max_examples=n(300), deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(messages=st.lists(bad_bytes, min_size=1, max_size=3), with_hello=st.booleans())
    def bad_frames(messages: list[bytes], with_hello: bool) -> None:
        pre: list[bytes | str] = [_hello(live, 900_100)] if with_hello else []
        code, _ = _send_bad(live, [*pre, *messages])
        tally("frames", code)

    @settings(
        max_examples=n(150), deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(payload=yjs_payloads())
    def bad_updates(payload: tuple[str, bytes]) -> None:
        kind, update = payload
        with connect(live.url, max_size=None, close_timeout=2) as ws:
            conn = ReplicaConnection()
            conn.hello(
                tenant="acme",
                replica_id="fz",
                token=live.tokens["fz"],
                client_id=900_000 + (hash(update) % 50),
                state_vectors={},
            )
            ws.send(conn.data_to_send())
            conn.receive_data(ws.recv(timeout=10))  # type: ignore[arg-type]
            while conn.state == "catching_up":
                conn.receive_data(ws.recv(timeout=10))  # type: ignore[arg-type]
            conn.send_update("catalog", update)
            ws.send(conn.data_to_send())
            try:
                while True:  # an ACK (accepted, e.g. gapped or a harmless mutation) or a close
                    conn.receive_data(ws.recv(timeout=10))  # type: ignore[arg-type]
                    if any(isinstance(e, Ack) for e in conn.events()):
                        tally(f"yjs-{kind}", 0)
                        assert kind != "foreign", "a foreign writer's update was accepted"
                        return
            except ConnectionClosed:
                pass
            code = ws.close_code or 0
            assert code in OK_CLOSE and ws.close_reason, (kind, code)
            tally(f"yjs-{kind}", code)

    oversized: list[tuple[str, list[bytes | str]]] = [
        ("text", ["not binary"]),
        (
            "oversized",
            [_hello(live, 900_200) + encode(FrameType.UPDATE, "catalog", b"\x00" * (17 * 2**20))],
        ),
        ("deep", [b"\x91" * 200_000 + b"\xc0"]),
        ("huge-array", [b"\xdd\xff\xff\xff\xff" + b"\xc0" * 100]),
        (
            "bad-sv",
            [
                encode(
                    FrameType.HELLO,
                    1,
                    "acme",
                    "fz",
                    live.tokens["fz"],
                    900_300,
                    {"catalog": b"\xff\xff\xff"},
                    {},
                )
            ],
        ),
        ("bad-docname", [_hello(live, 900_301) + encode(FrameType.UPDATE, "../x", b"\x00\x00")]),
    ]
    try:
        for kind, messages in oversized:  # warm-up, and the hand-written cases
            tally(kind, _send_bad(live, messages)[0])
        bad_frames()
        rss_before = live.rss_kb()
        for _ in range(2):
            bad_frames()
            bad_updates()
        for kind, messages in oversized:
            tally(kind, _send_bad(live, messages)[0])
        rss_after = live.rss_kb()
        assert good.error is None, repr(good.error)
        assert live.proc.poll() is None
        acked_before = good.acked
        wait_until(lambda: good.acked > acked_before + 3, "good replica still served", 20)
    finally:
        good.stop.set()
        good.join(15)
    assert good.error is None, repr(good.error)
    total = sum(outcomes.values())
    print(
        f"\nlive relay: {total} bad connections, outcomes {sorted(outcomes.items())}; "
        f"RSS {rss_before} kB -> {rss_after} kB; good replica {good.acked} writes acked, "
        f"worst ACK wait {good.worst:.2f} s; inputs tried {TRIED}"
    )
    assert rss_after - rss_before < 40_000, (rss_before, rss_after)
    # only the known nested-frame-type bug may end in "internal error"
    nests = (b"\x91" * 100, b"\xdc\x00\x01" * 100, b"\x81\xa1k" * 100)
    assert all(any(nest in m for nest in nests) for m in INTERNAL), INTERNAL[:3]
    print(f"closed with 1011 (nested frame type bug): {len(INTERNAL)}")
    # nothing of the fuzzing reached another writer's data
    with sqlite3.connect(live.db) as db:
        owners = {row[0] for row in db.execute("SELECT replica FROM updates")}
    assert owners <= {"good", "fz", CENTRAL_REPLICA_ID}, owners


# -- the admin HTTP API ----------------------------------------------------------------------


def _http(
    relay: LiveRelay, method: str, path: str, body: bytes | None, token: str | None = None
) -> tuple[int, Any]:
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token or relay.admin}",
    }
    req = urllib.request.Request(
        f"http://{HOST}:{relay.admin_port}{path}", data=body, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def _relay_state(relay: LiveRelay) -> Any:
    with sqlite3.connect(relay.db) as db:
        return {
            t: db.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
            for t in ("tokens", "replica_config", "client_ids")
        }


ADMIN_PATHS = [
    ("POST", "/api/sync/queue/{id}/resolve/?tenant=acme"),
    ("POST", "/api/sync/queue/{id}/process/?tenant=acme"),
    ("GET", "/api/sync/queue/{id}/?tenant=acme"),
    ("PUT", "/api/sync/config/{id}?tenant=acme"),
    ("POST", "/api/sync/config/{id}/sync_now/?tenant=acme"),
    ("GET", "/api/sync/queue/?tenant=acme&limit=x{id}"),
    ("GET", "/api/sync/queue/?tenant=acme&status={id}"),
    ("GET", "/api/sync/log/?tenant={id}"),
]

json_bodies = st.one_of(
    st.binary(max_size=100),
    st.builds(
        lambda v: json.dumps(v).encode(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda c: (
                st.lists(c, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "action",
                            "quantity",
                            "full",
                            "by",
                            "note",
                            "read",
                            "write",
                            "interval_s",
                            "enabled",
                            "batch_size",
                            "x",
                        ]
                    ),
                    c,
                    max_size=5,
                )
            ),
            max_leaves=10,
        ),
    ),
)

#: bodies with the right shape but wrong types or values, for a real replica's config
#: (``{"interval_s": None}`` is no longer here: null clears a central key, see
#: tests/cli/test_config_precedence.py)
BAD_CONFIGS: list[Any] = [
    [],
    "x",
    1,
    None,
    {"write": "catalog"},
    {"read": [1]},
    {"interval_s": "soon"},
    {"interval_s": -1},
    {"batch_size": 0},
    {"batch_size": 1.5},
    {"backoff_min_s": 9, "backoff_max_s": 1},
    {"durability": "maybe"},
    {"priorities": {"sales": 101}},
    {"priorities": {"nope": 1}},
    {"priorities": "x"},
    {"priorities": {"sales": True}},
    {"unknown_key": 1},
    {"relay_url": "http://x"},
]
#: wrong types: refused with 400 (StoreConfig checks every field's type)
BAD_CONFIGS_KNOWN = [{"batch_size": True}, {"enabled": "yes"}, {"relay_url": 5}]


@pytest.mark.slow
def test_admin_api_bad_requests(live: LiveRelay) -> None:
    # make the tenant known (a session of 'good'), then snapshot what may not change
    good = GoodReplica(live)
    good.start()
    wait_until(lambda: good.acked > 0 or good.error is not None, "tenant known", 20)
    good.stop.set()
    good.join(15)
    before = _relay_state(live)
    seen: dict[int, int] = {}
    unexpected: list[Any] = []

    @settings(
        max_examples=n(200), deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(
        route=st.sampled_from(ADMIN_PATHS),
        body=json_bodies,
        ident=st.text(alphabet="abcxyz0123456789-_.", min_size=1, max_size=12),
    )
    def requests(route: tuple[str, str], body: bytes, ident: str) -> None:
        _count("admin requests")
        method, path = route
        status, answer = _http(live, method, path.format(id=ident), body)
        seen[status] = seen.get(status, 0) + 1
        assert 400 <= status < 500, (method, path, ident, body[:80], status, answer)
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str), answer

    requests()
    for config in BAD_CONFIGS:
        _count("admin requests")
        status, answer = _http(
            live, "PUT", "/api/sync/config/good?tenant=acme", json.dumps(config).encode()
        )
        seen[status] = seen.get(status, 0) + 1
        if not (400 <= status < 500 and isinstance(answer, dict) and "error" in answer):
            unexpected.append((config, status, answer))
    # huge bodies, and a replica token
    huge = b"{" + b'"a": 1,' * 300_000 + b'"z": 0}'
    for method, path in (
        ("PUT", "/api/sync/config/good?tenant=acme"),
        ("POST", "/api/sync/queue/x/resolve/?tenant=acme"),
    ):
        _count("admin requests")
        status, answer = _http(live, method, path, huge)
        assert status == 400 and "larger than" in answer["error"], (status, answer)
    status, _ = _http(
        live,
        "PUT",
        "/api/sync/config/good?tenant=acme",
        b'{"write": ["*"]}',
        token=live.tokens["good"],
    )
    assert status == 401
    assert live.proc.poll() is None
    print(f"\nadmin API: statuses {sorted(seen.items())}; unexpected {unexpected}")
    after = _relay_state(live)
    assert after == before, "a refused request changed the relay's state"
    assert unexpected == []


@pytest.mark.slow
def test_admin_api_deeply_nested_json(live: LiveRelay) -> None:
    status, answer = _http(live, "PUT", "/api/sync/config/good?tenant=acme", b"[" * 50_000)
    assert status == 400, (status, answer)


@pytest.mark.slow
@pytest.mark.parametrize("config", BAD_CONFIGS_KNOWN)
def test_admin_api_config_types(live: LiveRelay, config: dict[str, Any]) -> None:
    before = _relay_state(live)["replica_config"]
    status, answer = _http(
        live, "PUT", "/api/sync/config/good?tenant=acme", json.dumps(config).encode()
    )
    after = _relay_state(live)["replica_config"]
    if after != before:  # undo, so that the other tests see the same relay
        with sqlite3.connect(live.db) as db:
            db.execute("DELETE FROM replica_config")
    assert status == 400 and "error" in answer, (status, answer)
