"""How a stock level got where it is: the movements of one SKU at one location (sans I/O).

The console's conflict page shows it.  The source of truth is the stored log
of ``stock/<location>``: every update the relay stored, in the order it
stored them, with its writer and the time the relay stored it.  Replaying it
gives each update's change to the SKU's counter slots, so the balances add up
to the current value by construction.  What each change *was* comes from the
other records:

* a store's decrement that matches, in the till's own order, the quantities
  of its next sales of the SKU is those sales (their own ticket times);
* any other change from a store is an entry (receipt, positive adjustment,
  void at the store) or an exit (negative adjustment, stocktake, transfer);
* a change written by the relay's central writer is the resolution closest
  in time (an adjustment, recount, transfer, void or remap made from the
  console, the admin API or a store's request).

Once a log is compacted, what came before its snapshot is one opening
balance.  :func:`stock_timeline` takes everything as plain values: the pump
(``relay.admin``) reads storage and the central replica.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pycrdt

from tiendasync.crdt.keys import ROOT, SEP
from tiendasync.relay.central import CENTRAL_REPLICA_ID
from tiendasync.relay.records import DocHistory

__all__ = ["Movement", "ResolutionEvent", "SaleLine", "Timeline", "stock_timeline"]

#: How far (seconds) a central write may be from the resolution it carried out.
_RESOLUTION_WINDOW_S = 120.0


@dataclass(frozen=True)
class SaleLine:
    """One sale line of the SKU at the location (``remapped_to``: moved to that SKU)."""

    sale_id: str
    replica: str
    sku: str
    quantity: int
    at_ms: int
    voided: bool = False
    remapped_to: str | None = None


@dataclass(frozen=True)
class ResolutionEvent:
    """A ``resolved`` event of some conflict's history."""

    conflict: str
    action: str
    by: str
    at: float
    sku: str
    location: str


@dataclass
class Movement:
    """One row of the timeline (JSON: :meth:`to_dict`)."""

    kind: str  # opening | sale | in | out | resolution | relay | follower
    delta: int
    balance: int
    writer: str | None = None
    #: seconds since the epoch: the ticket's time for sales, else when the relay stored it
    at: float | None = None
    at_source: str = "relay"  # relay | sale
    seq: int | None = None
    sales: list[dict[str, Any]] = field(default_factory=list)
    action: str | None = None
    by: str | None = None
    conflict: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Timeline:
    """The rows, oldest first, and the value they add up to."""

    location: str
    sku: str
    rows: list[Movement]

    @property
    def current(self) -> int:
        return self.rows[-1].balance if self.rows else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "sku": self.sku,
            "current": self.current,
            "rows": [r.to_dict() for r in self.rows],
        }


def _slot_value(value: object) -> int:
    if isinstance(value, list) and len(value) == 2:
        inc, dec = value
        if isinstance(inc, int | float) and isinstance(dec, int | float):
            return int(inc) - int(dec)
    return 0


def _sku_total(root: pycrdt.Map[Any], prefix: str) -> int:
    return sum(_slot_value(root.get(k)) for k in list(root.keys()) if k.startswith(prefix))


def _sale_dict(line: SaleLine) -> dict[str, Any]:
    return {
        "id": line.sale_id,
        "replica": line.replica,
        "sku": line.sku,
        "quantity": line.quantity,
        "at_ms": line.at_ms,
        "voided": line.voided,
        "remapped_to": line.remapped_to,
    }


def stock_timeline(
    history: DocHistory,
    origins: dict[int, tuple[str, float]],
    *,
    location: str,
    sku: str,
    sales: Iterable[SaleLine] = (),
    resolutions: Iterable[ResolutionEvent] = (),
) -> Timeline:
    """The movements of ``sku`` in the stored ``history`` of ``stock/<location>``.

    ``origins`` maps each logged update's seq to ``(writer name, stored at)``
    (``RelayStore.update_origins``); ``sales`` are the SKU's sale lines at the
    location and ``resolutions`` the tenant's resolved events.  A stored
    update the engine refuses is skipped (the relay's own load skips it too).
    """
    prefix = sku + SEP
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    root = doc.get(ROOT, type=pycrdt.Map)
    rows: list[Movement] = []
    balance = 0
    if history.snapshot:
        with contextlib.suppress(Exception):  # a damaged snapshot: start from zero
            doc.apply_update(history.snapshot)
        balance = _sku_total(root, prefix)
        if balance:
            rows.append(Movement("opening", balance, balance, seq=history.upto_seq))
    changed: dict[str, int] = {}

    def observe(event: Any) -> None:
        for key, change in event.keys.items():
            if key.startswith(prefix):
                delta = _slot_value(change.get("newValue")) - _slot_value(change.get("oldValue"))
                changed[key] = changed.get(key, 0) + delta

    subscription = root.observe(observe)
    queues, remapped_here = _sale_queues(sales, sku)
    events = sorted(resolutions, key=lambda e: e.at)
    try:
        for seq, data in history.updates:
            changed.clear()
            try:
                doc.apply_update(data)
            except Exception:  # noqa: BLE001  (skipped, as the relay's load does)
                continue
            delta = sum(changed.values())
            if not changed or delta == 0:
                continue
            balance += delta
            writer, stored_at = origins.get(seq, ("", 0.0))
            row = Movement("in" if delta > 0 else "out", delta, balance, writer, stored_at, seq=seq)
            _classify(row, queues, events, sku, location, remapped_here)
            rows.append(row)
    finally:
        root.unobserve(subscription)
    return Timeline(location, sku, rows)


def _sale_queues(
    sales: Iterable[SaleLine], sku: str
) -> tuple[dict[str, list[SaleLine]], list[SaleLine]]:
    """Per till, its sale lines of ``sku`` in order; and the lines remapped to ``sku``."""
    queues: dict[str, list[SaleLine]] = {}
    remapped_here: list[SaleLine] = []
    for line in sorted(sales, key=lambda s: (s.at_ms, s.sale_id)):
        if line.sku != sku:  # moved here by a remap: the relay wrote its decrement
            remapped_here.append(line)
        else:
            queues.setdefault(line.replica, []).append(line)
    return queues, remapped_here


def _classify(
    row: Movement,
    queues: dict[str, list[SaleLine]],
    events: list[ResolutionEvent],
    sku: str,
    location: str,
    remapped_here: list[SaleLine],
) -> None:
    writer = row.writer or ""
    if writer == CENTRAL_REPLICA_ID:
        _as_resolution(row, events, sku, location, remapped_here)
    elif writer.startswith("yjs:"):
        row.kind = "follower"
    elif row.delta < 0:
        _as_sales(row, queues.get(writer, []))


def _as_sales(row: Movement, queue: list[SaleLine]) -> None:
    """``row`` is the till's next sales if their quantities add up to its decrement."""
    total, taken = 0, 0
    while taken < len(queue) and total < -row.delta:
        total += queue[taken].quantity
        taken += 1
    if total != -row.delta:
        return
    matched, queue[:] = queue[:taken], queue[taken:]
    row.kind, row.at_source = "sale", "sale"
    row.at = matched[-1].at_ms / 1000
    row.sales = [_sale_dict(s) for s in matched]


def _as_resolution(
    row: Movement,
    events: list[ResolutionEvent],
    sku: str,
    location: str,
    remapped_here: list[SaleLine],
) -> None:
    """Name the central writer's change after the resolution closest in time."""
    row.kind = "relay"
    stored_at = row.at or 0.0
    near = [e for e in events if abs(e.at - stored_at) <= _RESOLUTION_WINDOW_S]
    if not near:
        return
    best = min(near, key=lambda e: (e.sku != sku, e.location != location, abs(e.at - stored_at)))
    row.kind, row.action, row.by, row.conflict = "resolution", best.action, best.by, best.conflict
    if best.action == "remap" and row.delta < 0:
        row.sales = [_sale_dict(s) for s in remapped_here]
