"""The relay's web console for administrators.

A single page app (plain HTML, CSS and JavaScript shipped in this package: no
build step, no CDN) served next to the JSON admin API on ``--admin-port``::

    http://127.0.0.1:8766/console/

The static files need no token; the console asks for the admin token, keeps
it in the tab's ``sessionStorage`` and sends it as ``Authorization: Bearer``
to the JSON API under ``/api/sync/``, which is where the data is guarded.

:func:`console_routes` returns the Starlette routes to hand to
:func:`tiendasync.admin_api.create_admin_app` (``extra_routes``).  Given the
relay's admin backend it also adds two small read-only JSON routes the
console needs and the core API lacks:

* ``GET /api/sync/tenants/``: the tenants known to the relay (for the tenant
  picker and to check a token at login);
* ``GET /api/sync/queue/{id}/sales/``: the sales linked to a conflict, with
  their store, time and lines.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidArgument, NotFound, TiendaSyncError

if TYPE_CHECKING:
    from ..relay.admin import RelayAdmin

__all__ = ["STATIC_DIR", "console_routes"]

#: Where the console's HTML, CSS and JavaScript live (package data).
STATIC_DIR = Path(__file__).with_name("static")

_SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
     b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-cache"),
]


class _SecureStatic:
    """Static files with a strict content security policy (no inline code, same origin)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"cache-control"]
                message["headers"] = headers + _SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _api_routes(admin: RelayAdmin) -> list[BaseRoute]:
    """Read-only JSON routes the console needs, guarded like the core admin API."""

    def guarded(handler: Callable[[Request], Awaitable[Response]]
                ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            auth = request.headers.get("authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token or not admin.is_admin(token.strip()):
                return _error(401, "missing or invalid admin token")
            try:
                return await handler(request)
            except NotFound as exc:
                return _error(404, str(exc))
            except InvalidArgument as exc:
                return _error(400, str(exc))
            except TiendaSyncError as exc:
                return _error(409, str(exc))
        return endpoint

    def tenant_of(request: Request) -> str:
        tenant = request.query_params.get("tenant")
        known = admin.tenants()
        if tenant is None:
            if len(known) == 1:
                return known[0]
            raise InvalidArgument("several tenants: add ?tenant=NAME" if known else
                                  "no tenant has connected yet")
        if tenant not in known:
            raise NotFound(f"unknown tenant {tenant!r}")
        return tenant

    async def tenants(request: Request) -> Response:
        return JSONResponse({"results": sorted(admin.tenants())})

    async def conflict_sales(request: Request) -> Response:
        tenant = tenant_of(request)
        replica = admin.server.central(tenant).replica
        conflict = replica.conflicts.get(request.path_params["id"])
        results: list[dict[str, Any]] = []
        for sale_id in conflict.sales:
            sale = replica.sales.get(sale_id)
            if sale is None:
                results.append({"id": sale_id, "known": False})
                continue
            results.append({
                "id": sale.id, "known": True, "replica": sale.replica_id,
                "location": sale.location, "at_ms": sale.created_at_ms,
                "voided": sale.voided, "total_cents": sale.total_cents,
                "lines": [{"sku": ln.sku, "quantity": ln.quantity,
                           "unit_price_cents": ln.unit_price_cents} for ln in sale.lines],
            })
        return JSONResponse({"tenant": tenant, "conflict": conflict.id, "count": len(results),
                             "results": results})

    return [
        Route("/api/sync/tenants/", guarded(tenants)),
        Route("/api/sync/queue/{id}/sales/", guarded(conflict_sales)),
    ]


def console_routes(admin: RelayAdmin | None = None) -> list[BaseRoute]:
    """Routes of the web console, for ``create_admin_app(..., extra_routes=...)``.

    Without ``admin`` only the static console is served (``/console/``, and
    ``/`` redirects to it); with the relay's admin backend the console's helper
    JSON routes are added too.
    """

    async def to_console(request: Request) -> Response:
        return RedirectResponse(url="/console/", status_code=307)

    routes: list[BaseRoute] = [
        Route("/", to_console),
        Route("/console", to_console),
        Mount("/console", app=_SecureStatic(StaticFiles(directory=STATIC_DIR, html=True)),
              name="console"),
    ]
    if admin is not None:
        routes = _api_routes(admin) + routes
    return routes
