"""Last-writer-wins map of records, field by field, ordered by HLC timestamps.

Y.Map settles concurrent sets of one key by "higher client id wins", which is
not time.  So every writer gets its own slot per field:

    key   = record SEP field SEP writer          (writer: the Yjs client id)
    value = [wall_ms, counter, replica_id, json, field, seen]

``field`` repeats the key's field, so that a validator that sees only the
value (an overwrite of a slot names its key only through the slot it
replaces) still knows which field's rules apply; a value whose ``field``
differs from its key is ignored.  ``seen`` is the sort key
``[wall_ms, counter, replica_id, writer]`` of the field's winner when the
writer wrote (``null`` if there was none): it tells an edit that knowingly
superseded another from one that raced it (:meth:`LWWMap.concurrent_losers`).

A slot may carry a seventh element, ``origin``: the writer of the write it
copies.  Only the relay writes such slots, when it seeds a new document
generation with each field's winner (:mod:`tiendasync.crdt.generations`):
the copy keeps its original timestamp *and* writer, so it sorts exactly as
the original did and a later edit still beats it (the relay's validator
accepts the element only from the relay's own writer).

Reading a field takes the slot with the greatest ``(timestamp, writer)``.  A
writer only ever overwrites its own slot (the ownership rule: the relay
refuses an update that deletes or rewrites another writer's slot), so
superseded slots stay until a document generation folds them.  Deleting a
record writes an LWW tombstone in the reserved field ``TOMBSTONE``; a field is
visible only if it was written after the newest tombstone, so a later edit
revives the record and an earlier one does not.

Slots written before ``field`` and ``seen`` existed (``[wall_ms, counter,
replica_id, json]``) are still read.  Values of any other shape, and JSON
text that does not parse, are skipped and counted in :attr:`LWWMap.skipped`:
a foreign value never fails a read or a merge.
"""

from __future__ import annotations

import builtins
import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import chain, repeat
from operator import add, itemgetter
from typing import Any, NamedTuple

import pycrdt

from tiendasync.crdt.keys import ROOT, SEP, bulk_setter, paused_gc
from tiendasync.errors import InvalidArgument
from tiendasync.model.hlc import Timestamp

__all__ = [
    "TOMBSTONE",
    "FieldWrite",
    "LWWMap",
    "SortKey",
    "columns",
    "decode_slot",
    "slot_key",
]

TOMBSTONE = "\x00deleted"

#: ``json.dumps`` of one string (ASCII-escaped), without building an encoder per call.
_encode_str = json.encoder.encode_basestring_ascii


#: ``(wall_ms, counter, replica_id, writer)``: what a slot sorts by.
SortKey = tuple[int, int, str, int]


class FieldWrite(NamedTuple):
    """One slot: the write of one field by one writer.

    Tuples compare in last-writer-wins order: timestamp, then writer.
    """

    wall_ms: int
    counter: int
    replica_id: str
    writer: int
    json_value: str
    #: The winner its writer had seen (``None``: none, or a slot of the old layout).
    seen: SortKey | None = None
    #: The writer of the write this slot copies (a generation's seed), else ``None``.
    origin: int | None = None

    @property
    def author(self) -> int:
        """The writer this write sorts by: the original one for a seeded copy."""
        return self.writer if self.origin is None else self.origin

    @property
    def sort_key(self) -> SortKey:
        return (self.wall_ms, self.counter, self.replica_id, self.author)

    @property
    def timestamp(self) -> Timestamp:
        return Timestamp(self.wall_ms, self.counter, self.replica_id)

    @property
    def value(self) -> Any:
        return json.loads(self.json_value)


def encode_value(value: object, what: str) -> str:
    """Canonical JSON of a field value; refuses what JSON cannot carry exactly."""
    if type(value) is str:  # the common cases, as json.dumps would spell them
        return _encode_str(value)
    if type(value) is int:
        return repr(value)
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} is not a JSON value: {exc}") from exc


def slot_key(record: str, field: str, writer: int) -> str:
    return record + SEP + field + SEP + str(writer)


def _int(value: object) -> int | None:
    """An exact integer from a merged value (Yjs numbers arrive as floats)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return None


def _sort_key(raw: object) -> SortKey | None:
    """A slot's ``seen`` sort key, or ``None`` if ``raw`` is not one."""
    if not isinstance(raw, list) or len(raw) != 4 or not isinstance(raw[2], str):
        return None
    wall, counter, writer = _int(raw[0]), _int(raw[1]), _int(raw[3])
    if wall is None or counter is None or writer is None:
        return None
    return (wall, counter, raw[2], writer)


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def decode_slot(field: str, writer: int, value: object) -> FieldWrite | None:
    """The :class:`FieldWrite` a slot value holds, or ``None`` if it is not a valid slot.

    Valid: ``[wall_ms, counter, replica_id, json]`` (old layout),
    ``[wall_ms, counter, replica_id, json, field, seen]`` with ``field`` equal
    to the key's and ``seen`` null or a sort key, or that plus ``origin`` (a
    seeded copy's original writer); integers exact and non-negative, ``json``
    parseable JSON text.
    """
    if not isinstance(value, list) or len(value) not in (4, 6, 7):
        return None
    wall, counter = _int(value[0]), _int(value[1])
    replica_id, json_value = value[2], value[3]
    if wall is None or counter is None or wall < 0 or counter < 0:
        return None
    if not isinstance(replica_id, str) or not isinstance(json_value, str):
        return None
    seen = _sort_key(value[5]) if len(value) >= 6 else None
    if len(value) >= 6 and (value[4] != field or (value[5] is not None and seen is None)):
        return None
    origin = _int(value[6]) if len(value) == 7 else None
    bad_origin = len(value) == 7 and (origin is None or origin < 0)
    if bad_origin or not _is_json(json_value):
        return None
    return FieldWrite(wall, counter, replica_id, writer, json_value, seen, origin)


def _encode_field(name: str, value: object) -> str:
    """:func:`encode_value` of a field's value (its message built only on failure)."""
    if type(value) is str:
        return _encode_str(value)
    if type(value) is int:
        return repr(value)
    return encode_value(value, f"field {name!r}")


def _encode_column(name: str, values: list[Any]) -> list[str]:
    """:func:`_encode_field` of each of one field's ``values``: at C speed when they are
    all strings or all exact ints (how a bulk import's columns look)."""
    kinds = set(map(type, values))
    if kinds == {str}:
        return list(map(_encode_str, values))
    if kinds == {int}:
        return list(map(int.__repr__, values))
    return [_encode_field(name, v) for v in values]


def columns(
    records: Mapping[str, Mapping[str, object]],
) -> tuple[tuple[str, ...], list[list[object]]] | None:
    """``(field names, one list of values per field)`` when every record is a ``dict``
    with the same field names in the same order (a bulk import); else ``None``."""
    rows = list(records.values())
    if not rows or set(map(type, rows)) != {dict}:
        return None
    shapes = set(map(tuple, rows))
    if len(shapes) != 1:
        return None
    (names,) = shapes
    if not names:
        return None
    return names, [list(map(itemgetter(name), rows)) for name in names]


def _latest(write: FieldWrite) -> SortKey:
    return write.sort_key


class LWWMap:
    """Records of named fields with field-level last-writer-wins, over one doc."""

    #: A bulk write of fewer slots goes through the observer like any other write:
    #: muting it (unsubscribing and subscribing again) costs more than one event.
    bulk_min = 32

    def __init__(self, doc: pycrdt.Doc[Any]) -> None:
        self.doc = doc
        self._root: pycrdt.Map = doc.get(ROOT, type=pycrdt.Map)  # type: ignore[type-arg]
        self._writer = int(doc.client_id)
        self._slots: dict[str, dict[str, dict[int, FieldWrite]]] = {}
        #: Slot keys per record not read yet (so opening a big catalog is cheap).
        self._raw: dict[str, list[str]] = {}
        #: The greatest timestamp seen in any slot (to advance the local HLC).
        self.newest: Timestamp | None = None
        #: Slots skipped because their key or value is not a valid slot.
        self.skipped = 0
        self._changed: builtins.set[str] = set()
        keys: Iterator[str] = iter(self._root.keys())  # one native call, not one per key
        self._bulk_index(keys)
        self._subscription = self._root.observe(self._on_change)

    # -- reading -----------------------------------------------------------

    def detach(self) -> None:
        """Stop observing the document (it is being unloaded): a pycrdt observer keeps
        its document alive until it is removed.  The view must not be used after."""
        self._root.unobserve(self._subscription)

    def get(self, record: str) -> dict[str, Any] | None:
        """The visible fields of ``record``, or ``None`` if absent or deleted."""
        fields = self._fields(record)
        if not fields:
            return None
        winners = {
            name: max(slots.values(), key=_latest) for name, slots in fields.items() if slots
        }
        tomb = winners.pop(TOMBSTONE, None)
        visible = {
            name: w.value
            for name, w in winners.items()
            if tomb is None or w.sort_key > tomb.sort_key
        }
        return visible or None

    def exists(self, record: str) -> bool:
        return self.get(record) is not None

    def records(self) -> Iterator[str]:
        """Names of the records that are visible (not deleted)."""
        names = list(dict.fromkeys([*self._slots, *self._raw]))
        return (name for name in names if self.get(name) is not None)

    def winner(self, record: str, field: str) -> FieldWrite | None:
        """The write currently in force for ``record.field`` (tombstones ignored)."""
        slots = (self._fields(record) or {}).get(field)
        return max(slots.values(), key=_latest) if slots else None

    def concurrent_losers(self, record: str) -> dict[str, list[FieldWrite]]:
        """Per field, the slots that lost to its winner without its writer having seen them.

        These are concurrent edits that last-writer-wins discarded.  A slot
        no newer than what the winner's writer had seen (its ``seen``) was
        knowingly superseded and is not listed; neither is any slot once the
        field is written again by a writer that had seen the whole race.
        """
        out: dict[str, list[FieldWrite]] = {}
        for name, slots in (self._fields(record) or {}).items():
            if len(slots) > 1:
                best = max(slots.values(), key=_latest)
                losers = sorted(
                    (
                        w
                        for w in slots.values()
                        if w != best and (best.seen is None or w.sort_key > best.seen)
                    ),
                    key=_latest,
                )
                if losers:
                    out[name] = losers
        return out

    def latest_timestamp(self, record: str) -> Timestamp | None:
        """The greatest timestamp written to ``record`` (any field)."""
        fields = self._fields(record)
        if not fields:
            return None
        stamps = [w.timestamp for slots in fields.values() for w in slots.values()]
        return max(stamps) if stamps else None

    # -- writing (inside a transaction of ``doc``) -------------------------

    def set(self, record: str, fields: Mapping[str, object], timestamp: Timestamp) -> None:
        """Write ``fields`` of ``record`` at ``timestamp``, each in this writer's own slot."""
        encoded = {name: encode_value(value, f"field {name!r}") for name, value in fields.items()}
        for name, json_value in encoded.items():
            self._write(record, name, json_value, timestamp)

    def set_many(
        self,
        records: Mapping[str, Mapping[str, object]],
        clock: Callable[[int], Timestamp],
        *,
        table: tuple[tuple[str, ...], list[list[Any]]] | None = None,
    ) -> int:
        """Write many records in ONE transaction of ``doc`` that this call opens.

        The slots are those :meth:`set` writes for each record in turn, the
        i-th record stamped with the i-th of ``clock(len(records))``'s
        consecutive timestamps (``clock`` returns the first:
        :meth:`~tiendasync.model.hlc.HLC.now_many`).  Every value is encoded
        before the first is written, and no observer event is built and read
        back per key: the view reads the written slots on first use, as it reads
        the slots of a document just opened.  Records that all have the same
        field names (a bulk import) are encoded and written a column at a time,
        without Python code per slot.  Must not run inside a transaction of
        ``doc`` (its event would then reach the view).  Fewer than
        :attr:`bulk_min` slots are written through the observer instead.
        ``table``: :func:`columns` of ``records``, when the caller has it already.
        Returns how many slots were written.
        """
        if not records:
            return 0
        if table is None:
            table = columns(records)
        if table is None:
            rows = [
                (record, {name: _encode_field(name, v) for name, v in fields.items()})
                for record, fields in records.items()
            ]
        else:
            names, values = table
            encoded = [_encode_column(name, col) for name, col in zip(names, values, strict=True)]
            if len(records) * len(names) >= self.bulk_min:
                return self._put_columns(list(records), names, encoded, clock(len(records)))
            rows = [
                (r, dict(zip(names, v, strict=True)))
                for r, v in zip(records, zip(*encoded, strict=True), strict=True)
            ]
        first = clock(len(rows))
        if sum(len(fields) for _, fields in rows) < self.bulk_min:
            with self.doc.transaction(origin="local"):
                for n, (record, fields) in enumerate(rows):
                    ts = Timestamp(first.wall_ms, first.counter + n, first.replica_id)
                    for name, json_value in fields.items():
                        self._write(record, name, json_value, ts)
            return sum(len(fields) for _, fields in rows)
        return self._put_rows(rows, first)

    def _put_rows(self, rows: list[tuple[str, dict[str, str]]], first: Timestamp) -> int:
        """:meth:`set_many`'s bulk write, record by record."""
        writer, root, raw = self._writer, self._root, self._raw
        tail = SEP + str(writer)
        wall, counter, replica = first
        written = 0
        root.unobserve(self._subscription)
        try:
            with paused_gc(), bulk_setter(root, "local") as put:
                for record, fields in rows:
                    existing = self._fields(record) or {}
                    keys = []
                    for name, json_value in fields.items():
                        slots = existing.get(name)
                        seen = max(slots.values(), key=_latest).sort_key if slots else None
                        key = record + SEP + name + tail
                        put(key, [wall, counter, replica, json_value, name, seen and list(seen)])
                        keys.append(key)
                    # Read back on first use, as the slots of a document just opened are.
                    pending = raw.get(record)
                    if pending is None:
                        raw[record] = keys
                    else:
                        pending.extend(keys)
                    written += len(keys)
                    counter += 1
        finally:
            self._subscription = root.observe(self._on_change)
        self._written([r for r, _ in rows], first, len(rows))
        return written

    def _put_columns(
        self, records: list[str], names: tuple[str, ...], encoded: list[list[str]], first: Timestamp
    ) -> int:
        """:meth:`set_many`'s bulk write, a field at a time: the keys, the slot values and
        the native inserts are built by ``map``/``zip`` (record-major order, as
        :meth:`_put_rows` writes them)."""
        n = len(records)
        raw, slots = self._raw, self._slots
        known = []  # records with slots already: their writes name the winner they saw
        if not (raw.keys().isdisjoint(records) and slots.keys().isdisjoint(records)):
            known = [i for i, r in enumerate(records) if r in raw or r in slots]
        wall, replica = first.wall_ms, first.replica_id
        stamps = range(first.counter, first.counter + n)
        tail = SEP + str(self._writer)
        key_columns: list[list[str]] = []
        # Slot values as tuples: pycrdt encodes a tuple as the list it equals.
        value_columns: list[Iterator[tuple[object, ...]]] = []
        for name, jsons in zip(names, encoded, strict=True):
            seen: Iterable[list[object] | None] = repeat(None)
            if known:
                seen = [None] * n
                for i in known:
                    field = (self._fields(records[i]) or {}).get(name)
                    if field:
                        seen[i] = list(max(field.values(), key=_latest).sort_key)
            key_columns.append(list(map(add, records, repeat(SEP + name + tail))))
            value_columns.append(
                zip(repeat(wall), stamps, repeat(replica), jsons, repeat(name), seen, strict=False)
            )
        root = self._root
        root.unobserve(self._subscription)
        try:
            with paused_gc(), bulk_setter(root, "local") as put:
                keys = chain.from_iterable(zip(*key_columns, strict=True))
                values = chain.from_iterable(zip(*value_columns, strict=True))
                deque(map(put, keys, values), maxlen=0)
        finally:
            self._subscription = root.observe(self._on_change)
        # Read back on first use, as the slots of a document just opened are (none of
        # these records has keys pending: known ones were read above).
        raw.update(zip(records, map(list, zip(*key_columns, strict=True)), strict=True))
        self._written(records, first, n)
        return n * len(names)

    def _written(self, records: Iterable[str], first: Timestamp, n: int) -> None:
        self._changed.update(records)
        last = Timestamp(first.wall_ms, first.counter + n - 1, first.replica_id)
        if self.newest is None or last > self.newest:
            self.newest = last

    def delete(self, record: str, timestamp: Timestamp) -> None:
        """Write a tombstone for ``record`` (fields written before it are hidden)."""
        self._write(record, TOMBSTONE, "true", timestamp)

    def _write(self, record: str, field: str, json_value: str, ts: Timestamp) -> None:
        current = self.winner(record, field)
        seen = None if current is None else list(current.sort_key)
        key = slot_key(record, field, self._writer)
        self._root[key] = [ts.wall_ms, ts.counter, ts.replica_id, json_value, field, seen]

    # -- index maintenance -------------------------------------------------

    def drain_changed(self) -> builtins.set[str]:
        """Records touched since the last drain."""
        changed, self._changed = self._changed, set()
        return changed

    def _on_change(self, event: Any) -> None:
        for key, change in event.keys.items():
            self._changed.add(key.split(SEP, 1)[0])
            if change["action"] == "delete":
                self._unindex(key)
            else:
                self._index(key, change["newValue"])

    @staticmethod
    def _split(key: str) -> tuple[str, str, int] | None:
        parts = key.split(SEP)
        if len(parts) != 3 or not parts[2].isdigit():
            return None
        return parts[0], parts[1], int(parts[2])

    def _bulk_index(self, keys: Iterator[str]) -> None:
        """Group a whole map's keys by record; a record's slots are read on first use."""
        raw = self._raw
        for key in keys:
            record = key.split(SEP, 1)[0]
            bucket = raw.get(record)
            if bucket is None:
                raw[record] = [key]
            else:
                bucket.append(key)

    def _fields(self, record: str) -> dict[str, dict[int, FieldWrite]] | None:
        pending = self._raw.pop(record, None)
        if pending is not None:
            for key in pending:
                self._index(key, self._root.get(key))
        return self._slots.get(record)

    def _index(self, key: str, value: object) -> None:
        parts = self._split(key)
        write = None if parts is None else decode_slot(parts[1], parts[2], value)
        if parts is None or write is None:
            self.skipped += 1
            return
        record, field, writer = parts
        if record in self._raw:
            self._fields(record)
        slots = self._slots.setdefault(record, {}).setdefault(field, {})
        slots[writer] = write
        ts = write.timestamp
        if self.newest is None or ts > self.newest:
            self.newest = ts

    def _unindex(self, key: str) -> None:
        parts = self._split(key)
        if parts is None:
            return
        record, field, writer = parts
        fields = self._fields(record)
        if fields is None:
            return
        slots = fields.get(field)
        if slots is not None:
            slots.pop(writer, None)
            if not slots:
                del fields[field]
        if not fields:
            del self._slots[record]
