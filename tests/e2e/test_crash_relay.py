"""Crash safety while syncing: SIGKILL a selling-and-syncing till, and SIGKILL the relay.

``test_crash.py`` kills a till that only writes.  Here the till also streams
its sales to a live relay process (``start_sync``), so kills land in the
middle of writes, acknowledgements and catch-ups; and the relay process is
killed while tills stream to it.

* Till kills: every sale whose ``record_sale`` returned (the child printed
  its id afterwards) survives, sales / stock / queue agree, and ``PRAGMA
  integrity_check`` is ok.  At the end the till flushes and a fresh replica
  full-syncing from the relay holds every sale.
* Relay kills: right after each kill (relay down, so no new ACK can arrive)
  each till's database says which (doc, client id, clock) the relay
  acknowledged; the relay database, replayed from its stored bytes, must hold
  all of them before the relay restarts.  At the end a fresh replica
  full-syncing from the restarted relay holds every sale.

``TIENDASYNC_CRASH_CYCLES`` (default 14) sets the till kills; the relay
kills are half that (at least 6).  ``TIENDASYNC_CRASH_SEED`` fixes the
random delays.
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.support.tills import INITIAL, Relay, Till, setup_till, storage_errors
from tiendasync import Replica
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.relay import SqliteRelayStore
from tiendasync.relay.docs import DocCache

CYCLES = int(os.environ.get("TIENDASYNC_CRASH_CYCLES", "14"))
RELAY_KILLS = max(6, CYCLES // 2)
SEED = os.environ.get("TIENDASYNC_CRASH_SEED")

TILL = """
import sys, time
from tiendasync import Replica, StorageError

db, url, token, pause = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
r = Replica.open(db)
r.start_sync(url, token=token)
print("READY", flush=True)
while True:
    try:
        sale = r.record_sale([("CAFE", 1)])
    except StorageError as exc:  # must not happen: counted and asserted by the parent
        print("ERR", exc, file=sys.stderr, flush=True)
        continue
    print(sale.id, flush=True)
    if pause:
        time.sleep(pause)
"""


def _check_till(db: Path, reported: list[str], kills: int) -> int:
    """Every reported sale present, books agree, SQLite intact.  Returns the sale count."""
    with Replica.open(db) as r:
        missing = [i for i in reported if r.sales.get(i) is None]
        assert missing == [], f"returned sales lost: {missing[:3]}"
        present = r.sales.count()
        assert len(reported) <= present <= len(reported) + kills
        assert r.inventory.stock("CAFE") == INITIAL - present
        assert len(r.queue.list(kind="sale", limit=10 * INITIAL)) == present
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    return present


def _fresh_full_sync(relay: Relay, tmp: Path, replica: str) -> set[str]:
    with Replica.open(
        tmp / f"{replica}.db", tenant="acme", replica_id=replica, location=replica
    ) as fresh:
        fresh.sync_now(relay.url, token=relay.tokens[replica], full=True)
        return {s.id for s in fresh.sales.list(limit=10 * INITIAL)}


STUCK: dict[str, int] = {}


def _flush(db: Path, relay: Relay, replica: str) -> set[str]:
    """Sync until the relay holds every local write; the till's sale ids.

    Entries whose update the relay stored but whose ACK the kill swallowed
    stay 'sent' (see test_acked_by_state_vector_on_reconnect): counted in
    STUCK, and checked against the relay's state vectors instead.
    """
    with Replica.open(db) as r:
        r.sync_now(relay.url, token=relay.tokens[replica])
        STUCK[replica] = r.status.pending
        with SqliteRelayStore(relay.db) as store:
            for doc in r.doc_names():
                local = decode_state_vector(r.state_vector(doc))
                held = store.state_vectors("acme").get(doc)
                remote = decode_state_vector(held) if held else {}
                own = r.own_client_ids()
                lacking = {c: k for c, k in local.items() if c in own and remote.get(c, 0) < k}
                assert lacking == {}, f"the relay lacks {doc} {lacking}"
        return {s.id for s in r.sales.list(limit=10 * INITIAL)}


@pytest.mark.slow
def test_sigkill_selling_and_syncing_till(tmp_path: Path) -> None:
    till_kills(tmp_path, CYCLES)


@pytest.mark.slow
def test_sigkill_relay_while_tills_stream(tmp_path: Path) -> None:
    relay_kills(tmp_path, RELAY_KILLS)


@pytest.mark.soak
@pytest.mark.skipif(not os.environ.get("TIENDASYNC_SOAK"), reason="set TIENDASYNC_SOAK=1")
def test_crash_long(tmp_path: Path) -> None:
    """``make soak``: TIENDASYNC_CRASH_CYCLES till kills and half as many relay kills."""
    till_kills(tmp_path / "till", CYCLES)
    relay_kills(tmp_path / "relay", RELAY_KILLS)


def till_kills(tmp_path: Path, cycles: int) -> None:
    tmp_path.mkdir(exist_ok=True)
    rng = random.Random(SEED)
    relay = Relay(tmp_path, ["till", "auditor"])
    relay.start()
    script = tmp_path / "till.py"
    script.write_text(TILL)
    db = tmp_path / "till.db"
    setup_till(db, "till", "t1")
    reported: list[str] = []
    landed = 0
    try:
        for cycle in range(cycles):
            till = Till(script, db, relay, "till")
            if cycle % 4 != 3:  # mostly in the sale/sync loop; sometimes during open/connect
                assert till.ready.wait(30), "till never became ready"
            time.sleep(rng.uniform(0.02, 0.5))
            assert till.proc.poll() is None, (tmp_path / "till.stderr").read_text()
            printed = till.kill()
            reported.extend(printed)
            landed += bool(printed)
            _check_till(db, reported, cycle + 1)
        own = _flush(db, relay, "till")
        assert set(reported) <= own
        seen = _fresh_full_sync(relay, tmp_path, "auditor")
        assert own <= seen, f"{len(own - seen)} sales never reached the relay"
    finally:
        relay.stop()
    assert landed >= cycles // 2
    print(
        f"\ntill kills: {cycles} ({landed} among sales), sales returned: {len(reported)}, "
        f"lost: 0, at the relay: {len(own)}, queue entries left 'sent' although stored: "
        f"{STUCK.get('till')}, sale calls refused by the lock race: "
        f"{storage_errors(tmp_path)}"
    )
    assert storage_errors(tmp_path) == 0


def _acked_clocks(db: Path) -> dict[tuple[str, int], int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute(
            "SELECT doc, client_id, MAX(clock) FROM queue_clocks "
            "WHERE acked = 1 GROUP BY doc, client_id"
        ).fetchall()
    return {(doc, int(c)): int(k) for doc, c, k in rows}


def relay_kills(tmp_path: Path, kills: int) -> None:
    tmp_path.mkdir(exist_ok=True)
    rng = random.Random(SEED)
    names = ["till-a", "till-b"]
    relay = Relay(tmp_path, [*names, "auditor"])
    relay.start()
    script = tmp_path / "till.py"
    script.write_text(TILL)
    dbs = {n: tmp_path / f"{n}.db" for n in names}
    for n in names:
        setup_till(dbs[n], n, n)
    tills = {n: Till(script, dbs[n], relay, n, pause=0.005) for n in names}
    verified = 0
    reported: list[str] = []
    try:
        for t in tills.values():
            assert t.ready.wait(30)
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.2))
            relay.kill()
            # the relay is down: nothing more can be acknowledged until it restarts
            acked = {}
            for n in names:
                acked.update(_acked_clocks(dbs[n]))
            with SqliteRelayStore(relay.db) as store:
                cache = DocCache(store)
                for (doc, client), clock in acked.items():
                    held = cache.get("acme", doc).clocks().get(client, 0)
                    assert held >= clock, f"ACKed {doc} {client}@{clock}, relay holds {held}"
                    verified += 1
                cache.clear()
            relay.start()
        for t in tills.values():
            reported.extend(t.kill())
        assert reported, "the tills sold nothing"
        every: set[str] = set()
        for n in names:
            every |= _flush(dbs[n], relay, n)
        assert set(reported) <= every
        seen = _fresh_full_sync(relay, tmp_path, "auditor")
        assert every <= seen, f"{len(every - seen)} sales missing at the relay"
    finally:
        for t in tills.values():
            if t.proc.poll() is None:
                t.kill()
        relay.stop()
    assert verified > 0
    print(
        f"\nrelay kills: {relay.kills}, ACKed (doc, client) clocks verified in the relay "
        f"database: {verified}, sales: {len(every)}, lost: 0, entries left 'sent' "
        f"although stored: {STUCK}, sale calls refused by the lock race: "
        f"{storage_errors(tmp_path)}"
    )
    assert storage_errors(tmp_path) == 0


def test_sale_while_acknowledging_race(tmp_path: Path) -> None:
    with Replica.open(tmp_path / "r.db", tenant="acme", replica_id="r", location="t1") as r:
        r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
        stop = threading.Event()

        def sync_thread() -> None:  # what ReplicaSync does on the client's thread
            while not stop.is_set():
                with r.core.transaction():
                    r.core.storage.outbox.mark_sent(time.time())
                with r.core.transaction():
                    r.core.storage.outbox.acknowledge("catalog", r.client_id, 10**9, time.time())

        t = threading.Thread(target=sync_thread, daemon=True)
        t.start()
        try:
            for _ in range(300):
                r.record_sale([("CAFE", 1)])
        finally:
            stop.set()
            t.join(10)


@pytest.mark.slow
def test_acked_by_state_vector_on_reconnect(tmp_path: Path) -> None:
    relay = Relay(tmp_path, ["till"])
    relay.start()
    try:
        db = tmp_path / "till.db"
        setup_till(db, "till", "t1")
        with Replica.open(db) as r:
            r.record_sale([("CAFE", 1)])
            r.sync_now(relay.url, token=relay.tokens["till"])
            assert r.status.pending == 0
        with sqlite3.connect(db) as conn:  # the relay stored it, the ACK never arrived
            conn.execute("UPDATE queue SET status = 'sent'")
            conn.execute("UPDATE queue_clocks SET acked = 0")
        with Replica.open(db) as r:
            r.sync_now(relay.url, token=relay.tokens["till"])
            assert r.status.pending == 0
    finally:
        relay.stop()
