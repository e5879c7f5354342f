"""The store's public boundary: only ``TiendaSyncError`` leaves a public call.

:func:`public_api` wraps every public method and property of a facade class
so that an exception from outside the tree is translated once, by what the
caller can do: a busy, full or unwritable database is :class:`StorageError`
(retry later), an unreadable one :class:`CorruptData`, anything else an
:class:`InternalError` (a bug here).  The original exception stays attached
as ``__cause__``.  ``BaseException`` (KeyboardInterrupt, SystemExit) passes.
"""

from __future__ import annotations

import functools
import inspect
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from tiendasync.errors import CorruptData, InternalError, StorageError, TiendaSyncError

__all__ = ["public_api", "translate"]

C = TypeVar("C", bound=type)
F = TypeVar("F", bound=Callable[..., Any])


def translate(exc: Exception) -> TiendaSyncError:
    """The tiendasync error standing for ``exc``."""
    if isinstance(exc, TiendaSyncError):
        return exc
    if isinstance(exc, sqlite3.OperationalError):
        return StorageError(f"the replica database could not be used: {exc}")
    if isinstance(exc, sqlite3.DatabaseError):
        return CorruptData(f"the replica database is damaged: {exc}")
    return InternalError(f"unexpected {type(exc).__name__}: {exc}")


def _guarded(func: F) -> F:
    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except TiendaSyncError:
            raise
        except Exception as exc:
            raise translate(exc) from exc

    return call  # type: ignore[return-value]


def public_api(cls: C) -> C:
    """Class decorator: guard every public method and property defined on ``cls``."""
    for name, member in list(vars(cls).items()):
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            setattr(
                cls,
                name,
                property(
                    _guarded(member.fget) if member.fget else None,
                    _guarded(member.fset) if member.fset else None,
                    member.fdel,
                    member.__doc__,
                ),
            )
        elif isinstance(member, classmethod):
            setattr(cls, name, classmethod(_guarded(member.__func__)))
        elif inspect.isfunction(member):
            setattr(cls, name, _guarded(member))
    return cls
