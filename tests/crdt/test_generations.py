"""Properties of the counter generation core (seed and carry, no I/O)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiendasync.crdt.generations import (
    LWWSlots,
    apply_carry,
    carry_counter,
    carry_lww,
    lww_winners,
    seed_counter,
    totals,
)
from tiendasync.crdt.keys import MAX_SAFE_INTEGER
from tiendasync.crdt.lww import TOMBSTONE, FieldWrite
from tiendasync.errors import InvalidArgument

Slots = dict[str, dict[int, tuple[int, int]]]

ENTITIES = st.sampled_from(["a", "b", "c"])
WRITERS = st.integers(min_value=1, max_value=4)
SMALL = st.integers(min_value=0, max_value=50)
SLOTS = st.dictionaries(ENTITIES, st.dictionaries(WRITERS, st.tuples(SMALL, SMALL), max_size=4))
#: A late write: (entity, writer, increments added, decrements added, delivered twice?).
LATE = st.lists(st.tuples(ENTITIES, WRITERS, SMALL, SMALL, st.booleans()), max_size=12)


def _copy(slots: Slots) -> Slots:
    return {e: dict(ws) for e, ws in slots.items()}


@given(SLOTS)
def test_seed_keeps_every_total(slots: Slots) -> None:
    seeded = seed_counter(slots)
    assert totals({e: {0: v} for e, v in seeded.items()}) == totals(slots)


@settings(max_examples=200)
@given(SLOTS, LATE)
def test_late_writes_are_carried_exactly_once(
    cut: Slots, late: list[tuple[str, int, int, int, bool]]
) -> None:
    relay = seed_counter(cut)
    g = _copy(cut)
    for entity, writer, d_inc, d_dec, twice in late:
        inc, dec = g.get(entity, {}).get(writer, (0, 0))
        before = _copy(g)
        g.setdefault(entity, {})[writer] = (inc + d_inc, dec + d_dec)
        relay = apply_carry(relay, carry_counter(cut, before, g))
        if twice:  # a duplicate of an applied update: the state of g does not change
            relay = apply_carry(relay, carry_counter(cut, g, g))
    merged = totals({e: {0: v} for e, v in relay.items()})
    expected = totals(g)
    assert {e: v for e, v in merged.items() if v} == {e: v for e, v in expected.items() if v}


def test_a_late_update_carries_only_its_growth() -> None:
    cut: Slots = {"a": {7: (5, 1)}}
    after: Slots = {"a": {7: (8, 1), 9: (2, 0)}}
    assert carry_counter(cut, cut, after) == {"a": (5, 0)}
    assert carry_counter(cut, after, after) == {}


def test_seed_refuses_an_unsafe_sum() -> None:
    with pytest.raises(InvalidArgument):
        seed_counter({"a": {1: (MAX_SAFE_INTEGER, 0), 2: (1, 0)}})


def _write(wall: int, counter: int, writer: int, value: int) -> FieldWrite:
    return FieldWrite(wall, counter, f"r{writer}", writer, str(value))


WRITE = st.builds(_write, st.integers(0, 20), st.integers(0, 3), WRITERS, SMALL)
FIELDS = st.tuples(st.sampled_from(["p1", "p2"]), st.sampled_from(["price", TOMBSTONE]))
LWW = st.dictionaries(FIELDS, st.lists(WRITE, max_size=4))


def _slots(writes: dict[tuple[str, str], list[FieldWrite]]) -> LWWSlots:
    """A writer's slot holds its latest write, which its HLC makes its greatest."""
    out: dict[tuple[str, str], dict[int, FieldWrite]] = {}
    for f, ws in writes.items():
        mine = out.setdefault(f, {})
        for w in ws:
            if w.writer not in mine or w.sort_key > mine[w.writer].sort_key:
                mine[w.writer] = w
    return out


@given(LWW, LWW)
def test_lww_seed_and_carry_read_as_g_merged(
    g: dict[tuple[str, str], list[FieldWrite]], late: dict[tuple[str, str], list[FieldWrite]]
) -> None:
    winners = lww_winners(_slots(g))
    merged = dict(winners)
    for _ in range(2):  # carrying the same late slots twice is carrying them once
        merged.update(carry_lww(merged, _slots(late)))
    everything = {f: g.get(f, []) + late.get(f, []) for f in g.keys() | late.keys()}
    expected = lww_winners({f: {i: w for i, w in enumerate(ws)} for f, ws in everything.items()})
    assert {f: w.sort_key for f, w in merged.items()} == {
        f: w.sort_key for f, w in expected.items()
    }


def test_an_older_late_edit_does_not_win_a_newer_one_does() -> None:
    seeded = {("p1", "price"): _write(10, 0, 1, 5)}
    assert carry_lww(seeded, {("p1", "price"): {2: _write(9, 0, 2, 7)}}) == {}
    newer = _write(11, 0, 2, 7)
    assert carry_lww(seeded, {("p1", "price"): {2: newer}}) == {("p1", "price"): newer}
