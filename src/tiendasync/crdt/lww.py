"""Last-writer-wins map of records, field by field, ordered by HLC timestamps.

Y.Map settles concurrent sets of one key by "higher client id wins", which is
not time.  So every writer gets its own slot per field:

    key   = record SEP field SEP writer          (writer: the Yjs client id)
    value = [wall_ms, counter, replica_id, json]

Reading a field takes the slot with the greatest ``(timestamp, writer)``.  A
writer deletes the slots of that field it has already seen and supersedes;
Yjs applies a delete only to the item it saw, so a concurrent write lands in a
new item and survives.  Deleting a record writes an LWW tombstone in the
reserved field ``TOMBSTONE``; a field is visible only if it was written after
the newest tombstone, so a later edit revives the record and an earlier one
does not.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import pycrdt

from tiendasync.crdt.keys import ROOT, SEP
from tiendasync.errors import InvalidArgument
from tiendasync.model.hlc import Timestamp

__all__ = ["TOMBSTONE", "FieldWrite", "LWWMap"]

TOMBSTONE = "\x00deleted"


class FieldWrite(NamedTuple):
    """One slot: the write of one field by one writer.

    Tuples compare in last-writer-wins order: timestamp, then writer.
    """

    wall_ms: int
    counter: int
    replica_id: str
    writer: int
    json_value: str

    @property
    def timestamp(self) -> Timestamp:
        return Timestamp(self.wall_ms, self.counter, self.replica_id)

    @property
    def value(self) -> Any:
        return json.loads(self.json_value)


def encode_value(value: object, what: str) -> str:
    """Canonical JSON of a field value; refuses what JSON cannot carry exactly."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"{what} is not a JSON value: {exc}") from exc


class LWWMap:
    """Records of named fields with field-level last-writer-wins, over one doc."""

    def __init__(self, doc: pycrdt.Doc[Any]) -> None:
        self.doc = doc
        self._root: pycrdt.Map = doc.get(ROOT, type=pycrdt.Map)  # type: ignore[type-arg]
        self._writer = int(doc.client_id)
        self._slots: dict[str, dict[str, dict[int, FieldWrite]]] = {}
        #: Slot keys per record not read yet (so opening a big catalog is cheap).
        self._raw: dict[str, list[str]] = {}
        #: The greatest timestamp seen in any slot (to advance the local HLC).
        self.newest: Timestamp | None = None
        self._changed: builtins.set[str] = set()
        keys: Iterator[str] = iter(self._root.keys())  # one native call, not one per key
        self._bulk_index(keys)
        self._subscription = self._root.observe(self._on_change)

    # -- reading -----------------------------------------------------------

    def get(self, record: str) -> dict[str, Any] | None:
        """The visible fields of ``record``, or ``None`` if absent or deleted."""
        fields = self._fields(record)
        if not fields:
            return None
        winners = {name: max(slots.values()) for name, slots in fields.items() if slots}
        tomb = winners.pop(TOMBSTONE, None)
        visible = {
            name: w.value
            for name, w in winners.items()
            if tomb is None or (w.timestamp, w.writer) > (tomb.timestamp, tomb.writer)
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
        return max(slots.values()) if slots else None

    def concurrent_losers(self, record: str) -> dict[str, list[FieldWrite]]:
        """Slots still present that lost to the winner of their field.

        These are concurrent edits that last-writer-wins discarded (a writer
        that had seen them would have pruned them).
        """
        out: dict[str, list[FieldWrite]] = {}
        for name, slots in (self._fields(record) or {}).items():
            if len(slots) > 1:
                best = max(slots.values())
                out[name] = sorted(w for w in slots.values() if w != best)
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
        """Write ``fields`` of ``record`` at ``timestamp`` and prune what they supersede."""
        encoded = {name: encode_value(value, f"field {name!r}") for name, value in fields.items()}
        for name, json_value in encoded.items():
            self._write(record, name, json_value, timestamp)

    def delete(self, record: str, timestamp: Timestamp) -> None:
        """Write a tombstone for ``record`` and prune every slot it supersedes."""
        self._write(record, TOMBSTONE, "true", timestamp)
        mine = (timestamp, self._writer)
        for name, slots in list((self._fields(record) or {}).items()):
            if name == TOMBSTONE:
                continue
            for writer, w in list(slots.items()):
                if (w.timestamp, w.writer) < mine:
                    self._prune(record + SEP + name + SEP + str(writer))

    def _write(self, record: str, field: str, json_value: str, ts: Timestamp) -> None:
        mine = (ts, self._writer)
        for writer, w in list((self._fields(record) or {}).get(field, {}).items()):
            if writer != self._writer and (w.timestamp, w.writer) < mine:
                self._prune(record + SEP + field + SEP + str(writer))
        key = record + SEP + field + SEP + str(self._writer)
        self._root[key] = [ts.wall_ms, ts.counter, ts.replica_id, json_value]

    def _prune(self, key: str) -> None:
        # Unindex explicitly: pycrdt 0.14 emits no map event when the deleted
        # item came from an update applied with a clock gap, and such an item
        # may also be gone from the map already (a stale index must not raise).
        if key in self._root:
            del self._root[key]
        self._unindex(key)

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
        if parts is None or not isinstance(value, list) or len(value) != 4:
            return
        record, field, writer = parts
        if record in self._raw:
            self._fields(record)
        ts = Timestamp(int(value[0]), int(value[1]), str(value[2]))
        slots = self._slots.setdefault(record, {}).setdefault(field, {})
        slots[writer] = FieldWrite(ts.wall_ms, ts.counter, ts.replica_id, writer, str(value[3]))
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
