"""The relay's JSON admin API (the seed's ``/api/sincronizacion/...``).

Starlette routes served by uvicorn in the relay's own event loop, on
``--admin-port``.  Every ``/api/`` route needs ``Authorization: Bearer
<admin token>``.  Bad requests get a 4xx with ``{"error": ...}`` and change
nothing.  The operations themselves live behind :class:`AdminBackend` (the
relay implements it), so this module is only HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tiendasync.errors import InvalidArgument, NotFound, TiendaSyncError

__all__ = ["MAX_BODY_BYTES", "AdminBackend", "create_admin_app"]

MAX_BODY_BYTES = 64 * 1024


class AdminBackend(Protocol):
    """What the admin API needs from the relay."""

    def is_admin(self, token: str) -> bool: ...

    def tenants(self) -> list[str]: ...

    def list_conflicts(self, tenant: str, **filters: Any) -> list[dict[str, Any]]: ...

    def get_conflict(self, tenant: str, conflict_id: str) -> dict[str, Any]: ...

    def process_conflict(self, tenant: str, conflict_id: str) -> dict[str, Any]: ...

    def resolve_conflict(
        self,
        tenant: str,
        conflict_id: str,
        action: str,
        *,
        by: str,
        note: str | None,
        params: dict[str, Any],
    ) -> dict[str, Any]: ...

    def list_configs(self, tenant: str) -> list[dict[str, Any]]: ...

    def set_config(
        self, tenant: str, replica_id: str, config: dict[str, Any]
    ) -> dict[str, Any]: ...

    def sync_now(self, tenant: str, replica_id: str, full: bool) -> bool: ...

    def list_sessions(
        self, tenant: str, *, replica_id: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]: ...

    def list_replicas(self, tenant: str) -> list[dict[str, Any]]: ...

    def conflict_sales(self, tenant: str, conflict_id: str) -> list[dict[str, Any]]: ...

    def metrics(self) -> dict[str, float]: ...


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 <= int(raw) <= maximum:
        raise InvalidArgument(f"{name} must be an integer between 0 and {maximum}")
    return int(raw)


Handler = Callable[[Request], Awaitable[Response]]


def create_admin_app(backend: AdminBackend, *, extra_routes: list[Any] | None = None) -> Starlette:
    """The ASGI app of the admin API (and of the web console, via ``extra_routes``)."""

    def guarded(
        handler: Callable[[Request, str], Awaitable[Response]], *, tenant_needed: bool = True
    ) -> Handler:
        async def endpoint(request: Request) -> Response:
            auth = request.headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token or not backend.is_admin(token.strip()):
                return _error(401, "missing or invalid admin token")
            try:
                tenant = _tenant(request) if tenant_needed else ""
                return await handler(request, tenant)
            except TiendaSyncError as exc:
                return _error(exc.http_status, str(exc))

        return endpoint

    def _tenant(request: Request) -> str:
        tenant = request.query_params.get("tenant")
        known = backend.tenants()
        if tenant is None:
            if len(known) == 1:
                return known[0]
            raise InvalidArgument(
                "several tenants: add ?tenant=NAME" if known else "no tenant has connected yet"
            )
        if tenant not in known:
            raise NotFound(f"unknown tenant {tenant!r}")
        return tenant

    async def body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if len(raw) > MAX_BODY_BYTES:
            raise InvalidArgument(f"request body larger than {MAX_BODY_BYTES} bytes")
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidArgument(f"body is not valid JSON: {type(exc).__name__}") from exc
        if not isinstance(data, dict):
            raise InvalidArgument("body must be a JSON object")
        return data

    async def queue(request: Request, tenant: str) -> Response:
        q = request.query_params
        conflict = q.get("conflict")
        if conflict not in (None, "true", "false"):
            raise InvalidArgument("conflict must be true or false")
        status = q.get("status")
        if status is not None and status not in ("open", "resolved", "self_healed"):
            raise InvalidArgument("status must be open, resolved or self_healed")
        limit = _int_param(request, "limit", 100, 1000)
        offset = _int_param(request, "offset", 0, 10**9)
        items = (
            []
            if conflict == "false"
            else backend.list_conflicts(
                tenant,
                status=status,
                location=q.get("location"),
                replica=q.get("replica"),
                limit=limit,
                offset=offset,
            )
        )
        return JSONResponse({"tenant": tenant, "count": len(items), "results": items})

    async def queue_item(request: Request, tenant: str) -> Response:
        return JSONResponse(backend.get_conflict(tenant, request.path_params["id"]))

    async def process(request: Request, tenant: str) -> Response:
        return JSONResponse(backend.process_conflict(tenant, request.path_params["id"]))

    async def resolve(request: Request, tenant: str) -> Response:
        data = await body(request)
        action = data.pop("action", None)
        if not isinstance(action, str):
            raise InvalidArgument('body needs "action", e.g. {"action": "adjust", "quantity": 1}')
        by = data.pop("by", "admin")
        note = data.pop("note", None)
        if not isinstance(by, str) or (note is not None and not isinstance(note, str)):
            raise InvalidArgument('"by" and "note" must be strings')
        result = backend.resolve_conflict(
            tenant, request.path_params["id"], action, by=by, note=note, params=data
        )
        return JSONResponse(result)

    async def configs(request: Request, tenant: str) -> Response:
        return JSONResponse({"tenant": tenant, "results": backend.list_configs(tenant)})

    async def put_config(request: Request, tenant: str) -> Response:
        data = await body(request)
        return JSONResponse(backend.set_config(tenant, request.path_params["replica"], data))

    async def sync_now(request: Request, tenant: str) -> Response:
        data = await body(request)
        full = data.get("full", False)
        if not isinstance(full, bool):
            raise InvalidArgument('"full" must be true or false')
        replica = request.path_params["replica"]
        sent = backend.sync_now(tenant, replica, full)
        if not sent:
            return _error(409, f"replica {replica!r} is not connected now")
        return JSONResponse({"replica": replica, "requested": True, "full": full})

    async def log(request: Request, tenant: str) -> Response:
        limit = _int_param(request, "limit", 100, 1000)
        offset = _int_param(request, "offset", 0, 10**9)
        rows = backend.list_sessions(
            tenant, replica_id=request.query_params.get("replica"), limit=limit, offset=offset
        )
        return JSONResponse({"tenant": tenant, "count": len(rows), "results": rows})

    async def replicas(request: Request, tenant: str) -> Response:
        return JSONResponse({"tenant": tenant, "results": backend.list_replicas(tenant)})

    async def tenants(request: Request, tenant: str) -> Response:
        return JSONResponse({"results": sorted(backend.tenants())})

    async def conflict_sales(request: Request, tenant: str) -> Response:
        rows = backend.conflict_sales(tenant, request.path_params["id"])
        return JSONResponse(
            {
                "tenant": tenant,
                "conflict": request.path_params["id"],
                "count": len(rows),
                "results": rows,
            }
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(request: Request) -> Response:
        lines = []
        for name, value in sorted(backend.metrics().items()):
            lines.append(f"# TYPE tiendasync_{name} gauge")
            lines.append(f"tiendasync_{name} {value}")
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/api/sync/queue/", guarded(queue)),
        Route("/api/sync/queue/{id}/", guarded(queue_item)),
        Route("/api/sync/queue/{id}/process/", guarded(process), methods=["POST"]),
        Route("/api/sync/queue/{id}/resolve/", guarded(resolve), methods=["POST"]),
        Route("/api/sync/config/", guarded(configs)),
        Route("/api/sync/config/{replica}", guarded(put_config), methods=["PUT"]),
        Route("/api/sync/config/{replica}/", guarded(put_config), methods=["PUT"]),
        Route("/api/sync/config/{replica}/sync_now/", guarded(sync_now), methods=["POST"]),
        Route("/api/sync/log/", guarded(log)),
        Route("/api/sync/replicas/", guarded(replicas)),
        Route("/api/sync/tenants/", guarded(tenants, tenant_needed=False)),
        Route("/api/sync/queue/{id}/sales/", guarded(conflict_sales)),
        *(extra_routes or []),
    ]
    return Starlette(routes=routes)
