"""The relay over real websockets on 127.0.0.1, driven by raw ReplicaConnections."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support.relay_client import (
    Client,
    Writer,
    follower_closed,
    run,
    synced_pair,
    values,
    with_relay,
)
from tiendasync.crdt.keys import ROOT
from tiendasync.protocol import (
    CLOSE_AUTH,
    CLOSE_CLOCK_AHEAD,
    CLOSE_FORBIDDEN,
    CLOSE_PROTOCOL,
    Ack,
    ProtocolFailure,
    SyncRequested,
    UpdateReceived,
)
from tiendasync.protocol.frames import FrameType, encode
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.relay import RelayServer, SqliteRelayStore
from tiendasync.relay.auth import issue_token, token_id_of

#: 2026-01-15 12:00 UTC, a sale time in the past of any test run.
JANUARY_2026_MS = 1_768_478_400_000


def test_hello_welcome_catchup_synced(tmp_path: Path) -> None:
    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        w = Writer(101)
        a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=101)
        welcome, diffs = await a.until_synced()
        assert welcome.state_vectors == {} and diffs == []
        sent = {"catalog": w.set("CAFE", 1), "stock/t1": None, "sales/t1/2026-01": None}
        stock, sales = Writer(101), Writer(101)
        sent["stock/t1"] = stock.count("CAFE", 5)
        sent["sales/t1/2026-01"] = sales.sell(JANUARY_2026_MS)
        for doc, data in sent.items():
            await a.send_update(doc, data)  # type: ignore[arg-type]
        for _ in sent:
            await a.wait_for(Ack)

        # b is up to date on the catalog, knows nothing else
        b_cat: pycrdt.Doc[Any] = pycrdt.Doc()
        b_cat.apply_update(w.doc.get_update())
        b = await Client.open(
            server.port,
            replica="t2",
            token=tokens["t2"],
            client_id=202,
            svs={"catalog": bytes(b_cat.get_state())},
        )
        welcome, diffs = await b.until_synced()
        assert set(welcome.state_vectors) == {"catalog", "stock/t1", "sales/t1/2026-01"}
        assert decode_state_vector(welcome.state_vectors["catalog"]) == {101: 1}
        # priorities: sales (10) before stock (8); catalog not needed
        assert [d.doc for d in diffs] == ["sales/t1/2026-01", "stock/t1"]
        got: pycrdt.Doc[Any] = pycrdt.Doc()
        got.apply_update(diffs[1].data)
        assert values(got) == {"CAFE": 5}

        # full=True sends every readable doc
        c = await Client.open(
            server.port,
            replica="t3",
            token=tokens["t3"],
            client_id=303,
            svs={"catalog": bytes(b_cat.get_state())},
            full=True,
        )
        _, diffs = await c.until_synced()
        assert [d.doc for d in diffs] == ["sales/t1/2026-01", "stock/t1", "catalog"]
        for cl in (a, b, c):
            await cl.close()

    with_relay(tmp_path, scenario)


def test_ack_after_storage_fanout_not_to_sender(tmp_path: Path) -> None:
    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        b = await Client.open(server.port, replica="t2", token=tokens["t2"], client_id=22)
        g = await Client.open(
            server.port, tenant="globex", replica="g1", token=tokens["g1"], client_id=33
        )
        for cl in (a, b, g):
            await cl.until_synced()
        assert server.connected_replicas("acme") == ["t1", "t2"]
        w = Writer(11)
        for i in range(3):
            await a.send_update("catalog", w.set(f"k{i}", i))
        for _ in range(3):
            ack = await a.wait_for(Ack)
            assert (ack.doc, ack.client_id) == ("catalog", 11)
            # acked means stored
            assert decode_state_vector(store.state_vectors("acme")["catalog"])[11] >= ack.clock
            assert len(store.load_doc("acme", "catalog").updates) >= ack.clock
        assert ack.clock == 3
        # b follows live; the sender and the other tenant get nothing back
        mirror: pycrdt.Doc[Any] = pycrdt.Doc()
        for _ in range(3):
            upd = await b.wait_for(UpdateReceived)
            assert upd.doc == "catalog"
            mirror.apply_update(upd.data)
        assert values(mirror) == {"k0": 0, "k1": 1, "k2": 2}
        assert not [e for e in await a.quiet() if isinstance(e, UpdateReceived)]
        assert await g.quiet() == []
        # redelivery is acknowledged again, nothing is fanned out
        await a.send_update("catalog", w.updates[0])
        assert (await a.wait_for(Ack)).clock == 3
        assert await b.quiet() == []
        # SYNC_NOW reaches the replica
        assert server.request_sync("acme", "t2", full=True)
        assert (await b.wait_for(SyncRequested)).full is True
        assert not server.request_sync("acme", "nobody")
        for cl in (a, b, g):
            await cl.close()

    with_relay(tmp_path, scenario)


def test_tenant_isolation(tmp_path: Path) -> None:
    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        await a.until_synced()
        await a.send_update("catalog", Writer(11).set("secret", 1))
        await a.wait_for(Ack)
        g = await Client.open(
            server.port, tenant="globex", replica="g1", token=tokens["g1"], client_id=44
        )
        welcome, diffs = await g.until_synced()
        assert welcome.state_vectors == {} and diffs == []
        # a token of tenant acme does not open tenant globex
        x = await Client.open(
            server.port, tenant="globex", replica="t1", token=tokens["t1"], client_id=12
        )
        assert (await x.closed())[0] == CLOSE_AUTH
        await a.close()
        await g.close()

    with_relay(tmp_path, scenario)


def test_bad_and_revoked_tokens_refused(tmp_path: Path) -> None:
    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        admin = issue_token(store, admin=True)
        t1_id = token_id_of(tokens["t1"])
        # each refusal says what is wrong with the token, in words its holder can act on
        cases = [
            ("t1", "ts_000000000000_nope", "unknown token 000000000000"),
            ("t1", tokens["t1"][:-2], f"unknown token {t1_id}"),
            ("t1", "garbage", "malformed token"),
            ("t1", tokens["t2"], "this token belongs to store acme/t2, not acme/t1"),
            ("t1", admin, "an admin token cannot sync"),
        ]
        for replica, token, why in cases:
            c = await Client.open(server.port, replica=replica, token=token, client_id=5)
            ev = await c.wait_for(ProtocolFailure)
            assert ev.code == CLOSE_AUTH and ev.reason.startswith(why), (token, ev.reason)
            code, reason = await c.closed()
            assert code == CLOSE_AUTH and reason.startswith(why), reason
        token_id = token_id_of(tokens["t3"])
        assert token_id is not None
        store.revoke_token(token_id)
        c = await Client.open(server.port, replica="t3", token=tokens["t3"], client_id=6)
        assert await c.closed() == (
            CLOSE_AUTH,
            f"token {token_id} was revoked; ask the relay's admin for a new one",
        )
        log = store.list_sessions(tenant="acme")
        assert log and all(r.outcome == "rejected" for r in log)

    with_relay(tmp_path, scenario)


def test_foreign_writer_and_foreign_client_id(tmp_path: Path) -> None:
    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        a, b = await synced_pair(server.port, tokens)
        # b sends items written as a's client id
        await b.send_update("catalog", Writer(11).set("forged", 1))
        assert await b.closed() == (CLOSE_FORBIDDEN, "the update contains items of another writer")
        assert "catalog" not in store.state_vectors("acme")
        # ... and as an unregistered client id
        c = await Client.open(server.port, replica="t3", token=tokens["t3"], client_id=33)
        await c.until_synced()
        await c.send_update("catalog", Writer(999, "t3").set("x", 1))
        assert (await c.closed())[0] == CLOSE_FORBIDDEN
        # a client id registered to t1 cannot be claimed by t2, now or as a past id
        for kwargs in ({"client_id": 11}, {"client_id": 23, "past": (11,)}):
            d = await Client.open(server.port, replica="t2", token=tokens["t2"], **kwargs)
            assert (await d.closed())[0] == CLOSE_FORBIDDEN
        # the relay keeps serving a
        await a.send_update("catalog", Writer(11).set("ok", 1))
        assert (await a.wait_for(Ack)).clock == 1
        await a.close()

    with_relay(tmp_path, scenario)


def test_garbage_closes_only_that_connection(tmp_path: Path) -> None:
    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        await a.until_synced()
        w = Writer(11)
        hello = encode(FrameType.HELLO, 1, "acme", "t2", tokens["t2"], 22, {}, {})
        update_frame = encode(FrameType.UPDATE, "catalog", b"\x01\x02garbage")
        bad_inputs: list[tuple[list[bytes | str], int]] = [
            ([os.urandom(64)], CLOSE_PROTOCOL),
            ([b"\xc1"], CLOSE_PROTOCOL),
            ([hello[:-3]], CLOSE_PROTOCOL),  # truncated HELLO
            ([hello, encode(FrameType.UPDATE, "catalog", b"x" * 50)[:10]], CLOSE_PROTOCOL),
            (["a text frame"], CLOSE_PROTOCOL),
            ([encode(FrameType.UPDATE, "catalog", b"\x00\x00")], CLOSE_PROTOCOL),  # no hello
            ([hello, update_frame], CLOSE_PROTOCOL),  # not a Yjs update
            ([hello, encode(FrameType.UPDATE, "../etc", b"\x00\x00")], CLOSE_PROTOCOL),
            ([encode(FrameType.WELCOME, 1, "s", {}, None)], CLOSE_PROTOCOL),
        ]
        for i, (messages, code) in enumerate(bad_inputs):
            ws = await connect(f"ws://127.0.0.1:{server.port}/sync")
            for m in messages:
                await ws.send(m)
            try:
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            except ConnectionClosed:
                pass
            assert ws.close_code == code, (i, ws.close_code, ws.close_reason)
            assert ws.close_reason, i
            # the other client still works
            await a.send_update("catalog", w.set(f"k{i}", i))
            assert (await a.wait_for(Ack)).clock == i + 1
        await a.close()

    with_relay(tmp_path, scenario)


def test_restart_keeps_acked_updates_and_pending(tmp_path: Path) -> None:
    w = Writer(11)
    u1, u2, u3 = w.set("a", 1), w.set("b", 2), w.set("c", 3)

    async def first(server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]) -> None:
        a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        await a.until_synced()
        await a.send_update("catalog", u1)
        assert (await a.wait_for(Ack)).clock == 1
        await a.send_update("catalog", u3)  # depends on u2: held aside, never stored
        assert (await a.wait_for(Ack)).clock == 1
        await a.close()

    with_relay(tmp_path, first)
    store = SqliteRelayStore(str(tmp_path / "relay.db"))
    tokens = {
        "t1": issue_token(store, tenant="acme", replica_id="t1"),
        "t2": issue_token(store, tenant="acme", replica_id="t2"),
    }

    async def second() -> None:
        server = RelayServer(store, port=0)
        await server.start()
        try:
            b = await Client.open(server.port, replica="t2", token=tokens["t2"], client_id=22)
            welcome, diffs = await b.until_synced()
            assert decode_state_vector(welcome.state_vectors["catalog"]) == {11: 1}
            doc: pycrdt.Doc[Any] = pycrdt.Doc()
            doc.apply_update(diffs[0].data)
            assert values(doc)["a"] == 1
            assert decode_state_vector(bytes(doc.get_state())) == {11: 1}
            a = await Client.open(
                server.port, replica="t1", token=tokens["t1"], client_id=12, past=(11,)
            )
            await a.until_synced()
            # the held u3 died with the first relay; the writer re-sends what is not
            # acknowledged, the missing link first
            await a.send_update("catalog", u2)
            assert (await a.wait_for(Ack)).clock == 2
            await a.send_update("catalog", u3)
            assert (await a.wait_for(Ack)).clock == 3
            for _ in range(2):
                doc.apply_update((await b.wait_for(UpdateReceived)).data)
            assert values(doc) == {"a": 1, "b": 2, "c": 3}
            await a.close()
            await b.close()
        finally:
            await server.stop()

    try:
        run(second())
    finally:
        store.close()


def test_compaction_and_sync_log(tmp_path: Path) -> None:
    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        await a.until_synced()
        w = Writer(11)
        for i in range(25):
            await a.send_update("catalog", w.set(f"k{i}", i))
        for _ in range(25):
            await a.wait_for(Ack)
        for _ in range(50):
            if store.load_doc("acme", "catalog").snapshot is not None:
                break
            await asyncio.sleep(0.05)
        hist = store.load_doc("acme", "catalog")
        assert hist.snapshot is not None and len(hist.updates) < 25
        server.docs.clear()
        b = await Client.open(server.port, replica="t2", token=tokens["t2"], client_id=22)
        _, diffs = await b.until_synced()
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(diffs[0].data)
        assert values(doc) == w.root()
        await a.close()
        await b.close()
        for _ in range(50):
            if len(store.list_sessions(tenant="acme")) == 2:
                break
            await asyncio.sleep(0.05)
        rows = {r.replica_id: r for r in store.list_sessions(tenant="acme")}
        assert rows["t1"].outcome == "ok" and rows["t1"].updates_received == 25
        assert rows["t1"].bytes_received > 0 and rows["t1"].ended_at is not None
        assert rows["t2"].updates_sent == 1 and rows["t2"].docs == 1

    with_relay(tmp_path, scenario, compact_threshold=10)


def test_read_and_write_grants(tmp_path: Path) -> None:
    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        store.set_replica_config(
            "acme", "t2", {"read": ["catalog"], "write": ["stock/t2"], "interval_s": 7.0}
        )
        a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        await a.until_synced()
        await a.send_update("stock/t1", Writer(11).count("x", 1))
        await a.send_update("catalog", Writer(11).set("y", 1))
        await a.wait_for(Ack)
        await a.wait_for(Ack)
        b = await Client.open(server.port, replica="t2", token=tokens["t2"], client_id=22)
        welcome, diffs = await b.until_synced()
        assert set(welcome.state_vectors) == {"catalog"}
        assert [d.doc for d in diffs] == ["catalog"]
        assert welcome.config is not None and welcome.config["interval_s"] == 7.0
        assert "read" not in welcome.config
        await a.send_update("stock/t1", Writer(11).count("z", 1))  # not fanned out to b
        await b.send_update("stock/t2", Writer(22, "t2").count("mine", 1))
        assert (await b.wait_for(Ack)).doc == "stock/t2"
        assert [e for e in await b.quiet() if isinstance(e, UpdateReceived)] == []
        await b.send_update("catalog", Writer(22, "t2").set("nope", 1))
        assert (await b.closed())[0] == CLOSE_FORBIDDEN
        await a.close()

    with_relay(tmp_path, scenario)


def test_yjs_endpoint_with_pycrdt_provider(tmp_path: Path) -> None:
    class WsChannel:
        def __init__(self, ws: ClientConnection, path: str) -> None:
            self._ws = ws
            self._path = path

        @property
        def path(self) -> str:
            return self._path

        def __aiter__(self) -> WsChannel:
            return self

        async def __anext__(self) -> bytes:
            try:
                return await self.recv()
            except ConnectionClosed:
                raise StopAsyncIteration from None

        async def send(self, message: bytes) -> None:
            await self._ws.send(message)

        async def recv(self) -> bytes:
            data = await self._ws.recv()
            assert isinstance(data, bytes)
            return data

    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        await a.until_synced()
        w = Writer(11)
        await a.send_update("stock/t1", w.count("CAFE", 3))
        await a.wait_for(Ack)
        # refusals come after the upgrade, as closes y-websocket does not retry (44xx)
        base = f"ws://127.0.0.1:{server.port}/yjs"
        assert (await follower_closed(f"{base}/acme/stock/t1?token=nope"))[0] == 4401
        # another tenant's token
        assert (await follower_closed(f"{base}/acme/stock/t1?token={tokens['g1']}"))[0] == 4401
        with pytest.raises(Exception, match="404"):
            await connect(f"ws://127.0.0.1:{server.port}/nope")
        # not a document name
        assert (await follower_closed(f"{base}/acme/..?token={tokens['t2']}"))[0] == 4404
        path = f"/yjs/acme/stock/t1?token={tokens['t2']}"
        ws = await connect(f"ws://127.0.0.1:{server.port}{path}")
        follower: pycrdt.Doc[Any] = pycrdt.Doc()
        stock = follower.get(ROOT, type=pycrdt.Map)
        async with pycrdt.Provider(follower, WsChannel(ws, path)) as provider:
            await asyncio.wait_for(provider.synced.wait(), 5)
            assert values(follower) == {"CAFE": 3}
            await a.send_update("stock/t1", w.count("CAFE", 1))
            await a.send_update("catalog", Writer(11).set("other-doc", 1))
            for _ in range(100):
                if values(follower) == {"CAFE": 4}:
                    break
                await asyncio.sleep(0.02)
            assert values(follower) == {"CAFE": 4}
            # read-only: a local write of the follower is refused for good (4403)
            stock["EVIL|1"] = [1, 0]
            await asyncio.wait_for(ws.wait_closed(), 5)
            assert ws.close_code == 4403 and "read-only" in (ws.close_reason or "")
        relay_doc = server.docs.get("acme", "stock/t1")
        assert values(relay_doc.doc) == {"CAFE": 4}
        assert "other-doc" not in str(stock.to_py())
        await a.close()

    with_relay(tmp_path, scenario)


def test_yjs_endpoint_writable_option(tmp_path: Path) -> None:
    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        await a.until_synced()
        ws = await connect(f"ws://127.0.0.1:{server.port}/yjs/acme/catalog?token={tokens['t2']}")
        step1 = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(step1, bytes) and step1[:2] == bytes(
            [pycrdt.YMessageType.SYNC, pycrdt.YSyncMessageType.SYNC_STEP1]
        )
        await ws.send(pycrdt.create_update_message(Writer(5555, "t2").set("from-yjs", 1)))
        upd = await a.wait_for(UpdateReceived)
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(upd.data)
        assert values(doc) == {"from-yjs": 1}
        await ws.send(b"\x00\x02\x05junk!")  # a malformed update closes the socket
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4400  # CLOSE_PROTOCOL, in y-websocket's "do not retry" form
        await a.close()

    with_relay(tmp_path, scenario, yjs_writable=True)


def test_revoking_a_token_closes_its_open_sessions(tmp_path: Path) -> None:
    """Revoked from another process (the CLI) while connected: sync and /yjs/
    sessions of that token close within a second or so; others stay open."""

    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        a, b = await synced_pair(server.port, tokens)
        follower = await connect(
            f"ws://127.0.0.1:{server.port}/yjs/acme/stock/t1?token={tokens['t1']}"
        )
        w = Writer(11)
        await a.send_update("stock/t1", w.count("CAFE", 3))
        await a.wait_for(Ack)
        cli = SqliteRelayStore(str(tmp_path / "relay.db"))  # the CLI's own connection
        try:
            token_id = token_id_of(tokens["t1"])
            assert token_id is not None
            cli.revoke_token(token_id)
        finally:
            cli.close()
        revoked_at = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(a.closed(), 3) == (CLOSE_AUTH, "token revoked")
        await asyncio.wait_for(follower.wait_closed(), 3)
        took = asyncio.get_running_loop().time() - revoked_at
        assert follower.close_code == 4401 and follower.close_reason == "token revoked"
        assert took < 3
        # the other store's session lives on and still syncs
        await b.send_update("stock/t2", Writer(22).count("PAN", 1))
        await b.wait_for(Ack)
        assert server.connected_replicas("acme") == ["t2"]
        rows = [r for r in store.list_sessions(tenant="acme") if r.replica_id == "t1"]
        assert sorted(r.kind for r in rows) == ["sync", "yjs"]  # both logged, with the reason
        assert all(r.outcome != "ok" and "token revoked" in (r.error or "") for r in rows)
        await b.close()

    with_relay(tmp_path, scenario)


def test_issue_attacks_over_real_websockets_change_nothing(tmp_path: Path) -> None:
    """Regressions of the attacks the ownership rule answers, end to end: each
    closes the attacker's session, stores nothing, and the victim syncs on."""

    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        victim = await Client.open(server.port, replica="t2", token=tokens["t2"], client_id=22)
        await victim.until_synced()
        honest = Writer(22, "t2")
        await victim.send_update("stock/t2", honest.count("CAFE", 5))
        await victim.wait_for(Ack)
        stored = store.state_vectors("acme")

        ten_years = 10 * 365 * 24 * 3600
        attacks: list[tuple[str, bytes, int]] = []
        ahead = Writer(11, clock=lambda: time.time() + ten_years)
        attacks.append(("catalog", ahead.set("CAFE", "mine for ever"), CLOSE_CLOCK_AHEAD))
        garbage: pycrdt.Doc[Any] = pycrdt.Doc(client_id=11)
        with garbage.transaction():
            garbage.get(ROOT, type=pycrdt.Map)["CAFE|11"] = pycrdt.Array(["abc", 1])
        attacks.append(("stock/t1", garbage.get_update(), CLOSE_FORBIDDEN))
        zeroing: pycrdt.Doc[Any] = pycrdt.Doc(client_id=11)
        with zeroing.transaction():  # an entry under the victim's slot key
            zeroing.get(ROOT, type=pycrdt.Map)["CAFE|22"] = pycrdt.Array([0, 0])
        attacks.append(("stock/t2", zeroing.get_update(), CLOSE_FORBIDDEN))
        for doc, update, code in attacks:
            attacker = await Client.open(
                server.port, replica="t1", token=tokens["t1"], client_id=11
            )
            await attacker.until_synced()
            await attacker.send_update(doc, update)
            closed = await attacker.closed()
            assert closed[0] == code, (doc, closed)
            assert store.state_vectors("acme") == stored, doc
        # the victim's data is intact at the relay and it still syncs
        assert values(server.docs.get("acme", "stock/t2").doc) == {"CAFE": 5}
        await victim.send_update("stock/t2", honest.count("CAFE", -1))
        await victim.wait_for(Ack)
        assert values(server.docs.get("acme", "stock/t2").doc) == {"CAFE": 4}
        await victim.close()

    with_relay(tmp_path, scenario)
