"""Signals a Django app connects to, to react to what the store does.

=============================  ===============================================================
signal                         sent with
=============================  ===============================================================
``venta_registrada``           ``venta`` (a :class:`~tiendasync.Sale`), by :func:`registrar_venta`
``sincronizacion_finalizada``  ``informe`` (the ``SyncReport``) or ``error`` (the exception),
                               after a sync run by the API, the admin or ``sincronizar``
                               (once); the daemon's sessions are in ``registros``
``estado_cambiado``            ``estado`` (a :class:`~tiendasync.ReplicaStatus`) when
                               ``state``, ``pending`` or ``open_conflicts`` changed
``conflicto_abierto``          ``conflicto`` (a ``Conflict``) newly seen open
``conflicto_resuelto``         ``conflicto`` that was open and no longer is
=============================  ===============================================================

The sender is always the :class:`~tiendasync.Replica`.  Receivers run on the
thread that caused the change, under the replica's lock (the status
callback contract of docs/api.md): they must be quick and must not wait for
another thread that uses the replica.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from django.dispatch import Signal

from tiendasync.store.replica import Replica, ReplicaStatus
from tiendasync.store.sales import Sale

__all__ = [
    "conflicto_abierto",
    "conflicto_resuelto",
    "estado_cambiado",
    "registrar_venta",
    "sincronizacion_finalizada",
    "venta_registrada",
    "watch",
]

venta_registrada = Signal()
sincronizacion_finalizada = Signal()
estado_cambiado = Signal()
conflicto_abierto = Signal()
conflicto_resuelto = Signal()


def registrar_venta(replica: Replica, lines: Iterable[Any], *, location: str | None = None) -> Sale:
    """``replica.record_sale(lines)``, then ``venta_registrada``; returns the sale."""
    sale = replica.record_sale(lines, location=location)
    venta_registrada.send(sender=replica, venta=sale)
    return sale


class _Watcher:
    """Turns status callbacks into ``estado_cambiado`` and conflict signals."""

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.lock = threading.Lock()
        self.last: tuple[str, int, int] | None = None
        self.open = {c.id: c for c in replica.conflicts.list(status="open", limit=1000)}

    def __call__(self, status: ReplicaStatus) -> None:
        key = (status.state, status.pending, status.open_conflicts)
        with self.lock:
            if key == self.last:
                return
            self.last = key
            now = {c.id: c for c in self.replica.conflicts.list(status="open", limit=1000)}
            opened = [c for cid, c in now.items() if cid not in self.open]
            closed = [cid for cid in self.open if cid not in now]
            self.open = now
        estado_cambiado.send(sender=self.replica, estado=status)
        for conflict in opened:
            conflicto_abierto.send(sender=self.replica, conflicto=conflict)
        for cid in closed:
            conflicto_resuelto.send(sender=self.replica, conflicto=self.replica.conflicts.get(cid))


def watch(replica: Replica) -> None:
    """Send this module's status and conflict signals for ``replica`` from now on."""
    replica.on_status_change(_Watcher(replica))
