"""The relay's JSON admin API (the seed's ``/api/sincronizacion/...``).

Starlette routes served by uvicorn in the relay's own event loop, on
``--admin-port``.  Every ``/api/`` route needs ``Authorization: Bearer
<admin token>``.  Bad requests get a 4xx with ``{"error": ...}`` and change
nothing; every :class:`~tiendasync.errors.TiendaSyncError` answers with its
own ``http_status`` (no mapping here).  The operations themselves live behind
:class:`AdminBackend` (the relay implements it), so this module is only HTTP;
``GET /api/sync/model/`` serves the model tables (data types, resolution
actions) that the console builds its lists and forms from.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any, Protocol, TypeAlias, TypeVar, cast

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from tiendasync.errors import InvalidArgument, NotFound, TiendaSyncError
from tiendasync.model.actions import action_table, check_params, get_action
from tiendasync.model.docnames import DATA_TYPES, is_period
from tiendasync.relay.forward import check_key

__all__ = ["MAX_BODY_BYTES", "AdminBackend", "create_admin_app", "model_tables"]

MAX_BODY_BYTES = 64 * 1024

#: Conflict statuses the queue can be filtered by.
_STATUSES = ("open", "resolved", "self_healed")

T = TypeVar("T")
#: What an operation on the central writers returns: its answer, or (a relay cluster,
#: where another node may run it: ``relay.forward``) something to await for it.
Answer: TypeAlias = T | Awaitable[T]


class AdminBackend(Protocol):
    """What the admin API needs from the relay."""

    def is_admin(self, token: str) -> bool: ...

    def tenants(self) -> list[str]: ...

    def list_conflicts(self, tenant: str, **filters: Any) -> Answer[list[dict[str, Any]]]: ...

    def get_conflict(self, tenant: str, conflict_id: str) -> Answer[dict[str, Any]]: ...

    def process_conflict(
        self, tenant: str, conflict_id: str, *, idempotency_key: str | None = None
    ) -> Answer[dict[str, Any]]: ...

    def resolve_conflict(
        self,
        tenant: str,
        conflict_id: str,
        action: str,
        *,
        by: str,
        note: str | None,
        params: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> Answer[dict[str, Any]]: ...

    def list_configs(self, tenant: str) -> list[dict[str, Any]]: ...

    def set_config(
        self, tenant: str, replica_id: str, config: dict[str, Any]
    ) -> dict[str, Any]: ...

    def sync_now(self, tenant: str, replica_id: str, full: bool) -> bool: ...

    def list_sessions(
        self, tenant: str, *, replica_id: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]: ...

    def list_replicas(self, tenant: str) -> list[dict[str, Any]]: ...

    def conflict_sales(self, tenant: str, conflict_id: str) -> Answer[list[dict[str, Any]]]: ...

    def conflict_timeline(self, tenant: str, conflict_id: str) -> Answer[dict[str, Any]]: ...

    def metrics(self) -> dict[str, float]: ...

    def list_nodes(self) -> list[dict[str, Any]]: ...

    def sales_months(self, tenant: str, location: str | None) -> list[dict[str, str]]: ...
    def past_generations(self, tenant: str) -> dict[str, Any]: ...

    def month_sales(
        self, tenant: str, location: str, period: str, *, limit: int, offset: int
    ) -> dict[str, Any]: ...


Handler = Callable[[Request], Awaitable[Response]]
TenantHandler = Callable[[Request, str], Awaitable[Response]]


def model_tables() -> dict[str, list[dict[str, Any]]]:
    """The model as JSON: ``data_types`` (:data:`DATA_TYPES`) and ``actions`` (the actions table).

    Both in table order (data types highest default priority first, actions
    in menu order).
    """
    return {
        "data_types": [asdict(t) for t in DATA_TYPES.values()],
        "actions": action_table(),
    }


# -- request parsing (raises InvalidArgument / NotFound) ------------------------------------


async def _answer(value: Answer[T]) -> T:
    if inspect.isawaitable(value):
        return cast(T, await value)
    return value


def _idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header, checked (None: not given)."""
    key = request.headers.get("idempotency-key")
    return None if key is None else check_key(key.strip())


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 <= int(raw) <= maximum:
        raise InvalidArgument(f"{name} must be an integer between 0 and {maximum}")
    return int(raw)


def _choice_param(request: Request, name: str, choices: tuple[str, ...], words: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and value not in choices:
        raise InvalidArgument(f"{name} must be {words}")
    return value


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when empty); InvalidArgument otherwise."""
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


def _tenant_of(request: Request, known: list[str]) -> str:
    """``?tenant=``, or the only tenant there is."""
    tenant = request.query_params.get("tenant")
    if tenant is None:
        if len(known) == 1:
            return known[0]
        raise InvalidArgument(
            "several tenants: add ?tenant=NAME" if known else "no tenant has connected yet"
        )
    if tenant not in known:
        raise NotFound(f"unknown tenant {tenant!r}")
    return tenant


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _resolution(data: dict[str, Any]) -> tuple[str, str, str | None, dict[str, Any]]:
    """``(action, by, note, params)`` of a resolve body, checked against the actions table."""
    if "action" not in data or data["action"] is None:
        raise InvalidArgument('body needs "action", e.g. {"action": "adjust", "quantity": 1}')
    params = dict(data)
    action = get_action(params.pop("action"))
    by = params.pop("by", "admin")
    note = params.pop("note", None)
    if not isinstance(by, str) or (note is not None and not isinstance(note, str)):
        raise InvalidArgument('"by" and "note" must be strings')
    return action.name, by, note, check_params(action, params)


def _listing(tenant: str, rows: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"tenant": tenant, "count": len(rows), "results": rows})


# -- the routes --------------------------------------------------------------------------------


class _Routes:
    """The route handlers over one backend; :meth:`routes` lists them."""

    def __init__(self, backend: AdminBackend) -> None:
        self.backend = backend

    def guarded(self, handler: TenantHandler, *, tenant_needed: bool = True) -> Handler:
        """``handler`` behind the admin token, with the tenant resolved and errors as JSON."""

        async def endpoint(request: Request) -> Response:
            token = _bearer(request)
            if token is None or not self.backend.is_admin(token):
                return _error(401, "missing or invalid admin token")
            try:
                tenant = _tenant_of(request, self.backend.tenants()) if tenant_needed else ""
                return await handler(request, tenant)
            except TiendaSyncError as exc:
                return _error(exc.http_status, str(exc))

        return endpoint

    async def model(self, request: Request, tenant: str) -> Response:
        return JSONResponse(model_tables())

    async def queue(self, request: Request, tenant: str) -> Response:
        conflict = _choice_param(request, "conflict", ("true", "false"), "true or false")
        status = _choice_param(request, "status", _STATUSES, "open, resolved or self_healed")
        limit = _int_param(request, "limit", 100, 1000)
        offset = _int_param(request, "offset", 0, 10**9)
        if conflict == "false":  # the relay's queue only holds conflicts
            return _listing(tenant, [])
        items = await _answer(
            self.backend.list_conflicts(
                tenant,
                status=status,
                location=request.query_params.get("location"),
                replica=request.query_params.get("replica"),
                limit=limit,
                offset=offset,
            )
        )
        return _listing(tenant, items)

    async def queue_item(self, request: Request, tenant: str) -> Response:
        conflict = request.path_params["id"]
        return JSONResponse(await _answer(self.backend.get_conflict(tenant, conflict)))

    async def process(self, request: Request, tenant: str) -> Response:
        key = _idempotency_key(request)
        answer = self.backend.process_conflict(
            tenant, request.path_params["id"], idempotency_key=key
        )
        return JSONResponse(await _answer(answer))

    async def resolve(self, request: Request, tenant: str) -> Response:
        key = _idempotency_key(request)
        action, by, note, params = _resolution(await _json_body(request))
        answer = self.backend.resolve_conflict(
            tenant,
            request.path_params["id"],
            action,
            by=by,
            note=note,
            params=params,
            idempotency_key=key,
        )
        return JSONResponse(await _answer(answer))

    async def conflict_sales(self, request: Request, tenant: str) -> Response:
        conflict = request.path_params["id"]
        rows = await _answer(self.backend.conflict_sales(tenant, conflict))
        return JSONResponse(
            {"tenant": tenant, "conflict": conflict, "count": len(rows), "results": rows}
        )

    async def conflict_timeline(self, request: Request, tenant: str) -> Response:
        result = await _answer(self.backend.conflict_timeline(tenant, request.path_params["id"]))
        return JSONResponse({"tenant": tenant, **result})

    async def configs(self, request: Request, tenant: str) -> Response:
        return JSONResponse({"tenant": tenant, "results": self.backend.list_configs(tenant)})

    async def put_config(self, request: Request, tenant: str) -> Response:
        data = await _json_body(request)
        return JSONResponse(self.backend.set_config(tenant, request.path_params["replica"], data))

    async def sync_now(self, request: Request, tenant: str) -> Response:
        full = (await _json_body(request)).get("full", False)
        if not isinstance(full, bool):
            raise InvalidArgument('"full" must be true or false')
        replica = request.path_params["replica"]
        if not self.backend.sync_now(tenant, replica, full):
            return _error(409, f"replica {replica!r} is not connected now")
        return JSONResponse({"replica": replica, "requested": True, "full": full})

    async def log(self, request: Request, tenant: str) -> Response:
        limit = _int_param(request, "limit", 100, 1000)
        offset = _int_param(request, "offset", 0, 10**9)
        rows = self.backend.list_sessions(
            tenant, replica_id=request.query_params.get("replica"), limit=limit, offset=offset
        )
        return _listing(tenant, rows)

    async def sales(self, request: Request, tenant: str) -> Response:
        """``?location=L&period=YYYY-MM``: that month's sales; without ``period``: the
        months the relay keeps (of ``location``, or of every location)."""
        location = request.query_params.get("location")
        period = request.query_params.get("period")
        if period is None:
            months = self.backend.sales_months(tenant, location)
            return JSONResponse({"tenant": tenant, "months": months})
        if location is None:
            raise InvalidArgument("give location with period")
        if not is_period(period):
            raise InvalidArgument(f"period must be a month YYYY-MM, got {period[:20]!r}")
        limit = _int_param(request, "limit", 500, 5000)
        offset = _int_param(request, "offset", 0, 10**9)
        page = self.backend.month_sales(tenant, location, period, limit=limit, offset=offset)
        return JSONResponse({"tenant": tenant, **page})

    async def generations(self, request: Request, tenant: str) -> Response:
        return JSONResponse({"tenant": tenant, **self.backend.past_generations(tenant)})

    async def replicas(self, request: Request, tenant: str) -> Response:
        return JSONResponse({"tenant": tenant, "results": self.backend.list_replicas(tenant)})

    async def nodes(self, request: Request, tenant: str) -> Response:
        return JSONResponse({"results": self.backend.list_nodes()})

    async def tenants(self, request: Request, tenant: str) -> Response:
        return JSONResponse({"results": sorted(self.backend.tenants())})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics(self, request: Request) -> Response:
        lines = []
        for name, value in sorted(self.backend.metrics().items()):
            # a name may carry its labels: node_info{node="..."}
            lines.append(f"# TYPE tiendasync_{name.split('{')[0]} gauge")
            lines.append(f"tiendasync_{name} {value}")
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    def routes(self) -> list[BaseRoute]:
        g = self.guarded
        post, put = ["POST"], ["PUT"]
        return [
            Route("/healthz", self.healthz),
            Route("/metrics", self.metrics),
            Route("/api/sync/model/", g(self.model, tenant_needed=False)),
            Route("/api/sync/queue/", g(self.queue)),
            Route("/api/sync/queue/{id}/", g(self.queue_item)),
            Route("/api/sync/queue/{id}/process/", g(self.process), methods=post),
            Route("/api/sync/queue/{id}/resolve/", g(self.resolve), methods=post),
            Route("/api/sync/config/", g(self.configs)),
            Route("/api/sync/config/{replica}", g(self.put_config), methods=put),
            Route("/api/sync/config/{replica}/", g(self.put_config), methods=put),
            Route("/api/sync/config/{replica}/sync_now/", g(self.sync_now), methods=post),
            Route("/api/sync/log/", g(self.log)),
            Route("/api/sync/replicas/", g(self.replicas)),
            Route("/api/sync/generations/", g(self.generations)),
            Route("/api/sync/tenants/", g(self.tenants, tenant_needed=False)),
            Route("/api/sync/nodes/", g(self.nodes, tenant_needed=False)),
            Route("/api/sync/sales/", g(self.sales)),
            Route("/api/sync/queue/{id}/sales/", g(self.conflict_sales)),
            Route("/api/sync/queue/{id}/timeline/", g(self.conflict_timeline)),
        ]


def create_admin_app(backend: AdminBackend, *, extra_routes: list[Any] | None = None) -> Starlette:
    """The ASGI app of the admin API (and of the web console, via ``extra_routes``)."""
    return Starlette(routes=[*_Routes(backend).routes(), *(extra_routes or [])])
