"""PN-counter collection: one integer per entity, incremented and decremented anywhere.

Layout: key ``entity SEP writer`` holds ``[increments, decrements]``, written
only by ``writer`` (a Yjs client id, fresh for every incarnation of a
replica, so no two writers ever share a slot).  The value of an entity is the
sum of increments minus the sum of decrements over its slots.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pycrdt

from tiendasync.crdt.keys import MAX_SAFE_INTEGER, ROOT, SEP, check_safe_int
from tiendasync.errors import InvalidArgument

__all__ = ["PNCounter"]


class PNCounter:
    """A map from entity name to an integer counter, over one pycrdt doc."""

    def __init__(self, doc: pycrdt.Doc[Any]) -> None:
        self.doc = doc
        self._root: pycrdt.Map = doc.get(ROOT, type=pycrdt.Map)  # type: ignore[type-arg]
        self._writer = str(doc.client_id)
        self._slots: dict[str, dict[str, tuple[int, int]]] = {}
        self._totals: dict[str, int] = {}
        self._changed: set[str] = set()
        #: Slot keys per entity not read yet: a big stock document opens with one
        #: native call for its keys; an entity's slots are read on first use.
        self._unread: dict[str, list[str]] = {}
        keys: Iterator[str] = iter(self._root.keys())
        for key in keys:
            self._unread.setdefault(key.rpartition(SEP)[0], []).append(key)
        self._subscription = self._root.observe(self._on_change)

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
        if not entity or not isinstance(value, list) or len(value) != 2:
            return  # not ours: ignore foreign keys rather than fail a remote merge
        inc, dec = int(value[0]), int(value[1])
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
