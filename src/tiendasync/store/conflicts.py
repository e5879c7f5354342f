"""The conflict queue: invariant violations that a person resolves.

Conflicts live in the tenant's ``conflicts`` document, one LWW record per
conflict, so they replicate to every store like any other data.  The relay is
authoritative: its writer replica reviews the keys each update touched,
opens, updates and self-heals conflicts.  Resolutions are compensating writes
(an adjustment, a recount, a transfer, voiding sales, restoring or remapping a
product), never edits of history, and only the relay makes them: on the relay
(admin API, console) at once; on a store (``replica.queue.resolve``) as a
*request*, a record in ``resolutions/<the store's location>``, which the relay
applies when it receives it, if the conflict is at that location or names
the requesting replica (:meth:`ConflictBook.apply_request`).  Until then the
store's copy of the conflict shows the request (:attr:`Conflict.requested`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from tiendasync.crdt.lww import FieldWrite
from tiendasync.errors import ConflictClosed, ConflictNotFound, InvalidArgument, TiendaSyncError
from tiendasync.model.actions import (
    ACTIONS,
    CATALOG_REVIEW,
    Action,
    check_params,
    get_action,
)
from tiendasync.model.docnames import CONFLICTS, resolutions_doc, stock_doc
from tiendasync.model.names import check_name
from tiendasync.store.boundary import public_api
from tiendasync.store.core import ReplicaCore, WriteSpec
from tiendasync.store.invariants import Invariant, SaleRef, Violation, default_invariants, evaluate

if TYPE_CHECKING:
    from tiendasync.store.compensation import Compensator

__all__ = [
    "ACTIONS",
    "CATALOG_REVIEW",
    "Conflict",
    "ConflictBook",
    "ReplicaState",
    "Rules",
    "count_open_for",
    "mirror_to_queue",
    "request_id",
]

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
    #: On a store: its location's request to resolve this conflict, not yet
    #: applied by the relay (``action``, ``params``, ``by``, ``note``, ``at``,
    #: ``request``: its id), else ``None``.
    requested: dict[str, Any] | None = None

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


def request_id(write: FieldWrite) -> str:
    """A resolution request's identity: the timestamp of its ``action`` field.

    A store that asks again writes a newer timestamp, so a new request; the
    relay applies each request id at most once (it records the id in the
    conflict's history).
    """
    return f"{write.wall_ms}.{write.counter}.{write.replica_id}.{write.writer}"


def _handled(c: Conflict, rid: str) -> bool:
    return any(isinstance(h, dict) and h.get("request") == rid for h in c.history)


class ReplicaState:
    """The :class:`~tiendasync.store.invariants.StateView` of a replica's merged state."""

    def __init__(self, core: ReplicaCore) -> None:
        self._core = core

    def stock(self, location: str, sku: str) -> int:
        if stock_doc(location) not in self._core.docs:
            return 0
        return self._core.counter(location).value(sku)

    def product(self, sku: str) -> dict[str, Any] | None:
        return self._core.catalog().get(sku)

    def location(self, name: str) -> dict[str, Any] | None:
        return self._core.locations().get(name)

    def sale_lines(self, location: str, sku: str) -> list[SaleRef]:
        return [SaleRef(*row) for row in self._core.storage.sales.live_lines(location, sku)]


class Rules:
    """The invariants one replica evaluates, and the merged state they read."""

    def __init__(self, core: ReplicaCore, invariants: Iterable[Invariant] | None = None) -> None:
        self.invariants: list[Invariant] = (
            list(invariants) if invariants is not None else default_invariants()
        )
        self.state = ReplicaState(core)

    def add(self, inv: Invariant) -> None:
        if any(existing.name == inv.name for existing in self.invariants):
            raise InvalidArgument(f"an invariant named {inv.name!r} is already registered")
        self.invariants.append(inv)

    def app_notes(self, keys: Iterable[tuple[str, str]]) -> tuple[str, ...]:
        """Messages of app-defined invariants broken on ``keys`` (a sale warns at once)."""
        custom = [
            i for i in self.invariants if i.name not in ("non_negative_stock", "unknown_product")
        ]
        if not custom:
            return ()
        violations, _ = evaluate(custom, self.state, list(keys))
        return tuple(v.message for v in violations.values())

    def allows_negative(self, location: str) -> bool:
        """The location accepts backorders (its record says ``allow_negative``)."""
        return (self.state.location(location) or {}).get("allow_negative") is True


@public_api
class ConflictBook:
    """Conflicts of one tenant as seen (and written) by one replica."""

    def __init__(self, core: ReplicaCore, rules: Rules, compensator: Compensator) -> None:
        self._core = core
        self._rules = rules
        self._compensator = compensator
        #: Resolutions are applied here (the relay's writer), not requested.
        self.authoritative = False
        #: ``new_id(key)``: the id a new conflict on ``key`` gets.  Default (``None``):
        #: a hash of the key, the time and this writer, unique but not reproducible.
        #: The relay's review workers give one from the key and how many conflicts it
        #: had, so two writers opening "the same" conflict name it alike.
        self.new_id: Callable[[str], str] | None = None

    def make_authoritative(self) -> None:
        """This book is the relay's: it applies resolutions and stores' requests."""
        self.authoritative = True
        self._core.changes.collect_requests = True

    @property
    def invariants(self) -> list[Invariant]:
        """The invariants evaluated here (built-in and app-defined)."""
        return self._rules.invariants

    @property
    def state(self) -> ReplicaState:
        """The merged state the invariants read."""
        return self._rules.state

    def add_invariant(self, inv: Invariant) -> None:
        """Register an app-defined invariant."""
        self._rules.add(inv)

    # -- reading ---------------------------------------------------------------------

    def get(self, conflict_id: str) -> Conflict:
        check_name(conflict_id, "conflict id")
        with self._core.lock:
            fields = self._core.conflicts().get(conflict_id)
            if fields is None:
                raise ConflictNotFound(f"no conflict {conflict_id!r}")
            return self._with_request(Conflict.from_fields(conflict_id, fields))

    def _with_request(self, c: Conflict) -> Conflict:
        """``c`` with this store's pending request to resolve it (call under the lock)."""
        core = self._core
        if self.authoritative or c.status != "open":
            return c
        if resolutions_doc(core.location) not in core.docs:
            return c
        requests = core.resolutions(core.location)
        fields, write = requests.get(c.id), requests.winner(c.id, "action")
        if fields is None or write is None:
            return c
        request = request_id(write)
        if _handled(c, request):
            return c
        return replace(c, requested={**fields, "request": request})

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
        with self._core.lock:
            m = self._core.conflicts()
            found = [
                self._with_request(Conflict.from_fields(cid, f))
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

    def unrecorded_violations(self, locations: Iterable[str]) -> int:
        """How many invariants the stock of ``locations`` breaks here with no open conflict.

        What the relay's review will (most likely) open from what this store
        sends: a one-shot sync waits for that review only when this is not 0.
        """
        core = self._core
        with core.locked():
            keys = [(loc, sku) for loc in set(locations) for sku, _ in core.counter(loc).items()]
            violations, _ = evaluate(self._rules.invariants, self._rules.state, sorted(keys))
            open_keys = {c.key for c in self.list(status="open", limit=10**9)}
        return sum(1 for key in violations if key not in open_keys)

    # -- review (authoritative on the relay) -----------------------------------------

    def review(
        self, keys: Iterable[tuple[str, str]] | None = None, products: Iterable[str] = ()
    ) -> tuple[int, int, int]:
        """Evaluate invariants on ``keys`` (default: what changed since last time).

        Opens new conflicts, updates open ones, self-heals those that hold
        again.  Returns ``(opened, updated, healed)``.
        """
        core = self._core
        with core.lock:
            keys = set(core.changes.drain_touched() if keys is None else keys)
            violations, holding = evaluate(self.invariants, self.state, sorted(keys))
            writes: dict[str, dict[str, Any]] = {}
            opened = updated = healed = 0
            open_by_key = {c.key: c for c in self.list(status="open", limit=10**9)}
            accepted = {
                c.key: c
                for c in self.list(status="resolved", limit=10**9)
                if (c.resolution or {}).get("action") == "accept"
            }
            now = core.now()
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
                        self.new_id(key)
                        if self.new_id is not None
                        else "C-"
                        + hashlib.sha1(f"{key}|{now}|{core.client_id}".encode()).hexdigest()[:10]
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
        base = self._core.read_config().priority(_DATA_TYPE_OF_INVARIANT.get(v.invariant, "stock"))
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
        catalog = self._core.catalog()
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
        cid = (
            self.new_id(key)
            if self.new_id is not None
            else "C-" + hashlib.sha1(f"{key}|{now}".encode()).hexdigest()[:10]
        )
        return cid, {
            "invariant": CATALOG_REVIEW,
            "location": "-",
            "sku": sku,
            "observed": None,
            "message": f"concurrent edits of {sku} ({', '.join(sorted(losers))}) were "
            "discarded by last-writer-wins",
            "priority": self._core.read_config().priority("catalog") * 100,
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
        core = self._core

        def mutate() -> None:
            doc = core.docs.doc(CONFLICTS)
            with doc.transaction(origin="local"):
                m = core.conflicts()
                for cid, fields in records.items():
                    m.set(cid, fields, core.hlc.now())

        core.local_write(WriteSpec("conflict", "conflicts", summary), mutate)

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
        """Resolve with a compensating action (see :data:`tiendasync.model.actions.ACTIONS`).

        Raises :class:`InvalidArgument` for an unknown action or bad
        parameters, :class:`ConflictNotFound`, :class:`ConflictClosed`; in
        each case nothing is written.
        """
        spec = get_action(action)
        with self._core.lock:
            c = self.get(conflict_id)
            checked = self._checked(c, spec, params)
            if self.authoritative:
                self._apply(c, action, checked, params, by=by, note=note)
            else:
                self._request(c, action, params, by=by, note=note)
            return self.get(c.id)

    def _checked(self, c: Conflict, spec: Action, params: dict[str, Any]) -> dict[str, Any]:
        if c.status != "open":
            raise ConflictClosed(f"conflict {c.id} is already {c.status}")
        checked = check_params(spec, params)
        if not spec.applies(c.invariant):
            raise InvalidArgument(
                f"action {spec.name!r} does not apply to a {c.invariant} conflict"
            )
        return checked

    def _request(
        self, c: Conflict, action: str, params: dict[str, Any], *, by: str | None, note: str | None
    ) -> None:
        """A store asks the relay to resolve ``c``: one record in its location's requests."""
        core = self._core
        fields = {
            "action": action,
            "params": params,
            "by": by or core.replica_id,
            "note": note,
            "at": core.now(),
        }
        doc_name = resolutions_doc(core.location)

        def mutate() -> None:
            doc = core.docs.doc(doc_name)
            with doc.transaction(origin="local"):
                core.resolutions(core.location).set(c.id, fields, core.hlc.now())

        core.local_write(
            WriteSpec("resolution", "resolutions", f"request to resolve {c.id} with {action}"),
            mutate,
        )

    def _apply(
        self,
        c: Conflict,
        action: str,
        checked: dict[str, Any],
        params: dict[str, Any],
        *,
        by: str | None,
        note: str | None,
        request: dict[str, Any] | None = None,
    ) -> None:
        """The relay resolves ``c``: the compensating writes, then the conflict record."""
        core = self._core
        self._compensator.apply(c, action, checked)
        now = core.now()
        still = self._still_violated(c)
        resolution = {
            "action": action,
            "params": params,
            "by": by or core.replica_id,
            "note": note,
            "at": now,
        }
        event: dict[str, Any] = {
            "at": now,
            "event": "resolved",
            "action": action,
            "by": resolution["by"],
            "note": note,
        }
        if request is not None:
            event["request"] = request["request"]
            event["location"] = request["location"]
            event["requested_by"] = request["replica"]
        fields: dict[str, Any] = {
            "updated_at": now,
            "resolution": resolution,
            "status": "open" if still and action != "accept" else "resolved",
            "observed": self._observed(c),
            "history": [*c.history, event],
        }
        self._write({c.id: fields}, f"resolve {c.id} with {action}")

    def apply_request(self, location: str, conflict_id: str) -> str | None:
        """Apply the request stores at ``location`` made to resolve ``conflict_id`` (the relay).

        Allowed when the conflict is at ``location`` or names the requesting
        replica among those involved.  Each request id is applied at most
        once.  Returns ``None`` if it was applied (or there was nothing new to
        apply), else why it was refused; a refusal is recorded in the
        conflict's history, so the store sees it after its next sync.
        """
        core = self._core
        with core.lock:
            if resolutions_doc(location) not in core.docs:
                return None
            requests = core.resolutions(location)
            fields, write = requests.get(conflict_id), requests.winner(conflict_id, "action")
            record = core.conflicts().get(conflict_id)
            if fields is None or write is None or record is None:
                return None  # no request, or for no conflict of ours: nothing to do
            c = Conflict.from_fields(conflict_id, record)
            rid = request_id(write)
            if _handled(c, rid):
                return None
            request = {"request": rid, "location": location, "replica": write.replica_id}
            reason = self._request_refusal(c, location, write.replica_id)
            if reason is None:
                try:
                    spec = get_action(fields.get("action"))
                    params = fields.get("params")
                    if not isinstance(params, dict):
                        raise InvalidArgument("a request's params are an object")
                    checked = self._checked(c, spec, params)
                    by, note = fields.get("by"), fields.get("note")
                    self._apply(
                        c,
                        spec.name,
                        checked,
                        params,
                        by=by if isinstance(by, str) else write.replica_id,
                        note=note if isinstance(note, str) else None,
                        request=request,
                    )
                    return None
                except TiendaSyncError as exc:
                    reason = str(exc)[:300]
            now = core.now()
            refused = {"at": now, "event": "request_refused", "reason": reason, **request}
            self._write(
                {c.id: {"updated_at": now, "history": [*c.history, refused]}},
                f"refuse request {rid} for {c.id}",
            )
            return reason

    @staticmethod
    def _request_refusal(c: Conflict, location: str, replica: str) -> str | None:
        if c.location == location or replica in c.replicas:
            return None
        return f"conflict {c.id} is not at {location} and does not involve {replica}"

    def _still_violated(self, c: Conflict) -> bool:
        if c.invariant == CATALOG_REVIEW:
            return False
        violations, _ = evaluate(self.invariants, self.state, [(c.location, c.sku)])
        return c.key in violations


def count_open_for(book: ConflictBook, location: str, replica_id: str) -> int:
    """Open conflicts at ``location`` (or chain-wide) or involving ``replica_id``."""
    return len(
        [
            c
            for c in book.list(status="open", limit=10**9)
            if c.location in (location, "-") or replica_id in c.replicas
        ]
    )


def mirror_to_queue(core: ReplicaCore, book: ConflictBook, conflict_ids: Iterable[str]) -> None:
    """Flag the queue entries (sales) that contributed to these conflicts.

    An entry is ``conflict`` while one of its conflicts is open and goes
    back to ``acknowledged`` once it is closed.
    """
    for cid in conflict_ids:
        try:
            c = book.get(cid)
        except ConflictNotFound:
            continue
        if not c.sales:
            continue
        with core.transaction():
            outbox = core.storage.outbox
            for entry_id, ids, status in outbox.entries_for_refs(list(c.sales)):
                if c.status == "open":
                    new_status = "conflict"
                elif status == "conflict":
                    new_status = "acknowledged"
                else:
                    new_status = status
                outbox.flag_conflict(entry_id, sorted({*ids, cid}), new_status, core.now())
