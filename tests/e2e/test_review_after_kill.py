"""The central review is gathered for a while after the commit: a relay killed before it
ran reviews what it committed when it starts again, and each conflict is opened once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_integration_conflicts import open_conflicts
from tests.support.processes import Cluster, wait_until


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, {"caja-1": "tienda-1", "caja-2": "tienda-1"})
    try:
        yield c
    finally:
        c.close()


def _restart(cluster: Cluster, *extra_args: str) -> None:
    cluster.kill_relay()
    cluster.start_relay(*extra_args)


def test_a_relay_killed_before_its_review_opens_the_conflict_once(cluster: Cluster) -> None:
    caja1, caja2 = cluster.pos["caja-1"], cluster.pos["caja-2"]
    tills = [caja1, caja2]
    caja1.do("product LECHE-1L 120 Leche 1 L")
    caja1.do("receive LECHE-1L 1")
    # A review delay longer than the test: what is committed is not reviewed before the kill.
    _restart(cluster, "--review-delay-s", "600")
    assert open_conflicts(cluster) == []  # opens the central writer: it reviews at flushes only
    for t in tills:
        t.do("online")
        t.do("wait-synced 20")
    wait_until(lambda: caja2.do("stock LECHE-1L") == 1, "caja-2 sees the last leche")
    for t in tills:
        t.do("offline")
    sales = sorted(t.do("sell LECHE-1L 1")["id"] for t in tills)
    for t in tills:
        t.do("online")
    for t in tills:
        t.do("wait-synced 20")  # both sales are acknowledged: committed by the relay
    wait_until(lambda: all(t.do("snapshot")["sales"] == 2 for t in tills), "both sales synced")
    assert open_conflicts(cluster) == []  # stored, not reviewed yet

    _restart(cluster)  # killed with its review pending; the default delay from now on
    found: list[dict[str, object]] = []

    def opened() -> bool:
        found[:] = open_conflicts(cluster)
        return len(found) >= 1

    wait_until(opened, "the restarted relay opens the conflict")
    assert len(found) == 1 and sorted(found[0]["sales"]) == sales  # type: ignore[call-overload]
    cid = found[0]["id"]

    # Killed again once it is open (and the tills sync once more): still one conflict.
    _restart(cluster)
    for t in tills:
        t.do("wait-synced 20")
    wait_until(lambda: len(open_conflicts(cluster)) == 1, "the relay is back")
    time.sleep(0.5)  # more than the review delay: a second review would have run by now
    again = open_conflicts(cluster)
    assert [c["id"] for c in again] == [cid]
