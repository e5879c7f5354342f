"""The conflict queue: invariant violations that a person resolves.

Conflicts live in the tenant's ``conflicts`` document, one LWW record per
conflict, so they replicate to every store like any other data.  The relay is
authoritative: its writer replica reviews the keys each update touched,
opens, updates and self-heals conflicts.  Resolutions are compensating writes
(an adjustment, a recount, a transfer, voiding sales, restoring or remapping a
product), never edits of history; they can be made on the relay (admin API,
console) or on any store (``replica.queue.resolve``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tiendasync.crdt import LWWMap, PNCounter, check_name, check_safe_int
from tiendasync.errors import ConflictClosed, ConflictNotFound, InvalidArgument
from tiendasync.model.docnames import CATALOG, CONFLICTS, LOCATIONS, stock_doc
from tiendasync.store.invariants import Invariant, SaleRef, Violation, default_invariants, evaluate

if TYPE_CHECKING:
    from tiendasync.store.replica import Replica

__all__ = [
    "ACTIONS",
    "CATALOG_REVIEW",
    "Conflict",
    "ConflictBook",
    "ReplicaState",
]

ACTIONS = (
    "accept",
    "adjust",
    "recount",
    "transfer",
    "void",
    "restore",
    "remap",
    "keep_central",
    "keep_local",
)
CATALOG_REVIEW = "catalog_review"
_DATA_TYPE_OF_INVARIANT = {
    "non_negative_stock": "stock",
    "unknown_product": "sales",
    CATALOG_REVIEW: "catalog",
}


@dataclass(frozen=True)
class Conflict:
    """One entry of the conflict queue."""

    id: str
    invariant: str
    location: str
    sku: str
    status: str  # open | resolved | self_healed
    observed: int | None
    priority: int
    message: str
    sales: tuple[str, ...]
    replicas: tuple[str, ...]
    opened_at: float
    updated_at: float
    resolution: dict[str, Any] | None = None
    history: tuple[dict[str, Any], ...] = field(default=())
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.invariant}|{self.location}|{self.sku}"

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["sales"] = list(self.sales)
        out["replicas"] = list(self.replicas)
        out["history"] = list(self.history)
        return out

    @classmethod
    def from_fields(cls, conflict_id: str, f: dict[str, Any]) -> Conflict:
        return cls(
            id=conflict_id,
            invariant=str(f.get("invariant", "")),
            location=str(f.get("location", "")),
            sku=str(f.get("sku", "")),
            status=str(f.get("status", "open")),
            observed=f.get("observed"),
            priority=int(f.get("priority", 0)),
            message=str(f.get("message", "")),
            sales=tuple(f.get("sales", ())),
            replicas=tuple(f.get("replicas", ())),
            opened_at=float(f.get("opened_at", 0)),
            updated_at=float(f.get("updated_at", 0)),
            resolution=f.get("resolution"),
            history=tuple(f.get("history", ())),
            details=dict(f.get("details", {})),
        )


class ReplicaState:
    """The :class:`~tiendasync.store.invariants.StateView` of a replica's merged state."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def stock(self, location: str, sku: str) -> int:
        name = stock_doc(location)
        if name not in self._replica._docs:
            return 0
        return self._replica._docs.view(name, PNCounter).value(sku)

    def product(self, sku: str) -> dict[str, Any] | None:
        return self._replica._docs.view(CATALOG, LWWMap).get(sku)

    def location(self, name: str) -> dict[str, Any] | None:
        return self._replica._docs.view(LOCATIONS, LWWMap).get(name)

    def sale_lines(self, location: str, sku: str) -> list[SaleRef]:
        rows = self._replica._store.conn.execute(
            "SELECT sale_id, replica, quantity, unit_price_cents, at_ms FROM sale_lines "
            "WHERE location = ? AND sku = ? AND voided = 0 AND remapped_to IS NULL",
            (location, sku),
        ).fetchall()
        return [SaleRef(str(a), str(b), int(c), int(d), int(e)) for a, b, c, d, e in rows]


class ConflictBook:
    """Conflicts of one tenant as seen (and written) by one replica."""

    def __init__(self, replica: Replica, invariants: Iterable[Invariant] | None = None) -> None:
        self._replica = replica
        self.invariants: list[Invariant] = (
            list(invariants) if invariants is not None else default_invariants()
        )
        self.state = ReplicaState(replica)

    def add_invariant(self, inv: Invariant) -> None:
        """Register an app-defined invariant."""
        if any(existing.name == inv.name for existing in self.invariants):
            raise InvalidArgument(f"an invariant named {inv.name!r} is already registered")
        self.invariants.append(inv)

    # -- reading ---------------------------------------------------------------------

    def _map(self) -> LWWMap:
        return self._replica._docs.view(CONFLICTS, LWWMap)

    def get(self, conflict_id: str) -> Conflict:
        with self._replica._lock:
            fields = self._map().get(conflict_id)
        if fields is None:
            raise ConflictNotFound(f"no conflict {conflict_id!r}")
        return Conflict.from_fields(conflict_id, fields)

    def list(
        self,
        *,
        status: str | None = None,
        location: str | None = None,
        replica: str | None = None,
        invariant: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Conflict]:
        """Conflicts ordered by priority (highest first), then newest first."""
        with self._replica._lock:
            m = self._map()
            found = [
                Conflict.from_fields(cid, f)
                for cid in list(m.records())
                if (f := m.get(cid)) is not None
            ]
        found = [
            c
            for c in found
            if (status is None or c.status == status)
            and (location is None or c.location == location)
            and (replica is None or replica in c.replicas)
            and (invariant is None or c.invariant == invariant)
        ]
        found.sort(key=lambda c: (c.status != "open", -c.priority, -c.opened_at, c.id))
        return found[offset : offset + limit]

    def open_for(self, key: str) -> Conflict | None:
        for c in self.list(status="open", limit=10**9):
            if c.key == key:
                return c
        return None

    # -- review (authoritative on the relay) -----------------------------------------

    def review(
        self, keys: Iterable[tuple[str, str]] | None = None, products: Iterable[str] = ()
    ) -> tuple[int, int, int]:
        """Evaluate invariants on ``keys`` (default: what changed since last time).

        Opens new conflicts, updates open ones, self-heals those that hold
        again.  Returns ``(opened, updated, healed)``.
        """
        replica = self._replica
        with replica._lock:
            keys = set(replica.drain_touched() if keys is None else keys)
            violations, holding = evaluate(self.invariants, self.state, sorted(keys))
            writes: dict[str, dict[str, Any]] = {}
            opened = updated = healed = 0
            open_by_key = {c.key: c for c in self.list(status="open", limit=10**9)}
            accepted = {
                c.key: c
                for c in self.list(status="resolved", limit=10**9)
                if (c.resolution or {}).get("action") == "accept"
            }
            now = time.time()
            for key, v in violations.items():
                current = open_by_key.get(key)
                fields = self._violation_fields(v)
                if current is None:
                    floor = accepted.get(key)
                    if (
                        floor is not None
                        and floor.observed is not None
                        and v.observed is not None
                        and v.observed >= floor.observed
                    ):
                        continue  # accepted as a backorder and not worse since
                    cid = (
                        "C-"
                        + hashlib.sha1(f"{key}|{now}|{replica.client_id}".encode()).hexdigest()[:10]
                    )
                    writes[cid] = {
                        **fields,
                        "status": "open",
                        "opened_at": now,
                        "updated_at": now,
                        "resolution": None,
                        "history": [{"at": now, "event": "opened", "observed": v.observed}],
                    }
                    opened += 1
                elif any(
                    current.to_dict().get(k) != fields[k]
                    for k in ("observed", "sales", "replicas", "priority")
                ):
                    writes[current.id] = {
                        **fields,
                        "updated_at": now,
                        "history": [
                            *current.history,
                            {"at": now, "event": "updated", "observed": v.observed},
                        ],
                    }
                    updated += 1
            for key in holding:
                current = open_by_key.get(key)
                if current is not None:
                    writes[current.id] = {
                        "status": "self_healed",
                        "updated_at": now,
                        "observed": self._observed(current),
                        "history": [*current.history, {"at": now, "event": "self_healed"}],
                    }
                    healed += 1
            for sku in products:
                review = self._catalog_review(sku, open_by_key, now)
                if review is not None:
                    writes[review[0]] = review[1]
                    opened += 1
            if writes:
                self._write(writes, f"review: {opened} opened, {updated} updated, {healed} healed")
            return opened, updated, healed

    def _observed(self, c: Conflict) -> int | None:
        return self.state.stock(c.location, c.sku) if c.location != "-" else c.observed

    def _violation_fields(self, v: Violation) -> dict[str, Any]:
        base = self._replica.config.priority(_DATA_TYPE_OF_INVARIANT.get(v.invariant, "stock"))
        return {
            "invariant": v.invariant,
            "location": v.location,
            "sku": v.sku,
            "observed": v.observed,
            "message": v.message,
            "priority": base * 100 + max(0, min(99, v.severity)),
            "sales": sorted(r.sale_id for r in v.contributors),
            "replicas": sorted({r.replica_id for r in v.contributors}),
        }

    def _catalog_review(
        self, sku: str, open_by_key: dict[str, Conflict], now: float
    ) -> tuple[str, dict[str, Any]] | None:
        catalog = self._replica._docs.view(CATALOG, LWWMap)
        losers = {
            name: [w for w in writes if w.json_value != (catalog.winner(sku, name) or w).json_value]
            for name, writes in catalog.concurrent_losers(sku).items()
            if name[0] != "\0"
        }
        losers = {k: v for k, v in losers.items() if v}
        key = f"{CATALOG_REVIEW}|-|{sku}"
        if not losers or key in open_by_key:
            return None
        details = {
            name: [
                {"value": w.value, "by": w.timestamp.replica_id, "at_ms": w.timestamp.wall_ms}
                for w in ws
            ]
            for name, ws in losers.items()
        }
        cid = "C-" + hashlib.sha1(f"{key}|{now}".encode()).hexdigest()[:10]
        return cid, {
            "invariant": CATALOG_REVIEW,
            "location": "-",
            "sku": sku,
            "observed": None,
            "message": f"concurrent edits of {sku} ({', '.join(sorted(losers))}) were "
            "discarded by last-writer-wins",
            "priority": self._replica.config.priority("catalog") * 100,
            "sales": [],
            "replicas": sorted({d["by"] for ws in details.values() for d in ws}),
            "status": "open",
            "opened_at": now,
            "updated_at": now,
            "resolution": None,
            "details": details,
            "history": [{"at": now, "event": "opened"}],
        }

    def _write(self, records: dict[str, dict[str, Any]], summary: str) -> None:
        replica = self._replica

        def mutate() -> None:
            doc = replica._docs.doc(CONFLICTS)
            with doc.transaction(origin="local"):
                m = self._map()
                for cid, fields in records.items():
                    m.set(cid, fields, replica._hlc.now())

        replica._local_write("conflict", "conflicts", summary, mutate)

    # -- resolution -------------------------------------------------------------------

    def resolve(
        self,
        conflict_id: str,
        action: str,
        *,
        by: str | None = None,
        note: str | None = None,
        **params: Any,
    ) -> Conflict:
        """Resolve with a compensating action (see DESIGN.md for names and params)."""
        replica = self._replica
        if action not in ACTIONS:
            raise InvalidArgument(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
        with replica._lock:
            c = self.get(conflict_id)
            if c.status != "open":
                raise ConflictClosed(f"conflict {conflict_id} is already {c.status}")
            allowed = _PARAMS[action]
            extra = set(params) - set(allowed)
            if extra:
                raise InvalidArgument(
                    f"action {action!r} takes {', '.join(allowed) or 'no'} "
                    f"parameters, not {', '.join(sorted(extra))}"
                )
            self._compensate(c, action, params)
            now = time.time()
            still = self._still_violated(c)
            resolution = {
                "action": action,
                "params": params,
                "by": by or replica.replica_id,
                "note": note,
                "at": now,
            }
            fields: dict[str, Any] = {
                "updated_at": now,
                "resolution": resolution,
                "status": "open" if still and action != "accept" else "resolved",
                "observed": self._observed(c),
                "history": [
                    *c.history,
                    {
                        "at": now,
                        "event": "resolved",
                        "action": action,
                        "by": resolution["by"],
                        "note": note,
                    },
                ],
            }
            self._write({c.id: fields}, f"resolve {c.id} with {action}")
            return self.get(c.id)

    def _still_violated(self, c: Conflict) -> bool:
        if c.invariant == CATALOG_REVIEW:
            return False
        violations, _ = evaluate(self.invariants, self.state, [(c.location, c.sku)])
        return c.key in violations

    def _compensate(self, c: Conflict, action: str, p: dict[str, Any]) -> None:
        r = self._replica
        reason = f"conflict {c.id}"
        if action == "accept":
            return
        if action == "adjust":
            r.inventory.adjust(
                c.sku,
                check_safe_int(p.get("quantity"), "quantity"),
                reason=reason,
                location=c.location,
            )
        elif action == "recount":
            r.inventory.count(c.sku, check_safe_int(p.get("count"), "count"), location=c.location)
        elif action == "transfer":
            r.inventory.transfer(
                c.sku,
                check_safe_int(p.get("quantity"), "quantity", positive=True),
                to_location=c.location,
                from_location=check_name(p.get("from_location"), "from_location"),
            )
        elif action == "void":
            ids = p.get("sale_ids")
            if isinstance(ids, str):
                ids = [i for i in ids.split(",") if i]
            if not isinstance(ids, list) or not ids:
                raise InvalidArgument("void needs sale_ids: a list of sale ids")
            unknown = [i for i in ids if i not in c.sales]
            if unknown:
                raise InvalidArgument(
                    f"sales {', '.join(map(str, unknown))} are not part of conflict {c.id}"
                )
            r.sales.void(ids, reason=reason)
        elif action == "restore":
            self._need(c, "unknown_product", action)
            fields = p.get("fields") or {"name": c.sku, "restored": True}
            r.catalog.put(c.sku, fields)
        elif action == "remap":
            self._need(c, "unknown_product", action)
            target = check_name(p.get("sku"), "sku")
            if r.catalog.get(target) is None:
                raise InvalidArgument(f"cannot remap to {target!r}: not a product")
            for sale_id in c.sales:
                r.sales.remap(sale_id, c.sku, target)
        elif action in ("keep_central", "keep_local"):
            self._need(c, CATALOG_REVIEW, action)
            self._keep(c, local=action == "keep_local", field_name=p.get("field"))

    @staticmethod
    def _need(c: Conflict, invariant: str, action: str) -> None:
        if c.invariant != invariant:
            raise InvalidArgument(f"action {action!r} does not apply to a {c.invariant} conflict")

    def _keep(self, c: Conflict, *, local: bool, field_name: Any) -> None:
        r = self._replica
        catalog = r._docs.view(CATALOG, LWWMap)
        changes: dict[str, Any] = {}
        for name, writes in catalog.concurrent_losers(c.sku).items():
            if field_name is not None and name != field_name:
                continue
            winner = catalog.winner(c.sku, name)
            if local and writes:
                changes[name] = max(writes).value
            elif winner is not None:
                changes[name] = winner.value
        if changes:
            r.catalog.put(c.sku, changes)


_PARAMS: dict[str, tuple[str, ...]] = {
    "accept": (),
    "adjust": ("quantity",),
    "recount": ("count",),
    "transfer": ("from_location", "quantity"),
    "void": ("sale_ids",),
    "restore": ("fields",),
    "remap": ("sku",),
    "keep_central": ("field",),
    "keep_local": ("field",),
}


def flag_queue_entries(replica: Replica, conflict_ids: Iterable[str]) -> None:
    """Mirror conflicts onto the queue entries (sales) that contributed to them."""
    book = replica.conflicts
    for cid in conflict_ids:
        try:
            c = book.get(cid)
        except ConflictNotFound:
            continue
        if not c.sales:
            continue
        marks = ",".join("?" * len(c.sales))
        rows = replica._store.conn.execute(
            f"SELECT id, conflict_ids, status FROM queue WHERE ref IN ({marks})", c.sales
        ).fetchall()
        with replica._store.write() as conn:
            for entry_id, ids_text, status in rows:
                ids = sorted(set(json.loads(ids_text)) | {cid})
                if c.status == "open":
                    new_status = "conflict"
                elif status == "conflict":
                    new_status = "acknowledged"
                else:
                    new_status = status
                conn.execute(
                    "UPDATE queue SET has_conflict = 1, conflict_ids = ?, status = ?, "
                    "updated_at = ? WHERE id = ?",
                    (json.dumps(ids), new_status, time.time(), entry_id),
                )
