"""Properties of the generation core: seed and carry, on slot maps and on pycrdt documents."""

from __future__ import annotations

from typing import Any

import pycrdt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiendasync.crdt.counter import PNCounter
from tiendasync.crdt.generations import (
    LWWSlots,
    apply_carry,
    carry_counter,
    carry_lww,
    carry_update,
    counter_slots,
    lww_slots,
    lww_winners,
    seed_counter,
    seed_update,
    slot_count,
    totals,
)
from tiendasync.crdt.keys import MAX_SAFE_INTEGER, ROOT, SEP
from tiendasync.crdt.lww import TOMBSTONE, FieldWrite, LWWMap
from tiendasync.errors import InvalidArgument
from tiendasync.model.hlc import Timestamp

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


# -- on pycrdt documents: what the relay stores ----------------------------------------------

RELAY_WRITERS = iter(range(900_000, 2_000_000))


def _doc(*updates: bytes) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for u in updates:
        doc.apply_update(u)
    return doc


def _counter_doc(slots: Slots) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    root = doc.get(ROOT, type=pycrdt.Map)
    with doc.transaction():
        for entity, writers in slots.items():
            for writer, (inc, dec) in writers.items():
                root[entity + SEP + str(writer)] = [inc, dec]
    return doc


def _values(doc: pycrdt.Doc[Any]) -> dict[str, int]:
    return {e: v for e, v in PNCounter(doc).items() if v}


@settings(max_examples=60, deadline=None)
@given(SLOTS, LATE)
def test_a_seeded_counter_document_with_carried_late_writes_reads_as_g(
    cut: Slots, late: list[tuple[str, int, int, int, bool]]
) -> None:
    g_doc = _counter_doc(cut)
    seed = seed_update("counter", g_doc, next(RELAY_WRITERS))
    assert _values(_doc(seed)) == _values(g_doc)
    stored = [seed]  # g+1's log
    cut_doc, g = _doc(g_doc.get_update()), _copy(cut)
    for entity, writer, d_inc, d_dec, twice in late:
        inc, dec = g.get(entity, {}).get(writer, (0, 0))
        before = _doc(_counter_doc(g).get_update())
        g.setdefault(entity, {})[writer] = (inc + d_inc, dec + d_dec)
        after = _counter_doc(g)
        for _ in range(2 if twice else 1):  # a re-sent update: g is already `after`
            carry = carry_update(
                "counter",
                cut=cut_doc,
                before=before,
                after=after,
                current=_doc(*stored),
                writer=next(RELAY_WRITERS),
            )
            if carry is not None:
                stored.append(carry)
            before = after
    assert _values(_doc(*stored)) == _values(_counter_doc(g))
    assert all(w >= 900_000 for ws in counter_slots(_doc(*stored)).values() for w in ws)


def _lww_doc(writer: int, edits: list[tuple[str, dict[str, Any], Timestamp]]) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=writer)
    m = LWWMap(doc)
    for record, fields, ts in edits:
        with doc.transaction():
            if fields:
                m.set(record, fields, ts)
            else:
                m.delete(record, ts)
    return doc


def test_a_seeded_lww_document_reads_as_g_and_later_edits_still_win() -> None:
    t = Timestamp
    a = _lww_doc(
        11, [("p1", {"price": 5, "name": "x"}, t(100, 0, "a")), ("p2", {"v": 1}, t(100, 0, "a"))]
    )
    b = _lww_doc(22, [("p1", {"price": 6}, t(100, 0, "a")), ("p2", {}, t(101, 0, "b"))])
    g = _doc(a.get_update(), b.get_update())
    seed = seed_update("lww", g, next(RELAY_WRITERS))
    g1 = _doc(seed)
    view, seeded = LWWMap(g), LWWMap(g1)
    # the same tie (same HLC) breaks the same way: by the original writer (22 > 11)
    assert seeded.get("p1") == view.get("p1") == {"price": 6, "name": "x"}
    assert seeded.get("p2") is None and view.get("p2") is None
    assert seeded.winner("p1", "price").author == 22  # type: ignore[union-attr]
    assert set(lww_slots(g1)[("p1", "price")]) != {22}  # under the relay's writer
    # a till in g+1 edits after the seed: its newer HLC wins; an older clock loses
    c = pycrdt.Doc[Any](client_id=33)
    c.apply_update(seed)
    with c.transaction():
        LWWMap(c).set("p1", {"price": 7}, t(102, 0, "c"))
        LWWMap(c).set("p1", {"name": "old"}, t(99, 0, "c"))
    assert LWWMap(_doc(seed, c.get_update())).get("p1") == {"price": 7, "name": "x"}


def test_lww_late_edits_are_carried_if_they_beat_g1_once() -> None:
    t = Timestamp
    g = _lww_doc(11, [("p1", {"price": 5, "name": "x"}, t(100, 0, "a"))])
    cut = _doc(g.get_update())
    stored = [seed_update("lww", cut, next(RELAY_WRITERS))]
    offline = pycrdt.Doc[Any](client_id=44)  # a till offline since before the cut
    offline.apply_update(cut.get_update())
    with offline.transaction():
        LWWMap(offline).set("p1", {"price": 9}, t(120, 0, "d"))  # newer: wins in g+1
        LWWMap(offline).set("p1", {"name": "y"}, t(90, 0, "d"))  # older: loses
    after = _doc(cut.get_update(), offline.get_update())
    for _ in range(2):
        carry = carry_update(
            "lww",
            cut=cut,
            before=cut,
            after=after,
            current=_doc(*stored),
            writer=next(RELAY_WRITERS),
        )
        if carry is not None:
            stored.append(carry)
    assert len(stored) == 2  # the second pass carried nothing
    assert LWWMap(_doc(*stored)).get("p1") == LWWMap(after).get("p1") == {"price": 9, "name": "x"}


def test_other_crdts_have_no_generations() -> None:
    with pytest.raises(InvalidArgument):
        seed_update("ledger", pycrdt.Doc(), 1)
    with pytest.raises(InvalidArgument):
        slot_count("ledger", pycrdt.Doc())
