"""The relay's side of the admin API: operations over the live relay, and serving it.

:class:`RelayAdmin` implements :class:`tiendasync.relay.admin_api.AdminBackend` on
a running :class:`RelayServer`; :class:`AdminHTTPServer` serves the ASGI app
with uvicorn inside the relay's own event loop (so no threads share state).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections import OrderedDict
from collections.abc import Generator
from typing import Any

import uvicorn

from tiendasync.errors import (
    ConfigError,
    InvalidArgument,
    NotFound,
    RetryLater,
    TiendaSyncError,
)
from tiendasync.model.config import StoreConfig
from tiendasync.model.docnames import location_of, stock_doc
from tiendasync.relay.admin_api import create_admin_app
from tiendasync.relay.auth import authenticate
from tiendasync.relay.central import CENTRAL_REPLICA_ID
from tiendasync.relay.forward import READS, WRITES, check_key
from tiendasync.relay.policy import Grants
from tiendasync.relay.sales_archive import read_month, sale_json, sales_months
from tiendasync.relay.server import RelayServer
from tiendasync.relay.timeline import ResolutionEvent, SaleLine, stock_timeline

__all__ = ["AdminHTTPServer", "RelayAdmin"]

_RELAY_ONLY_CONFIG = ("read", "write")

#: Most idempotency keys a lone relay remembers (in memory, until it restarts).
_KEYS_KEPT = 10_000


class RelayAdmin:
    """Admin operations on a running relay (see ``tiendasync.relay.admin_api``)."""

    def __init__(self, server: RelayServer) -> None:
        self.server = server
        self.store = server.store
        self.started_at = time.time()
        #: a lone relay's answers to writes asked with an idempotency key:
        #: ``{key: ((op, tenant, args), answer or error)}``
        self._answered: OrderedDict[str, tuple[tuple[str, str, str], Any]] = OrderedDict()
        if server.forwarder is not None:  # this node runs what others ask while it reviews
            server.forwarder.executor = self.execute

    def is_admin(self, token: str) -> bool:
        record = authenticate(self.store, token)
        return record is not None and record.admin

    def tenants(self) -> list[str]:
        return self.server.tenants()

    def _replica_ids(self, tenant: str) -> list[str]:
        return sorted(
            {
                t.replica_id
                for t in self.store.list_tokens()
                if t.tenant == tenant
                and t.replica_id
                and not t.revoked
                and t.replica_id != CENTRAL_REPLICA_ID
            }
        )

    # -- conflicts: on the central writer, here or on the node holding the review lock ----------

    async def _central(
        self, op: str, tenant: str, args: dict[str, Any], key: str | None = None
    ) -> Any:
        """Run ``op`` on the tenant's central writer: forwarded on a cluster (see
        ``relay.forward``), here on a lone relay (a write's ``key`` remembered)."""
        forwarder = self.server.forwarder
        if forwarder is not None:
            return await forwarder.call(op, tenant, args, key)
        if key is None or op not in WRITES:
            return self.execute(op, tenant, args)
        check_key(key)
        asked = (op, tenant, json.dumps(args, sort_keys=True, separators=(",", ":")))
        if key in self._answered:
            earlier, answer = self._answered[key]
            if earlier != asked:
                raise InvalidArgument(
                    f"Idempotency-Key {key!r} was already used for another request; use a new key"
                )
            if isinstance(answer, TiendaSyncError):
                raise answer
            return answer
        try:
            answer = self.execute(op, tenant, args)
        except RetryLater:
            raise  # nothing was done: asking again with the key runs it
        except TiendaSyncError as exc:
            answer = exc
        self._answered[key] = (asked, answer)
        while len(self._answered) > _KEYS_KEPT:
            self._answered.popitem(last=False)
        if isinstance(answer, TiendaSyncError):
            raise answer
        return answer

    def execute(self, op: str, tenant: str, args: dict[str, Any]) -> Any:
        """Run a central-writer operation here (what a forwarded request runs)."""
        if op not in READS | WRITES:
            raise InvalidArgument(f"not an operation on the central writer: {op!r}")
        if tenant not in self.server.tenants():
            raise NotFound(f"unknown tenant {tenant!r}")
        method = getattr(self, f"_{op}")
        try:
            inspect.signature(method).bind(tenant, **args)
        except TypeError as exc:  # arguments that are not the operation's (a damaged row)
            raise InvalidArgument(f"bad arguments for {op}: {exc}") from None
        return method(tenant, **args)

    async def list_conflicts(self, tenant: str, **filters: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._central("list_conflicts", tenant, filters)
        return result

    async def get_conflict(self, tenant: str, conflict_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._central(
            "get_conflict", tenant, {"conflict_id": conflict_id}
        )
        return result

    async def conflict_timeline(self, tenant: str, conflict_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._central(
            "conflict_timeline", tenant, {"conflict_id": conflict_id}
        )
        return result

    async def process_conflict(
        self, tenant: str, conflict_id: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._central(
            "process_conflict", tenant, {"conflict_id": conflict_id}, idempotency_key
        )
        return result

    async def resolve_conflict(
        self,
        tenant: str,
        conflict_id: str,
        action: str,
        *,
        by: str,
        note: str | None,
        params: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        args = {
            "conflict_id": conflict_id,
            "action": action,
            "by": by,
            "note": note,
            "params": params,
        }
        result: dict[str, Any] = await self._central(
            "resolve_conflict", tenant, args, idempotency_key
        )
        return result

    async def conflict_sales(self, tenant: str, conflict_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._central(
            "conflict_sales", tenant, {"conflict_id": conflict_id}
        )
        return result

    # -- the same, here ------------------------------------------------------------------------

    def _list_conflicts(self, tenant: str, **filters: Any) -> list[dict[str, Any]]:
        writer = self.server.central(tenant)
        return [
            _presented(c.to_dict(), writer.replica.catalog.get(c.sku))
            for c in writer.conflicts(**filters)
        ]

    def _get_conflict(self, tenant: str, conflict_id: str) -> dict[str, Any]:
        replica = self.server.central(tenant).replica
        c = replica.conflicts.get(conflict_id)
        return _presented(c.to_dict(), replica.catalog.get(c.sku))

    def _conflict_timeline(self, tenant: str, conflict_id: str) -> dict[str, Any]:
        """What the conflict page shows beside the conflict: its product (or SKUs like
        it when it has none) and the movements that led to the current stock."""
        replica = self.server.central(tenant).replica
        c = replica.conflicts.get(conflict_id)
        product = replica.catalog.get(c.sku)
        known = dict(replica.catalog.items()) if product is None else {}
        out: dict[str, Any] = {
            "conflict": c.id,
            "sku": c.sku,
            "location": c.location,
            "product": product,
            # the catalog ever had it (a deleted product can be restored; a typo cannot)
            "product_ever": product is not None
            or replica.core.catalog().winner(c.sku, "name") is not None,
            "similar": [] if product is not None else _similar(c.sku, known),
            "timeline": None,
        }
        if c.location == "-":
            return out
        doc = stock_doc(c.location)
        history = self.store.load_doc(tenant, doc)
        origins = self.store.update_origins(tenant, doc, history.upto_seq)
        with replica.core.locked():
            lines = replica.core.storage.sales.lines_of(c.location, c.sku)
        events = [
            ResolutionEvent(
                other.id,
                str(ev.get("action")),
                str(ev.get("by") or ""),
                float(ev.get("at") or 0),
                other.sku,
                other.location,
            )
            for other in replica.conflicts.list(limit=10**6)
            for ev in other.history
            if ev.get("event") == "resolved"
        ]
        timeline = stock_timeline(
            history,
            origins,
            location=c.location,
            sku=c.sku,
            sales=[SaleLine(*line) for line in lines],
            resolutions=events,
        )
        out["timeline"] = timeline.to_dict()
        return out

    def _process_conflict(self, tenant: str, conflict_id: str) -> dict[str, Any]:
        """Re-check a conflict's invariant now (it may have healed)."""
        writer = self.server.central(tenant)
        c = writer.replica.conflicts.get(conflict_id)
        keys = [] if c.location == "-" else [(c.location, c.sku)]
        writer.replica.conflicts.review(keys, products=[c.sku] if c.location == "-" else [])
        return writer.replica.conflicts.get(conflict_id).to_dict()

    def _resolve_conflict(
        self,
        tenant: str,
        conflict_id: str,
        action: str,
        *,
        by: str,
        note: str | None,
        params: dict[str, Any],
    ) -> dict[str, Any]:
        writer = self.server.central(tenant)
        resolved = writer.resolve(conflict_id, action, by=by, note=note, **params)
        return resolved.to_dict()

    def _conflict_sales(self, tenant: str, conflict_id: str) -> list[dict[str, Any]]:
        """The sales linked to a conflict: store, time, lines, voided."""
        replica = self.server.central(tenant).replica
        conflict = replica.conflicts.get(conflict_id)
        results: list[dict[str, Any]] = []
        for sale_id in conflict.sales:
            sale = replica.sales.get(sale_id)
            if sale is None:
                results.append({"id": sale_id, "known": False})
                continue
            results.append({**sale_json(sale), "known": True})
        return results

    # -- every month of sales (replicas keep only the last ones) ------------------------------

    def sales_months(self, tenant: str, location: str | None) -> list[dict[str, str]]:
        """The months of sales the relay keeps, per location."""
        return [
            {"location": m.location, "period": m.period}
            for m in sales_months(self.store, tenant, location=location)
        ]

    def past_generations(self, tenant: str) -> dict[str, Any]:
        """Each document's current generation (past 0) and the past ones the store of
        record keeps (docs/generations.md#archiving-old-generations)."""
        return {
            "current": self.store.generations(tenant),
            "results": [p.public() for p in self.store.past_generations(tenant)],
        }

    def month_sales(
        self, tenant: str, location: str, period: str, *, limit: int, offset: int
    ) -> dict[str, Any]:
        """One location's sales in one month, oldest first, paged."""
        months = sales_months(self.store, tenant, location=location, since=period, until=period)
        if not months:
            raise NotFound(f"no sales of {location!r} in {period} in tenant {tenant!r}")
        sales, invalid = read_month(self.store, tenant, months[0])
        return {
            "location": location,
            "period": period,
            "count": len(sales),
            "invalid_records": invalid,
            "results": [sale_json(s) for s in sales[offset : offset + limit]],
        }

    # -- config, sync now ----------------------------------------------------------------------

    def _bound_location(self, tenant: str, replica_id: str) -> str | None:
        """The location a live token of this replica is bound to (None: unbound)."""
        return next(
            (
                t.location
                for t in self.store.list_tokens()
                if t.tenant == tenant
                and t.replica_id == replica_id
                and not t.revoked
                and t.location is not None
            ),
            None,
        )

    def _config_of(
        self, tenant: str, replica_id: str, raw: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The config as the replica lives it: stored keys (``raw``, else read from
        the store), and for grants not stored the defaults its token implies.

        ``central`` lists the keys set centrally: those win over the store's own
        value at every sync.  The other keys show what the store said, at its
        last connection (``reported_at``; None: it never did), it runs with (its
        own ``tiendasync config set`` values included); the defaults before that.
        """
        if raw is None:
            raw = self.store.get_replica_config(tenant, replica_id) or {}
        reported = self.store.get_reported_config(tenant, replica_id)
        local, reported_at = reported if reported is not None else ({}, None)
        central = {k: v for k, v in raw.items() if k not in _RELAY_ONLY_CONFIG}
        try:
            base = StoreConfig.from_dict({**local, **central}).to_dict()
        except (ConfigError, TypeError):  # a stale report that no longer validates
            base = StoreConfig.from_dict(central).to_dict()
        defaults = Grants.from_config(None, self._bound_location(tenant, replica_id))
        base["read"] = raw.get("read", list(defaults.read))
        base["write"] = raw.get("write", list(defaults.write))
        base["central"] = sorted(raw)
        base["reported_at"] = reported_at
        return base

    def list_configs(self, tenant: str) -> list[dict[str, Any]]:
        return [
            {"replica": r, "config": self._config_of(tenant, r)} for r in self._replica_ids(tenant)
        ]

    def set_config(self, tenant: str, replica_id: str, config: dict[str, Any]) -> dict[str, Any]:
        """Set keys centrally (``null`` clears one: the store's own value applies again).

        Only the keys given are stored and sent to the store, so editing one key
        never overrides the others the store set locally.  Grants not stored
        stay unstored: they keep following the token's default (editing the
        interval must not widen a store's write grants).
        """
        if replica_id not in self._replica_ids(tenant):
            raise NotFound(f"no replica {replica_id!r} in tenant {tenant!r}")
        raw = self.store.get_replica_config(tenant, replica_id) or {}
        stored = {**raw, **config}
        for key, value in config.items():
            if value is None:
                del stored[key]
        for answered in ("central", "reported_at"):  # what this API answers, not keys
            stored.pop(answered, None)
        for key in _RELAY_ONLY_CONFIG:
            if key not in stored:
                continue
            value = stored[key]
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise InvalidArgument(f"{key} must be a list of document name patterns")
        try:
            StoreConfig.from_dict({k: v for k, v in stored.items() if k not in _RELAY_ONLY_CONFIG})
        except (ConfigError, TypeError) as exc:
            raise InvalidArgument(str(exc)) from exc
        self.store.set_replica_config(tenant, replica_id, stored)
        return {"replica": replica_id, "config": self._config_of(tenant, replica_id, stored)}

    def sync_now(self, tenant: str, replica_id: str, full: bool) -> bool:
        """Ask the replica to sync, on this node or, through the store of record, on
        the node it is connected to: a request row that node takes at its next
        heartbeat, or at once when the cluster message waking it arrives."""
        if replica_id not in self._replica_ids(tenant):
            raise NotFound(f"no replica {replica_id!r} in tenant {tenant!r}")
        here = self.server.request_sync(tenant, replica_id, full)
        nodes = self.server.nodes
        elsewhere = (
            [] if nodes is None else nodes.request_elsewhere(time.time(), tenant, replica_id, full)
        )
        self.server.wake_nodes(elsewhere)
        return here or bool(elsewhere)

    def list_nodes(self) -> list[dict[str, Any]]:
        """Every live relay node: its id, when it started and last beat, its figures."""
        nodes = self.server.nodes
        if nodes is None:
            return []
        return [
            {
                "node": n.node_id,
                "this": n.node_id == nodes.node_id,
                "started_at": n.started_at,
                "seen_at": n.seen_at,
                "stores_connected": len(n.replicas),
                "metrics": n.metrics,
            }
            for n in nodes.live(time.time())
        ]

    def _where_connected(self, tenant: str) -> dict[str, list[str]]:
        """Each connected replica of ``tenant``: the nodes its sessions are on."""
        where: dict[str, list[str]] = {}
        nodes = self.server.nodes
        here = nodes.node_id if nodes is not None else "this"
        for replica_id in self.server.connected_replicas(tenant):
            where.setdefault(replica_id, []).append(here)
        if nodes is not None:
            for n in nodes.live(time.time()):
                if n.node_id == here:
                    continue
                for t, replica_id in n.replicas:
                    if t == tenant:
                        where.setdefault(replica_id, []).append(n.node_id)
        return where

    # -- logs and state ---------------------------------------------------------------------------

    def list_sessions(
        self, tenant: str, *, replica_id: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        rows = self.store.list_sessions(tenant=tenant, replica_id=replica_id, limit=limit + offset)
        return [dict(r.__dict__) for r in rows[offset:]]

    def _locations_of(self, tenant: str) -> dict[str, str]:
        """Each till's store: the one whose stock it wrote last (a till writes its own)."""
        latest: dict[str, tuple[float, str]] = {}
        for doc, writer, at in self.store.doc_writers(tenant):
            loc = location_of(doc) if doc.startswith("stock/") else None
            if loc is not None and at >= latest.get(writer, (0.0, ""))[0]:
                latest[writer] = (at, loc)
        return {writer: loc for writer, (_, loc) in latest.items()}

    def list_replicas(self, tenant: str) -> list[dict[str, Any]]:
        online = self._where_connected(tenant)
        where = self._locations_of(tenant)
        out = []
        for replica_id in self._replica_ids(tenant):
            last = self.store.list_sessions(tenant=tenant, replica_id=replica_id, limit=1)
            out.append(
                {
                    "replica": replica_id,
                    "location": where.get(replica_id),
                    "online": replica_id in online,
                    "nodes": sorted(online.get(replica_id, [])),
                    "last_session": dict(last[0].__dict__) if last else None,
                    "config": self._config_of(tenant, replica_id),
                }
            )
        return out

    def metrics(self) -> dict[str, float]:
        open_conflicts = self.server.core.open_conflicts()
        return {
            **self.server.node_metrics(),
            "open_conflicts": float(open_conflicts),
            "uptime_seconds": time.time() - self.started_at,
            f'node_info{{node="{self.server.node_id}"}}': 1.0,
            **({} if self.server.cluster is None else self.server.cluster.metrics()),
            **({} if self.server.forwarder is None else self.server.forwarder.metrics()),
        }


def _presented(c: dict[str, Any], product: dict[str, Any] | None) -> dict[str, Any]:
    """A conflict as the console shows it: plus ``state`` (``partial``: compensated in
    part, still open) and its product's name (``product_known`` False: not in the catalog)."""
    state = c["status"]
    if state == "open" and c.get("resolution"):
        state = "partial"
    name = (product or {}).get("name")
    return {
        **c,
        "state": state,
        "product_known": product is not None,
        "product_name": name if isinstance(name, str) else None,
    }


def _normal(sku: str) -> str:
    """``sku`` with the characters people confuse made equal (O/0, I/l/1, S/5, case)."""
    return sku.upper().translate(str.maketrans("OILS", "0115"))


def _similar(sku: str, catalog: dict[str, dict[str, Any]], limit: int = 3) -> list[dict[str, Any]]:
    """Catalog products a mistyped ``sku`` may have meant: same up to look-alike
    characters, or at most two edits away."""

    def distance(a: str, b: str) -> int:
        prev = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            cur = [i]
            for j, cb in enumerate(b, 1):
                cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
            prev = cur
        return prev[-1]

    scored = []
    for other, fields in catalog.items():
        if abs(len(other) - len(sku)) > 2:
            continue
        d = 0 if _normal(other) == _normal(sku) else distance(sku.upper(), other.upper())
        if d <= 2:
            name = fields.get("name")
            scored.append((d, other, name if isinstance(name, str) else None))
    scored.sort()
    return [{"sku": s, "name": n, "look_alike": d == 0} for d, s, n in scored[:limit]]


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handling: the relay owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class AdminHTTPServer:
    """Serve the admin API (and console routes) on ``host:port`` in this event loop."""

    def __init__(
        self,
        relay: RelayServer,
        *,
        host: str,
        port: int,
        extra_routes: list[Any] | None = None,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        self.admin = RelayAdmin(relay)
        self.app = create_admin_app(self.admin, extra_routes=extra_routes)
        config = uvicorn.Config(
            self.app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
        )
        self._server = _EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None
        self.host = host
        self.port = port

    async def start(self) -> None:
        """Listen; an :class:`OSError` (with its errno) if ``host:port`` cannot be bound."""
        if self.port:
            # uvicorn reports a failed bind as SystemExit after logging it; a
            # trial bind first gives the caller a plain OSError to explain.
            probe = await asyncio.get_running_loop().create_server(
                asyncio.Protocol, self.host, self.port, reuse_address=True
            )
            probe.close()
            await probe.wait_closed()
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises the bind error
                raise OSError(f"admin API could not start on {self.host}:{self.port}")
            await asyncio.sleep(0.01)
        servers = getattr(self._server, "servers", [])
        for srv in servers:
            for sock in srv.sockets:
                self.port = int(sock.getsockname()[1])
                return

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self._task, 5)
        self._task = None
