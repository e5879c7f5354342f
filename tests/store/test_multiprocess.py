"""Several processes on one store file: none loses another's writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tiendasync import Replica

SRC = str(Path(__file__).resolve().parents[2] / "src")

SELLER = textwrap.dedent(
    """
    import json, sys
    import tiendasync.store.core as core
    core.COMPACT_EVERY = int(sys.argv[3])  # compact often: the hard case
    from tiendasync import Replica
    ids = []
    with Replica.open(sys.argv[1]) as r:
        for n in range(int(sys.argv[2])):
            ids.append(r.record_sale([("CAFE", 1)]).id)
            if n % 7 == 0:
                r.inventory.receive("CAFE", 1)
    print(json.dumps(ids))
    """
)


def _dump(path: Path) -> list[str]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _seed(path: Path) -> None:
    with Replica.open(path, tenant="acme", replica_id="t1", location="t1") as r:
        r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
        r.inventory.receive("CAFE", 1000)


def test_two_processes_selling_and_compacting_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    _seed(path)
    env = {**os.environ, "PYTHONPATH": SRC}
    sellers = [
        subprocess.Popen(
            [sys.executable, "-c", SELLER, str(path), "150", "25"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(2)
    ]
    returned: list[str] = []
    for seller in sellers:
        out, err = seller.communicate(timeout=240)
        assert seller.returncode == 0, err
        returned += json.loads(out)
    assert len(returned) == len(set(returned)) == 300
    with Replica.open(path) as r:
        assert {s.id for s in r.sales.list(limit=10_000)} == set(returned)
        receipts = 2 * len(range(0, 150, 7))
        assert r.inventory.stock("CAFE") == 1000 - 300 + receipts
        assert r.queue.counts().get("pending", 0) == r.queue.pending_count() > 300
    # A fresh process rebuilding from the file alone agrees.
    with Replica.open(path) as again:
        assert again.inventory.stock("CAFE") == 1000 - 300 + receipts


def test_one_process_sees_anothers_commits_before_its_next_call(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    _seed(path)
    with Replica.open(path) as pos, Replica.open(path) as cli:
        assert cli.inventory.stock("CAFE") == 1000
        sale = pos.record_sale([("CAFE", 3)])
        assert cli.inventory.stock("CAFE") == 997
        assert cli.sales.get(sale.id) is not None
        cli.inventory.count("CAFE", 990)  # the stocktake starts from what pos sold
        assert pos.inventory.stock("CAFE") == 990
        pos.compact()
        cli.record_sale([("CAFE", 1)])
        cli.compact()
    with Replica.open(path) as r:
        assert r.inventory.stock("CAFE") == 989
        assert r.sales.count() == 2


def test_the_sync_daemon_streams_what_other_processes_sell(tmp_path: Path) -> None:
    from tests.store.test_client import RelayThread, wait_until

    relay = RelayThread(tmp_path)
    path = tmp_path / "shop.db"
    _seed(path)
    follower = Replica.open(tmp_path / "hq.db", tenant="acme", replica_id="hq", location="hq")
    pos = Replica.open(path)  # a POS worker, opened before the daemon connects
    daemon = Replica.open(path)
    try:
        follower.start_sync(relay.url, token=relay.token("hq"))
        daemon.start_sync(relay.url, token=relay.token("t1"))
        sale = pos.record_sale([("CAFE", 2)])
        wait_until(lambda: follower.sales.get(sale.id) is not None)
        assert follower.inventory.stock("CAFE", "t1") == 998
        wait_until(lambda: pos.queue.pending_count() == 0)  # the daemon's ACKs reach pos
        late = Replica.open(path)  # a worker started after the session began
        try:
            other = late.record_sale([("CAFE", 1)])
            wait_until(lambda: follower.sales.get(other.id) is not None)
            assert follower.inventory.stock("CAFE", "t1") == 997
        finally:
            late.close()
    finally:
        for r in (daemon, pos, follower):
            r.close()
        relay.close()


def test_the_sync_daemon_streams_writes_to_documents_it_never_loaded(tmp_path: Path) -> None:
    """A worker's first write to a document (a resolution request, last month's late sale)
    reaches the relay through a daemon that has never read that document."""
    import time

    from tests.store.test_client import RelayThread, wait_until

    relay = RelayThread(tmp_path)
    path = tmp_path / "shop.db"
    _seed(path)
    follower = Replica.open(tmp_path / "hq.db", tenant="acme", replica_id="hq", location="hq")
    daemon = Replica.open(path)
    last_month_ms = int((time.time() - 40 * 86_400) * 1000)
    pos = Replica.open(path, wall_clock=lambda: last_month_ms)
    try:
        follower.start_sync(relay.url, token=relay.token("hq"))
        daemon.start_sync(relay.url, token=relay.token("t1"))
        wait_until(lambda: daemon.status.state == "online")
        sale = pos.record_sale([("CAFE", 2)])
        wait_until(lambda: follower.sales.get(sale.id) is not None)
        wait_until(lambda: pos.queue.pending_count() == 0)
    finally:
        for r in (daemon, pos, follower):
            r.close()
        relay.close()


def test_one_process_syncs_a_file_and_the_others_see_how_it_goes(tmp_path: Path) -> None:
    import pytest

    from tests.store.test_client import RelayThread, wait_until
    from tiendasync.store.synclock import SyncBusy

    relay = RelayThread(tmp_path)
    path = tmp_path / "shop.db"
    _seed(path)
    token = relay.token("t1")
    daemon, pos = Replica.open(path), Replica.open(path)
    try:
        daemon.start_sync(relay.url, token=token)
        wait_until(lambda: daemon.status.state == "online")
        with pytest.raises(SyncBusy, match="already syncing"):
            pos.start_sync(relay.url, token=token)
        with pytest.raises(SyncBusy):
            pos.sync_now(relay.url, token=token)
        assert pos.status.state == "online"  # what the daemon published
        with Replica.open(path, read_only=True) as viewer:
            assert viewer.status.state == "online"
        daemon.stop_sync()
        assert pos.status.state == "offline"
        report = pos.sync_now(relay.url, token=token)  # the lock is free again
        assert report.outcome == "ok"
    finally:
        daemon.close()
        pos.close()
        relay.close()


def test_another_process_asks_the_syncing_one_for_a_session(tmp_path: Path) -> None:
    """The seed's "sincronizar ahora" from a web worker while the daemon syncs the file."""
    from tests.store.test_client import RelayThread, wait_until

    relay = RelayThread(tmp_path)
    path = tmp_path / "shop.db"
    _seed(path)
    daemon, pos = Replica.open(path), Replica.open(path)
    try:
        assert pos.request_sync() is False  # nobody syncs yet: nothing asked
        daemon.start_sync(relay.url, token=relay.token("t1"))
        wait_until(lambda: daemon.status.state == "online")
        assert daemon.request_sync() is False  # the syncing process itself: sync_now/kick
        sessions = len(daemon.log.list())
        assert pos.request_sync(full=True) is True
        wait_until(lambda: len(daemon.log.list()) >= sessions + 1)
        wait_until(lambda: daemon.status.state == "online")
        assert daemon.log.list(limit=1)[0].mode == "full"  # the session asked for
        assert pos.core.take_sync_request() is None  # only the syncing process takes requests
        assert daemon.core.take_sync_request() is None  # taken once: the request is gone
    finally:
        daemon.close()
        pos.close()
        relay.close()


def test_read_only_opens_start_no_incarnation(tmp_path: Path) -> None:
    import pytest

    from tiendasync import UsageError

    path = tmp_path / "shop.db"
    _seed(path)
    with Replica.open(path) as r:
        ids = r.wrote_client_ids()
        assert r.client_id not in ids  # it never wrote: no incarnation recorded
    before = _dump(path)
    with Replica.open(path, read_only=True) as viewer:
        assert viewer.inventory.stock("CAFE") == 1000
        assert viewer.own_client_ids() == ids
        with pytest.raises(UsageError, match="read-only"):
            viewer.record_sale([("CAFE", 1)])
        with pytest.raises(UsageError):
            viewer.configure(interval_s=5)
    assert _dump(path) == before  # not a row written
    with pytest.raises(Exception, match="no replica database"):
        Replica.open(tmp_path / "missing.db", read_only=True)
    assert not (tmp_path / "missing.db").exists()


def test_a_failed_open_of_a_new_file_leaves_nothing_behind(tmp_path: Path) -> None:
    import pytest

    from tiendasync import ConfigError

    with pytest.raises(ConfigError):
        Replica.open(tmp_path / "new.db")  # no tenant/replica/location given
    assert list(tmp_path.iterdir()) == []


def test_a_catch_up_never_carries_a_writer_its_hello_did_not_announce(tmp_path: Path) -> None:
    """Another process of the store writes for the first time while the sync process
    builds its catch-up: that writer's items wait for a session that announces it
    (the relay refuses items of writers a session did not announce)."""
    from tiendasync.protocol import RelayConnection
    from tiendasync.protocol.events import UpdateReceived
    from tiendasync.protocol.yjs_update import parse_update
    from tiendasync.store.sync_session import ReplicaSync

    path = tmp_path / "shop.db"
    _seed(path)

    armed: list[bool] = []

    def catch_up(daemon: Replica) -> list[UpdateReceived]:
        sync = ReplicaSync(daemon, "tok", clock=lambda: 0.0)
        sync.start()
        armed.append(True)  # the HELLO is built: the catch-up reads from here on
        relay = RelayConnection()
        relay.receive_data(sync.data_to_send())
        relay.events()
        relay.accept("s1", {}, None)  # the relay holds nothing yet
        sync.receive_data(relay.data_to_send())
        relay.receive_data(sync.data_to_send())
        return [e for e in relay.events() if isinstance(e, UpdateReceived)]

    with Replica.open(path) as daemon, Replica.open(path) as pos:
        announced = daemon.own_client_ids()
        read_state_vector = daemon.state_vector
        sold: list[str] = []

        def state_vector_then_a_first_sale(doc: str) -> bytes:
            sv = read_state_vector(doc)
            if armed and doc == "stock/t1" and not sold:  # the POS's first write
                sold.append(pos.record_sale([("CAFE", 1)]).id)
            return sv

        daemon.state_vector = state_vector_then_a_first_sale  # type: ignore[method-assign]
        first = catch_up(daemon)
        del daemon.state_vector
        writers = {s.client for e in first for s in parse_update(e.data).structs if s.length}
        assert pos.client_id not in announced and sold
        assert writers and writers <= announced
        # The next session announces the POS's writer and carries its sale.
        second = catch_up(daemon)
        writers = {s.client for e in second for s in parse_update(e.data).structs if s.length}
        assert pos.client_id in writers
