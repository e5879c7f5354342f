"""A store moves to a document's next generation (docs/generations.md), end to end.

A real relay (websockets on 127.0.0.1, a SQLite store of record) is restarted
with rollover on, so every counter and LWW document starts a new generation;
real replicas on real files then sync: their writes to the old generation are
carried, they replace the old generation by the new one once those writes are
acknowledged, and other processes sharing a file see the new one, not both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from tests.store.test_client import RelayThread, wait_until
from tests.support.rollovers import EVERYTHING
from tiendasync import Replica
from tiendasync.crdt.counter import PNCounter
from tiendasync.crdt.generations import slot_count
from tiendasync.relay import SqliteRelayStore
from tiendasync.relay.auth import issue_token
from tiendasync.relay.docs import replay
from tiendasync.relay.generations import RolloverPolicy

STOCK = "stock/t1"


class Relay(RelayThread):
    """The relay of ``tests/store/test_client.py`` on ``path`` (``rollover``: at every
    start, ``rollover_interval=0``), its central writer kept across restarts, as in
    production."""

    def __init__(self, path: Path, rollover: RolloverPolicy | None = None) -> None:
        super().__init__(path.parent, rollover=rollover, rollover_interval=0)

    def central_stock(self, sku: str, location: str = "t1") -> int:
        """What the relay's own writer (the invariant review) counts."""
        writer = self.call(lambda: self.server.core.central("acme"))
        return int(self.call(lambda: writer.replica.inventory.stock(sku, location=location)))


def _stock_at_relay(relay_db: Path, doc: str = STOCK) -> dict[str, int]:
    store = SqliteRelayStore(str(relay_db))
    try:
        current, _ = replay(store.load_doc("acme", doc), "acme", doc)
        return dict(PNCounter(current).items())
    finally:
        store.close()


def _tokens(relay_db: Path, names: list[str]) -> dict[str, str]:
    store = SqliteRelayStore(str(relay_db))
    try:
        return {n: issue_token(store, tenant="acme", replica_id=n) for n in names}
    finally:
        store.close()


def _with_relay(
    relay_db: Path, rollover: RolloverPolicy | None, body: Callable[[Relay], Any]
) -> Any:
    relay = Relay(relay_db, rollover)
    try:
        return body(relay)
    finally:
        relay.close()


def _slots(r: Replica, doc: str = STOCK) -> int:
    with r.core.locked():
        return slot_count("counter", r.core.docs.doc(doc))


def test_stores_move_to_each_new_generation_and_count_every_sale_once(tmp_path: Path) -> None:
    relay_db = tmp_path / "relay.db"
    tokens = _tokens(relay_db, ["t1", "t2"])
    roll = EVERYTHING
    t1 = Replica.open(tmp_path / "t1.db", tenant="acme", replica_id="t1", location="t1")
    t2 = Replica.open(tmp_path / "t2.db", tenant="acme", replica_id="t2", location="t1")
    try:
        t1.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
        t1.inventory.receive("CAFE", 100)
        t1.record_sale([("CAFE", 2)])

        def first(relay: Relay) -> None:
            assert t1.sync_now(relay.url, token=tokens["t1"]).outcome == "ok"
            assert t2.sync_now(relay.url, token=tokens["t2"]).outcome == "ok"
            _wait(lambda: relay.central_stock("CAFE") == 98)

        _with_relay(relay_db, None, first)
        assert t2.inventory.stock("CAFE") == 98
        # Offline across the rollover: these are writes to generation 0.
        t1.record_sale([("CAFE", 3)])
        t2.record_sale([("CAFE", 1)])
        # A second process of t1 holds the stock document loaded at generation 0.
        other = Replica.open(tmp_path / "t1.db")
        assert other.inventory.stock("CAFE") == 95

        def second(relay: Relay) -> None:
            assert relay.store.generations("acme")[STOCK] == 1
            assert t1.sync_now(relay.url, token=tokens["t1"]).outcome == "ok"
            assert t2.sync_now(relay.url, token=tokens["t2"]).outcome == "ok"
            assert t1.sync_now(relay.url, token=tokens["t1"]).outcome == "ok"
            # the review's own copy moved too: it counts what the stores count
            _wait(lambda: relay.central_stock("CAFE") == 94)

        _with_relay(relay_db, roll, second)
        for r in (t1, t2):
            assert r.core.generations()[STOCK] == 1
            assert r.core.generations()["catalog"] == 1
            assert r.inventory.stock("CAFE") == 94  # 100 - 2 - 3 - 1, each once
            assert r.catalog.get("CAFE") is not None
        assert _stock_at_relay(relay_db) == {"CAFE": 94}
        # The other process drops its generation 0 instead of merging both.
        assert other.inventory.stock("CAFE") == 94
        other.record_sale([("CAFE", 4)])  # a write to generation 1
        assert t1.inventory.stock("CAFE") == 90
        seeded = _slots(t1)

        def third(relay: Relay) -> None:
            for r, name in ((t1, "t1"), (t2, "t2"), (t1, "t1")):
                assert r.sync_now(relay.url, token=tokens[name]).outcome == "ok"

        _with_relay(relay_db, None, third)
        assert t2.inventory.stock("CAFE") == 90
        # And the next rollover: generation 2, from stores already at 1.
        t2.record_sale([("CAFE", 5)])
        _with_relay(relay_db, roll, third)
        for r in (t1, t2):
            assert r.core.generations()[STOCK] == 2
            assert r.inventory.stock("CAFE") == 85
        assert not t1.conflicts.list()  # no false negative stock from a double count
        assert _stock_at_relay(relay_db) == {"CAFE": 85}
        assert _slots(t1) <= seeded  # folded again: one seeded slot per SKU
        other.close()
    finally:
        t1.close()
        t2.close()


def test_a_write_to_the_old_generation_is_sent_before_the_move(tmp_path: Path) -> None:
    """The move waits for the acknowledgement of every write to the old generation, so
    a queue entry never points into a generation that has left the file."""
    relay_db = tmp_path / "relay.db"
    tokens = _tokens(relay_db, ["t1"])
    t1 = Replica.open(tmp_path / "t1.db", tenant="acme", replica_id="t1", location="t1")
    try:
        t1.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
        t1.inventory.receive("CAFE", 10)
        _with_relay(relay_db, None, lambda relay: t1.sync_now(relay.url, token=tokens["t1"]))
        t1.record_sale([("CAFE", 1)])
        assert t1.core.storage.outbox.has_unacknowledged(STOCK)
        # Not acknowledged: the store keeps generation 0 of it.
        assert not t1.core.move_generation(STOCK, 1, bytes(pycrdt.Doc().get_update()))
        assert t1.inventory.stock("CAFE") == 9

        def sync(relay: Relay) -> None:
            assert t1.sync_now(relay.url, token=tokens["t1"]).outcome == "ok"

        _with_relay(relay_db, EVERYTHING, sync)
        assert t1.core.generations()[STOCK] == 1
        assert not t1.core.storage.outbox.has_unacknowledged(STOCK)
        assert t1.inventory.stock("CAFE") == 9
        assert _stock_at_relay(relay_db) == {"CAFE": 9}
    finally:
        t1.close()


def test_a_live_store_moves_and_syncs_on(tmp_path: Path) -> None:
    """Background sync: the session that moves ends, the next one runs at generation 1."""
    relay_db = tmp_path / "relay.db"
    tokens = _tokens(relay_db, ["t1", "t2"])
    t1 = Replica.open(tmp_path / "t1.db", tenant="acme", replica_id="t1", location="t1")
    t2 = Replica.open(tmp_path / "t2.db", tenant="acme", replica_id="t2", location="t1")
    try:
        t1.inventory.receive("CAFE", 20)
        _with_relay(relay_db, None, lambda relay: t1.sync_now(relay.url, token=tokens["t1"]))
        t1.inventory.receive("CAFE", 5)  # offline, generation 0

        def live(relay: Relay) -> None:
            t1.start_sync(relay.url, token=tokens["t1"])
            try:
                _wait(lambda: t1.core.generations().get(STOCK) == 1)
                t1.inventory.receive("CAFE", 7)  # generation 1, streamed live
                assert t2.sync_now(relay.url, token=tokens["t2"]).outcome == "ok"
                _wait(lambda: _refresh(t2, relay, tokens["t2"]) == 32)
            finally:
                t1.stop_sync()

        _with_relay(relay_db, EVERYTHING, live)
        assert t1.inventory.stock("CAFE") == 32
        assert t2.core.generations()[STOCK] == 1
    finally:
        t1.close()
        t2.close()


def _refresh(r: Replica, relay: Relay, token: str) -> int:
    r.sync_now(relay.url, token=token)
    return r.inventory.stock("CAFE")


_wait = wait_until


def _seeded(total_in: int, total_out: int, writer: int = 900) -> bytes:
    """A next generation of a stock document: one slot per SKU under ``writer``."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=writer)
    with doc.transaction():
        PNCounter(doc).add("CAFE", total_in)
        PNCounter(doc).add("CAFE", -total_out)
    return bytes(doc.get_update())


def test_another_process_drops_the_old_generation_and_writes_to_the_new(tmp_path: Path) -> None:
    path = tmp_path / "t1.db"
    a = Replica.open(path, tenant="acme", replica_id="t1", location="t1")
    b = Replica.open(path)
    try:
        a.inventory.receive("CAFE", 10)
        b.inventory.receive("CAFE", 5)
        assert b.inventory.stock("CAFE") == 15  # b holds generation 0 loaded
        for writer in a.own_client_ids() | b.own_client_ids():  # as the relay's ACKs would
            with a.core.transaction():
                a.core.storage.outbox.acknowledge(STOCK, writer, 2**40, 0.0)
        # the relay folded 15 into one slot; another store's sale of 2 was carried
        a.core.changes.drain_touched()
        assert a.core.move_generation(STOCK, 1, _seeded(15, 2))
        # no CRDT event told of the -2: every SKU of the new generation counts as changed
        assert a.core.changes.drain_touched() == {("t1", "CAFE")}
        assert a.inventory.stock("CAFE") == 13
        assert b.inventory.stock("CAFE") == 13  # not 28: the old one is dropped, not merged
        b.inventory.receive("CAFE", 1)  # lands in generation 1
        assert a.inventory.stock("CAFE") == 14
        with Replica.open(path) as c:
            assert c.inventory.stock("CAFE") == 14
            assert c.core.generations() == {STOCK: 1}
    finally:
        a.close()
        b.close()


def test_a_write_racing_a_move_is_redone_on_the_new_generation(tmp_path: Path) -> None:
    """Another process moves the document between this write's mutation and its commit
    (the mutation below does the move itself, at exactly that point)."""
    from tiendasync.store.core import WriteSpec

    path = tmp_path / "t1.db"
    a = Replica.open(path, tenant="acme", replica_id="t1", location="t1")
    b = Replica.open(path)
    try:
        a.inventory.receive("CAFE", 10)
        for writer in a.own_client_ids():
            with a.core.transaction():
                a.core.storage.outbox.acknowledge(STOCK, writer, 2**40, 0.0)
        assert b.inventory.stock("CAFE") == 10
        runs: list[int] = []

        def receive_one() -> None:
            if not runs:
                assert a.core.move_generation(STOCK, 1, _seeded(10, 0))
            runs.append(1)
            b.core.counter("t1").add("CAFE", 1)

        b.core.local_write(WriteSpec("receive", "stock", "receive 1"), receive_one)
        assert len(runs) == 2  # the first run wrote to generation 0: redone on 1
        assert b.inventory.stock("CAFE") == 11
        assert a.inventory.stock("CAFE") == 11
        with Replica.open(path) as c:
            assert c.inventory.stock("CAFE") == 11
    finally:
        a.close()
        b.close()


def test_a_conflict_the_relay_opens_in_the_new_generation_reaches_the_queue(
    tmp_path: Path,
) -> None:
    """What the new generation brings arrives with no CRDT event at the move: the store
    still sees every entity of it as changed (here: the conflict mirror on the queue)."""
    relay_db = tmp_path / "relay.db"
    tokens = _tokens(relay_db, ["t1"])
    t1 = Replica.open(tmp_path / "t1.db", tenant="acme", replica_id="t1", location="t1")
    try:
        for sku in ("CAFE", "PAN"):
            t1.catalog.put(sku, {"name": sku.title(), "price_cents": 100})
        t1.inventory.receive("CAFE", 1)
        t1.record_sale([("CAFE", 2)])  # negative: the relay opens a first conflict

        def sync(relay: Relay) -> None:
            assert t1.sync_now(relay.url, token=tokens["t1"]).outcome == "ok"

        _with_relay(relay_db, None, sync)
        assert len(t1.conflicts.list()) == 1
        sale = t1.record_sale([("PAN", 1)])  # offline, and negative too
        _with_relay(relay_db, EVERYTHING, sync)
        assert t1.core.generations()["conflicts"] == 1
        assert len(t1.conflicts.list()) == 2  # the second one came in generation 1
        [entry] = [e for e in t1.queue.list() if e.ref == sale.id]
        assert entry.has_conflict and entry.status == "conflict"
    finally:
        t1.close()


def test_a_store_two_generations_behind_with_nothing_to_send_moves_to_the_current(
    tmp_path: Path,
) -> None:
    relay_db = tmp_path / "relay.db"
    tokens = _tokens(relay_db, ["t1", "t2"])
    roll = EVERYTHING
    t1 = Replica.open(tmp_path / "t1.db", tenant="acme", replica_id="t1", location="t1")
    t2 = Replica.open(tmp_path / "t2.db", tenant="acme", replica_id="t2", location="t1")
    try:
        t1.inventory.receive("CAFE", 20)

        def both(relay: Relay) -> None:
            for r, name in ((t1, "t1"), (t2, "t2")):
                assert r.sync_now(relay.url, token=tokens[name]).outcome == "ok"

        _with_relay(relay_db, None, both)
        _with_relay(relay_db, roll, lambda relay: t1.sync_now(relay.url, token=tokens["t1"]))
        t1.inventory.receive("CAFE", 1)  # generation 1
        _with_relay(relay_db, None, lambda relay: t1.sync_now(relay.url, token=tokens["t1"]))
        _with_relay(relay_db, roll, lambda relay: None)  # generation 2; t2 still holds 0
        _with_relay(relay_db, None, both)
        assert t2.core.generations()[STOCK] == 2
        assert t2.inventory.stock("CAFE") == 21
    finally:
        t1.close()
        t2.close()


def test_a_relay_that_sends_an_unexpected_next_generation_is_refused(tmp_path: Path) -> None:
    """A NEXT frame for a document the store does not hold a generation behind (or of
    another generation, or malformed) ends the session as a protocol error; the file
    keeps its generation."""
    from tiendasync.errors import ProtocolError
    from tiendasync.protocol import RelayConnection
    from tiendasync.store.sync_session import ReplicaSync

    with Replica.open(tmp_path / "t1.db", tenant="acme", replica_id="t1", location="t1") as r:
        r.inventory.receive("CAFE", 3)
        # (told it is behind on the stock document?, generation sent, update sent)
        cases = [(False, 1, _seeded(3, 0)), (True, 2, _seeded(3, 0)), (True, 1, b"\xff\xff")]
        for behind, generation, data in cases:
            sync = ReplicaSync(r, "tok", clock=lambda: 0.0)
            sync.start()
            relay = RelayConnection()
            relay.receive_data(sync.data_to_send())
            relay.events()
            relay.accept("s1", {}, None)
            if behind:
                relay.announce_generations({STOCK: 1})
            relay.send_next(STOCK, generation, data)
            sync.receive_data(relay.data_to_send())
            assert isinstance(sync.error, ProtocolError), (behind, generation)
            assert sync.closed
        assert r.core.generations() == {}
        assert r.inventory.stock("CAFE") == 3


def test_a_garbage_generations_record_in_the_file_is_corrupt_data(tmp_path: Path) -> None:
    import sqlite3

    from tiendasync import CorruptData

    path = tmp_path / "t1.db"
    Replica.open(path, tenant="acme", replica_id="t1", location="t1").close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('generations', ?)", ('{"stock/t1": -1}',)
        )
    with pytest.raises(CorruptData, match="garbage 'generations'"):
        Replica.open(path).close()  # refused at open, with what to do
