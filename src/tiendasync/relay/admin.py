"""The relay's side of the admin API: operations over the live relay, and serving it.

:class:`RelayAdmin` implements :class:`tiendasync.relay.admin_api.AdminBackend` on
a running :class:`RelayServer`; :class:`AdminHTTPServer` serves the ASGI app
with uvicorn inside the relay's own event loop (so no threads share state).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Generator
from typing import Any

import uvicorn

from tiendasync.errors import ConfigError, InvalidArgument, NotFound
from tiendasync.model.config import StoreConfig
from tiendasync.relay.admin_api import create_admin_app
from tiendasync.relay.auth import authenticate
from tiendasync.relay.central import CENTRAL_REPLICA_ID
from tiendasync.relay.server import RelayServer

__all__ = ["AdminHTTPServer", "RelayAdmin"]

_RELAY_ONLY_CONFIG = ("read", "write")


class RelayAdmin:
    """Admin operations on a running relay (see ``tiendasync.relay.admin_api``)."""

    def __init__(self, server: RelayServer) -> None:
        self.server = server
        self.store = server.store
        self.started_at = time.time()

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

    # -- conflicts ----------------------------------------------------------------------------

    def list_conflicts(self, tenant: str, **filters: Any) -> list[dict[str, Any]]:
        return [c.to_dict() for c in self.server.central(tenant).conflicts(**filters)]

    def get_conflict(self, tenant: str, conflict_id: str) -> dict[str, Any]:
        return self.server.central(tenant).replica.conflicts.get(conflict_id).to_dict()

    def process_conflict(self, tenant: str, conflict_id: str) -> dict[str, Any]:
        """Re-check a conflict's invariant now (it may have healed)."""
        writer = self.server.central(tenant)
        c = writer.replica.conflicts.get(conflict_id)
        keys = [] if c.location == "-" else [(c.location, c.sku)]
        writer.replica.conflicts.review(keys, products=[c.sku] if c.location == "-" else [])
        return writer.replica.conflicts.get(conflict_id).to_dict()

    def resolve_conflict(
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

    def conflict_sales(self, tenant: str, conflict_id: str) -> list[dict[str, Any]]:
        """The sales linked to a conflict: store, time, lines, voided."""
        replica = self.server.central(tenant).replica
        conflict = replica.conflicts.get(conflict_id)
        results: list[dict[str, Any]] = []
        for sale_id in conflict.sales:
            sale = replica.sales.get(sale_id)
            if sale is None:
                results.append({"id": sale_id, "known": False})
                continue
            results.append(
                {
                    "id": sale.id,
                    "known": True,
                    "replica": sale.replica_id,
                    "location": sale.location,
                    "at_ms": sale.created_at_ms,
                    "voided": sale.voided,
                    "total_cents": sale.total_cents,
                    "lines": [
                        {
                            "sku": ln.sku,
                            "quantity": ln.quantity,
                            "unit_price_cents": ln.unit_price_cents,
                        }
                        for ln in sale.lines
                    ],
                }
            )
        return results

    # -- config, sync now ----------------------------------------------------------------------

    def _config_of(self, tenant: str, replica_id: str) -> dict[str, Any]:
        raw = self.store.get_replica_config(tenant, replica_id) or {}
        base = StoreConfig.from_dict(
            {k: v for k, v in raw.items() if k not in _RELAY_ONLY_CONFIG}
        ).to_dict()
        base.update({k: raw.get(k, ["*"]) for k in _RELAY_ONLY_CONFIG})
        return base

    def list_configs(self, tenant: str) -> list[dict[str, Any]]:
        return [
            {"replica": r, "config": self._config_of(tenant, r)} for r in self._replica_ids(tenant)
        ]

    def set_config(self, tenant: str, replica_id: str, config: dict[str, Any]) -> dict[str, Any]:
        if replica_id not in self._replica_ids(tenant):
            raise NotFound(f"no replica {replica_id!r} in tenant {tenant!r}")
        merged = {**self._config_of(tenant, replica_id), **config}
        for key in _RELAY_ONLY_CONFIG:
            value = merged[key]
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise InvalidArgument(f"{key} must be a list of document name patterns")
        try:
            StoreConfig.from_dict({k: v for k, v in merged.items() if k not in _RELAY_ONLY_CONFIG})
        except (ConfigError, TypeError) as exc:
            raise InvalidArgument(str(exc)) from exc
        self.store.set_replica_config(tenant, replica_id, merged)
        return {"replica": replica_id, "config": merged}

    def sync_now(self, tenant: str, replica_id: str, full: bool) -> bool:
        if replica_id not in self._replica_ids(tenant):
            raise NotFound(f"no replica {replica_id!r} in tenant {tenant!r}")
        return self.server.request_sync(tenant, replica_id, full)

    # -- logs and state ---------------------------------------------------------------------------

    def list_sessions(
        self, tenant: str, *, replica_id: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        rows = self.store.list_sessions(tenant=tenant, replica_id=replica_id, limit=limit + offset)
        return [dict(r.__dict__) for r in rows[offset:]]

    def list_replicas(self, tenant: str) -> list[dict[str, Any]]:
        online = set(self.server.connected_replicas(tenant))
        out = []
        for replica_id in self._replica_ids(tenant):
            last = self.store.list_sessions(tenant=tenant, replica_id=replica_id, limit=1)
            out.append(
                {
                    "replica": replica_id,
                    "online": replica_id in online,
                    "last_session": dict(last[0].__dict__) if last else None,
                    "config": self._config_of(tenant, replica_id),
                }
            )
        return out

    def metrics(self) -> dict[str, float]:
        open_conflicts = self.server.core.open_conflicts()
        return {
            "connections": float(self.server.connection_count()),
            "updates_total": float(self.server.updates_total),
            "queue_depth": float(self.server.queue_depth()),
            "open_conflicts": float(open_conflicts),
            "loaded_docs": float(len(self.server.docs)),
            "uptime_seconds": time.time() - self.started_at,
        }


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
