"""The admin API on any node of a relay cluster (``relay.forward``), and sync-now across nodes.

Two relay nodes on one real PostgreSQL database, real stores syncing over
websockets: node A holds the review lock (its central writers open the
conflicts), a conflict is listed and resolved through node B's admin API,
applied once on A and reaches a store connected to A.  A request retried
with its Idempotency-Key (after an answer, or after B gave up waiting) is
never applied twice; on a lone relay (SQLite) too.  Sync-now reaches a store on
another node at once (a cluster message), or at its next heartbeat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.relay.test_cluster import until
from tests.support.relay_client import Client, run
from tiendasync import Replica
from tiendasync.errors import StorageError
from tiendasync.protocol import SyncRequested
from tiendasync.relay import pgschema
from tiendasync.relay.admin import RelayAdmin
from tiendasync.relay.admin_api import create_admin_app
from tiendasync.relay.auth import issue_token
from tiendasync.relay.cluster import ClusterNode
from tiendasync.relay.nodes import WAKE
from tiendasync.relay.pgfeed import PgFeed
from tiendasync.relay.pgstore import PostgresRelayStore
from tiendasync.relay.records import AdminRequest, AppendEntry, AppendResult
from tiendasync.relay.server import RelayServer
from tiendasync.relay.storage import SqliteRelayStore
from tiendasync.store.client import sync_once


@asynccontextmanager
async def node(url: str, name: str, central: Path) -> AsyncIterator[RelayServer]:
    store = PostgresRelayStore(url, node_id=name)
    cluster = ClusterNode(PgFeed(url, name), review_check_seconds=0.2)
    server = RelayServer(store, port=0, cluster=cluster, central_dir=central)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        store.close()


class Admin:
    """One node's admin API over HTTP in memory (the real routes, no socket)."""

    def __init__(self, server: RelayServer, token: str) -> None:
        self.backend = RelayAdmin(server)
        self.app = create_admin_app(self.backend)
        self.auth = {"Authorization": f"Bearer {token}"}

    async def request(
        self, method: str, path: str, body: Any = None, key: str | None = None
    ) -> tuple[int, Any]:
        headers = dict(self.auth)
        if key is not None:
            headers["Idempotency-Key"] = key
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
            r = await http.request(method, path, headers=headers, json=body)
        return r.status_code, r.json()


async def eventually(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.1)


async def _sync(till: Replica, port: int, token: str) -> None:
    await asyncio.to_thread(sync_once, till, f"ws://127.0.0.1:{port}/sync", token=token)


async def _oversell(tills: dict[str, Replica], port: int, tok: dict[str, str]) -> None:
    """Two tills of one shop, apart, each sell 4 of the 5 in stock, then sync."""
    one, two = tills["caja-1"], tills["caja-2"]
    one.catalog.put("CAFE", {"name": "Café", "price_cents": 100})
    one.inventory.receive("CAFE", 5)
    for name in ("caja-1", "caja-2"):
        await _sync(tills[name], port, tok[name])
    one.record_sale([("CAFE", 4, 100)])
    two.record_sale([("CAFE", 4, 100)])
    for name in ("caja-1", "caja-2"):
        await _sync(tills[name], port, tok[name])


def test_a_conflict_resolved_through_another_node_is_applied_once(
    pg_url: str, tmp_path: Path
) -> None:
    with PostgresRelayStore(pg_url) as setup:
        admin_token = issue_token(setup, admin=True)
        tok = {r: issue_token(setup, tenant="acme", replica_id=r) for r in ("caja-1", "caja-2")}
    tills = {
        r: Replica.open(tmp_path / f"{r}.db", tenant="acme", replica_id=r, location="tienda-1")
        for r in tok
    }

    async def main() -> None:
        async with node(pg_url, "node-a", tmp_path / "ca") as a:
            await until(lambda: a.cluster is not None and a.cluster.reviewer, "node-a reviews")
            async with node(pg_url, "node-b", tmp_path / "cb") as b:
                assert b.forwarder is not None and a.forwarder is not None
                admin_b = Admin(b, admin_token)
                Admin(a, admin_token)  # node-a runs what node-b forwards

                async def sync(name: str) -> None:
                    await _sync(tills[name], a.port, tok[name])

                one = tills["caja-1"]
                await _oversell(tills, a.port, tok)

                async def open_on_b() -> list[Any]:
                    status, body = await admin_b.request("GET", "/api/sync/queue/?status=open")
                    assert status == 200, body
                    return [c for c in body["results"] if c["sku"] == "CAFE"]

                (conflict,) = await eventually(open_on_b, "node-b lists node-a's conflict")
                cid = conflict["id"]
                path = f"/api/sync/queue/{cid}/resolve/"
                adjust = {"action": "adjust", "quantity": 1, "by": "ana"}

                started = time.monotonic()
                status, first = await admin_b.request("POST", path, adjust, key="resolve-0001")
                took = time.monotonic() - started
                assert status == 200, first
                print(f"a resolution forwarded from node-b to node-a: {took * 1000:.0f} ms")
                assert a.forwarder.ran >= 1 and b.forwarder.ran == 0  # run on node-a
                status, again = await admin_b.request("POST", path, adjust, key="resolve-0001")
                assert (status, again) == (200, first) and b.forwarder.replayed == 1
                status, other = await admin_b.request(
                    "POST", path, {**adjust, "quantity": 2}, key="resolve-0001"
                )
                assert status == 400 and "already used" in other["error"]
                await sync("caja-1")  # a store on node-a: the compensation, once
                assert one.inventory.stock("CAFE") == -3 + 1

                # node-a is slow to store the next one: node-b gives up waiting (503),
                # the retry with the same key answers the one outcome
                real = a.store.append_many

                def slow(entries: Sequence[AppendEntry]) -> AppendResult:
                    time.sleep(1.0)
                    return real(entries)

                a.store.append_many = slow  # type: ignore[method-assign]
                b.forwarder.timeout = 0.3
                status, busy = await admin_b.request("POST", path, adjust, key="resolve-0002")
                assert status == 503 and "still running" in busy["error"], busy
                a.store.append_many = real  # type: ignore[method-assign]
                b.forwarder.timeout = 10.0
                status, later = await admin_b.request("POST", path, adjust, key="resolve-0002")
                assert status == 200, later
                ran = a.forwarder.ran
                status, _ = await admin_b.request("POST", path, adjust, key="resolve-0002")
                assert status == 200 and a.forwarder.ran == ran
                await sync("caja-1")
                assert one.inventory.stock("CAFE") == -3 + 2  # two keys, two adjustments

                # reads and errors come back typed from node-a
                status, missing = await admin_b.request("GET", "/api/sync/queue/C-nope/")
                assert status == 404, missing
                status, sales = await admin_b.request("GET", f"/api/sync/queue/{cid}/sales/")
                assert status == 200 and sales["count"] >= 1 and sales["results"][0]["known"]

    try:
        run(main())
    finally:
        for till in tills.values():
            till.close()


def test_a_request_nobody_runs_is_cancelled_and_runs_once_when_asked_again(
    pg_url: str, tmp_path: Path
) -> None:
    """No node reviews when node-b is asked: 503, nothing done; asked again once node-a
    reviews, with the same key, it runs once."""
    with PostgresRelayStore(pg_url) as setup:
        admin_token = issue_token(setup, admin=True)
        issue_token(setup, tenant="acme", replica_id="caja-1", location="tienda-1")

    async def main() -> None:
        async with node(pg_url, "node-b", tmp_path / "cb") as b:
            assert b.cluster is not None and b.forwarder is not None
            await until(lambda: b.cluster is not None and b.cluster.reviewer, "node-b reviews")
            admin_b = Admin(b, admin_token)
            runs = b.forwarder.executor
            b.forwarder.executor = None  # as if no node could run it now
            b.forwarder.timeout = 0.5
            process = "/api/sync/queue/C-0/process/"
            status, body = await admin_b.request("POST", process, key="process-0001")
            assert status == 503 and "nothing was done" in body["error"], body
            row = await asyncio.to_thread(b.forwarder.book.admin_request, "process-0001")
            assert row is not None and row.state == "cancelled" and b.forwarder.ran == 0
            assert runs is not None

            def busy_once(op: str, tenant: str, args: dict[str, Any]) -> Any:
                assert b.forwarder is not None
                b.forwarder.executor = runs
                raise StorageError("relay database is busy")

            b.forwarder.executor = busy_once  # a passing error: answered, not kept
            status, body = await admin_b.request("POST", process, key="process-0001")
            assert status == 503 and "busy" in body["error"], body
            row = await asyncio.to_thread(b.forwarder.book.admin_request, "process-0001")
            assert row is not None and row.state == "cancelled"
            status, body = await admin_b.request("POST", process, key="process-0001")
            assert status == 404, body  # ran: the conflict does not exist
            assert b.forwarder.ran == 2
            status, again = await admin_b.request("POST", process, key="process-0001")
            assert (status, again) == (404, body) and b.forwarder.ran == 2  # answered

            # a runner that stopped mid-way (claimed long ago, never answered): failed as
            # in doubt by the reviewer's sweep, never run again
            book = b.forwarder.book
            args = '{"conflict_id":"C-1"}'
            asked = AdminRequest(
                "process-0002", "acme", "process_conflict", args, "asked", "x", time.time()
            )
            await asyncio.to_thread(book.ask_admin, asked)
            await asyncio.to_thread(book.claim_admin, "process-0002", "node-gone", 1.0)
            status, body = await admin_b.request(
                "POST", "/api/sync/queue/C-1/process/", key="process-0002"
            )
            assert status == 502 and "unknown" in body["error"], body
            assert b.forwarder.ran == 2

    run(main())


@pytest.mark.timeout(60)
def test_sync_now_wakes_the_other_node_at_once(pg_url: str, tmp_path: Path) -> None:
    """The request row is the durable fallback (taken at the next beat); the cluster
    message wakes the node holding the store's session at once."""
    with PostgresRelayStore(pg_url) as setup:
        admin_token = issue_token(setup, admin=True)
        token = issue_token(setup, tenant="acme", replica_id="t1")

    async def main() -> None:
        async with (
            node(pg_url, "node-a", tmp_path / "ca") as a,
            node(pg_url, "node-b", tmp_path / "cb") as b,
        ):
            for server in (a, b):
                assert server.nodes is not None
                server.nodes.beat_seconds = 0.2
            client = await Client.open(b.port, replica="t1", token=token, client_id=11)
            await client.until_synced()
            admin_a = Admin(a, admin_token)
            sync_now = "/api/sync/config/t1/sync_now/"

            async def seen_on_b() -> bool:
                _, body = await admin_a.request("GET", "/api/sync/replicas/")
                return bool(body["results"] and body["results"][0]["nodes"] == ["node-b"])

            await eventually(seen_on_b, "node-a sees t1 on node-b")
            assert a.nodes is not None and b.nodes is not None
            for board in (a.nodes, b.nodes):  # from now on, the beat alone takes seconds
                board.beat_seconds = 5.0
            await asyncio.sleep(0.3)  # node-b is asleep in a long beat
            started = time.monotonic()
            status, body = await admin_a.request("POST", sync_now, {"full": True})
            assert status == 200, body
            assert (await client.wait_for(SyncRequested, timeout=4.0)).full is True
            woken = time.monotonic() - started
            assert woken < 2.0, f"sync-now took {woken:.2f} s to reach node-b's store"
            # the message lost (no handler): the row is taken at node-b's next beat
            assert b.cluster is not None
            b.cluster.handlers.pop(WAKE)
            for board in (a.nodes, b.nodes):
                board.beat_seconds = 1.0
            b.nodes.wake()  # out of its 5 s wait: from now on it beats every second
            await asyncio.sleep(0.3)
            started = time.monotonic()
            status, body = await admin_a.request("POST", sync_now, {"full": False})
            assert status == 200, body
            assert (await client.wait_for(SyncRequested, timeout=4.0)).full is False
            fallback = time.monotonic() - started
            assert woken < fallback < 2.5, (woken, fallback)
            print(
                f"sync-now across nodes: woken {woken * 1000:.0f} ms; by the 1 s beat "
                f"{fallback * 1000:.0f} ms"
            )
            await client.close()

    run(main())


def test_a_lone_relay_applies_a_resolution_asked_again_with_its_key_once(tmp_path: Path) -> None:
    """On SQLite (one relay) the keys are kept in memory: a retry is answered, not run."""
    store = SqliteRelayStore(str(tmp_path / "relay.db"))
    admin_token = issue_token(store, admin=True)
    tok = {r: issue_token(store, tenant="acme", replica_id=r) for r in ("caja-1", "caja-2")}
    tills = {
        r: Replica.open(tmp_path / f"{r}.db", tenant="acme", replica_id=r, location="tienda-1")
        for r in tok
    }

    async def main() -> None:
        async with RelayServer(store, port=0, central_dir=tmp_path / "central") as relay:
            assert relay.forwarder is None
            admin = Admin(relay, admin_token)
            await _oversell(tills, relay.port, tok)
            central = relay.central("acme")

            async def opened() -> list[Any]:
                return [c for c in central.conflicts(status="open") if c.sku == "CAFE"]

            (conflict,) = await eventually(opened, "the relay opens the conflict")
            path = f"/api/sync/queue/{conflict.id}/resolve/"
            adjust = {"action": "adjust", "quantity": 1}
            answers = [await admin.request("POST", path, adjust, key="lone-0001") for _ in "ab"]
            assert answers[0] == answers[1] and answers[0][0] == 200
            status, _ = await admin.request("POST", path, {"action": "accept"}, key="lone-0001")
            assert status == 400
            assert (await admin.request("POST", path, adjust))[0] == 200  # no key: runs
            await _sync(tills["caja-1"], relay.port, tok["caja-1"])
            assert tills["caja-1"].inventory.stock("CAFE") == -3 + 2

    try:
        run(main())
    finally:
        for till in tills.values():
            till.close()
        store.close()


def test_a_version_4_database_gains_the_forwarded_requests(pg_url: str) -> None:
    with PostgresRelayStore(pg_url) as store:
        assert store.schema_version() == pgschema.SCHEMA_VERSION == 5
    with psycopg.connect(pg_url, autocommit=True) as conn:  # as schema 4 left it
        conn.execute("DROP TABLE admin_requests")
        conn.execute("UPDATE schema_version SET version = 4")
    with PostgresRelayStore(pg_url) as store:
        assert store.schema_version() == 5
        asked = AdminRequest("key-00000001", "acme", "get_conflict", "{}", "asked", "n1", 1.0)
        assert store.ask_admin(asked) == asked
        assert store.claim_admin("key-00000001", "n2", 2.0) is not None
        assert store.claim_admin("key-00000001", "n3", 2.0) is None  # claimed once
        assert not store.cancel_admin("key-00000001", 3.0)  # running: not cancelled
        for node, finished in (("n3", False), ("n2", True)):  # only the claimer finishes
            assert (
                store.finish_admin(
                    "key-00000001", node, 4.0, result="{}", error_class=None, error=None
                )
                is finished
            )
        assert store.unfinished_admin() == []
        assert store.prune_admin(5.0) == 1 and store.admin_request("key-00000001") is None
