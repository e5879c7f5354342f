"""The replica's sync queue (the seed's ``ColaSincronizacion``).

One entry per local write.  An entry is ``pending`` until it has been sent,
``sent`` until the relay has stored it durably, then ``acknowledged``.  An
entry whose write took part in a conflict also gets ``has_conflict`` set
(and status ``conflict`` while the conflict is open).  ``error`` marks an
entry the relay refused (e.g. a document this store may not write); its
``error`` says why and ``process(id)`` retries it.

Acknowledgement is by Yjs clock: each entry remembers, per document, the
clock its write reached under this incarnation's client id; once the relay
reports that it durably holds that clock, the entry is acknowledged.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tiendasync.errors import CorruptData, InvalidArgument, NotFound
from tiendasync.model.names import check_safe_int
from tiendasync.store.boundary import public_api
from tiendasync.store.core import ReplicaCore

__all__ = ["STATUSES", "QueueEntry", "SyncQueue"]

STATUSES = ("pending", "sent", "acknowledged", "conflict", "error")


@dataclass(frozen=True)
class QueueEntry:
    id: int
    kind: str
    data_type: str
    priority: int
    status: str
    attempts: int
    created_at: float
    updated_at: float
    summary: str
    ref: str | None
    has_conflict: bool
    conflict_ids: tuple[str, ...]
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["conflict_ids"] = list(self.conflict_ids)
        return out


def _conflict_ids(text: str) -> tuple[str, ...]:
    try:
        ids = json.loads(text)
    except ValueError as exc:
        raise CorruptData(f"a queue entry holds garbage conflict ids {text!r}") from exc
    return tuple(str(i) for i in ids) if isinstance(ids, list) else ()


def entry_from_row(row: tuple[Any, ...]) -> QueueEntry:
    """An entry from a row in :data:`~tiendasync.store.storage.outbox.ENTRY_COLUMNS` order."""
    return QueueEntry(
        id=int(row[0]),
        kind=row[1],
        data_type=row[2],
        priority=int(row[3]),
        status=row[4],
        attempts=int(row[5]),
        created_at=float(row[6]),
        updated_at=float(row[7]),
        summary=row[8],
        ref=row[9],
        has_conflict=bool(row[10]),
        conflict_ids=_conflict_ids(row[11]),
        error=row[12],
    )


@public_api
class SyncQueue:
    """``replica.queue``: list, retry and resolve.

    ``process_now(**sync_args)`` asks for a sync (the facade's background
    sync or a one-shot one); ``resolve`` is the conflicts' resolution.
    """

    def __init__(
        self,
        core: ReplicaCore,
        *,
        process_now: Callable[..., None],
        resolve: Callable[..., Any],
    ) -> None:
        self._core = core
        self._process_now = process_now
        self._resolve = resolve

    def list(
        self,
        *,
        conflicts: bool | None = None,
        status: str | None = None,
        kind: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[QueueEntry]:
        """Entries, highest priority first, then newest first.

        ``conflicts=True`` keeps only entries flagged ``has_conflict``
        (``False`` only the others); ``status`` filters by status.
        """
        if status is not None and status not in STATUSES:
            raise InvalidArgument(f"unknown status {status!r}; use one of {', '.join(STATUSES)}")
        check_safe_int(limit, "limit", positive=True)
        check_safe_int(offset, "offset")
        filters: dict[str, Any] = {}
        if conflicts is not None:
            filters["has_conflict"] = 1 if conflicts else 0
        if status is not None:
            filters["status"] = status
        if kind is not None:
            filters["kind"] = kind
        with self._core.locked():
            rows = self._core.storage.outbox.select(filters, limit=limit, offset=offset)
        return [entry_from_row(r) for r in rows]

    def get(self, entry_id: int) -> QueueEntry:
        """One entry; raises :class:`NotFound` if there is none with that id."""
        check_safe_int(entry_id, "entry id")
        with self._core.locked():
            row = self._core.storage.outbox.get(entry_id)
        if row is None:
            raise NotFound(f"no queue entry {entry_id}")
        return entry_from_row(row)

    def pending_count(self) -> int:
        with self._core.locked():
            return self._core.storage.outbox.pending_count()

    def counts(self) -> dict[str, int]:
        """Number of entries per status."""
        with self._core.locked():
            return self._core.storage.outbox.counts()

    def process(self, entry_id: int, **sync_args: Any) -> QueueEntry:
        """Retry one entry now: count an attempt and sync with the relay.

        Uses the relay URL and token of the running background sync, of
        ``sync_args`` (``url=..., token=...``) or of the store config.
        """
        entry = self.get(entry_id)
        if entry.status == "acknowledged":
            return entry
        with self._core.transaction():
            self._core.storage.outbox.count_attempt(entry_id, self._core.now())
        self._process_now(**sync_args)
        return self.get(entry_id)

    def resolve(self, conflict_id: str, action: str, **params: Any) -> Any:
        """Resolve a conflict with a compensating action (see ``tiendasync.store.conflicts``)."""
        return self._resolve(conflict_id, action, **params)
