"""PN-counter collection: one integer per entity, incremented and decremented anywhere.

Layout: key ``entity SEP writer`` holds ``[increments, decrements]``, written
only by ``writer`` (a Yjs client id, fresh for every incarnation of a
replica, so no two writers ever share a slot).  The value of an entity is the
sum of increments minus the sum of decrements over its slots.

A slot whose key or value is not of that shape (non-negative exact integers
below 2**53, a numeric writer) is skipped and counted in
:attr:`PNCounter.skipped`: a foreign value never fails a read or a merge.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping
from itertools import repeat
from operator import add
from typing import Any

import pycrdt

from tiendasync.crdt.keys import (
    MAX_SAFE_INTEGER,
    ROOT,
    SEP,
    bulk_setter,
    check_safe_int,
    paused_gc,
)
from tiendasync.errors import InvalidArgument
from tiendasync.model.names import all_safe_ints

__all__ = ["PNCounter", "decode_counter_slot"]


def _count(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_SAFE_INTEGER:
        return value
    return None


def decode_counter_slot(key: str, value: object) -> tuple[int, int] | None:
    """``(increments, decrements)`` of a slot, or ``None`` if it is not a valid slot."""
    entity, _, writer = key.rpartition(SEP)
    if not entity or not writer.isdigit():
        return None
    if not isinstance(value, list) or len(value) != 2:
        return None
    inc, dec = _count(value[0]), _count(value[1])
    if inc is None or dec is None:
        return None
    return inc, dec


class PNCounter:
    """A map from entity name to an integer counter, over one pycrdt doc."""

    #: A bulk write of fewer slots goes through the observer like any other write:
    #: muting it (unsubscribing and subscribing again) costs more than one event.
    bulk_min = 32

    def __init__(self, doc: pycrdt.Doc[Any]) -> None:
        self.doc = doc
        self._root: pycrdt.Map = doc.get(ROOT, type=pycrdt.Map)  # type: ignore[type-arg]
        self._writer = str(doc.client_id)
        self._slots: dict[str, dict[str, tuple[int, int]]] = {}
        self._totals: dict[str, int] = {}
        self._changed: set[str] = set()
        #: Slots skipped because their key or value is not a valid slot.
        self.skipped = 0
        #: Slot keys per entity not read yet: a big stock document opens with one
        #: native call for its keys; an entity's slots are read on first use.
        self._unread: dict[str, list[str]] = {}
        keys: Iterator[str] = iter(self._root.keys())
        for key in keys:
            self._unread.setdefault(key.rpartition(SEP)[0], []).append(key)
        self._subscription = self._root.observe(self._on_change)

    def detach(self) -> None:
        """Stop observing the document (it is being unloaded): a pycrdt observer keeps
        its document alive until it is removed.  The view must not be used after."""
        self._root.unobserve(self._subscription)

    def _read(self, entity: str) -> None:
        for key in self._unread.pop(entity, ()):
            self._index(key, self._root.get(key))

    def _read_all(self) -> None:
        for entity in list(self._unread):
            self._read(entity)

    def value(self, entity: str) -> int:
        """Current value of ``entity`` (0 if never touched)."""
        self._read(entity)
        return self._totals.get(entity, 0)

    def entities(self) -> Iterator[str]:
        """Every entity that has at least one slot."""
        self._read_all()
        return iter(self._totals)

    def keyed(self) -> set[str]:
        """Entities with at least one slot key, valid or not, read or not: a superset of
        :meth:`entities` that reads no slot (what an import asks of a big document)."""
        return {*self._totals, *self._unread}

    def items(self) -> Iterator[tuple[str, int]]:
        """``(entity, value)`` pairs."""
        self._read_all()
        return iter(self._totals.items())

    def contributions(self, entity: str) -> dict[str, tuple[int, int]]:
        """Per-writer ``(increments, decrements)`` of ``entity``."""
        self._read(entity)
        return dict(self._slots.get(entity, {}))

    def add(self, entity: str, delta: int) -> None:
        """Add ``delta`` (may be negative) to ``entity``.

        Must run inside a transaction of ``doc``.  Raises
        :class:`InvalidArgument` when ``delta`` is not an exact integer or the
        slot would reach 2**53.
        """
        check_safe_int(delta, "quantity")
        if delta == 0:
            return
        self._read(entity)
        inc, dec = self._slots.get(entity, {}).get(self._writer, (0, 0))
        if delta > 0:
            inc += delta
        else:
            dec -= delta
        if inc > MAX_SAFE_INTEGER or dec > MAX_SAFE_INTEGER:
            raise InvalidArgument(f"counter for {entity!r} would exceed 2**53 - 1")
        self._root[entity + SEP + self._writer] = [inc, dec]

    def add_many(self, deltas: Mapping[str, int]) -> int:
        """Add each ``{entity: delta}`` in ONE transaction of ``doc`` that this call opens.

        The slots are those :meth:`add` writes entity by entity, but every
        delta is checked before the first slot is written, and no observer event
        is built and read back per key: the view reads the written slots on
        first use, as it reads the slots of a document just opened.
        Must not run inside a transaction of ``doc``.  Fewer than
        :attr:`bulk_min` slots are written through the observer instead.
        Returns how many slots were written.
        """
        unread, slots_of, writer = self._unread, self._slots, self._writer
        if (
            len(deltas) >= self.bulk_min
            and all_safe_ints(deltas.values(), 1)
            and unread.keys().isdisjoint(deltas)
            and slots_of.keys().isdisjoint(deltas)
        ):
            return self._add_new(deltas)
        writes: list[tuple[str, int, int]] = []
        for entity, delta in deltas.items():
            if type(delta) is not int or abs(delta) > MAX_SAFE_INTEGER:
                check_safe_int(delta, "quantity")  # raises
            if delta == 0:
                continue
            if entity in unread:
                self._read(entity)
            own = slots_of.get(entity)
            inc, dec = (0, 0) if own is None else own.get(writer, (0, 0))
            if delta > 0:
                inc += delta
            else:
                dec -= delta
            if inc > MAX_SAFE_INTEGER or dec > MAX_SAFE_INTEGER:
                raise InvalidArgument(f"counter for {entity!r} would exceed 2**53 - 1")
            writes.append((entity, inc, dec))
        root = self._root
        if len(writes) < self.bulk_min:
            with self.doc.transaction(origin="local"):
                for entity, inc, dec in writes:
                    root[entity + SEP + writer] = [inc, dec]
            return len(writes)
        root.unobserve(self._subscription)
        try:
            with paused_gc(), bulk_setter(root, "local") as put:
                for entity, inc, dec in writes:
                    key = entity + SEP + writer
                    put(key, [inc, dec])
                    # Read back on first use, as the slots of a document just opened are.
                    unread.setdefault(entity, []).append(key)
        finally:
            self._subscription = root.observe(self._on_change)
        self._changed.update(entity for entity, _, _ in writes)
        return len(writes)

    def _add_new(self, deltas: Mapping[str, int]) -> int:
        """:meth:`add_many` of positive deltas to entities without a slot yet (the
        opening stock of an import): slots ``[delta, 0]`` (tuples, which pycrdt encodes
        as the lists they equal), keys and native inserts built by ``map``/``zip``, no
        Python code per slot."""
        entities = list(deltas)
        keys: list[str] = list(map(add, entities, repeat(SEP + self._writer)))
        root = self._root
        root.unobserve(self._subscription)
        try:
            with paused_gc(), bulk_setter(root, "local") as put:
                deque(map(put, keys, zip(deltas.values(), repeat(0), strict=False)), maxlen=0)
        finally:
            self._subscription = root.observe(self._on_change)
        # Read back on first use, as the slots of a document just opened are.
        self._unread.update(zip(entities, map(list, zip(keys, strict=True)), strict=True))
        self._changed.update(entities)
        return len(entities)

    def drain_changed(self) -> set[str]:
        """Entities whose value changed since the last drain."""
        changed, self._changed = self._changed, set()
        return changed

    def _on_change(self, event: Any) -> None:
        for key, change in event.keys.items():
            self._changed.add(key.rpartition(SEP)[0])
            if change["action"] == "delete":
                self._unindex(key)
            else:
                self._index(key, change["newValue"])

    def _index(self, key: str, value: object) -> None:
        entity, _, writer = key.rpartition(SEP)
        if entity in self._unread:
            self._read(entity)  # the rest of its slots first (this one is re-read: same value)
        parsed = decode_counter_slot(key, value)
        if parsed is None:
            self.skipped += 1  # not a slot: ignore it rather than fail a remote merge
            self._unindex(key)
            return
        inc, dec = parsed
        slots = self._slots.setdefault(entity, {})
        old_inc, old_dec = slots.get(writer, (0, 0))
        slots[writer] = (inc, dec)
        self._totals[entity] = self._totals.get(entity, 0) + (inc - dec) - (old_inc - old_dec)

    def _unindex(self, key: str) -> None:
        entity, _, writer = key.rpartition(SEP)
        self._read(entity)
        slots = self._slots.get(entity)
        if slots is None or writer not in slots:
            return
        inc, dec = slots.pop(writer)
        self._totals[entity] -= inc - dec
