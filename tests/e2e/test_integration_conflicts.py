"""Integration: the seed's conflict flow with a real relay and real POS processes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import HOST, Cluster, Pos, wait_until
from tiendasync import Replica


def http(
    cluster: Cluster,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    token: str | None = "admin",
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {cluster.admin_token if token == 'admin' else token}"
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        f"http://{HOST}:{cluster.admin_port}{path}", method=method, data=data, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def open_conflicts(cluster: Cluster) -> list[dict[str, Any]]:
    status, data = http(cluster, "GET", "/api/sync/queue/?conflict=true&status=open")
    assert status == 200, data
    return list(data["results"])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, {"caja-1": "tienda-1", "caja-2": "tienda-1"})
    try:
        yield c
    finally:
        c.close()


def test_last_unit_conflict_flow(cluster: Cluster, tmp_path: Path) -> None:
    caja1, caja2 = cluster.pos["caja-1"], cluster.pos["caja-2"]
    tills = [caja1, caja2]
    caja1.do("product CAFE-500 450 Café 500 g")
    caja1.do("product LECHE-1L 120 Leche 1 L")
    caja1.do("receive CAFE-500 10")
    caja1.do("receive LECHE-1L 1")
    for t in tills:
        t.do("online")
    for t in tills:
        t.do("wait-synced 20")
    wait_until(lambda: caja2.do("stock LECHE-1L") == 1, "caja-2 sees the last leche")
    assert open_conflicts(cluster) == []

    for t in tills:
        t.do("offline")
    s1 = caja1.do("sell CAFE-500 2 LECHE-1L 1")["id"]
    s2 = caja2.do("sell CAFE-500 1 LECHE-1L 1")["id"]
    for t in tills:
        t.do("online")
    for t in tills:
        t.do("wait-synced 20")

    found: list[dict[str, Any]] = []

    def opened() -> bool:
        found[:] = open_conflicts(cluster)
        return len(found) >= 1

    wait_until(opened, "the relay opens a conflict")
    wait_until(lambda: all(t.do("snapshot")["sales"] == 2 for t in tills), "both sales synced")
    found[:] = open_conflicts(cluster)
    assert len(found) == 1, found
    conflict = found[0]
    cid = conflict["id"]
    assert sorted(conflict["sales"]) == sorted([s1, s2])
    assert conflict["location"] == "tienda-1" and conflict["sku"] == "LECHE-1L"
    assert conflict["status"] == "open"

    # -- admin API error cases: each changes nothing --------------------------------
    status, _ = http(cluster, "GET", "/api/sync/queue/", token=None)
    assert status == 401
    status, _ = http(
        cluster,
        "POST",
        f"/api/sync/queue/{cid}/resolve/",
        {"action": "void", "sale_ids": [s1]},
        token=None,
    )
    assert status == 401
    status, _ = http(
        cluster,
        "POST",
        f"/api/sync/queue/{cid}/resolve/",
        {"action": "void", "sale_ids": [s1]},
        token="not-a-token",
    )
    assert status == 401
    status, _ = http(cluster, "GET", "/api/sync/queue/C-doesnotexist/")
    assert status == 404
    status, _ = http(
        cluster,
        "POST",
        "/api/sync/queue/C-doesnotexist/resolve/",
        {"action": "void", "sale_ids": [s1]},
    )
    assert status == 404
    status, _ = http(cluster, "POST", f"/api/sync/queue/{cid}/resolve/", raw=b"{not json")
    assert status == 400
    status, _ = http(cluster, "POST", f"/api/sync/queue/{cid}/resolve/", {"action": "teleport"})
    assert status == 400
    after = open_conflicts(cluster)
    assert [c["id"] for c in after] == [cid]
    assert after[0]["status"] == "open" and after[0]["resolution"] is None
    for t in tills:
        assert t.do("snapshot")["voided"] == []

    # -- resolve: void caja-1's sale --------------------------------------------------
    status, resolved = http(
        cluster, "POST", f"/api/sync/queue/{cid}/resolve/", {"action": "void", "sale_ids": [s1]}
    )
    assert status == 200, resolved
    assert resolved["status"] == "resolved"
    assert open_conflicts(cluster) == []

    def settled() -> bool:
        snaps = [t.do("snapshot") for t in tills]
        return all(s == snaps[0] for s in snaps) and all(
            s["conflicts"].get(cid) == "resolved" and s["voided"] == [s1] for s in snaps
        )

    wait_until(settled, "every till sees the resolution")
    for t in tills:
        snap = t.do("snapshot")
        assert snap["stock"]["tienda-1"]["LECHE-1L"] == 0
        assert snap["stock"]["tienda-1"]["CAFE-500"] == 10 - 1  # the voided sale restocks 2
        assert all(v >= 0 for v in snap["stock"]["tienda-1"].values())
        assert snap["conflicts"] == {cid: "resolved"}
        assert t.do("status")["open_conflicts"] == 0

    status, log = http(cluster, "GET", "/api/sync/log/")
    assert status == 200
    assert {"caja-1", "caja-2"} <= {row["replica_id"] for row in log["results"]}

    # -- each till's queue flags its sale as part of the conflict -----------------------
    sale_of = {"caja-1": s1, "caja-2": s2}
    for name, t in cluster.pos.items():

        def flushed(t: Pos = t) -> bool:
            return bool(t.do("status")["pending"] == 0)

        wait_until(flushed, f"{name} flushed")
        t.close()
        with Replica.open(tmp_path / f"{name}.db") as r:
            entries = r.queue.list(limit=1000)
            mine = [e for e in entries if e.ref == sale_of[name]]
            assert len(mine) == 1, (name, entries)
            assert mine[0].has_conflict and mine[0].conflict_ids == (cid,), mine[0]
