"""A document rolls over while the relay runs and stores sell (docs/generations.md).

A real relay (websockets on 127.0.0.1, a SQLite store of record, its central
writer) cuts the stock document while two stores sync live and keep
selling from other threads: the stores are sent to a new session, come back
a generation behind, move over, and every sale counts once everywhere: in
both stores, in the relay's store of record and in the relay's own review.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

from tests.store.test_client import RelayThread
from tests.store.test_generations_replica import STOCK, _stock_at_relay, _wait
from tests.support.rollovers import EVERYTHING
from tiendasync import Replica
from tiendasync.crdt.counter import PNCounter
from tiendasync.relay.generations import RolloverPolicy
from tiendasync.relay.storage import SqliteRelayStore


def _central_stock(relay: RelayThread, sku: str) -> int:
    writer = relay.call(lambda: relay.server.core.central("acme"))
    return int(relay.call(lambda: writer.replica.inventory.stock(sku, location="t1")))


def _open(tmp: Path, name: str) -> Replica:
    return Replica.open(tmp / f"{name}.db", tenant="acme", replica_id=name, location="t1")


def _sell(r: Replica, stop: threading.Event, sold: list[int], lull: threading.Event) -> None:
    while not stop.is_set():
        if lull.is_set():
            time.sleep(0.01)
            continue
        r.record_sale([("CAFE", 1)])
        sold.append(1)
        time.sleep(0.02)


def _watch(r: Replica, stop: threading.Event, seen: list[int]) -> None:
    while not stop.is_set():
        seen.append(r.inventory.stock("CAFE"))
        time.sleep(0.005)


def test_rolling_over_while_stores_sell_counts_every_sale_once(tmp_path: Path) -> None:
    relay = RelayThread(tmp_path, rollover=EVERYTHING)
    t1, t2 = _open(tmp_path, "t1"), _open(tmp_path, "t2")
    stop = threading.Event()
    sold: dict[str, list[int]] = {"t1": [], "t2": []}
    seen: list[int] = []  # what another process of t2's file reads, all along
    lull = threading.Event()
    sellers = [
        threading.Thread(target=_sell, args=(r, stop, sold[r.replica_id], lull)) for r in (t1, t2)
    ]
    try:
        t1.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
        t1.inventory.receive("CAFE", 100_000)
        for r in (t1, t2):
            r.start_sync(relay.url, token=relay.token(r.replica_id))
        _wait(lambda: t2.inventory.stock("CAFE") == 100_000)
        watcher = _open(tmp_path, "t2")
        sellers.append(threading.Thread(target=_watch, args=(watcher, stop, seen)))
        for seller in sellers:
            seller.start()
        generations = []
        for _ in range(3):
            time.sleep(0.3)
            generations.append(relay.run(relay.server.roll_over("acme", STOCK)))
            # Both move over before the next cut (a store further behind is the
            # test below's).  A store moves once all its writes to the old generation
            # are acknowledged:
            # selling every 20 ms, faster than a late sale is carried here, it never
            # is; a till moves at its first pause (docs/generations.md), so pause.
            lull.set()
            _wait(lambda: all(r.core.generations().get(STOCK) == generations[-1] for r in (t1, t2)))
            lull.clear()
        time.sleep(0.3)
        stop.set()
        for seller in sellers:
            seller.join(10)
        watcher.close()
        assert generations == [1, 2, 3]
        # Never both generations at once: only sales happen, so the stock only falls.
        assert len(seen) > 50 and max(seen) <= 100_000
        total = 100_000 - len(sold["t1"]) - len(sold["t2"])
        assert len(sold["t1"]) > 10 and len(sold["t2"]) > 10

        def settled() -> bool:
            return all(
                r.core.generations().get(STOCK) == 3 and r.inventory.stock("CAFE") == total
                for r in (t1, t2)
            )

        _wait(settled, timeout=30)
        _wait(lambda: _stock_at_relay(tmp_path / "relay.db") == {"CAFE": total})
        _wait(lambda: _central_stock(relay, "CAFE") == total)
        assert relay.server.live_rollover is not None
        # The relay's copy in memory is the last generation, not the three merged.
        rdoc = relay.call(lambda: relay.server.docs.get("acme", STOCK))
        assert relay.call(lambda: dict(PNCounter(rdoc.doc).items())) == {"CAFE": total}
        assert relay.server.live_rollover.count == 3
    finally:
        stop.set()
        for r in (t1, t2):
            r.stop_sync()
            r.close()
        relay.close()


def test_the_relay_rolls_a_document_over_by_itself_while_running(tmp_path: Path) -> None:
    relay = RelayThread(tmp_path, rollover=RolloverPolicy(max_slots=3), rollover_interval=0.5)
    t1, t2 = _open(tmp_path, "t1"), _open(tmp_path, "t2")
    try:
        t1.inventory.receive("CAFE", 50)
        for r in (t1, t2):
            r.start_sync(relay.url, token=relay.token(r.replica_id))
        for r in (t1, t2):  # t2's four slots beside t1's: a cut folds four, past the bound
            for sku in ("TE", "PAN", "LECHE", "AZUCAR"):
                r.inventory.receive(sku, 5)
        _wait(lambda: relay.store.generations("acme").get(STOCK, 0) >= 1, timeout=20)
        _wait(lambda: t1.core.generations().get(STOCK, 0) >= 1, timeout=20)
        t1.record_sale([("CAFE", 2)])
        _wait(lambda: _stock_at_relay(tmp_path / "relay.db").get("CAFE") == 48)
        assert t1.inventory.stock("CAFE") == 48
        _wait(lambda: t1.inventory.stock("PAN") == 10)
    finally:
        for r in (t1, t2):
            r.stop_sync()
            r.close()
        relay.close()


def test_a_hello_that_arrives_during_the_cut_waits_for_it(tmp_path: Path) -> None:
    """A store connecting while the cut is being stored is welcomed after it, at the
    new generation's facts: welcomed before, it would merge the new one into its old."""
    relay = RelayThread(tmp_path, rollover=EVERYTHING)
    t1 = _open(tmp_path, "t1")
    token = relay.token("t1")
    entered, release = threading.Event(), threading.Event()
    real = relay.server.generations.roll_over

    def slow_cut(tenant: str, doc: str) -> int:
        entered.set()
        assert release.wait(10)
        return real(tenant, doc)

    try:
        t1.inventory.receive("CAFE", 10)
        assert t1.sync_now(relay.url, token=token).outcome == "ok"
        relay.server.generations.roll_over = slow_cut  # type: ignore[method-assign]
        rolled = asyncio.run_coroutine_threadsafe(relay.server.roll_over("acme", STOCK), relay.loop)
        assert entered.wait(10)
        t1.inventory.receive("CAFE", 5)  # generation 0, sent during the cut
        outcomes: list[str] = []
        syncing = threading.Thread(
            target=lambda: outcomes.append(t1.sync_now(relay.url, token=token).outcome)
        )
        syncing.start()
        time.sleep(0.5)
        assert syncing.is_alive()  # its HELLO waits for the cut
        release.set()
        assert rolled.result(10) == 1
        syncing.join(20)
        assert outcomes == ["ok"]
        _wait(lambda: t1.sync_now(relay.url, token=token).outcome == "ok" and _moved(t1))
        assert t1.inventory.stock("CAFE") == 15
        assert _stock_at_relay(tmp_path / "relay.db") == {"CAFE": 15}
        _wait(lambda: _central_stock(relay, "CAFE") == 15)
    finally:
        release.set()
        t1.close()
        relay.close()


def _moved(r: Replica) -> bool:
    return r.core.generations().get(STOCK) == 1


def test_a_catalog_whose_seed_is_past_the_bound_rolls_over_once_not_at_every_interval(
    tmp_path: Path,
) -> None:
    """400 products (800 slots) under a bound of 50: one writer's catalog folds nothing,
    so it stays at generation 0 through checks at two intervals; another store's 60 edits
    fold 60 slots, so it rolls over once, and the new generation (its seed alone still
    16 times the bound) stays through two more intervals."""
    relay = RelayThread(tmp_path, rollover=RolloverPolicy(max_slots=50), rollover_interval=0.5)
    t1, t2 = _open(tmp_path, "t1"), _open(tmp_path, "t2")
    live = relay.server.live_rollover
    assert live is not None and live.schedule is not None

    def generation() -> int:
        return relay.store.generations("acme").get("catalog", 0)

    def edit_through_checks(checks: int) -> None:
        """t1 keeps editing one product (the catalog changes at every interval) until the
        relay has checked it ``checks`` more times."""
        until = relay.call(lambda: live.checked) + checks
        price = 0
        while relay.call(lambda: live.checked) < until:
            price += 1
            t1.catalog.put("P0000", {"price_cents": 100 + price})
            time.sleep(0.1)

    try:
        t1.catalog.put_many(
            {f"P{i:04d}": {"name": f"Producto {i}", "price_cents": 100 + i} for i in range(400)}
        )
        for r in (t1, t2):
            r.start_sync(relay.url, token=relay.token(r.replica_id))
        _wait(lambda: t2.catalog.get("P0399") is not None)
        edit_through_checks(2)
        assert generation() == 0 and live.count == 0
        for i in range(1, 61):  # t2's slots beside t1's: a cut folds 60, past the bound
            t2.catalog.put(f"P{i:04d}", {"price_cents": 999})
        _wait(lambda: generation() == 1, timeout=20)
        _wait(lambda: all(r.core.generations().get("catalog") == 1 for r in (t1, t2)))
        edit_through_checks(2)
        assert generation() == 1 and live.count == 1
        _wait(lambda: t1.catalog.get("P0060") == {"name": "Producto 60", "price_cents": 999})
        assert t2.catalog.get("P0000") is not None
    finally:
        for r in (t1, t2):
            r.stop_sync()
            r.close()
        relay.close()


def test_a_till_offline_across_three_cuts_has_every_sale_carried_once(tmp_path: Path) -> None:
    """t2 sells and edits a price offline while the relay cuts stock and catalog three
    times (t1 online, following every cut); back online, t2's writes to generation 0 are
    carried straight into generation 3, once, and t2 moves there in one step."""
    relay = RelayThread(tmp_path, rollover=EVERYTHING)
    t1, t2 = _open(tmp_path, "t1"), _open(tmp_path, "t2")
    try:
        t1.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
        t1.inventory.receive("CAFE", 100)
        for r in (t1, t2):
            assert r.sync_now(relay.url, token=relay.token(r.replica_id)).outcome == "ok"
        assert t2.inventory.stock("CAFE") == 100
        t1.start_sync(relay.url, token=relay.token("t1"))
        for cut in (1, 2, 3):
            for doc in (STOCK, "catalog"):
                assert relay.run(relay.server.roll_over("acme", doc)) == cut
            t1.record_sale([("CAFE", 1)])
            t2.record_sale([("CAFE", 2)])  # offline: generation 0
            _wait(lambda: t1.core.generations().get(STOCK) == cut)  # noqa: B023
        t2.catalog.put("CAFE", {"price_cents": 500})
        assert t2.core.generations().get(STOCK, 0) == 0
        total = 100 - 3 - 6
        for _ in range(3):  # catch up, carry, move (each may end the session for a new one)
            assert t2.sync_now(relay.url, token=relay.token("t2")).outcome == "ok"
        held = t2.core.generations()
        assert held[STOCK] == held["catalog"] == 3
        with SqliteRelayStore(str(tmp_path / "relay.db")) as store:  # carried from 0
            assert store.load_generation("acme", STOCK, 0).updates
            assert store.load_generation("acme", "catalog", 0).updates
        _wait(lambda: _stock_at_relay(tmp_path / "relay.db") == {"CAFE": total})
        _wait(lambda: t1.inventory.stock("CAFE") == total and t2.inventory.stock("CAFE") == total)
        _wait(lambda: _central_stock(relay, "CAFE") == total)
        _wait(lambda: t1.catalog.get("CAFE") == {"name": "Café", "price_cents": 500})
        assert t2.catalog.get("CAFE") == {"name": "Café", "price_cents": 500}
        assert len(t1.sales.list()) == len(t2.sales.list()) == 6
    finally:
        for r in (t1, t2):
            r.stop_sync()
            r.close()
        relay.close()


def test_restarts_do_not_cut_more_often_than_the_rollover_interval(tmp_path: Path) -> None:
    """A start rolls over what is due, unless its current generation began less than
    ``rollover_interval`` ago: a relay restarted every few minutes does not cut at each
    start.  What the start skipped, the live check waits for from the cut, not from the
    start (a relay restarted more often than the interval still cuts).  0 keeps cutting
    at every start."""
    t1 = _open(tmp_path, "t1")
    try:
        t1.inventory.receive("CAFE", 5)

        def start(interval: float) -> RelayThread:
            relay = RelayThread(tmp_path, rollover=EVERYTHING, rollover_interval=interval)
            assert t1.sync_now(relay.url, token=relay.token("t1")).outcome == "ok"
            return relay

        def generation() -> int:
            with SqliteRelayStore(str(tmp_path / "relay.db")) as store:
                return store.generations("acme").get(STOCK, 0)

        start(3600).close()  # the stock is stored, never cut
        relay = start(3600)
        assert generation() == 1  # due, and never cut: cut at start
        relay.close()
        relay = start(3600)
        assert generation() == 1  # cut a moment ago: left alone
        live = relay.server.live_rollover
        assert live is not None and live.schedule is not None
        schedule = live.schedule
        last = schedule._last[("acme", STOCK)]
        assert schedule.started_at - 60 < last < schedule.started_at  # from the cut
        relay.close()
        relay = start(0)
        assert generation() == 2
        relay.close()
        assert t1.inventory.stock("CAFE") == 5
    finally:
        t1.close()
