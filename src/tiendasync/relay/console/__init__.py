"""The relay's web console for administrators.

A single page app (plain HTML, CSS and JavaScript shipped in this package: no
build step, no CDN) served next to the JSON admin API on ``--admin-port``::

    http://127.0.0.1:8766/console/

The static files need no token; the console asks for the admin token, keeps
it in the tab's ``sessionStorage`` and sends it as ``Authorization: Bearer``
to the JSON API under ``/api/sync/``, which is where the data is guarded.
The data types and resolution actions it shows come from the model tables
the API serves (``GET /api/sync/model/``); ``static/app.js`` keeps only their
labels.

:func:`console_routes` returns the Starlette routes to hand to
:func:`tiendasync.relay.admin_api.create_admin_app` (``extra_routes``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from tiendasync.relay.admin import RelayAdmin

__all__ = ["STATIC_DIR", "console_routes"]

#: Where the console's HTML, CSS and JavaScript live (package data).
STATIC_DIR = Path(__file__).with_name("static")

_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
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
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"
                ]
                message["headers"] = headers + _SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def console_routes(admin: RelayAdmin | None = None) -> list[BaseRoute]:
    """Routes of the web console, for ``create_admin_app(..., extra_routes=...)``.

    The console's data comes from the JSON admin API (``/api/sync/...``);
    ``admin`` is accepted for compatibility and not needed.
    """

    async def to_console(request: Request) -> Response:
        return RedirectResponse(url="/console/", status_code=307)

    routes: list[BaseRoute] = [
        Route("/", to_console),
        Route("/console", to_console),
        Mount(
            "/console",
            app=_SecureStatic(StaticFiles(directory=STATIC_DIR, html=True)),
            name="console",
        ),
    ]
    return routes
