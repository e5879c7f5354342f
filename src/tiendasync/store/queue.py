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
import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tiendasync.crdt import check_safe_int
from tiendasync.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from tiendasync.store.replica import Replica

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


_COLUMNS = (
    "id, kind, data_type, priority, status, attempts, created_at, updated_at, summary, ref, "
    "has_conflict, conflict_ids, error"
)


def _entry(row: tuple[Any, ...]) -> QueueEntry:
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
        conflict_ids=tuple(json.loads(row[11])),
        error=row[12],
    )


def insert_entry(
    conn: sqlite3.Connection,
    *,
    kind: str,
    data_type: str,
    priority: int,
    summary: str,
    client_id: int,
    clocks: dict[str, int],
    ref: str | None,
) -> int:
    """Add a pending entry for a local write (inside the write's transaction)."""
    now = time.time()
    cur = conn.execute(
        "INSERT INTO queue (kind, data_type, priority, status, created_at, updated_at, summary, "
        "client_id, clocks, ref) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
        (kind, data_type, priority, now, now, summary, client_id, json.dumps(clocks), ref),
    )
    entry_id = int(cur.lastrowid or 0)
    conn.executemany(
        "INSERT INTO queue_clocks (entry_id, doc, client_id, clock) VALUES (?, ?, ?, ?)",
        [(entry_id, doc, client_id, clock) for doc, clock in clocks.items()],
    )
    return entry_id


class SyncQueue:
    """``replica.queue``: list, retry and resolve."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

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
        where: list[str] = []
        params: list[Any] = []
        if conflicts is not None:
            where.append("has_conflict = ?")
            params.append(1 if conflicts else 0)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        sql = f"SELECT {_COLUMNS} FROM queue"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY priority DESC, id DESC LIMIT ? OFFSET ?"
        with self._replica._lock:
            self._replica._check_open()
            rows = self._replica._store.conn.execute(sql, [*params, limit, offset]).fetchall()
        return [_entry(r) for r in rows]

    def get(self, entry_id: int) -> QueueEntry:
        """One entry; raises :class:`NotFound` if there is none with that id."""
        check_safe_int(entry_id, "entry id")
        with self._replica._lock:
            self._replica._check_open()
            row = self._replica._store.conn.execute(
                f"SELECT {_COLUMNS} FROM queue WHERE id = ?", (entry_id,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no queue entry {entry_id}")
        return _entry(row)

    def pending_count(self) -> int:
        with self._replica._lock:
            self._replica._check_open()
            row = self._replica._store.conn.execute(
                "SELECT COUNT(*) FROM queue WHERE status IN ('pending', 'sent')"
            ).fetchone()
        return int(row[0])

    def counts(self) -> dict[str, int]:
        """Number of entries per status."""
        with self._replica._lock:
            self._replica._check_open()
            rows = self._replica._store.conn.execute(
                "SELECT status, COUNT(*) FROM queue GROUP BY status"
            ).fetchall()
        return {str(s): int(n) for s, n in rows}

    def process(self, entry_id: int, **sync_args: Any) -> QueueEntry:
        """Retry one entry now: count an attempt and sync with the relay.

        Uses the relay URL and token of the running background sync, of
        ``sync_args`` (``url=..., token=...``) or of the store config.
        """
        entry = self.get(entry_id)
        if entry.status == "acknowledged":
            return entry
        with self._replica._lock, self._replica._store.write() as conn:
            conn.execute(
                "UPDATE queue SET attempts = attempts + 1, updated_at = ?, "
                "status = CASE status WHEN 'error' THEN 'pending' ELSE status END, "
                "error = CASE status WHEN 'error' THEN NULL ELSE error END WHERE id = ?",
                (time.time(), entry_id),
            )
        self._replica._process_now(**sync_args)
        return self.get(entry_id)

    def resolve(self, conflict_id: str, action: str, **params: Any) -> Any:
        """Resolve a conflict with a compensating action (see ``tiendasync.store.conflicts``)."""
        return self._replica._resolve_conflict(conflict_id, action, **params)

    # -- used by the sync client ----------------------------------------------

    def _mark_sent(self) -> None:
        with self._replica._lock, self._replica._store.write() as conn:
            conn.execute(
                "UPDATE queue SET status = 'sent', attempts = attempts + 1, updated_at = ? "
                "WHERE status = 'pending'",
                (time.time(),),
            )

    def _mark_refused(self, reason: str) -> int:
        """The relay refused what this session sent: its unacknowledged entries are errors.

        They stay in the queue (and in the data); ``process(id)`` retries one.
        """
        with self._replica._lock, self._replica._store.write() as conn:
            cur = conn.execute(
                "UPDATE queue SET status = 'error', error = ?, updated_at = ? "
                "WHERE status = 'sent'",
                (reason[:500], time.time()),
            )
            return int(cur.rowcount)

    def _acknowledge(self, doc: str, client_id: int, clock: int) -> int:
        """The relay durably holds ``doc`` up to ``clock`` of ``client_id``."""
        store = self._replica._store
        with self._replica._lock, store.write() as conn:
            cur = conn.execute(
                "UPDATE queue_clocks SET acked = 1 "
                "WHERE doc = ? AND client_id = ? AND acked = 0 AND clock <= ?",
                (doc, client_id, clock),
            )
            if cur.rowcount == 0:
                return 0
            done = conn.execute(
                "UPDATE queue SET status = CASE WHEN has_conflict AND status = 'conflict' "
                "THEN 'conflict' ELSE 'acknowledged' END, error = NULL, updated_at = ? "
                "WHERE status IN ('pending', 'sent', 'error') AND client_id = ? AND NOT EXISTS "
                "(SELECT 1 FROM queue_clocks c WHERE c.entry_id = queue.id AND c.acked = 0)",
                (time.time(), client_id),
            )
            return int(done.rowcount)
