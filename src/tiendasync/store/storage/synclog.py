"""SQL of the replica's sync log: one row per sync session."""

from __future__ import annotations

import sqlite3
from typing import Any

__all__ = ["LOG_COLUMNS", "SyncLogTable"]

#: The columns of a sync-log row, in the order :meth:`SyncLogTable.select` returns them.
LOG_COLUMNS = (
    "id",
    "relay",
    "started_at",
    "ended_at",
    "outcome",
    "mode",
    "docs",
    "updates_sent",
    "updates_received",
    "bytes_sent",
    "bytes_received",
    "conflicts_opened",
    "conflicts_healed",
    "error",
)
#: What :meth:`SyncLogTable.finish` may set besides the end time and outcome.
COUNT_COLUMNS = frozenset(LOG_COLUMNS) - {
    "id",
    "relay",
    "started_at",
    "ended_at",
    "outcome",
    "mode",
}


class SyncLogTable:
    """The ``sync_log`` table (call writes inside a transaction)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def select(self, *, limit: int, outcome: str | None) -> list[tuple[Any, ...]]:
        """Newest first."""
        sql = f"SELECT {', '.join(LOG_COLUMNS)} FROM sync_log"
        params: list[Any] = []
        if outcome is not None:
            sql += " WHERE outcome = ?"
            params.append(outcome)
        sql += " ORDER BY id DESC LIMIT ?"
        return self.conn.execute(sql, [*params, limit]).fetchall()

    def start(self, relay: str | None, mode: str, now: float) -> int:
        cur = self.conn.execute(
            "INSERT INTO sync_log (relay, started_at, outcome, mode) VALUES (?, ?, ?, ?)",
            (relay, now, "running", mode),
        )
        return int(cur.lastrowid or 0)

    def finish(self, log_id: int, outcome: str, counts: dict[str, Any], now: float) -> None:
        """End a session; ``counts`` keys outside :data:`COUNT_COLUMNS` are ignored."""
        cols = {k: v for k, v in counts.items() if k in COUNT_COLUMNS}
        sets = "".join(f", {k} = ?" for k in cols)
        self.conn.execute(
            f"UPDATE sync_log SET ended_at = ?, outcome = ?{sets} WHERE id = ?",
            (now, outcome, *cols.values(), log_id),
        )

    def last_success(self) -> float | None:
        """When the last successful session ended."""
        last = self.conn.execute(
            "SELECT MAX(ended_at) FROM sync_log WHERE outcome = 'ok'"
        ).fetchone()[0]
        return None if last is None else float(last)

    def prune(self, before: float) -> int:
        """Delete sessions that ended (or, never ended, started) before ``before``,
        keeping the last successful one (``last_success``) and the newest row;
        returns how many went."""
        return self.conn.execute(
            "DELETE FROM sync_log WHERE COALESCE(ended_at, started_at) < ? "
            "AND id != COALESCE((SELECT MAX(id) FROM sync_log WHERE outcome = 'ok'), -1) "
            "AND id != (SELECT MAX(id) FROM sync_log)",
            (before,),
        ).rowcount
