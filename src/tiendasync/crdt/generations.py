"""Sans-I/O core of counter document generations (issue 14, step 1; counters only).

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
as decoded by :func:`tiendasync.crdt.counter.decode_counter_slot`; nothing
here touches pycrdt or storage.  Not yet wired into the relay or replicas.
"""

from __future__ import annotations

from collections.abc import Mapping

from tiendasync.crdt.keys import MAX_SAFE_INTEGER
from tiendasync.crdt.lww import FieldWrite

__all__ = [
    "CounterSlots",
    "LWWSlots",
    "apply_carry",
    "carry_counter",
    "carry_lww",
    "lww_winners",
    "seed_counter",
    "totals",
]

from tiendasync.errors import InvalidArgument

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

    This is what seeds ``g+1`` of an LWW document (how the relay stores a
    winner whose writer is not the relay in ``g+1``'s slot layout is not
    decided yet: the sort key must stay the original one so later edits win).
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
