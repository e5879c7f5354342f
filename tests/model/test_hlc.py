"""The hybrid logical clock: monotonic, persistent, bounded drift, sortable text."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.helpers import FakeWall
from tiendasync import ClockError, InvalidArgument, TiendaSyncError
from tiendasync.model.hlc import HLC, Timestamp

# The clock can issue counters up to 2**31 - 1 (then it rolls into the next
# millisecond); wall_ms is encoded on 13 digits (valid until the year 2286).
MAX_COUNTER = 2**31 - 1
walls = st.integers(min_value=0, max_value=10**13 - 1)
counters = st.integers(min_value=0, max_value=MAX_COUNTER)
replica_ids = st.text(min_size=1, max_size=20)
timestamps = st.builds(Timestamp, walls, counters, replica_ids)


def test_monotonic_when_wall_clock_stands_still() -> None:
    wall = FakeWall()
    clock = HLC("r1", wall=wall)
    issued = [clock.now() for _ in range(100)]
    assert all(a < b for a, b in itertools.pairwise(issued))
    assert {t.wall_ms for t in issued} == {wall.ms}
    assert [t.counter for t in issued] == list(range(100))


def test_monotonic_when_wall_clock_goes_backwards() -> None:
    wall = FakeWall()
    clock = HLC("r1", wall=wall)
    before = clock.now()
    wall.ms -= 3_600_000  # NTP yanks the clock back one hour
    after = [clock.now() for _ in range(10)]
    assert before < after[0]
    assert all(a < b for a, b in itertools.pairwise(after))
    assert all(t.wall_ms == before.wall_ms for t in after)
    wall.ms = before.wall_ms + 5  # the wall clock catches up again
    caught_up = clock.now()
    assert caught_up == Timestamp(before.wall_ms + 5, 0, "r1")


@settings(max_examples=100, deadline=None)
@given(steps=st.lists(st.integers(min_value=-10_000, max_value=10_000), min_size=1, max_size=60))
def test_monotonic_under_any_wall_clock(steps: list[int]) -> None:
    wall = FakeWall()
    clock = HLC("r1", wall=wall)
    previous = clock.now()
    for step in steps:
        wall.ms += step
        issued = clock.now()
        assert issued > previous
        assert issued.wall_ms >= wall.ms  # never behind the physical clock
        previous = issued


def test_counter_overflow_rolls_into_next_millisecond() -> None:
    wall = FakeWall()
    clock = HLC("r1", wall=wall, last=Timestamp(wall.ms, MAX_COUNTER - 1, "r1"))
    a = clock.now()
    b = clock.now()
    assert a == Timestamp(wall.ms, MAX_COUNTER, "r1")
    assert b == Timestamp(wall.ms + 1, 0, "r1")
    assert a < b
    assert a.encode() < b.encode()


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(-10_000, 10_000), st.integers(1, 50), st.booleans()), max_size=30
    ),
    start=st.one_of(counters, st.integers(MAX_COUNTER - 60, MAX_COUNTER)),
)
def test_now_many_issues_what_as_many_calls_of_now_issue_while_the_wall_stands_still(
    steps: list[tuple[int, int, bool]], start: int
) -> None:
    wall = FakeWall()
    bulk = HLC("r1", wall=wall, last=Timestamp(wall.ms, start, "r1"))
    one_by_one = HLC("r1", wall=wall, last=Timestamp(wall.ms, start, "r1"))
    previous = bulk.last
    for step, n, many in steps:
        wall.ms += step
        if many:
            first = bulk.now_many(n)
            issued = [first._replace(counter=first.counter + i) for i in range(n)]
            assert issued[-1].counter <= MAX_COUNTER
            assert bulk.last == issued[-1]
            expected = [one_by_one.now() for _ in range(n)]
            if len({t.wall_ms for t in expected}) == 1:
                # room in this millisecond: exactly the timestamps n calls of now() give
                assert issued == expected
            else:  # the calls would roll over mid-way: all of them in the next millisecond
                assert first == Timestamp(expected[0].wall_ms + 1, 0, "r1")
            one_by_one = HLC("r1", wall=wall, last=bulk.last)
        else:
            issued = [bulk.now()]
            one_by_one.now()
        assert issued[0] > previous
        assert all(a < b for a, b in itertools.pairwise(issued))
        assert issued[0].wall_ms >= wall.ms  # never behind the physical clock
        previous = issued[-1]


def test_now_many_without_room_in_the_millisecond_moves_to_the_next() -> None:
    wall = FakeWall()
    clock = HLC("r1", wall=wall, last=Timestamp(wall.ms, MAX_COUNTER - 5, "r1"))
    first = clock.now_many(10)
    assert first == Timestamp(wall.ms + 1, 0, "r1")
    assert clock.last == Timestamp(wall.ms + 1, 9, "r1")
    assert clock.now() == Timestamp(wall.ms + 1, 10, "r1")
    for bad in (0, -1, MAX_COUNTER + 1):
        with pytest.raises(InvalidArgument):
            clock.now_many(bad)
    assert clock.last == Timestamp(wall.ms + 1, 10, "r1")


def test_restart_from_last_continues_above() -> None:
    wall = FakeWall()
    clock = HLC("r1", wall=wall)
    for _ in range(5):
        clock.now()
    saved = clock.last.encode()
    issued = clock.last
    # The process restarts; the machine's clock is now behind what we issued.
    wall.ms -= 60_000
    restarted = HLC("r1", wall=wall, last=Timestamp.decode(saved))
    nxt = restarted.now()
    assert nxt > issued
    assert nxt.encode() > saved


def test_restart_without_last_would_go_back() -> None:
    """Documents why ``last`` must be persisted (the test above relies on it)."""
    wall = FakeWall()
    clock = HLC("r1", wall=wall)
    issued = [clock.now() for _ in range(3)]
    wall.ms -= 60_000
    assert HLC("r1", wall=wall).now() < issued[-1]


def test_observe_advances_past_remote() -> None:
    wall = FakeWall()
    clock = HLC("a", wall=wall)
    remote = Timestamp(wall.ms + 5_000, 42, "b")  # 5 s ahead: within the drift limit
    clock.observe(remote)
    assert clock.last == Timestamp(remote.wall_ms, remote.counter, "a")
    nxt = clock.now()
    assert nxt > remote
    assert (nxt.wall_ms, nxt.counter) > (remote.wall_ms, remote.counter)


def test_observe_of_older_remote_keeps_clock() -> None:
    wall = FakeWall()
    clock = HLC("a", wall=wall)
    mine = clock.now()
    clock.observe(Timestamp(wall.ms - 10, 99, "b"))
    assert clock.last == mine
    assert clock.now() > mine


def test_observe_beyond_max_drift_raises_and_leaves_clock_unchanged() -> None:
    wall = FakeWall()
    clock = HLC("a", wall=wall, max_drift_ms=1_000)
    mine = clock.now()
    bad = Timestamp(wall.ms + 1_001, 0, "b")
    with pytest.raises(ClockError) as info:
        clock.observe(bad)
    assert isinstance(info.value, TiendaSyncError)
    assert clock.last == mine
    assert clock.now() == Timestamp(mine.wall_ms, mine.counter + 1, "a")
    # Exactly at the limit is still accepted.
    clock.observe(Timestamp(wall.ms + 1_000, 7, "b"))
    assert clock.last == Timestamp(wall.ms + 1_000, 7, "a")


def test_bad_construction_arguments() -> None:
    with pytest.raises(InvalidArgument):
        HLC("")
    with pytest.raises(InvalidArgument):
        HLC("a", max_drift_ms=0)


@pytest.mark.parametrize("text", ["", "123", "1.2", "x.1.r", "1.y.r"])
def test_decode_refuses_garbage(text: str) -> None:
    with pytest.raises(InvalidArgument):
        Timestamp.decode(text)


@settings(max_examples=300, deadline=None)
@given(ts=timestamps)
def test_encode_decode_round_trip(ts: Timestamp) -> None:
    assert Timestamp.decode(ts.encode()) == ts


@settings(max_examples=300, deadline=None)
@given(a=timestamps, b=timestamps)
def test_encoded_sort_order_is_tuple_order(a: Timestamp, b: Timestamp) -> None:
    assert (a < b) == (a.encode() < b.encode())
    assert (a == b) == (a.encode() == b.encode())


@settings(max_examples=100, deadline=None)
@given(stamps=st.lists(timestamps, min_size=2, max_size=30))
def test_sorting_encoded_equals_sorting_tuples(stamps: list[Timestamp]) -> None:
    assert sorted(t.encode() for t in stamps) == [t.encode() for t in sorted(stamps)]


def test_ids_issued_across_a_million_events_in_one_millisecond_sort() -> None:
    """A clock stuck on one millisecond (or set back) keeps bumping the counter."""
    wall = FakeWall()
    clock = HLC("r1", wall=wall, last=Timestamp(wall.ms, 999_998, "r1"))
    ids = [clock.now().encode() for _ in range(4)]  # counters 999_999 .. 1_000_002
    assert ids == sorted(ids)
    assert [Timestamp.decode(i).counter for i in ids] == [999_999, 1_000_000, 1_000_001, 1_000_002]
