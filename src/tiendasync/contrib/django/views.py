"""The seed's REST API (``/api/sincronizacion/...``) as plain Django views over the Replica.

Plain views rather than Django REST framework: five endpoints, JSON in and
out, no serializers worth declaring, and one dependency less.

Every view needs an authenticated user (401 otherwise) with the app's
permission: ``tiendasync.view_sincronizacion`` to read,
``tiendasync.change_sincronizacion`` to act (403 otherwise); superusers
have both.  Bad input gets a 4xx JSON ``{"error": message}`` and changes
nothing; a store error maps by family (400 fix the call, 404 not found,
409 conflict already closed, 503 retry later, 502 the relay refused the
token).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_http_methods

from tiendasync.contrib.django import conf, signals
from tiendasync.errors import (
    ConflictClosed,
    InvalidArgument,
    NotFound,
    RetryLater,
    TiendaSyncError,
    Unauthorized,
    UsageError,
)
from tiendasync.store.queue import STATUSES

__all__ = ["ACCIONES", "cola", "procesar", "registros", "resolver", "sincronizar_ahora"]

View = Callable[..., HttpResponse]

#: The seed's Spanish action names, and the store's own, for ``resolver``.
ACCIONES = {
    "mantener_central": "keep_central",
    "mantener_local": "keep_local",
    "aceptar": "accept",
    "ajustar": "adjust",
    "recontar": "recount",
    "transferir": "transfer",
    "anular": "void",
    "restaurar": "restore",
    "reasignar": "remap",
}

_MAX_LIMIT = 500


def error(status: int, message: str) -> JsonResponse:
    """A JSON error response."""
    return JsonResponse({"error": message}, status=status)


def status_of(exc: TiendaSyncError) -> int:
    """The HTTP status for a store error."""
    if isinstance(exc, ConflictClosed):
        return 409
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, Unauthorized):
        return 502
    if isinstance(exc, RetryLater):
        return 503
    return 500


def api(perm: str) -> Callable[[View], View]:
    """Authentication, the permission ``tiendasync.<perm>_sincronizacion``, error mapping."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return error(401, "authentication required")
            if not user.has_perm(f"tiendasync.{perm}_sincronizacion"):
                return error(403, f"permission tiendasync.{perm}_sincronizacion required")
            try:
                return view(request, *args, **kwargs)
            except TiendaSyncError as exc:
                return error(status_of(exc), str(exc))

        return wrapped

    return decorate


def _int_param(request: HttpRequest, name: str, default: int, low: int, high: int) -> int:
    text = request.GET.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgument(f"{name} must be an integer, got {text!r}") from None
    if not low <= value <= high:
        raise InvalidArgument(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bool_param(request: HttpRequest, name: str) -> bool | None:
    text = request.GET.get(name)
    if text is None or text == "":
        return None
    if text.lower() in ("true", "1", "si", "sí"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise InvalidArgument(f"{name} must be true or false, got {text!r}")


def _json_body(request: HttpRequest) -> dict[str, Any]:
    if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        if request.POST:
            raise InvalidArgument("send the parameters as a JSON object (application/json)")
        return {}
    if not request.body:
        return {}
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidArgument("the body must be a JSON object")
    return data


@require_http_methods(["GET", "POST"])
@api("view")
def cola(request: HttpRequest) -> HttpResponse:
    """GET: the queue, filtered (``tiene_conflicto``, ``estado``, ``tipo``) and paged.

    POST answers 405: every queue entry is written by the Replica in the
    same transaction as the change it records, so there is nothing an app
    could enqueue on its own.
    """
    if request.method == "POST":
        return error(
            405,
            "queue entries are written by the store with each change (sale, stock, catalog); "
            "record the change itself instead",
        )
    estado = request.GET.get("estado") or None
    if estado is not None and estado not in STATUSES:
        raise InvalidArgument(f"estado must be one of {', '.join(STATUSES)}, got {estado!r}")
    limite = _int_param(request, "limite", 50, 1, _MAX_LIMIT)
    pagina = _int_param(request, "pagina", 1, 1, 1_000_000)
    rows = conf.get_replica().queue.list(
        conflicts=_bool_param(request, "tiene_conflicto"),
        status=estado,
        kind=request.GET.get("tipo") or None,
        limit=limite + 1,
        offset=(pagina - 1) * limite,
    )
    return JsonResponse(
        {
            "pagina": pagina,
            "limite": limite,
            "siguiente": len(rows) > limite,
            "resultados": [r.to_dict() for r in rows[:limite]],
        }
    )


def _sync_and_signal(**sync_args: Any) -> Any:
    replica = conf.get_replica()
    try:
        report = replica.sync_now(token=conf.token(), **sync_args)
    except TiendaSyncError as exc:
        signals.sincronizacion_finalizada.send(sender=replica, informe=None, error=exc)
        raise
    signals.sincronizacion_finalizada.send(sender=replica, informe=report, error=None)
    return report


@require_http_methods(["POST"])
@api("change")
def procesar(request: HttpRequest, entry_id: int) -> HttpResponse:
    """The seed's "procesar": count an attempt on the entry and sync once now."""
    replica = conf.get_replica()
    entry = replica.queue.get(entry_id)
    if entry.status != "acknowledged" and replica.config.relay_url:
        replica.queue.process(entry_id, token=conf.token())
    else:
        replica.queue.process(entry_id)
    return JsonResponse(replica.queue.get(entry_id).to_dict())


@require_http_methods(["POST"])
@api("change")
def resolver(request: HttpRequest, entry_id: int) -> HttpResponse:
    """The seed's "resolver": ``{"accion", "parametros"?, "nota"?, "conflicto"?}``.

    ``accion`` is a store action or its Spanish name (:data:`ACCIONES`);
    ``mantener_central`` / ``mantener_local`` keep the central or the local
    value, and the custom edit is any action with its ``parametros`` (for
    example ``ajustar`` with ``{"quantity": 3}`` or ``restaurar`` with
    ``{"fields": {...}}``).  ``conflicto`` picks one of the entry's
    conflicts (default: its first).  The store records a request; the relay
    applies it with the compensating write.
    """
    body = _json_body(request)
    replica = conf.get_replica()
    entry = replica.queue.get(entry_id)
    if not entry.conflict_ids:
        raise InvalidArgument(f"queue entry {entry_id} has no conflict to resolve")
    conflict_id = body.get("conflicto", entry.conflict_ids[0])
    if conflict_id not in entry.conflict_ids:
        raise InvalidArgument(f"conflict {conflict_id!r} is not one of entry {entry_id}'s")
    accion = body.get("accion")
    if not isinstance(accion, str) or not accion:
        raise InvalidArgument("accion is required (e.g. mantener_central, ajustar)")
    params = body.get("parametros", {})
    if not isinstance(params, dict):
        raise InvalidArgument("parametros must be a JSON object")
    nota = body.get("nota")
    if nota is not None and not isinstance(nota, str):
        raise InvalidArgument("nota must be a string")
    by = request.user.get_username() or None
    conflict = replica.conflicts.resolve(
        conflict_id, ACCIONES.get(accion, accion), by=by, note=nota, **params
    )
    return JsonResponse(conflict.to_dict())


@require_http_methods(["POST"])
@api("change")
def sincronizar_ahora(request: HttpRequest, store_id: str) -> HttpResponse:
    """The seed's "sincronizar ahora" for this store (``store_id`` is its replica id).

    200 with the session's report when this process syncs; 202 when the
    store's ``sincronizar --continuo`` daemon syncs the file: it is asked for
    a new session (``completa``: a full one), which ``registros`` then shows.
    """
    replica = conf.get_replica()
    if store_id != replica.replica_id:
        return error(404, f"this site is store {replica.replica_id!r}, not {store_id!r}")
    body = _json_body(request)
    completa = body.get("completa", False)
    if not isinstance(completa, bool):
        raise InvalidArgument("completa must be true or false")
    if replica.request_sync(full=completa):
        return JsonResponse(
            {
                "estado": "solicitada",
                "mensaje": "the store's sync daemon starts a new session now; "
                "see registros for how it went",
                "completa": completa,
            },
            status=202,
        )
    report = _sync_and_signal(full=completa)
    return JsonResponse(report.to_dict())


@require_http_methods(["GET"])
@api("view")
def registros(request: HttpRequest) -> HttpResponse:
    """The sync log (``RegistroSincronizacion``), newest first; ``resultado``, ``limite``."""
    resultado = request.GET.get("resultado") or None
    if resultado is not None and resultado not in ("running", "ok", "error"):
        raise InvalidArgument(f"resultado must be running, ok or error, got {resultado!r}")
    limite = _int_param(request, "limite", 50, 1, _MAX_LIMIT)
    rows = conf.get_replica().log.list(limit=limite, outcome=resultado)
    return JsonResponse({"resultados": [r.to_dict() for r in rows]})
