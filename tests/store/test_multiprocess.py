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
