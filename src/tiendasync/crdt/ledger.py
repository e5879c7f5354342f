"""Ledger: immutable records under unique, sortable ids (sales tickets).

Layout: key ``id`` holds the record's canonical JSON text.  Each id is
written once; writing it again with different content is an error, with the
same content a no-op (so redelivery is harmless).  Annotations that may be
added later (a void, a remap) live under ``id SEP tag SEP writer``, keyed by
their annotator (the writer's Yjs client id), so that no writer ever writes
a key another writer owns; they are write-once too.  Annotations written
before keys carried their annotator (``id SEP tag``) are still read.

A record or annotation whose text is not a JSON object is skipped (counted in
:attr:`Ledger.skipped`): a foreign value never fails a read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pycrdt

from tiendasync.crdt.keys import ROOT, SEP
from tiendasync.crdt.lww import encode_value
from tiendasync.errors import InvalidArgument

__all__ = ["Ledger", "annotation_key"]


def annotation_key(record_id: str, tag: str, writer: int) -> str:
    return record_id + SEP + tag + SEP + str(writer)


class Ledger:
    """Append-only records over one pycrdt doc."""

    def __init__(self, doc: pycrdt.Doc[Any]) -> None:
        self.doc = doc
        self._root: pycrdt.Map = doc.get(ROOT, type=pycrdt.Map)  # type: ignore[type-arg]
        self._writer = int(doc.client_id)
        self._added: list[str] = []
        #: ``(record id, tag)`` -> annotation keys; built on first use.
        self._annotations: dict[tuple[str, str], list[str]] | None = None
        #: Keys of records and annotations skipped: their text is not a JSON object.
        self._skipped_keys: set[str] = set()
        self._subscription = self._root.observe(self._on_change)

    def detach(self) -> None:
        """Stop observing the document (it is being unloaded): a pycrdt observer keeps
        its document alive until it is removed.  The view must not be used after."""
        self._root.unobserve(self._subscription)

    def _on_change(self, event: Any) -> None:
        for key, change in event.keys.items():
            if change["action"] == "add":
                self._added.append(key)
                if self._annotations is not None and SEP in key:
                    self._note(self._annotations, key)

    @staticmethod
    def _note(index: dict[tuple[str, str], list[str]], key: str) -> None:
        record_id, _, rest = key.partition(SEP)
        tag = rest.partition(SEP)[0]
        keys = index.setdefault((record_id, tag), [])
        if key not in keys:
            keys.append(key)

    def drain_added(self) -> list[str]:
        """Keys (records and annotations) added since the last drain."""
        added, self._added = self._added, []
        return added

    def _read(self, key: str) -> dict[str, Any] | None:
        text = self._root.get(key)
        if text is None:
            return None
        try:
            value = json.loads(text) if isinstance(text, str) else None
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            self._skipped_keys.add(key)
            return None
        return value

    @property
    def skipped(self) -> int:
        """How many records and annotations were skipped when read (each counted once)."""
        return len(self._skipped_keys)

    def get(self, record_id: str) -> dict[str, Any] | None:
        return self._read(record_id)

    def annotations(self, record_id: str, tag: str) -> list[dict[str, Any]]:
        """Every annotation ``tag`` of ``record_id`` (one per annotator), in key order."""
        if self._annotations is None:
            index: dict[tuple[str, str], list[str]] = {}
            keys: Iterator[str] = iter(self._root.keys())
            for key in keys:
                if SEP in key:
                    self._note(index, key)
            self._annotations = index
        out = []
        for key in sorted(self._annotations.get((record_id, tag), ())):
            value = self._read(key)
            if value is not None:
                out.append(value)
        return out

    def annotation(self, record_id: str, tag: str) -> dict[str, Any] | None:
        """One annotation ``tag`` of ``record_id`` (the greatest key's), or ``None``."""
        found = self.annotations(record_id, tag)
        return found[-1] if found else None

    def ids(self) -> Iterator[str]:
        """Record ids (annotations excluded), in no particular order."""
        keys: Iterator[str] = iter(self._root.keys())
        return (key for key in keys if SEP not in key)

    def __len__(self) -> int:
        return sum(1 for _ in self.ids())

    def add(self, record_id: str, record: dict[str, Any]) -> bool:
        """Store ``record`` under ``record_id`` (inside a transaction of ``doc``).

        Returns ``False`` if the identical record is already there; raises
        :class:`InvalidArgument` if a different one is.
        """
        text = encode_value(record, "record")
        existing = self._root.get(record_id)
        if existing is not None:
            if existing != text:
                raise InvalidArgument(f"record {record_id!r} already exists with different content")
            return False
        self._root[record_id] = text
        return True

    def annotate(self, record_id: str, tag: str, data: dict[str, Any]) -> bool:
        """Attach a write-once annotation (e.g. ``void``) by this writer to an existing record."""
        if record_id not in self._root:
            raise InvalidArgument(f"no record {record_id!r} to annotate")
        return self.add(annotation_key(record_id, tag, self._writer), data)
