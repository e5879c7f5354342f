"""One relay per database: an OS lock on ``<db>.lock``, held while the relay runs.

Two relays on one ``relay.db`` would each keep their own in-memory docs and
state vectors and acknowledge what the other never saw.  :func:`relay_lock`
takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on a sidecar file; the kernel
releases it when the process dies, however it dies, so a stale lock file is
harmless.  Admin commands (tokens, config) do not take it: they may run
beside the relay.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from tiendasync.errors import StorageError, StoragePermissionError
from tiendasync.store.storage.access import access_problem

__all__ = ["RelayLocked", "relay_lock"]


class RelayLocked(StorageError):
    """Another relay process already serves this database."""


@contextmanager
def relay_lock(db_path: str) -> Iterator[str]:
    """Hold the lock of ``db_path`` for the ``with`` block; yields the lock file's path.

    Raises :class:`RelayLocked` at once (never waits) if another process holds it.
    """
    path = f"{db_path}.lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        problem = access_problem(path, write=True)  # a missing directory is one too
        if problem is None and not isinstance(exc, PermissionError):
            raise StorageError(f"cannot open the relay lock file {path}: {exc}") from exc
        raise StoragePermissionError(
            f"cannot open the relay lock file {path}: {problem or exc}"
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise RelayLocked(
                f"another relay (pid {holder}) is already running on {db_path} "
                f"(lock {path} is held)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
