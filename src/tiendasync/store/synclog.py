"""The sync log (the seed's ``RegistroSincronizacion``): one row per session."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tiendasync.crdt import check_safe_int

if TYPE_CHECKING:
    from tiendasync.store.replica import Replica

__all__ = ["SyncLog", "SyncLogEntry"]

_FIELDS = (
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


@dataclass(frozen=True)
class SyncLogEntry:
    id: int
    relay: str | None
    started_at: float
    ended_at: float | None
    outcome: str
    mode: str
    docs: int
    updates_sent: int
    updates_received: int
    bytes_sent: int
    bytes_received: int
    conflicts_opened: int
    conflicts_healed: int
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SyncLog:
    """``replica.log``: the history of sync sessions, newest first."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def list(self, *, limit: int = 100, outcome: str | None = None) -> list[SyncLogEntry]:
        check_safe_int(limit, "limit", positive=True)
        sql = f"SELECT {', '.join(_FIELDS)} FROM sync_log"
        params: list[Any] = []
        if outcome is not None:
            sql += " WHERE outcome = ?"
            params.append(outcome)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        with self._replica._lock:
            self._replica._check_open()
            rows = self._replica._store.conn.execute(sql, params).fetchall()
        return [SyncLogEntry(*row) for row in rows]

    def _start(self, relay: str | None, mode: str) -> int:
        with self._replica._lock, self._replica._store.write() as conn:
            cur = conn.execute(
                "INSERT INTO sync_log (relay, started_at, outcome, mode) VALUES (?, ?, ?, ?)",
                (relay, time.time(), "running", mode),
            )
            return int(cur.lastrowid or 0)

    def _finish(self, log_id: int, outcome: str, **counts: Any) -> None:
        allowed = set(_FIELDS) - {"id", "relay", "started_at", "ended_at", "outcome", "mode"}
        cols = {k: v for k, v in counts.items() if k in allowed}
        sets = ", ".join(f"{k} = ?" for k in cols)
        sql = "UPDATE sync_log SET ended_at = ?, outcome = ?" + (", " + sets if sets else "")
        with self._replica._lock, self._replica._store.write() as conn:
            conn.execute(sql + " WHERE id = ?", (time.time(), outcome, *cols.values(), log_id))
