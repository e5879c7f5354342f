"""Bulk writes: many SKUs in one durable write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tiendasync import InvalidArgument, Replica


def test_receive_many_is_one_write(tmp_path: Path) -> None:
    with Replica.open(tmp_path / "a.db", tenant="acme", replica_id="a", location="t1") as r:
        before = len(r.queue.list(limit=1000))
        assert r.inventory.receive_many({"A": 3, "B": 4}) == 2
        assert r.inventory.receive_many([("A", 1), ("A", 2), ("C", 5)]) == 2
        assert (r.inventory.stock("A"), r.inventory.stock("B"), r.inventory.stock("C")) == (6, 4, 5)
        assert len(r.queue.list(limit=1000)) == before + 2
    with Replica.open(tmp_path / "a.db") as r:
        assert r.inventory.levels() == {"A": 6, "B": 4, "C": 5}


@pytest.mark.parametrize(
    "bad", [{"A": 0}, {"A": -1}, {"A": 2.0}, [("A",)], [("", 1)], {"A": 2**53}]
)
def test_receive_many_checks_everything_first(tmp_path: Path, bad: Any) -> None:
    with Replica.open(tmp_path / "a.db", tenant="acme", replica_id="a", location="t1") as r:
        before = len(r.queue.list(limit=1000))
        with pytest.raises(InvalidArgument):
            r.inventory.receive_many(
                {"OK": 1, **bad} if isinstance(bad, dict) else [("OK", 1), *bad]
            )
        assert r.inventory.levels() == {} and len(r.queue.list(limit=1000)) == before


def test_count_many_states_levels_in_one_write_and_is_idempotent(tmp_path: Path) -> None:
    with Replica.open(tmp_path / "a.db", tenant="acme", replica_id="a", location="t1") as r:
        r.inventory.receive_many({"A": 10, "B": 2})
        before = len(r.queue.list(limit=1000))
        assert r.inventory.count_many({"A": 7, "B": 2, "C": 4}) == {"A": -3, "C": 4}
        assert r.inventory.levels() == {"A": 7, "B": 2, "C": 4}
        assert len(r.queue.list(limit=1000)) == before + 1
        assert r.inventory.count_many([("A", 7), ("C", 4)]) == {}  # the same levels: no write
        assert len(r.queue.list(limit=1000)) == before + 1


@pytest.mark.parametrize("bad", [[("A", -1)], [("A", 1.0)], [("A", 1), ("A", 2)], [("", 1)]])
def test_count_many_checks_everything_first(tmp_path: Path, bad: Any) -> None:
    with Replica.open(tmp_path / "a.db", tenant="acme", replica_id="a", location="t1") as r:
        before = len(r.queue.list(limit=1000))
        with pytest.raises(InvalidArgument):
            r.inventory.count_many([("OK", 1), *bad])
        assert r.inventory.levels() == {} and len(r.queue.list(limit=1000)) == before
