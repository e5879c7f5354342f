"""``tiendasync.contrib.django.context_processors.sincronizacion``: the offline indicator.

Add it to ``TEMPLATES[0]["OPTIONS"]["context_processors"]``; templates get
``modo_offline`` (bool), ``pendientes_sincronizacion`` (queue entries not yet
acknowledged) and ``conflictos_abiertos``.
"""

from __future__ import annotations

from typing import Any

from tiendasync.contrib.django.conf import get_replica
from tiendasync.errors import TiendaSyncError
from tiendasync.store.replica import Replica

__all__ = ["online", "sincronizacion"]


def online(replica: Replica) -> bool:
    """Whether this store is connected to its relay, seen from any process on the file.

    A web worker does not sync itself: the ``sincronizar --continuo`` daemon
    does, and publishes its connection state in the file, which every other
    process's ``replica.status`` reads while the daemon holds the sync lock
    (the OS releases it if the daemon dies, even by SIGKILL: the page then
    says offline at once).
    """
    return replica.status.online


def sincronizacion(request: Any) -> dict[str, Any]:
    """The indicator's three values; ``modo_offline`` True if the store cannot be read."""
    try:
        replica = get_replica()
        status = replica.status
        return {
            "modo_offline": not online(replica),
            "pendientes_sincronizacion": status.pending,
            "conflictos_abiertos": status.open_conflicts,
        }
    except TiendaSyncError:
        return {"modo_offline": True, "pendientes_sincronizacion": 0, "conflictos_abiertos": 0}
