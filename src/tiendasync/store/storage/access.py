"""Why this process may not use a database file: the answer an operator can act on.

SQLite reports a permission problem as ``attempt to write a readonly
database`` or ``unable to open database file``, naming neither the user nor
what to change.  A WAL database needs more than its own file: SQLite creates
``<file>-wal`` and ``<file>-shm`` beside it, so the *directory* must be
writable too, and a reader needs the ``-shm`` file.  :func:`access_problem`
checks all of that with :func:`os.access` and returns one sentence naming
the user, the path and the fix, or ``None`` when nothing is wrong.
:func:`is_permission_error` tells which SQLite errors to diagnose so.
"""

from __future__ import annotations

import getpass
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from tiendasync.errors import StorageError, StoragePermissionError

__all__ = ["access_problem", "directory_problem", "is_permission_error", "storage_error"]

#: SQLite's primary result codes that mean "this process may not use the file".
_PERMISSION_CODES = frozenset({3, 8, 14, 23})  # SQLITE_PERM, _READONLY, _CANTOPEN, _AUTH


def is_permission_error(exc: BaseException) -> bool:
    """True for a SQLite error that permissions (or a missing directory) may explain."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _PERMISSION_CODES


def _user() -> str:
    try:
        return f"user {getpass.getuser()!r} (uid {os.getuid()})"
    except (KeyError, OSError):  # a uid with no passwd entry (containers)
        return f"uid {os.getuid()}"


def access_problem(path: str | os.PathLike[str], *, write: bool = True) -> str | None:
    """Why this process cannot open the SQLite database at ``path``, or None.

    ``write`` asks for what a writer needs (the file, its directory and its
    ``-wal``/``-shm`` companions writable); otherwise what a reader needs
    (the file readable, the ``-shm`` file or the directory writable).  A file
    that does not exist yet needs a writable directory.
    """
    file = Path(path)
    checks = (_directory_problems, _writer_problems if write else _reader_problems)
    try:
        return next((problem for check in checks for problem in check(file, _user())), None)
    except OSError as exc:  # a parent this user may not enter: stat itself is refused
        return (
            f"{_user()} cannot reach {file}: {exc.strerror or exc}; check its parents' permissions"
        )


def directory_problem(directory: str | os.PathLike[str]) -> str | None:
    """Why this process cannot create database files in ``directory`` (made with
    its parents when missing: then the nearest existing parent must be writable)."""
    target = Path(directory)
    existing = next(p for p in (target, *target.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if os.access(existing, os.W_OK | os.X_OK):
        return None
    return f"{_user()} cannot create files in {existing}: give it write access to {existing}"


def _directory_problems(file: Path, who: str) -> Iterator[str]:
    directory = file.parent
    if not directory.is_dir():
        yield f"the directory {directory} does not exist: create it (mkdir -p {directory})"
    elif not os.access(directory, os.X_OK):
        yield f"{who} cannot enter the directory {directory}: give it access (chmod +x)"
    elif not file.exists() and not os.access(directory, os.W_OK):
        yield f"{who} cannot create {file}: give it write access to {directory}"
    elif file.exists() and not os.access(file, os.R_OK):
        yield f"{who} cannot read {file}: give it read access (chown or chmod)"


def _writer_problems(file: Path, who: str) -> Iterator[str]:
    for target in (file, Path(f"{file}-wal"), Path(f"{file}-shm")):
        if target.exists() and not os.access(target, os.R_OK | os.W_OK):
            yield f"{who} cannot write {target}: give it write access (chown or chmod)"
    if not os.access(file.parent, os.W_OK):
        yield (
            f"{who} cannot create files in {file.parent}; SQLite needs {file.name}-wal "
            f"and {file.name}-shm beside the database: give it write access to {file.parent}"
        )


def _reader_problems(file: Path, who: str) -> Iterator[str]:
    shm = Path(f"{file}-shm")
    usable = os.access(shm, os.R_OK | os.W_OK) if shm.exists() else os.access(file.parent, os.W_OK)
    if not usable:
        yield (
            f"{who} can read {file} but SQLite also needs to write {shm.name} beside it: "
            f"give it write access to {shm if shm.exists() else file.parent}"
        )


def storage_error(
    what: str, path: str | os.PathLike[str], exc: sqlite3.Error, *, write: bool = True
) -> StorageError:
    """The typed error for SQLite's ``exc`` while doing ``what`` on ``path``:
    :class:`StoragePermissionError` with the diagnosis when permissions explain
    it (or a read-only file system), else :class:`StorageError`."""
    if not is_permission_error(exc):
        return StorageError(f"{what}: {exc}")
    problem = access_problem(path, write=write)
    if problem is None:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF == 8:  # SQLITE_READONLY, access ok
            problem = f"{exc} (is the file system mounted read-only?)"
        else:
            return StorageError(f"{what}: {exc}")
    return StoragePermissionError(f"{what}: {problem}")
