"""Security: who may connect, what they may write, how much, over what.

Complements ``test_relay_store.py`` (tokens hashed at rest, revocation,
constant-time compare) and ``test_relay_server.py`` (bad tokens, tenant
isolation, grants, foreign client ids).  Here: the admin token and replica
tokens are not interchangeable, forged writes are never accepted (counted),
the rate limits and the per-token cap, TLS with a self-signed certificate,
and that error replies carry no internal details.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import shutil
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pycrdt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.support.processes import HOST, wait_until
from tests.support.relay_client import Client, Writer, follower_closed, with_relay
from tiendasync import Replica
from tiendasync.errors import UnreachableRelay
from tiendasync.protocol import (
    CLOSE_AUTH,
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    CLOSE_RATE_LIMIT,
    Ack,
    ProtocolFailure,
    UpdateReceived,
)
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.relay import RelayServer, SqliteRelayStore
from tiendasync.relay.admin import AdminHTTPServer
from tiendasync.relay.auth import issue_token, token_id_of
from tiendasync.relay.core import RateLimits, RelayCore, RelaySession, TokenBucket

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
import contextlib

import demo

NO_LIMITS = RateLimits(0, 0, 0, 0, 0)

# -- rate limits, sans I/O ---------------------------------------------------------------


def test_token_bucket_time_is_passed_in() -> None:
    b = TokenBucket.full(rate=10, burst=3, now=100.0)
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert not b.take(100.05)  # half a token
    assert b.take(100.125)  # refilled one
    assert b.take(200.0) and b.tokens == 2  # capped at the burst
    b.take(50.0)  # a clock going back never mints tokens
    assert b.tokens == 1 and b.stamp == 200.0
    assert b.idle(1000.0)


def _ids() -> Callable[[], str]:
    """Deterministic session ids for a core driven directly."""
    counter = itertools.count(1)
    return lambda: f"s{next(counter)}"


def test_core_admit_per_address(tmp_path: Path) -> None:
    with SqliteRelayStore(str(tmp_path / "r.db")) as store:
        core = RelayCore(
            store,
            clock=lambda: 0.0,
            random_id=_ids(),
            limits=RateLimits(max_new_connections_per_ip_per_s=2, new_connection_burst=3),
        )
        got = [core.admit("10.0.0.1", 0.0) for _ in range(4)]
        assert got[:3] == [None] * 3 and got[3] is not None and "too many" in got[3]
        assert core.admit("10.0.0.2", 0.0) is None  # another address has its own bucket
        assert core.admit("10.0.0.1", 0.5) is None  # 2/s: one more after 0.5 s
        unlimited = RelayCore(store, clock=lambda: 0.0, random_id=_ids(), limits=NO_LIMITS)
        assert unlimited.admit("x", 0.0) is None
        with pytest.raises(Exception, match="negative"):
            RateLimits(max_messages_per_s=-1)


# -- rate limits over real websockets --------------------------------------------------------


def test_connections_per_token_capped(tmp_path: Path) -> None:
    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        b = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        for c in (a, b):
            await c.until_synced()
        c = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        ev = await c.wait_for(ProtocolFailure)
        assert ev.code == CLOSE_RATE_LIMIT and "too many connections" in ev.reason
        assert (await c.closed())[0] == CLOSE_RATE_LIMIT
        # another token is not affected; a freed slot can be used again
        d = await Client.open(server.port, replica="t2", token=tokens["t2"], client_id=22)
        await d.until_synced()
        await a.close()
        for _ in range(50):
            if server.connection_count() == 2:
                break
            await asyncio.sleep(0.02)
        e = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        await e.until_synced()
        # the yjs endpoint counts against the same cap (4429: y-websocket does not retry)
        url = f"ws://127.0.0.1:{server.port}/yjs/acme/catalog?token={tokens['t1']}"
        code, reason = await follower_closed(url)
        assert code == 4429 and "too many connections" in reason
        for cl in (b, d, e):
            await cl.close()

    with_relay(tmp_path, scenario, limits=RateLimits(max_connections_per_token=2))


def test_messages_per_second_limited(tmp_path: Path) -> None:
    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        good = await Client.open(server.port, replica="t2", token=tokens["t2"], client_id=22)
        await good.until_synced()
        flood = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        await flood.until_synced()
        w = Writer(11)
        with pytest.raises(ConnectionClosed):
            for i in range(200):
                await flood.send_update("catalog", w.set(f"k{i}", i))
                await asyncio.sleep(0)
        code, reason = await flood.closed()
        assert code == CLOSE_RATE_LIMIT and "messages per second" in reason
        # nothing the flooder got acknowledged is lost; the polite client is served
        await good.send_update("catalog", Writer(22, "t2").set("fine", 1))
        assert (await good.wait_for(Ack)).clock == 1
        await good.close()

    with_relay(tmp_path, scenario, limits=RateLimits(max_messages_per_s=20, message_burst=30))


def test_new_connections_per_address_limited(tmp_path: Path) -> None:
    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        sockets = [await connect(f"ws://127.0.0.1:{server.port}/sync") for _ in range(6)]

        async def close_of(ws: Any) -> tuple[int | None, str | None]:
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await asyncio.wait_for(ws.recv(), 0.5)
            return ws.close_code, ws.close_reason

        codes = await asyncio.gather(*(close_of(ws) for ws in sockets))
        for ws in sockets:
            await ws.close()
        assert codes[:3] == [(None, None)] * 3  # admitted (the test closed them)
        assert all(
            c == (CLOSE_RATE_LIMIT, "too many new connections from this address; retry later")
            for c in codes[3:]
        )
        await asyncio.sleep(1.1)
        assert len(store.list_sessions(limit=100)) == 3  # refused ones are not logged
        a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        await a.until_synced()
        await a.close()

    with_relay(
        tmp_path,
        scenario,
        limits=RateLimits(max_new_connections_per_ip_per_s=1, new_connection_burst=3),
    )


def test_default_limits_let_a_normal_store_work(tmp_path: Path) -> None:
    """A catch-up of many docs plus a burst of live writes stays under the defaults."""

    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        await a.until_synced()
        w = Writer(11)
        for i in range(300):
            await a.send_update("catalog", w.set(f"k{i}", i))
        clock = 0
        while clock < 300:
            clock = (await a.wait_for(Ack)).clock
        await a.close()

    with_relay(tmp_path, scenario)


# -- tokens: admin vs replica, forgeries ----------------------------------------------------


async def _with_admin(server: RelayServer) -> AdminHTTPServer:
    admin = AdminHTTPServer(server, host="127.0.0.1", port=0)
    await admin.start()
    return admin


def test_admin_and_replica_tokens_are_not_interchangeable(tmp_path: Path) -> None:
    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        admin_token = issue_token(store, admin=True)
        admin = await _with_admin(server)
        base = f"http://127.0.0.1:{admin.port}"
        try:
            async with httpx.AsyncClient(base_url=base) as http:
                ok = await http.get(
                    "/api/sync/replicas/?tenant=acme",
                    headers={"Authorization": f"Bearer {admin_token}"},
                )
                assert ok.status_code == 200
                for bad in (
                    tokens["t1"],
                    tokens["g1"],
                    "x",
                    "Bearer",
                    admin_token + "x",
                    admin_token[:-1],
                ):
                    r = await http.get(
                        "/api/sync/replicas/?tenant=acme",
                        headers={"Authorization": f"Bearer {bad}"},
                    )
                    assert r.status_code == 401, bad
                    assert r.json() == {"error": "missing or invalid admin token"}
                r = await http.put(
                    "/api/sync/config/t1?tenant=acme",
                    json={"write": ["*"]},
                    headers={"Authorization": f"Bearer {tokens['t1']}"},
                )
                assert r.status_code == 401
                assert store.get_replica_config("acme", "t1") is None
                # a revoked admin token is refused at once
                tid = token_id_of(admin_token)
                assert tid is not None
                store.revoke_token(tid)
                r = await http.get(
                    "/api/sync/replicas/?tenant=acme",
                    headers={"Authorization": f"Bearer {admin_token}"},
                )
                assert r.status_code == 401
        finally:
            await admin.stop()
        # the admin token cannot open a sync session, for any tenant or replica
        admin2 = issue_token(store, admin=True)
        for tenant, replica in (("acme", "t1"), ("acme", "central"), ("globex", "g1")):
            c = await Client.open(
                server.port, tenant=tenant, replica=replica, token=admin2, client_id=77
            )
            assert await c.closed() == (
                CLOSE_AUTH,
                "an admin token cannot sync; use the token issued for this store",
            )
        # a replica token opens the yjs endpoint of its own tenant only (4401: for good)
        for tenant, token in (("acme", tokens["g1"]), ("globex", tokens["t1"])):
            url = f"ws://127.0.0.1:{server.port}/yjs/{tenant}/catalog?token={token}"
            assert (await follower_closed(url))[0] == 4401

    with_relay(tmp_path, scenario)


FORGERY_KINDS = (
    "foreign-registered",
    "unregistered",
    "mixed",
    "foreign-gapped",
    "forbidden-doc",
    "other-tenant-id",
)


def test_forged_writes_are_never_accepted(tmp_path: Path) -> None:
    """Random forgeries: items under another replica's (or nobody's) client id,
    writes to docs outside the grants.  Every one is refused and nothing of it
    reaches storage; the honest writes around them all do."""
    n = int(os.environ.get("TIENDASYNC_FORGERIES", "300"))
    rng = random.Random(os.environ.get("TIENDASYNC_SEED", "7"))
    accepted: list[str] = []

    async def scenario(
        server: RelayServer, store: SqliteRelayStore, tokens: dict[str, str]
    ) -> None:
        store.set_replica_config("acme", "t2", {"write": ["catalog", "stock/t2"]})
        victim = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        g = await Client.open(
            server.port, tenant="globex", replica="g1", token=tokens["g1"], client_id=55
        )
        for c in (victim, g):
            await c.until_synced()
        vw = Writer(11)
        await victim.send_update("catalog", vw.set("v0", 0))
        await victim.wait_for(Ack)
        await victim.close()
        honest = Writer(22, "t2")
        for i in range(n):
            kind = FORGERY_KINDS[i % len(FORGERY_KINDS)]
            doc = "catalog"
            if kind == "foreign-registered":
                fw = Writer(11)
                fw.doc.apply_update(vw.doc.get_update())
                data = fw.set(f"forged{i}", i)
            elif kind == "unregistered":
                data = Writer(rng.randrange(1000, 2**31)).set(f"forged{i}", i)
            elif kind == "mixed":  # own items and a foreign one in one update
                mix = Writer(22, "t2")
                mix.doc.apply_update(honest.doc.get_update())
                mix.set(f"own{i}", i)
                other = Writer(11)
                other.doc.apply_update(vw.doc.get_update())
                other.set(f"forged{i}", i)
                data = pycrdt.merge_updates(
                    bytes(mix.doc.get_update()), bytes(other.doc.get_update())
                )
            elif kind == "foreign-gapped":
                fw = Writer(11)
                for j in range(3):
                    fw.set(f"gap{i}-{j}", j)
                data = fw.updates[-1]
            elif kind == "forbidden-doc":
                doc = "stock/t1"
                data = Writer(22, "t2").set(f"forged{i}", i)
            else:  # a client id registered in another tenant
                data = Writer(55).set(f"forged{i}", i)
            before = {d: decode_state_vector(sv) for d, sv in store.state_vectors("acme").items()}
            forger = await Client.open(server.port, replica="t2", token=tokens["t2"], client_id=22)
            await forger.until_synced()
            await forger.send_update(doc, data)
            code, reason = await forger.closed()
            if code != CLOSE_FORBIDDEN:
                accepted.append(f"{kind}: {code} {reason}")
            after = {d: decode_state_vector(sv) for d, sv in store.state_vectors("acme").items()}
            for d, clocks in after.items():
                for client in (11, 55):
                    if clocks.get(client, 0) > before.get(d, {}).get(client, 0):
                        accepted.append(f"{kind}: client {client} advanced in {d}")
            # an honest write by the same replica right after is accepted
            h = await Client.open(server.port, replica="t2", token=tokens["t2"], client_id=22)
            await h.until_synced()
            await h.send_update("catalog", honest.set(f"h{i}", i))
            assert (await h.wait_for(Ack)).clock == i + 1
            await h.close()
        assert decode_state_vector(store.state_vectors("acme")["catalog"])[11] == 1
        assert "catalog" not in store.state_vectors("globex")
        assert [e for e in await g.quiet(0.05) if not isinstance(e, Ack)] == []
        await g.close()

    with_relay(tmp_path, scenario, limits=NO_LIMITS)
    print(f"\nforgeries tried: {n}, accepted: {len(accepted)}")
    assert accepted == []


# -- TLS --------------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not available")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_self_signed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = _self_signed(tmp_path)
    db = str(tmp_path / "relay.db")
    token = demo.tiendasync(
        "relay", "token", "add", "--db", db, "--tenant", "acme", "--replica", "tls-1"
    )
    other = demo.tiendasync(
        "relay", "token", "add", "--db", db, "--tenant", "acme", "--replica", "tls-2"
    )
    admin_token = demo.tiendasync("relay", "token", "add", "--db", db, "--admin")
    port, admin_port = demo.free_port(), demo.free_port()
    with (tmp_path / "relay.log").open("w") as log:
        relay = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tiendasync",
                "relay",
                "--db",
                db,
                "--host",
                HOST,
                "--port",
                str(port),
                "--admin-port",
                str(admin_port),
                "--tls-cert",
                str(cert),
                "--tls-key",
                str(key),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    ca = ssl.create_default_context(cafile=str(cert))
    try:

        def up() -> bool:
            assert relay.poll() is None, (tmp_path / "relay.log").read_text()
            try:
                r = httpx.get(f"https://{HOST}:{admin_port}/healthz", verify=ca, timeout=1)
            except httpx.TransportError:
                return False
            return r.status_code == 200

        wait_until(up, "TLS relay up", 20)
        url = f"wss://{HOST}:{port}/sync"
        with Replica.open(tmp_path / "a.db", tenant="acme", replica_id="tls-1", location="t1") as a:
            a.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
            a.inventory.receive("CAFE", 5)
            sale = a.record_sale([("CAFE", 2)])
            # without the CA the self-signed certificate is refused
            monkeypatch.delenv("TIENDASYNC_CA_FILE", raising=False)
            with pytest.raises(UnreachableRelay):
                a.sync_now(url, token=token)
            # plain ws:// to a TLS port does not work either
            with pytest.raises(UnreachableRelay):
                a.sync_now(f"ws://{HOST}:{port}/sync", token=token)
            monkeypatch.setenv("TIENDASYNC_CA_FILE", str(cert))
            report = a.sync_now(url, token=token)
            assert report.outcome == "ok" and a.status.pending == 0
        with Replica.open(tmp_path / "b.db", tenant="acme", replica_id="tls-2", location="t2") as b:
            b.sync_now(url, token=other, full=True)
            assert b.sales.get(sale.id) is not None
            assert b.inventory.stock("CAFE", location="t1") == 3
        r = httpx.get(
            f"https://{HOST}:{admin_port}/api/sync/replicas/?tenant=acme",
            headers={"Authorization": f"Bearer {admin_token}"},
            verify=ca,
            timeout=5,
        )
        assert r.status_code == 200
        assert {x["replica"] for x in r.json()["results"]} == {"tls-1", "tls-2"}
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"https://{HOST}:{admin_port}/healthz", timeout=2)  # untrusted
    finally:
        relay.terminate()
        relay.wait(10)


# -- no internal details in error replies ---------------------------------------------------


class _BrokenDisk(SqliteRelayStore):
    fail = False

    def append_many(self, entries: Any) -> Any:
        if self.fail:
            raise sqlite3.OperationalError("disk I/O error in /srv/secret/relay.db")
        return super().append_many(entries)


def test_errors_reveal_nothing_internal(tmp_path: Path) -> None:
    store = _BrokenDisk(str(tmp_path / "relay.db"))
    t1 = issue_token(store, tenant="acme", replica_id="t1")
    t2 = issue_token(store, tenant="acme", replica_id="t2")
    admin_token = issue_token(store, admin=True)
    secret_bits = ("/srv/secret", "Traceback", "sqlite", "OperationalError", 'File "')

    async def main() -> None:
        server = RelayServer(store, host="127.0.0.1", port=0)
        await server.start()
        admin = await _with_admin(server)
        try:
            a = await Client.open(server.port, replica="t1", token=t1, client_id=11)
            await a.until_synced()
            store.fail = True
            await a.send_update("catalog", Writer(11).set("x", 1))
            ev = await a.wait_for(ProtocolFailure)
            assert (ev.code, ev.reason) == (CLOSE_INTERNAL, "storage failure")
            assert await a.closed() == (CLOSE_INTERNAL, "storage failure")
            store.fail = False
            # a bug inside the core: "internal error", nothing more
            real = server.core.sync._on_update

            def boom(session: RelaySession, event: UpdateReceived) -> None:
                raise RuntimeError("secret detail /srv/secret")

            server.core.sync._on_update = boom  # type: ignore[method-assign]
            b = await Client.open(server.port, replica="t2", token=t2, client_id=22)
            await b.until_synced()
            await b.send_update("catalog", Writer(22, "t2").set("y", 1))
            ev = await b.wait_for(ProtocolFailure)
            assert (ev.code, ev.reason) == (CLOSE_INTERNAL, "internal error")
            server.core.sync._on_update = real  # type: ignore[method-assign]
            # the sync log (admin only) keeps the detail for the operator
            rows = store.list_sessions(tenant="acme", limit=10)
            assert any(r.error and "storage failure" in r.error for r in rows)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin.port}") as http:
                h = {"Authorization": f"Bearer {admin_token}"}
                for method, path, body in (
                    ("POST", "/api/sync/queue/nope/resolve/?tenant=acme", b"{"),
                    ("POST", "/api/sync/queue/nope/resolve/?tenant=acme", b'{"action": 1}'),
                    ("PUT", "/api/sync/config/t1?tenant=acme", b'{"interval_s": "soon"}'),
                    ("GET", "/api/sync/queue/?tenant=acme&limit=abc", None),
                ):
                    r = await http.request(method, path, content=body, headers=h)
                    assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
                    assert not any(bit in r.text for bit in secret_bits), r.text
        finally:
            await admin.stop()
            await server.stop()

    try:
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        store.close()
