"""The ``TIENDASYNC`` settings dict and the one process-wide :class:`~tiendasync.Replica`.

Keys of ``settings.TIENDASYNC``:

============  ========================================================================
``DB``        the store's replica file (SQLite); required
``TENANT``    tenant, replica id and location: needed only to create a new file;
``REPLICA``   when the file exists they must match it (``ConfigError`` otherwise)
``LOCATION``
``RELAY_URL`` saved in the store config at first open when given (``ws://``/``wss://``)
``TOKEN``     the relay token; else the environment variable named ``TOKEN_ENV``
              (default ``TIENDASYNC_TOKEN``); else the file ``TOKEN_FILE``; else the
              token saved in the replica
============  ========================================================================

A process opens the file once (the Replica must not be opened twice in one
process); Django's worker processes and the ``sincronizar`` daemon each
open their own, which is safe on one file.
"""

from __future__ import annotations

import atexit
import os
import threading
from pathlib import Path
from typing import Any

from django.conf import settings

from tiendasync.errors import ConfigError
from tiendasync.store.replica import Replica

__all__ = ["close_replica", "db_path", "get_replica", "options", "token"]

_lock = threading.Lock()
_replica: Replica | None = None


def options() -> dict[str, Any]:
    """``settings.TIENDASYNC``; ``ConfigError`` if it is missing or has no ``DB``."""
    conf = getattr(settings, "TIENDASYNC", None)
    if not isinstance(conf, dict) or not conf.get("DB"):
        raise ConfigError("settings.TIENDASYNC must be a dict with at least 'DB' (the store file)")
    return conf


def db_path() -> Path:
    """The store file."""
    return Path(str(options()["DB"]))


def token() -> str | None:
    """The relay token from the settings, the environment or the token file (or None)."""
    conf = options()
    if conf.get("TOKEN"):
        return str(conf["TOKEN"])
    from_env = os.environ.get(str(conf.get("TOKEN_ENV", "TIENDASYNC_TOKEN")))
    if from_env:
        return from_env
    token_file = conf.get("TOKEN_FILE")
    if token_file:
        try:
            text = Path(str(token_file)).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read TIENDASYNC['TOKEN_FILE']: {exc}") from exc
        return text or None
    return None


def get_replica() -> Replica:
    """This process's Replica on ``DB``, opened (or created) on first use."""
    global _replica
    with _lock:
        if _replica is None:
            conf = options()
            path = db_path()
            fresh = not path.exists()
            replica = Replica.open(
                path,
                tenant=conf.get("TENANT"),
                replica_id=conf.get("REPLICA"),
                location=conf.get("LOCATION"),
            )
            if fresh and conf.get("RELAY_URL"):
                replica.configure(relay_url=conf["RELAY_URL"])
            from tiendasync.contrib.django import signals

            signals.watch(replica)
            _replica = replica
            atexit.register(close_replica)
        return _replica


def close_replica() -> None:
    """Close this process's Replica (tests, shutdown); the next use reopens it."""
    global _replica
    with _lock:
        if _replica is not None:
            _replica.close()
            _replica = None
