"""A failed group commit: nothing of it (or applied on top of it) is stored or ACKed.

The store's ``append_many`` is made to fail once, deterministically, while
a second write to the same document waits in the writer's queue: that write
was applied on top of the failed one, so its state vector counts it.  Neither
may be acknowledged or stored; the next writes are; and a fresh replica gets
everything its WELCOME's state vectors claim.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pycrdt

from tests.support.relay_client import Client, Writer, run
from tiendasync.errors import StorageError
from tiendasync.protocol import CLOSE_INTERNAL, Ack
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.relay import RelayServer, SqliteRelayStore
from tiendasync.relay.auth import issue_token
from tiendasync.relay.storage import AppendEntry, AppendResult


class FailOnce(SqliteRelayStore):
    """``append_many`` blocks on its next call until released, then fails (disk full)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.failed_batches: list[list[AppendEntry]] = []

    def append_many(self, entries: Sequence[AppendEntry]) -> AppendResult:
        if self.armed:
            self.armed = False
            self.entered.set()
            assert self.release.wait(10)
            self.failed_batches.append(list(entries))
            raise StorageError("relay database write failed: database or disk is full")
        return super().append_many(entries)


async def _until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


def _served(diffs: list[Any]) -> dict[str, dict[int, int]]:
    """The state vector of each doc a replica rebuilt from its catch-up diffs."""
    out: dict[str, dict[int, int]] = {}
    for d in diffs:
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(d.data)
        out[d.doc] = decode_state_vector(bytes(doc.get_state()))
    return out


def _covers(have: dict[int, int], claimed: dict[int, int]) -> bool:
    return all(have.get(c, 0) >= k for c, k in claimed.items())


def test_failed_commit_acks_nothing_of_it_nor_what_was_applied_on_top(tmp_path: Path) -> None:
    store = FailOnce(str(tmp_path / "relay.db"))
    tokens = {r: issue_token(store, tenant="acme", replica_id=r) for r in ("t1", "t2", "t3")}

    async def main() -> None:
        server = RelayServer(store, host="127.0.0.1", port=0)
        await server.start()
        try:
            a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
            b = await Client.open(server.port, replica="t2", token=tokens["t2"], client_id=22)
            await a.until_synced()
            await b.until_synced()
            wa, wb = Writer(11), Writer(22, "t2")
            update_a, update_b = wa.set("a", 1), wb.set("b", 2)

            store.armed = True
            await a.send_update("catalog", update_a)  # its commit will fail
            await asyncio.to_thread(store.entered.wait, 5)
            await b.send_update("catalog", update_b)  # applied on top of A, queued
            await _until(lambda: server.queue_depth() >= 1)
            store.release.set()

            # neither session is acknowledged; both are closed as a storage failure
            assert await a.closed() == (CLOSE_INTERNAL, "storage failure")
            assert await b.closed() == (CLOSE_INTERNAL, "storage failure")
            assert not any(isinstance(e, Ack) for e in a.events + b.events)
            assert [[e.doc for e in batch] for batch in store.failed_batches] == [["catalog"]]
            # nothing of either reached storage, not even through B's state vector
            assert store.load_doc("acme", "catalog").updates == []
            stored = store.state_vectors("acme").get("catalog")
            assert stored is None or decode_state_vector(stored) == {}

            # the next writes are stored and acknowledged
            b2 = await Client.open(server.port, replica="t2", token=tokens["t2"], client_id=22)
            await b2.until_synced()
            await b2.send_update("catalog", update_b)
            ack = await b2.wait_for(Ack)
            assert (ack.doc, ack.client_id, ack.clock) == ("catalog", 22, 1)
            assert decode_state_vector(store.state_vectors("acme")["catalog"]) == {22: 1}

            # a fresh replica gets everything the WELCOME claims (and only B so far)
            c = await Client.open(server.port, replica="t3", token=tokens["t3"], client_id=33)
            welcome, diffs = await c.until_synced()
            claimed = {d: decode_state_vector(sv) for d, sv in welcome.state_vectors.items()}
            assert claimed == {"catalog": {22: 1}}
            served = _served(diffs)
            assert all(_covers(served.get(d, {}), sv) for d, sv in claimed.items())

            # A, sent again by its replica, is stored and acknowledged too
            a2 = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
            await a2.until_synced()
            await a2.send_update("catalog", update_a)
            ack = await a2.wait_for(Ack)
            assert (ack.doc, ack.client_id, ack.clock) == ("catalog", 11, 1)
            d = await Client.open(server.port, replica="t3", token=tokens["t3"], client_id=33)
            welcome, diffs = await d.until_synced()
            assert decode_state_vector(welcome.state_vectors["catalog"]) == {11: 1, 22: 1}
            assert _served(diffs)["catalog"] == {11: 1, 22: 1}
            for cl in (b2, c, a2, d):
                await cl.close()
        finally:
            await server.stop()

        # a restart finds nothing to repair: storage never held a lie
        again = RelayServer(store, host="127.0.0.1", port=0)
        await again.start()
        try:
            assert again.verified is not None and again.verified.clean
        finally:
            await again.stop()

    try:
        run(main())
    finally:
        store.close()


def test_a_failed_commit_leaves_no_transaction_open(tmp_path: Path) -> None:
    """A failed COMMIT must not leave its rows to be committed with the next write."""
    store = SqliteRelayStore(str(tmp_path / "relay.db"))
    try:
        doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=5)
        doc.get("root", type=pycrdt.Map)["x"] = 1
        entry = AppendEntry("acme", "catalog", bytes(doc.get_update()), "t1", doc.get_state())
        real_conn = store.conn

        class CommitFails:
            """The connection, but its next COMMIT fails like a full disk."""

            def __getattr__(self, name: str) -> Any:
                return getattr(real_conn, name)

            def execute(self, sql: str, *args: Any) -> Any:
                if sql == "COMMIT":
                    raise sqlite3.OperationalError("database or disk is full")
                return real_conn.execute(sql, *args)

        store.conn = CommitFails()  # type: ignore[assignment]
        try:
            store.append_many([entry])
        except StorageError:
            pass
        else:
            raise AssertionError("the write should have failed")
        store.conn = real_conn
        assert not real_conn.in_transaction
        # the store is usable again, and the failed rows are gone
        store.set_replica_config("acme", "t1", {"interval_s": 5})
        assert store.load_doc("acme", "catalog").updates == []
        assert store.state_vectors("acme") == {}
    finally:
        store.close()
