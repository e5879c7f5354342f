"""Integration: a real relay process and three real POS processes (examples/pos.py).

Everything listens on 127.0.0.1 only.  The POS processes are driven through
their ``--json`` mode, exactly like ``examples/demo.py``; a tiny wrapper adds
two commands pos.py lacks (``transfer`` and ``sale-ids``).  The processes are
in :mod:`tests.support.processes`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Cluster, wait_until

REPLICAS = {"caja-1": "tienda-1", "caja-2": "tienda-1", "caja-3": "tienda-2"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, REPLICAS)
    try:
        yield c
    finally:
        c.close()


def _all_have(cluster: Cluster, sale_ids: set[str]) -> bool:
    return all(sale_ids <= set(p.do("sale-ids")) for p in cluster.stores())


def test_offline_writes_converge(cluster: Cluster) -> None:
    c1, c2, c3 = (cluster.pos[r] for r in REPLICAS)
    sold: set[str] = set()
    # offline everywhere (never started sync)
    c1.do("product CAFE-500 450 Café 500 g")
    c1.do("receive CAFE-500 10")
    c2.do("product LECHE-1L 120 Leche 1 L")
    c2.do("receive LECHE-1L 5")
    c3.do("product PAN 80 Pan")
    c3.do("receive PAN 20")
    c3.do("transfer PAN 4 tienda-1")
    sold.add(c1.do("sell CAFE-500 2")["id"])
    sold.add(c2.do("sell LECHE-1L 1")["id"])
    sold.add(c3.do("sell PAN 3")["id"])
    for p in cluster.stores():
        assert p.do("status")["state"] == "offline"
    for p in cluster.stores():
        p.do("online")
    wait_until(lambda: _all_have(cluster, sold) and cluster.converged(), "convergence")
    snap = c1.do("snapshot")
    assert set(snap["catalog"]) == {"CAFE-500", "LECHE-1L", "PAN"}
    assert snap["stock"]["tienda-1"] == {"CAFE-500": 8, "LECHE-1L": 4, "PAN": 4}
    assert snap["stock"]["tienda-2"] == {"PAN": 13}
    assert snap["sales"] == 3


def test_relay_sigkill_and_restart(cluster: Cluster) -> None:
    c1, c2, c3 = (cluster.pos[r] for r in REPLICAS)
    c1.do("product CAFE-500 450 Café 500 g")
    c1.do("receive CAFE-500 100")
    c3.do("product PAN 80 Pan")
    c3.do("receive PAN 100")
    for p in cluster.stores():
        p.do("online")
    for p in cluster.stores():
        p.do("wait-synced 20")
    sold: set[str] = set()
    for p in cluster.stores():
        sold.add(p.do("sell CAFE-500 1")["id"])
    cluster.kill_relay()
    # keep selling while the relay is dead
    for p in cluster.stores():
        sold.add(p.do("sell PAN 1")["id"])
    cluster.start_relay()
    for p in cluster.stores():
        sold.add(p.do("sell CAFE-500 1 PAN 1")["id"])
    wait_until(
        lambda: all(
            p.do("status")["pending"] == 0 and p.do("status")["state"] == "online"
            for p in cluster.stores()
        ),
        "replicas reconnect by themselves and flush",
        30,
    )
    wait_until(lambda: _all_have(cluster, sold) and cluster.converged(), "convergence", 30)
    snap = c2.do("snapshot")
    assert snap["sales"] == len(sold) == 9
    # caja-1/caja-2 sell at tienda-1, caja-3 at tienda-2 (it received the PAN)
    assert snap["stock"]["tienda-1"] == {"CAFE-500": 100 - 4, "PAN": -4}
    assert snap["stock"]["tienda-2"] == {"CAFE-500": -2, "PAN": 100 - 2}


def test_replica_sigkill_and_restart(cluster: Cluster) -> None:
    c1, c2, c3 = (cluster.pos[r] for r in REPLICAS)
    c1.do("product CAFE-500 450 Café 500 g")
    c1.do("receive CAFE-500 50")
    for p in cluster.stores():
        p.do("online")
    for p in cluster.stores():
        p.do("wait-synced 20")
    sold: set[str] = set()
    for _ in range(3):
        sold.add(c2.do("sell CAFE-500 1")["id"])
    c2.kill()  # right after acknowledging the sales
    own = set(sold)
    sold.add(c1.do("sell CAFE-500 2")["id"])
    c2.start()
    # every sale c2 acknowledged before the SIGKILL survived in its database
    assert own <= set(c2.do("sale-ids"))
    c2.do("online")
    wait_until(lambda: _all_have(cluster, sold) and cluster.converged(), "convergence", 30)
    assert c3.do("snapshot")["stock"]["tienda-1"]["CAFE-500"] == 50 - 5
    assert c3.do("snapshot")["sales"] == 4
