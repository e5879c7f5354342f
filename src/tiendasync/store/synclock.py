"""One syncing process per store file.

Several processes may share a replica file (POS workers, the CLI, the sync
daemon), but only one at a time talks to the relay for it: :class:`SyncLock`
is an OS lock on ``<file>.sync-lock`` that the syncing process holds for as
long as it syncs, released by the OS if that process dies.  The holder
publishes its connection state in the file (``meta.sync_state``) so the
others can show it (:func:`shared_state`).

On systems without ``fcntl`` (Windows) the lock is advisory only: every
acquire succeeds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tiendasync.errors import SyncBusy

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["SyncBusy", "SyncLock", "decode_state", "encode_state", "lock_path"]


def lock_path(db_path: str | Path) -> Path:
    return Path(f"{db_path}.sync-lock")


class SyncLock:
    """The sync lock of one store file (not re-entrant; one per syncing object)."""

    def __init__(self, db_path: str | Path) -> None:
        self.path = lock_path(db_path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`SyncBusy` naming the holder."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise SyncBusy(
                f"another process (pid {holder}) is already syncing this store; "
                "its state shows in 'tiendasync status'"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    @staticmethod
    def held_by_other(db_path: str | Path) -> bool:
        """True if some other process holds the lock of ``db_path`` now."""
        path = lock_path(db_path)
        if fcntl is None or not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False


def encode_state(state: str, error: str | None, at: float) -> str:
    return json.dumps({"state": state, "error": error, "pid": os.getpid(), "at": at})


def decode_state(text: str | None) -> dict[str, Any] | None:
    """The published state, or None if absent or unreadable."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and isinstance(value.get("state"), str) else None
