"""Which sales months a replica keeps, and letting older ones go.

A till sells into one sales document per location and month; after a few
years those documents are most of its file, and nothing at the till needs
them (the relay keeps every month: its admin API and ``tiendasync relay
export-sales`` read them).  ``sales_months`` in the store config says how
many months a replica keeps: the current one and the ``sales_months - 1``
before it (0: every month).  Older sales documents leave the file at the
end of a sync (:func:`~tiendasync.store.synclog.prune_retained`), but only
once every local write to them is acknowledged: a till that was offline
for a year still sends its old sales first.

The replica tells the relay its floor in each HELLO (``sales_from``), so
the relay neither sends a retired month back nor forwards late updates of
one.  Every process on the file derives the same floor from the same config
and clock; one that still holds a retired month in memory (it read it
before) keeps it until it reopens, which is harmless: no sale is written
into a past month.
"""

from __future__ import annotations

from tiendasync.model.docnames import before_sales_floor, sales_floor
from tiendasync.store.core import ReplicaCore

__all__ = ["retire_old_sales", "sales_floor_of"]


def sales_floor_of(core: ReplicaCore, now: float | None = None) -> str | None:
    """The oldest sales period (``YYYY-MM``) the replica keeps at ``now`` (default: its
    clock), or ``None`` when it keeps every month (``sales_months`` 0)."""
    months = core.cached_config.sales_months
    if months == 0:
        return None
    return sales_floor(int((core.now() if now is None else now) * 1000), months)


def retire_old_sales(core: ReplicaCore, now: float | None = None) -> int:
    """Remove the sales documents before the floor whose local writes are all
    acknowledged; how many went.  Call inside a write transaction."""
    floor = sales_floor_of(core, now)
    if floor is None:
        return 0
    old = [name for name in core.docs.names() if before_sales_floor(name, floor)]
    if not old:
        return 0
    waiting = core.storage.outbox.unacknowledged_docs()
    retired = [name for name in old if name not in waiting]
    for name in retired:
        core.storage.drop_doc(name)
        core.docs.forget(name)
    return len(retired)
