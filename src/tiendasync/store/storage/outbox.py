"""SQL of the sync queue (the outbox): one row per local write, plus its clocks.

Each entry remembers, per document, the Yjs clock its write reached under
its incarnation's client id (``queue_clocks``); an entry is acknowledged once
the relay durably holds every one of them.  Timestamps are passed in.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

__all__ = ["ENTRY_COLUMNS", "OutboxTable"]

#: The columns of a queue row, in the order :meth:`OutboxTable.select` returns them.
ENTRY_COLUMNS = (
    "id",
    "kind",
    "data_type",
    "priority",
    "status",
    "attempts",
    "created_at",
    "updated_at",
    "summary",
    "ref",
    "has_conflict",
    "conflict_ids",
    "error",
)
_SELECT = f"SELECT {', '.join(ENTRY_COLUMNS)} FROM queue"


class OutboxTable:
    """The ``queue`` and ``queue_clocks`` tables (call writes inside a transaction)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def insert(
        self,
        *,
        kind: str,
        data_type: str,
        priority: int,
        summary: str,
        client_id: int,
        clocks: dict[str, int],
        ref: str | None,
        now: float,
    ) -> int:
        """Add a pending entry for a local write; returns its id."""
        cur = self.conn.execute(
            "INSERT INTO queue (kind, data_type, priority, status, created_at, updated_at, "
            "summary, client_id, clocks, ref) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?)",
            (kind, data_type, priority, now, now, summary, client_id, json.dumps(clocks), ref),
        )
        entry_id = int(cur.lastrowid or 0)
        self.conn.executemany(
            "INSERT INTO queue_clocks (entry_id, doc, client_id, clock) VALUES (?, ?, ?, ?)",
            [(entry_id, doc, client_id, clock) for doc, clock in clocks.items()],
        )
        return entry_id

    def select(self, filters: dict[str, Any], *, limit: int, offset: int) -> list[tuple[Any, ...]]:
        """Rows whose columns equal ``filters``, highest priority first, then newest."""
        where = " AND ".join(f"{column} = ?" for column in filters)
        sql = _SELECT + (f" WHERE {where}" if where else "")
        sql += " ORDER BY priority DESC, id DESC LIMIT ? OFFSET ?"
        return self.conn.execute(sql, [*filters.values(), limit, offset]).fetchall()

    def get(self, entry_id: int) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.conn.execute(
            _SELECT + " WHERE id = ?", (entry_id,)
        ).fetchone()
        return row

    def pending_count(self) -> int:
        row = self.conn.execute(
            "SELECT COUNT(*) FROM queue WHERE status IN ('pending', 'sent')"
        ).fetchone()
        return int(row[0])

    def counts(self) -> dict[str, int]:
        rows = self.conn.execute("SELECT status, COUNT(*) FROM queue GROUP BY status").fetchall()
        return {str(s): int(n) for s, n in rows}

    def count_attempt(self, entry_id: int, now: float) -> None:
        """One more attempt; an entry in ``error`` goes back to ``pending``."""
        self.conn.execute(
            "UPDATE queue SET attempts = attempts + 1, updated_at = ?, "
            "status = CASE status WHEN 'error' THEN 'pending' ELSE status END, "
            "error = CASE status WHEN 'error' THEN NULL ELSE error END WHERE id = ?",
            (now, entry_id),
        )

    def mark_sent(self, now: float) -> None:
        self.conn.execute(
            "UPDATE queue SET status = 'sent', attempts = attempts + 1, updated_at = ? "
            "WHERE status = 'pending'",
            (now,),
        )

    def mark_refused(self, reason: str, now: float) -> int:
        """Sent, unacknowledged entries become ``error`` with ``reason``; returns how many."""
        cur = self.conn.execute(
            "UPDATE queue SET status = 'error', error = ?, updated_at = ? WHERE status = 'sent'",
            (reason[:500], now),
        )
        return int(cur.rowcount)

    def mark_not_granted(self, docs: list[str], reason: str, now: float) -> int:
        """Unacknowledged entries writing one of ``docs`` become ``error`` with ``reason``
        (the relay does not let this replica write those documents); returns how many."""
        if not docs:
            return 0
        marks = ", ".join("?" * len(docs))
        cur = self.conn.execute(
            "UPDATE queue SET status = 'error', error = ?, updated_at = ? "
            "WHERE status IN ('pending', 'sent') AND id IN ("
            f"SELECT entry_id FROM queue_clocks WHERE acked = 0 AND doc IN ({marks}))",
            (reason[:500], now, *docs),
        )
        return int(cur.rowcount)

    def acknowledge(self, doc: str, client_id: int, clock: int, now: float) -> int:
        """The relay durably holds ``doc`` up to ``clock`` of ``client_id``.

        Returns how many entries became acknowledged (an entry in an open
        conflict keeps status ``conflict``).
        """
        cur = self.conn.execute(
            "UPDATE queue_clocks SET acked = 1 "
            "WHERE doc = ? AND client_id = ? AND acked = 0 AND clock <= ?",
            (doc, client_id, clock),
        )
        if cur.rowcount == 0:
            return 0
        done = self.conn.execute(
            "UPDATE queue SET status = CASE WHEN has_conflict AND status = 'conflict' "
            "THEN 'conflict' ELSE 'acknowledged' END, error = NULL, updated_at = ? "
            "WHERE status IN ('pending', 'sent', 'error') AND client_id = ? AND NOT EXISTS "
            "(SELECT 1 FROM queue_clocks c WHERE c.entry_id = queue.id AND c.acked = 0)",
            (now, client_id),
        )
        return int(done.rowcount)

    def entries_for_refs(self, refs: list[str]) -> list[tuple[int, list[str], str]]:
        """``(id, conflict ids, status)`` of the entries whose ``ref`` is one of ``refs``."""
        marks = ",".join("?" * len(refs))
        rows = self.conn.execute(
            f"SELECT id, conflict_ids, status FROM queue WHERE ref IN ({marks})", refs
        ).fetchall()
        return [(int(i), list(json.loads(ids)), str(status)) for i, ids, status in rows]

    def flag_conflict(
        self, entry_id: int, conflict_ids: list[str], status: str, now: float
    ) -> None:
        self.conn.execute(
            "UPDATE queue SET has_conflict = 1, conflict_ids = ?, status = ?, updated_at = ? "
            "WHERE id = ?",
            (json.dumps(conflict_ids), status, now, entry_id),
        )

    def acknowledge_all(self, doc: str, now: float) -> int:
        """Every write to ``doc`` is acknowledged (see ``ReplicaCore.adopt_generation``)."""
        marked = 0
        rows = self.conn.execute(
            "SELECT DISTINCT client_id, MAX(clock) FROM queue_clocks WHERE doc = ? AND acked = 0 "
            "GROUP BY client_id",
            (doc,),
        ).fetchall()
        for client_id, clock in rows:
            marked += self.acknowledge(doc, int(client_id), int(clock), now)
        return marked

    def has_unacknowledged(self, doc: str) -> bool:
        """Whether a local write to ``doc`` is not acknowledged yet (errors included)."""
        row = self.conn.execute(
            "SELECT 1 FROM queue_clocks WHERE doc = ? AND acked = 0 LIMIT 1", (doc,)
        ).fetchone()
        return row is not None

    def unacknowledged_docs(self) -> set[str]:
        """Documents with a local write the relay has not acknowledged yet."""
        rows = self.conn.execute("SELECT DISTINCT doc FROM queue_clocks WHERE acked = 0")
        return {str(doc) for (doc,) in rows}

    def prune_acknowledged(self, before: float) -> int:
        """Delete entries acknowledged (no conflict) last updated before ``before``,
        with their clocks; returns how many entries went."""
        old = "SELECT id FROM queue WHERE status = 'acknowledged' AND updated_at < ?"
        self.conn.execute(f"DELETE FROM queue_clocks WHERE entry_id IN ({old})", (before,))
        return self.conn.execute(
            "DELETE FROM queue WHERE status = 'acknowledged' AND updated_at < ?", (before,)
        ).rowcount
