"""The sync log (the seed's ``RegistroSincronizacion``): one row per session."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tiendasync.model.names import check_safe_int
from tiendasync.store.boundary import public_api
from tiendasync.store.core import ReplicaCore
from tiendasync.store.retention import retire_old_sales

__all__ = ["SyncLog", "SyncLogEntry", "finish_session", "prune_retained", "start_session"]


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


@public_api
class SyncLog:
    """``replica.log``: the history of sync sessions, newest first."""

    def __init__(self, core: ReplicaCore) -> None:
        self._core = core

    def list(self, *, limit: int = 100, outcome: str | None = None) -> list[SyncLogEntry]:
        check_safe_int(limit, "limit", positive=True)
        with self._core.locked():
            rows = self._core.storage.sync_log.select(limit=limit, outcome=outcome)
        return [SyncLogEntry(*row) for row in rows]


def start_session(core: ReplicaCore, relay: str | None, mode: str) -> int:
    """Record that a sync session started (outcome ``running``); returns its log id."""
    with core.transaction():
        return core.storage.sync_log.start(relay, mode, core.now())


def finish_session(core: ReplicaCore, log_id: int, outcome: str, **counts: Any) -> None:
    """Record how session ``log_id`` ended, with its counts, and prune what the
    retention window no longer keeps (:func:`prune_retained`)."""
    with core.transaction():
        core.storage.sync_log.finish(log_id, outcome, counts, core.now())
        prune_retained(core)


def prune_retained(core: ReplicaCore, now: float | None = None) -> dict[str, int]:
    """Delete acknowledged queue entries and sync-log rows older than the store's
    ``retention_days``, and sales documents older than its ``sales_months``
    (:mod:`tiendasync.store.retention`); returns how many of each went.  Call in a
    transaction.

    Pending, sent, refused and conflicted entries stay whatever their age: only
    what the relay durably holds, with nothing left to decide, goes.
    """
    window_s = core.cached_config.retention_days * 86_400
    before = (core.now() if now is None else now) - window_s
    return {
        "queue": core.storage.outbox.prune_acknowledged(before),
        "sync_log": core.storage.sync_log.prune(before),
        "sales_docs": retire_old_sales(core, now),
    }
