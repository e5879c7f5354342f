"""When a document is due for a rollover: what a cut would fold (docs/generations.md).

Property tests over generated counter and LWW documents written by several
writers: the seed's slot count is computed without building the seed, and
matches the seed; a document just seeded folds nothing, so no policy finds it
due; one with more foldable slots than the bound is due.  The relay's cheap
check of a loaded document (``relay.rollover.loaded_due``, which counts the keys
only when a bound from its last count could pass the policy) says what a full
count says, after every write, whatever the writes (deletes of a writer's own
slots included).
"""

from __future__ import annotations

from typing import Any

import pycrdt
from hypothesis import given, settings
from hypothesis import strategies as st

from tiendasync.crdt.counter import PNCounter
from tiendasync.crdt.generations import seed_slot_count, seed_update, slot_count
from tiendasync.crdt.keys import ROOT
from tiendasync.crdt.lww import LWWMap, slot_key
from tiendasync.model.hlc import Timestamp
from tiendasync.relay.docs import RelayDoc
from tiendasync.relay.generations import Footprint, RolloverPolicy, footprint
from tiendasync.relay.rollover import loaded_due

WRITERS = [101, 202, 303, 404]
ENTITIES = ["CAFE", "TE", "PAN", "LECHE", "AZUCAR", "SAL"]
FIELDS = ["name", "price_cents"]

#: ``(writer, entity, field, value, drop)``: one write; ``drop``: the writer deletes its
#: own slot of that entity and field instead (if it has one), which the ownership rule
#: allows.
writes = st.lists(
    st.tuples(
        st.sampled_from(WRITERS),
        st.sampled_from(ENTITIES),
        st.sampled_from(FIELDS),
        st.integers(1, 500),
        st.booleans() | st.just(False),
    ),
    min_size=1,
    max_size=40,
)
bounds = st.builds(
    RolloverPolicy,
    max_slots=st.none() | st.integers(1, 30),
    max_bytes=st.none() | st.integers(1, 3000),
)


def _key(crdt: str, writer: int, entity: str, field: str) -> str:
    return entity + "\x1f" + str(writer) if crdt == "counter" else slot_key(entity, field, writer)


def _write(
    crdt: str, merged: pycrdt.Doc[Any], write: tuple[int, str, str, int, bool], tick: int
) -> bytes:
    """One writer's write on top of ``merged`` (applied to it); returns the update."""
    writer, entity, field, value, drop = write
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=writer)
    doc.apply_update(merged.get_update())
    before = doc.get_state()
    root = doc.get(ROOT, type=pycrdt.Map)
    with doc.transaction():
        key = _key(crdt, writer, entity, field)
        if drop:
            if key in root:
                del root[key]
        elif crdt == "counter":
            PNCounter(doc).add(entity, value if value % 3 else -value)
        else:
            LWWMap(doc).set(entity, {field: value}, Timestamp(1_000 + tick, 0, str(writer)))
    update = doc.get_update(before)
    merged.apply_update(update)
    return update


def _document(crdt: str, plan: list[tuple[int, str, str, int, bool]]) -> pycrdt.Doc[Any]:
    merged: pycrdt.Doc[Any] = pycrdt.Doc()
    for tick, write in enumerate(plan):
        _write(crdt, merged, write, tick)
    return merged


def _model_foldable(crdt: str, plan: list[tuple[int, str, str, int, bool]]) -> int:
    """The model: the slots the plan leaves (one per writer per entity, or per field of a
    record), less one per entity or field (the seed's)."""
    live: set[tuple[str, str, int]] = set()
    for writer, entity, field, _, drop in plan:
        slot = (entity, "" if crdt == "counter" else field, writer)
        if drop:
            live.discard(slot)
        else:
            live.add(slot)
    return len(live) - len({(entity, field) for entity, field, _ in live})


@settings(max_examples=150, deadline=None)
@given(crdt=st.sampled_from(["counter", "lww"]), plan=writes, policy=bounds)
def test_a_document_just_seeded_is_never_due(
    crdt: str, plan: list[tuple[int, str, str, int, bool]], policy: RolloverPolicy
) -> None:
    g = _document(crdt, plan)
    seed = seed_update(crdt, g, writer=9_999)
    seeded: pycrdt.Doc[Any] = pycrdt.Doc()
    seeded.apply_update(seed)
    # counted without building the seed, and what the seed holds
    assert seed_slot_count(crdt, g) == slot_count(crdt, seeded)
    fresh = footprint(crdt, seeded, len(seed))
    assert fresh.foldable_slots == 0 and fresh.foldable_bytes == 0
    assert policy.due(fresh) is False


@settings(max_examples=150, deadline=None)
@given(crdt=st.sampled_from(["counter", "lww"]), plan=writes, stored=st.integers(0, 100_000))
def test_a_document_with_more_foldable_slots_than_the_bound_is_due(
    crdt: str, plan: list[tuple[int, str, str, int, bool]], stored: int
) -> None:
    g = _document(crdt, plan)
    foldable = _model_foldable(crdt, plan)
    measured = footprint(crdt, g, stored)
    assert measured.foldable_slots == foldable
    assert measured.foldable_bytes == (stored * foldable // measured.slots if measured.slots else 0)
    assert RolloverPolicy(max_slots=foldable + 1).due(measured) is False
    if foldable > 1:
        assert RolloverPolicy(max_slots=foldable - 1).due(measured) is True
        assert RolloverPolicy(max_slots=foldable).due(measured) is False
    if measured.foldable_bytes > 1:
        assert RolloverPolicy(max_bytes=measured.foldable_bytes - 1).due(measured) is True
    assert RolloverPolicy(max_bytes=measured.foldable_bytes + 1).due(measured) is False


@settings(max_examples=150, deadline=None)
@given(crdt=st.sampled_from(["counter", "lww"]), plan=writes, policy=bounds)
def test_the_relays_cheap_check_says_what_a_full_count_says(
    crdt: str, plan: list[tuple[int, str, str, int, bool]], policy: RolloverPolicy
) -> None:
    rdoc = RelayDoc("acme", "catalog" if crdt == "lww" else "stock/t1", pycrdt.Doc(), 0.0)
    stored = 0
    for tick, write in enumerate(plan):
        stored += len(_write(crdt, rdoc.doc, write, tick))
        full = policy.due(footprint(crdt, rdoc.doc, stored))
        assert loaded_due(policy, crdt, rdoc, stored) is full


def test_the_cheap_check_counts_the_keys_only_when_the_bound_could_pass() -> None:
    """Below the bound's reach it never lists the keys: a catalog of 3,000 fields under
    a bound of 50 foldable slots is counted once, then again only after 50 more writes."""
    crdt, policy = "lww", RolloverPolicy(max_slots=50)
    rdoc = RelayDoc("acme", "catalog", pycrdt.Doc(client_id=101), 0.0)
    catalog = LWWMap(rdoc.doc)
    with rdoc.doc.transaction():
        for i in range(1_500):
            catalog.set(f"P{i}", {"name": "x", "price_cents": i}, Timestamp(1, i, "a"))
    assert loaded_due(policy, crdt, rdoc, 0) is False  # 3,000 slots, a seed's 3,000
    counted = rdoc.fold_tally
    assert counted is not None and counted[1] == 0
    for tick in range(50):  # one writer editing: 50 clock ticks, no slot to fold
        catalog.set("P0", {"price_cents": tick}, Timestamp(2, tick, "a"))
        assert loaded_due(policy, crdt, rdoc, 0) is False
        assert rdoc.fold_tally == counted  # not counted again
    catalog.set("P0", {"price_cents": 99}, Timestamp(3, 0, "a"))
    assert loaded_due(policy, crdt, rdoc, 0) is False  # 51 ticks: it could be; counted
    assert rdoc.fold_tally is not None and rdoc.fold_tally != counted
    assert rdoc.fold_tally[1] == 0


def test_the_footprint_of_an_empty_document_folds_nothing() -> None:
    empty = Footprint(0, 0, 0)
    assert (empty.foldable_slots, empty.foldable_bytes) == (0, 0)
    assert RolloverPolicy(max_slots=1, max_bytes=1).due(empty) is False
