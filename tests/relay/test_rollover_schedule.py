"""Which documents a running relay checks for a rollover, and when (relay.rollover)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiendasync.errors import ConfigError
from tiendasync.relay.rollover import RolloverSchedule

DOCS = ["stock/t1", "stock/t2", "catalog", "sales/t1/2026-12", "conflicts"]


def test_only_committed_counter_and_lww_documents_are_checked() -> None:
    schedule = RolloverSchedule(10.0, started_at=0.0, check_s=1.0)
    schedule.noted([("acme", "stock/t1"), ("acme", "sales/t1/2026-12"), ("acme", "catalog")])
    assert schedule.candidates(5.0) == []  # within the interval of the start
    assert schedule.candidates(10.0) == [("acme", "catalog"), ("acme", "stock/t1")]
    assert schedule.candidates(20.0) == []  # checked: again only once written to again


def test_a_rolled_document_waits_a_whole_interval_and_the_others_do_not() -> None:
    schedule = RolloverSchedule(10.0, started_at=0.0, check_s=1.0)
    schedule.noted([("acme", "stock/t1"), ("acme", "stock/t2")])
    assert schedule.candidates(10.0) == [("acme", "stock/t1"), ("acme", "stock/t2")]
    schedule.rolled(("acme", "stock/t1"), 10.0)
    schedule.noted([("acme", "stock/t1"), ("acme", "stock/t2")])
    assert schedule.candidates(15.0) == [("acme", "stock/t2")]
    assert schedule.candidates(20.0) == [("acme", "stock/t1")]  # kept until it may


def test_checks_come_at_most_once_a_period() -> None:
    schedule = RolloverSchedule(1.0, started_at=0.0, check_s=5.0)
    schedule.noted([("acme", "catalog")])
    assert schedule.candidates(1.0) == [("acme", "catalog")]
    schedule.noted([("acme", "catalog")])
    assert schedule.candidates(3.0) == []
    assert schedule.candidates(6.0) == [("acme", "catalog")]


@pytest.mark.parametrize(("interval", "check"), [(0.0, 1.0), (-1.0, 1.0), (1.0, 0.0)])
def test_bad_periods_are_refused(interval: float, check: float) -> None:
    with pytest.raises(ConfigError):
        RolloverSchedule(interval, started_at=0.0, check_s=check)


@settings(max_examples=200)
@given(
    interval=st.floats(1.0, 100.0),
    steps=st.lists(
        st.tuples(st.floats(0.0, 30.0), st.sets(st.sampled_from(DOCS)), st.booleans()),
        max_size=40,
    ),
)
def test_no_document_rolls_over_twice_within_an_interval(
    interval: float, steps: list[tuple[float, set[str], bool]]
) -> None:
    """Whatever is written when, and whichever checks find a document due: a document
    is offered again only a whole interval after its last rollover (or the start)."""
    schedule = RolloverSchedule(interval, started_at=0.0, check_s=1.0)
    now = 0.0
    last: dict[tuple[str, str], float] = {}
    for advance, written, due in steps:
        now += advance
        schedule.noted(("acme", d) for d in written)
        for key in schedule.candidates(now):
            assert key[1] in DOCS and not key[1].startswith("sales/")
            assert now - last.get(key, 0.0) >= interval
            if due:
                schedule.rolled(key, now)
                last[key] = now
