"""Ledger: immutable records under unique, sortable ids (sales tickets).

Layout: key ``id`` holds the record's canonical JSON text.  Each id is
written once; writing it again with different content is an error, with the
same content a no-op (so redelivery is harmless).  Annotations that may be
added later (a void) live under ``id SEP tag`` and are also write-once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pycrdt

from tiendasync.crdt.keys import ROOT, SEP
from tiendasync.crdt.lww import encode_value
from tiendasync.errors import InvalidArgument

__all__ = ["Ledger"]


class Ledger:
    """Append-only records over one pycrdt doc."""

    def __init__(self, doc: pycrdt.Doc[Any]) -> None:
        self.doc = doc
        self._root: pycrdt.Map = doc.get(ROOT, type=pycrdt.Map)  # type: ignore[type-arg]
        self._added: list[str] = []
        self._subscription = self._root.observe(self._on_change)

    def _on_change(self, event: Any) -> None:
        self._added.extend(k for k, c in event.keys.items() if c["action"] == "add")

    def drain_added(self) -> list[str]:
        """Keys (records and annotations) added since the last drain."""
        added, self._added = self._added, []
        return added

    def get(self, record_id: str) -> dict[str, Any] | None:
        text = self._root.get(record_id)
        return json.loads(text) if isinstance(text, str) else None

    def annotation(self, record_id: str, tag: str) -> dict[str, Any] | None:
        return self.get(record_id + SEP + tag)

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
        """Attach a write-once annotation (e.g. ``void``) to an existing record."""
        if record_id not in self._root:
            raise InvalidArgument(f"no record {record_id!r} to annotate")
        return self.add(record_id + SEP + tag, data)
