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
    does, and its session stays ``running`` in the shared sync log while
    it is connected.  (A daemon killed with SIGKILL leaves its row
    ``running``, and the page says online until the next session starts.)
    """
    if replica.status.online:
        return True
    newest = replica.log.list(limit=1)
    return bool(newest) and newest[0].outcome == "running" and newest[0].mode == "continuous"


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
