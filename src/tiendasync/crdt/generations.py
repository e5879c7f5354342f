"""Sans-I/O core of document generations: seed ``g+1`` from ``g``, carry late writes.

A counter document is rolled over by the relay: generation ``g+1`` is seeded
with one slot per entity under the relay's writer holding the sums of ``g``'s
increments and decrements (:func:`seed_counter`), so every total reads the
same.  The relay records ``g``'s per-writer slots at the cut.  A late update
to ``g`` (a till offline past the cut) moves some slots from ``before`` to
``after``; :func:`carry_counter` gives what must be added to the relay's slot
in ``g+1``: per slot, the part of ``after`` beyond both the cut and
``before``.  Slots only grow (each writer's increments and decrements are
monotone), so carrying a duplicate update, or the same update twice, adds
nothing, and any sequence of late updates is carried exactly once in total.

Slots here are plain ``{entity: {writer: (increments, decrements)}}`` maps,
as decoded by :func:`tiendasync.crdt.counter.decode_counter_slot`.  An LWW
document is seeded with each field's winner (:func:`lww_winners`), copied
into a slot of the relay's writer that keeps the original timestamp and
writer (the slot's ``origin``, see :mod:`tiendasync.crdt.lww`); a late slot of
``g`` is carried when it beats ``g+1``'s winner of its field (:func:`carry_lww`).

The pure functions above work on decoded slot maps.  :func:`seed_update` and
:func:`carry_update` apply them to pycrdt documents and return the Yjs
update to store for ``g+1``, written by a writer id the caller gives (the
relay's, fresh for each update, so it never shares a Yjs client id with
anyone); neither touches storage.  See docs/generations.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pycrdt

from tiendasync.crdt.counter import decode_counter_slot
from tiendasync.crdt.keys import MAX_SAFE_INTEGER, ROOT, SEP
from tiendasync.crdt.lww import FieldWrite, decode_slot, slot_key
from tiendasync.errors import InvalidArgument
from tiendasync.model.docnames import DATA_TYPES, data_type_of

__all__ = [
    "ROLLABLE",
    "CounterSlots",
    "LWWSlots",
    "apply_carry",
    "carry_counter",
    "carry_lww",
    "carry_update",
    "counter_slots",
    "crdt_of",
    "lww_slots",
    "lww_winners",
    "seed_counter",
    "seed_slot_count",
    "seed_update",
    "slot_count",
    "totals",
]

#: The CRDTs (``crdt`` of :data:`tiendasync.model.docnames.DATA_TYPES`) that roll over.
ROLLABLE = frozenset({"counter", "lww"})


def crdt_of(doc: str) -> str | None:
    """The CRDT of ``doc`` if its documents roll over (``"counter"``, ``"lww"``), else None
    (InvalidArgument for a name no data type has)."""
    crdt = DATA_TYPES[data_type_of(doc)].crdt
    return crdt if crdt in ROLLABLE else None


#: ``{(record, field): {writer: FieldWrite}}`` (the tombstone is a field too).
LWWSlots = Mapping[tuple[str, str], Mapping[int, FieldWrite]]

#: ``{entity: {writer: (increments, decrements)}}``.
CounterSlots = Mapping[str, Mapping[int, tuple[int, int]]]


def _checked(value: int, what: str) -> int:
    if value > MAX_SAFE_INTEGER:
        raise InvalidArgument(f"{what} exceeds 2**53 - 1 and cannot be seeded")
    return value


def totals(slots: CounterSlots) -> dict[str, int]:
    """The value of every entity: increments minus decrements over its slots."""
    return {e: sum(i - d for i, d in ws.values()) for e, ws in slots.items()}


def seed_counter(slots: CounterSlots) -> dict[str, tuple[int, int]]:
    """The relay's one slot per entity in ``g+1``: the sums of ``g``'s slots.

    Raises :class:`InvalidArgument` if a sum passes ``2**53 - 1`` (a slot
    that large could not be read back by a Yjs peer).
    """
    out: dict[str, tuple[int, int]] = {}
    for entity, writers in slots.items():
        inc = _checked(sum(i for i, _ in writers.values()), f"increments of {entity!r}")
        dec = _checked(sum(d for _, d in writers.values()), f"decrements of {entity!r}")
        out[entity] = (inc, dec)
    return out


def carry_counter(
    cut: CounterSlots, before: CounterSlots, after: CounterSlots
) -> dict[str, tuple[int, int]]:
    """What a late update to ``g`` adds to the relay's slots in ``g+1``.

    ``cut`` is ``g`` at the rollover, ``before``/``after`` are ``g`` around the
    late update (``before`` already includes the cut).  Per slot and
    component, the carry is ``after - max(cut, before)`` when positive: a slot
    that did not grow beyond what ``g+1`` already holds carries nothing.
    Entities with nothing to carry are left out.
    """
    out: dict[str, tuple[int, int]] = {}
    for entity, writers in after.items():
        add_inc = add_dec = 0
        for writer, (inc, dec) in writers.items():
            c_inc, c_dec = cut.get(entity, {}).get(writer, (0, 0))
            b_inc, b_dec = before.get(entity, {}).get(writer, (0, 0))
            add_inc += max(0, inc - max(c_inc, b_inc))
            add_dec += max(0, dec - max(c_dec, b_dec))
        if add_inc or add_dec:
            out[entity] = (add_inc, add_dec)
    return out


def apply_carry(
    relay_slots: Mapping[str, tuple[int, int]], carry: Mapping[str, tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """The relay's ``g+1`` slots after adding ``carry`` (from :func:`carry_counter`)."""
    out = dict(relay_slots)
    for entity, (inc, dec) in carry.items():
        r_inc, r_dec = out.get(entity, (0, 0))
        out[entity] = (
            _checked(r_inc + inc, f"increments of {entity!r}"),
            _checked(r_dec + dec, f"decrements of {entity!r}"),
        )
    return out


def lww_winners(slots: LWWSlots) -> dict[tuple[str, str], FieldWrite]:
    """The winner of every field, keeping its original timestamp and writer.

    This is what seeds ``g+1`` of an LWW document: each winner is copied into
    a slot of the relay's writer whose ``origin`` is the winner's writer, so
    the copy sorts as the original did and later edits still win.
    """
    return {f: max(ws.values(), key=lambda w: w.sort_key) for f, ws in slots.items() if ws}


def carry_lww(
    seeded: Mapping[tuple[str, str], FieldWrite], late: LWWSlots
) -> dict[tuple[str, str], FieldWrite]:
    """The late slots of ``g`` that beat ``g+1``'s winner of their field.

    ``seeded`` is ``g+1``'s current winners (seed plus what was carried).
    A late write older than the winner carries nothing; carrying the same
    write twice is harmless (it no longer beats itself).
    """
    out: dict[tuple[str, str], FieldWrite] = {}
    for field, writers in late.items():
        if not writers:
            continue
        best = max(writers.values(), key=lambda w: w.sort_key)
        current = seeded.get(field)
        if current is None or best.sort_key > current.sort_key:
            out[field] = best
    return out


# -- on pycrdt documents --------------------------------------------------------------------


def _root(doc: pycrdt.Doc[Any]) -> pycrdt.Map[Any]:
    root: pycrdt.Map[Any] = doc.get(ROOT, type=pycrdt.Map)
    return root


def counter_slots(doc: pycrdt.Doc[Any]) -> dict[str, dict[int, tuple[int, int]]]:
    """The valid counter slots of ``doc`` (foreign values are skipped, as on a read)."""
    out: dict[str, dict[int, tuple[int, int]]] = {}
    root = _root(doc)
    for key in list(root.keys()):
        parsed = decode_counter_slot(key, root.get(key))
        if parsed is not None:
            entity, _, writer = key.rpartition(SEP)
            out.setdefault(entity, {})[int(writer)] = parsed
    return out


def lww_slots(doc: pycrdt.Doc[Any]) -> dict[tuple[str, str], dict[int, FieldWrite]]:
    """The valid LWW slots of ``doc`` by ``(record, field)`` (foreign values skipped)."""
    out: dict[tuple[str, str], dict[int, FieldWrite]] = {}
    root = _root(doc)
    for key in list(root.keys()):
        parts = key.split(SEP)
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        write = decode_slot(parts[1], int(parts[2]), root.get(key))
        if write is not None:
            out.setdefault((parts[0], parts[1]), {})[int(parts[2])] = write
    return out


def slot_count(crdt: str, doc: pycrdt.Doc[Any]) -> int:
    """How many slots (root-map keys) ``doc`` holds (counted by the engine, cheaply)."""
    if crdt not in ROLLABLE:
        raise InvalidArgument(f"a {crdt} document has no generations")
    return len(_root(doc))


def seed_slot_count(crdt: str, doc: pycrdt.Doc[Any]) -> int:
    """How many slots a fresh seed of ``doc``'s values would hold, without building it.

    A seed (:func:`seed_update`) has one slot per counter entity and one per LWW
    field (record and field), tombstones included: the distinct keys of ``doc``
    once the writer part is dropped.  Keys whose values do not decode count too
    (the seed leaves them out), so this is never less than the seed's count: what
    ``slot_count - seed_slot_count`` says a cut folds is never more than it folds.
    One pass over the keys: about a millisecond per 2,000 slots.
    """
    if crdt not in ROLLABLE:
        raise InvalidArgument(f"a {crdt} document has no generations")
    keys = _root(doc).keys()  # (pycrdt types Map.__iter__ as an Iterable: mypy refuses it)
    return len({key.rpartition(SEP)[0] for key in keys})


def _copy_slot(write: FieldWrite, field: str) -> list[Any]:
    seen = None if write.seen is None else list(write.seen)
    return [
        write.wall_ms,
        write.counter,
        write.replica_id,
        write.json_value,
        field,
        seen,
        write.author,
    ]


def _written(writer: int, fill: Any) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=writer)
    root = _root(doc)
    with doc.transaction():
        fill(root)
    return doc.get_update()


def seed_update(crdt: str, g: pycrdt.Doc[Any], writer: int) -> bytes:
    """The whole of ``g+1`` seeded from ``g``'s current values, written by ``writer``.

    Counters: one slot per entity with the sums of ``g``'s slots.  LWW: every
    field's winner (tombstones too) copied with its original timestamp and
    writer.  Reads of the seed equal reads of ``g``.
    """
    if crdt == "counter":
        seeded = seed_counter(counter_slots(g))

        def fill(root: pycrdt.Map[Any]) -> None:
            for entity, (inc, dec) in seeded.items():
                root[entity + SEP + str(writer)] = [inc, dec]

        return _written(writer, fill)
    if crdt == "lww":
        winners = lww_winners(lww_slots(g))

        def fill_lww(root: pycrdt.Map[Any]) -> None:
            for (record, field), write in winners.items():
                root[slot_key(record, field, writer)] = _copy_slot(write, field)

        return _written(writer, fill_lww)
    raise InvalidArgument(f"a {crdt} document has no generations")


def carry_update(
    crdt: str,
    *,
    cut: pycrdt.Doc[Any],
    before: pycrdt.Doc[Any],
    after: pycrdt.Doc[Any],
    current: pycrdt.Doc[Any],
    writer: int,
) -> bytes | None:
    """What a late update to ``g`` adds to ``g+1``, written by ``writer``; ``None``: nothing.

    ``cut``: ``g`` at the rollover; ``before``/``after``: ``g`` around the late
    update; ``current``: ``g+1`` as it is now.  Counters: the growth of each
    slot beyond the cut and ``before``, in new slots of ``writer`` (a duplicate
    carries nothing).  LWW: the late winners that beat ``current``'s, copied
    with their original timestamps and writers (carrying twice is once).
    """
    if crdt == "counter":
        carried = carry_counter(counter_slots(cut), counter_slots(before), counter_slots(after))
        if not carried:
            return None

        def fill(root: pycrdt.Map[Any]) -> None:
            for entity, (inc, dec) in carried.items():
                root[entity + SEP + str(writer)] = [inc, dec]

        return _written(writer, fill)
    if crdt == "lww":
        late = carry_lww(lww_winners(lww_slots(current)), lww_slots(after))
        if not late:
            return None

        def fill_lww(root: pycrdt.Map[Any]) -> None:
            for (record, field), write in late.items():
                root[slot_key(record, field, writer)] = _copy_slot(write, field)

        return _written(writer, fill_lww)
    raise InvalidArgument(f"a {crdt} document has no generations")
