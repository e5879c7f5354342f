"""y-protocols followers as y-websocket users expect them (``relay.followers``).

The decisions are driven directly on a :class:`RelayCore` (time passed in);
the flood test runs over real websockets.  What the real ``yjs`` and
``y-websocket`` packages make of it is ``tests/e2e/test_yjs_node.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.relay_client import follower_closed, with_relay
from tiendasync.errors import RemoteProtocolError
from tiendasync.protocol import CLOSE_AUTH, CLOSE_FORBIDDEN, CLOSE_PROTOCOL, CLOSE_RATE_LIMIT
from tiendasync.protocol.codes import CloseCode
from tiendasync.protocol.yjs_update import parse_update
from tiendasync.protocol.yprotocols import (
    KEEPALIVE,
    MAX_AWARENESS_BYTES,
    MAX_AWARENESS_ENTRIES,
    AwarenessEntry,
    FollowerClose,
    decode_awareness,
    decode_sync,
    encode_awareness,
    encode_sync_step2,
    encode_update,
    follower_close_code,
)
from tiendasync.relay import RelayServer, SqliteRelayStore
from tiendasync.relay.auth import issue_token
from tiendasync.relay.core import RateLimits, RelayCore, RelaySession
from tiendasync.relay.docs import ends_of
from tiendasync.relay.followers import KEEPALIVE_SECONDS, MAX_PRESENCE_PER_SESSION
from tiendasync.relay.lookups import lookup_follower

NO_LIMITS = RateLimits(0, 0, 0, 0, 0)
SEP = "\x1f"


# -- the wire format --------------------------------------------------------------------

entries = st.lists(
    st.builds(
        AwarenessEntry,
        st.integers(0, 2**53 - 1),
        st.integers(0, 2**53 - 1),
        st.one_of(
            st.just("null"),
            st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=3).map(json.dumps),
        ),
    ),
    max_size=MAX_AWARENESS_ENTRIES,
)


@given(entries)
def test_awareness_round_trips(items: list[AwarenessEntry]) -> None:
    message = encode_awareness(items)
    if len(message) <= MAX_AWARENESS_BYTES:
        assert decode_awareness(message) == items


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"\x00\x00", "not an awareness message"),
        (encode_awareness([AwarenessEntry(1, 1, "{bad")]), "Expecting"),
        (encode_awareness([AwarenessEntry(1, 1, "NaN")]), "non-standard"),
        (encode_awareness([AwarenessEntry(1, 1, "{}")] * 17), "17 entries"),
        (encode_awareness([AwarenessEntry(2**53, 1, "{}")]), "2**53"),
        (encode_awareness([AwarenessEntry(1, 1, "{}")]) + b"\x00", "does not match"),
        (encode_awareness([AwarenessEntry(1, 1, "{}")])[:-1], "does not match"),
        (b"\x01\x03\x01\x01\x01", "truncated"),
        (b"\x01\x04\x01\x01\x01\xff", "truncated"),
        (bytes([1, 5, 1, 1, 1, 1, 0xFF]), "utf-8"),
        (encode_awareness([AwarenessEntry(1, 1, json.dumps("x" * MAX_AWARENESS_BYTES))]), "over"),
    ],
)
def test_bad_awareness_messages_are_refused(message: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=re.escape(why)) as info:
        decode_awareness(message)
    assert info.value.code == CLOSE_PROTOCOL


def test_keepalive_is_an_empty_awareness_message() -> None:
    assert KEEPALIVE == b"\x01\x01\x00" and decode_awareness(KEEPALIVE) == []


def test_close_codes_for_y_websocket() -> None:
    """Refusals land in 4400-4499 (y-websocket stops); slow-downs and crashes do not."""
    assert follower_close_code(CLOSE_PROTOCOL) == 4400
    assert follower_close_code(CLOSE_AUTH) == 4401
    assert follower_close_code(CLOSE_FORBIDDEN) == 4403
    assert follower_close_code(CloseCode.TOO_BIG) == 4413
    for transient in (CLOSE_RATE_LIMIT, CloseCode.NORMAL, CloseCode.INTERNAL):
        assert not 4400 <= follower_close_code(transient) < 4500
    for code in CloseCode:
        if code not in (CLOSE_RATE_LIMIT, CloseCode.NORMAL, CloseCode.INTERNAL):
            assert 4400 <= follower_close_code(code) < 4500, code
    for refusal in FollowerClose:
        assert follower_close_code(refusal) == refusal


# -- decisions, driven directly ---------------------------------------------------------


class Core:
    def __init__(self, store: SqliteRelayStore, **args: Any) -> None:
        self.store = store
        ids = iter(range(1, 10**6))
        self.core = RelayCore(
            store, clock=lambda: 1000.0, random_id=lambda: f"s{next(ids)}", **args
        )

    def follow(self, doc: str, token: str, tenant: str = "acme") -> RelaySession:
        session = self.core.new_session("yjs")
        facts = lookup_follower(self.store, tenant, doc, token)
        status, record, grants = self.core.yjs_auth(tenant, doc, facts)
        if status != 200 or record is None:
            self.core.yjs_refuse(session, tenant, doc, status, record)
        else:
            self.core.yjs_open(session, tenant, doc, record, grants)
        return session

    def put(self, doc: str, update: bytes) -> None:
        """Content in the relay's copy of ``doc`` (as if a store had written it)."""
        self.core.docs.apply("acme", doc, update, ends_of(parse_update(update)))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteRelayStore]:
    with SqliteRelayStore(str(tmp_path / "relay.db")) as s:
        yield s


def _token(store: SqliteRelayStore, replica: str = "dash") -> str:
    return issue_token(store, tenant="acme", replica_id=replica)


def _presence(client: int, clock: int, user: str | None) -> bytes:
    state = "null" if user is None else json.dumps({"user": user})
    return encode_awareness([AwarenessEntry(client, clock, state)])


def _awareness_in(session: RelaySession) -> list[AwarenessEntry]:
    out = [e for m in session.outbox if m[:1] == b"\x01" for e in decode_awareness(m)]
    session.outbox.clear()
    return out


def test_refusals_close_for_good_and_are_logged_once(store: SqliteRelayStore) -> None:
    c = Core(store, limits=RateLimits(max_connections_per_token=1))
    token = _token(store)
    store.set_replica_config("acme", "dash", {"read": ["catalog"]})
    bad = c.follow("catalog", "nope")
    forbidden = c.follow("stock/tienda-1", token)
    not_a_doc = c.follow("..", token)
    first, over = c.follow("catalog", token), c.follow("catalog", token)
    assert bad.close_code == FollowerClose.UNAUTHORIZED
    assert forbidden.close_code == FollowerClose.FORBIDDEN
    assert "may not read stock/tienda-1" in forbidden.close_reason
    assert not_a_doc.close_code == FollowerClose.NOT_FOUND
    assert first.open and over.close_code == FollowerClose.TOO_MANY
    rows = {s.id: c.core.end_session(s) for s in (bad, forbidden, not_a_doc, over)}
    assert all(r.outcome == "rejected" for r in rows.values())
    # a valid token's refusal names its tenant and replica; a bad token's does not
    assert (rows[forbidden.id].tenant, rows[forbidden.id].replica_id) == ("acme", "dash")
    assert (rows[bad.id].tenant, rows[bad.id].replica_id) == (None, None)
    assert rows[over.id].error == "4429: too many connections with this token (at most 1 at once)"


def test_awareness_is_relayed_within_one_document(store: SqliteRelayStore) -> None:
    c = Core(store, limits=NO_LIMITS)
    token = _token(store)
    a, b = c.follow("catalog", token), c.follow("catalog", token)
    other = c.follow("stock/tienda-1", token)
    for s in (a, b, other):
        s.outbox.clear()
    c.core.yjs_receive(a, _presence(501, 1, "ana"))
    # to every follower of the doc, its sender included (that echo keeps it alive)
    assert _awareness_in(a) == _awareness_in(b) == [AwarenessEntry(501, 1, '{"user": "ana"}')]
    assert other.outbox == []
    # a newcomer is told who is there; a query is answered
    late = c.follow("catalog", token)
    assert [e.client for e in _awareness_in(late)] == [501]
    c.core.yjs_receive(late, b"\x03")
    assert [e.client for e in _awareness_in(late)] == [501]
    # another session may not rewrite or remove a client id it did not announce
    c.core.yjs_receive(b, _presence(501, 9, "mallory"))
    c.core.yjs_receive(b, _presence(501, 9, None))
    assert a.outbox == [] and b.outbox == []
    # stale clocks are dropped; the owner's own update goes through
    c.core.yjs_receive(a, _presence(501, 0, "old"))
    assert a.outbox == []
    c.core.yjs_receive(a, _presence(501, 2, "ana2"))
    assert _awareness_in(b) == [AwarenessEntry(501, 2, '{"user": "ana2"}')]
    # a session announces at most MAX_PRESENCE_PER_SESSION client ids
    a.outbox.clear()
    for client in range(600, 600 + MAX_PRESENCE_PER_SESSION + 2):
        c.core.yjs_receive(b, _presence(client, 1, "x"))
    assert len({e.client for e in _awareness_in(a)}) == MAX_PRESENCE_PER_SESSION
    # a leaving follower's states are removed for the others
    _awareness_in(b)
    c.core.end_session(a)
    assert _awareness_in(b) == [AwarenessEntry(501, 3, "null")]
    # a malformed awareness message closes its sender for good
    c.core.yjs_receive(b, b"\x01\x05\x01\x01\x01\x01{")
    assert b.close_code == FollowerClose.BAD_MESSAGE


def test_idle_followers_get_keepalives(store: SqliteRelayStore) -> None:
    c = Core(store, limits=NO_LIMITS)
    token = _token(store)
    idle, busy = c.follow("catalog", token), c.follow("stock/tienda-1", token)
    sent: dict[str, int] = {}

    def flush(s: RelaySession) -> list[bytes]:  # what the pump does: send, count bytes
        out, s.outbox[:] = list(s.outbox), []
        s.record.bytes_sent += sum(len(m) for m in out)
        sent[s.id] = sent.get(s.id, 0) + out.count(KEEPALIVE)
        return out

    t = 0.0
    flush(idle), flush(busy)
    while t < 60:
        c.core.yjs_tick(t)
        c.core.yjs_receive(busy, _presence(700, int(t) + 1, "busy"))  # echoed: output
        flush(idle), flush(busy)
        t += 2
    # y-websocket gives up after 30 s of silence: an idle one hears at least every 10-12 s
    assert 60 / (KEEPALIVE_SECONDS + 2) <= sent[idle.id] <= 60 / KEEPALIVE_SECONDS
    assert sent[busy.id] == 0


def _doc(client: int) -> pycrdt.Doc[Any]:
    return pycrdt.Doc(client_id=client)


def test_read_only_endpoint_refuses_writes_but_not_a_mirror(store: SqliteRelayStore) -> None:
    c = Core(store, limits=NO_LIMITS)
    token = _token(store)
    writer = _doc(11)
    root = writer.get("t", type=pycrdt.Map)
    with writer.transaction():
        root["CAFE" + SEP + "11"] = [5, 0]
    with writer.transaction():
        root["CAFE" + SEP + "11"] = [5, 1]  # an overwrite: the doc has a delete set now
    c.put("stock/t", bytes(writer.get_update()))
    mirror = c.follow("stock/t", token)
    # the follower's answer to our step 1 carries its whole delete set: all known, ignored
    copy = _doc(99)
    copy.apply_update(bytes(writer.get_update()))
    sv = bytes(c.core.docs.get("acme", "stock/t").state_vector())
    answer = bytes(copy.get_update(sv))
    assert parse_update(answer).deletes  # not empty: this is the case that matters
    c.core.yjs_receive(mirror, encode_sync_step2(answer))
    c.core.yjs_receive(mirror, encode_update(b"\x00\x00"))
    assert mirror.open
    # a new item: refused for good
    with copy.transaction():
        copy.get("t", type=pycrdt.Map)["EVIL" + SEP + "99"] = [1, 0]
    c.core.yjs_receive(mirror, encode_sync_step2(bytes(copy.get_update(sv))))
    assert mirror.close_code == FollowerClose.FORBIDDEN and "read-only" in mirror.close_reason
    # a delete of the relay's item (no new struct at all): refused too
    deleter = c.follow("stock/t", token)
    only_delete = _doc(98)
    only_delete.apply_update(bytes(writer.get_update()))
    before = bytes(only_delete.get_state())
    with only_delete.transaction():
        del only_delete.get("t", type=pycrdt.Map)["CAFE" + SEP + "11"]
    update = bytes(only_delete.get_update(before))
    assert not parse_update(update).writer_clients
    c.core.yjs_receive(deleter, encode_update(update))
    assert deleter.close_code == FollowerClose.FORBIDDEN
    assert c.core.docs.get("acme", "stock/t").doc.get("t", type=pycrdt.Map).to_py() == {
        "CAFE" + SEP + "11": [5.0, 1.0]
    }
    first = decode_sync(mirror.outbox[0])
    assert first is not None


# -- over real websockets -----------------------------------------------------------------


def test_a_flood_is_closed_promptly(tmp_path: Path) -> None:
    """The close of a flooding follower is not stuck behind its queued messages."""

    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        url = f"ws://127.0.0.1:{server.port}/yjs/acme/catalog?token={tokens['t2']}"
        async with connect(url) as ws:
            await asyncio.wait_for(ws.recv(), 5)  # our step 1
            started = time.monotonic()
            with pytest.raises(ConnectionClosed):
                for _ in range(5000):
                    await ws.send(KEEPALIVE)
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
            assert ws.close_code == CLOSE_RATE_LIMIT
            assert time.monotonic() - started < 3.0
        assert (await follower_closed(url.replace(tokens["t2"], "nope")))[0] == 4401

    with_relay(tmp_path, scenario, limits=RateLimits(max_messages_per_s=100, message_burst=200))


def test_a_rollover_closes_the_documents_followers_for_good(store: SqliteRelayStore) -> None:
    """Their copy is the old generation: they must reload it, not merge the new one in."""
    c = Core(store, limits=NO_LIMITS)
    token = _token(store)
    stock, catalog = c.follow("stock/tienda-1", token), c.follow("catalog", token)
    assert c.core.begin_rollover("acme", "stock/tienda-1") == 1
    assert stock.close_code == FollowerClose.VERSION
    assert "moved to a new generation: reload" in stock.close_reason
    assert catalog.open  # another document's followers are left alone
    c.core.end_rollover("acme", "stock/tienda-1")
    assert not c.core.rolling("acme")
    row = c.core.end_session(stock)
    assert row.outcome == "error" and row.error is not None and row.error.startswith("4410")
