"""Relay nodes sharing one store of record: presence, "sync now" across nodes, figures.

Two :class:`RelayServer` processes' worth (two servers, two connections) on
one real PostgreSQL database; a store connected to one node is online, is
asked to sync and is counted from the other node's admin API.  The decision
part (:class:`NodeBoard`'s ages and lookups) is tested without any I/O.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.relay_client import Client, run
from tiendasync.protocol import SyncRequested
from tiendasync.relay import RelayServer
from tiendasync.relay.admin import RelayAdmin
from tiendasync.relay.auth import issue_token
from tiendasync.relay.nodes import NodeBoard
from tiendasync.relay.pgstore import PostgresRelayStore
from tiendasync.relay.records import NodeRecord, SyncRequest


class _Store:
    """Only what :class:`NodeBoard`'s decisions read: the live nodes given."""

    def __init__(self, nodes: list[NodeRecord]) -> None:
        self.nodes = nodes
        self.requests: list[tuple[str, SyncRequest]] = []

    def live_nodes(self, seen_since: float) -> list[NodeRecord]:
        return [n for n in self.nodes if n.seen_at >= seen_since]

    def request_node_sync(self, node_id: str, request: SyncRequest) -> None:
        self.requests.append((node_id, request))


def test_the_board_asks_only_live_other_nodes_serving_the_store() -> None:
    nodes = [
        NodeRecord("a", 0.0, 100.0, (("acme", "t1"),)),
        NodeRecord("b", 0.0, 99.0, (("acme", "t1"), ("acme", "t2"))),
        NodeRecord("dead", 0.0, 90.0, (("acme", "t1"),)),  # 10 s without a beat
    ]
    store = _Store(nodes)
    board = NodeBoard(store, "a", 0.0)  # type: ignore[arg-type]
    assert board.live_since(100.0) == 100.0 - board.beat_seconds * board.live_beats
    assert [n.node_id for n in board.live(100.0)] == ["a", "b"]
    assert board.request_elsewhere(100.0, "acme", "t1", True)
    assert store.requests == [("b", SyncRequest("acme", "t1", True))]  # not itself, not dead
    assert not board.request_elsewhere(100.0, "acme", "t9", False)
    assert not board.request_elsewhere(100.0, "globex", "t2", False)
    beat = board.record(101.0, [("acme", "t2"), ("acme", "t1"), ("acme", "t2")], {"x": 1.0})
    assert beat == NodeRecord("a", 0.0, 101.0, (("acme", "t1"), ("acme", "t2")), {"x": 1.0})


async def _until(check: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.timeout(60)
def test_a_store_on_one_node_is_seen_and_synced_from_another(pg_url: str) -> None:
    stores = [PostgresRelayStore(pg_url) for _ in range(2)]
    token = issue_token(stores[0], tenant="acme", replica_id="t1")
    issue_token(stores[0], tenant="acme", replica_id="t2")

    async def main() -> None:
        a = RelayServer(stores[0], port=0, node_id="node-a")
        b = RelayServer(stores[1], port=0, node_id="node-b")
        for server in (a, b):
            await server.start()
            assert server.nodes is not None
            server.nodes.beat_seconds = 0.1
        try:
            client = await Client.open(b.port, replica="t1", token=token, client_id=11)
            await client.until_synced()
            admin_a = RelayAdmin(a)
            listed = {"node-a", "node-b"}
            await _until(lambda: {n["node"] for n in admin_a.list_nodes()} == listed)
            await _until(
                lambda: (
                    {r["replica"]: r["nodes"] for r in admin_a.list_replicas("acme")}
                    == {"t1": ["node-b"], "t2": []}
                )
            )
            replicas = {r["replica"]: r for r in admin_a.list_replicas("acme")}
            assert replicas["t1"]["online"] and not replicas["t2"]["online"]
            nodes = {n["node"]: n for n in admin_a.list_nodes()}
            assert nodes["node-a"]["this"] and not nodes["node-b"]["this"]
            assert nodes["node-b"]["stores_connected"] == 1
            assert nodes["node-b"]["metrics"]["connections"] == 1.0
            # node a has no session of t1: its admin's "sync now" reaches t1 through b
            assert not a.request_sync("acme", "t1")
            assert admin_a.sync_now("acme", "t1", full=True)
            assert (await client.wait_for(SyncRequested, timeout=5.0)).full is True
            assert not admin_a.sync_now("acme", "t2", full=False)  # offline everywhere
            await client.close()
            await _until(lambda: admin_a.list_replicas("acme")[0]["nodes"] == [])
        finally:
            await b.stop()
            # a clean stop removes the node from every other node's view at once
            assert [n["node"] for n in RelayAdmin(a).list_nodes()] == ["node-a"]
            await a.stop()

    try:
        run(main())
    finally:
        for store in stores:
            store.close()
