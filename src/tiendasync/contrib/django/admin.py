"""The Django admin over the store: ColaSincronizacion, ConfiguracionSincronizacion, Registro.

How the admin sees the store's data: its pages are ModelAdmins of unmanaged
models **without tables**, whose list views are rendered from the Replica
API (``replica.queue``, ``replica.config``, ``replica.log``) and whose
writes call it (``replica.conflicts.resolve``, ``replica.configure``).  Not
unmanaged models over the store's SQLite tables through a database router:
those tables are private (their schema changes between versions), the
Replica keeps derived state in memory that a write behind its back would
not update, and a conflict resolution is a replicated request, not a row
update.  The cost is that the admin's generic filters and search do not
apply; the pages offer the seed's filters themselves.

Permissions: ``tiendasync.view_sincronizacion`` to see, ``change`` to act.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse

from tiendasync.contrib.django import conf
from tiendasync.contrib.django.context_processors import sincronizacion
from tiendasync.contrib.django.models import (
    ColaSincronizacion,
    ConfiguracionSincronizacion,
    RegistroSincronizacion,
)
from tiendasync.contrib.django.views import ACCIONES
from tiendasync.errors import InvalidArgument, TiendaSyncError
from tiendasync.store.queue import STATUSES

#: The admin actions on a conflict: the seed's two named ones first.
ADMIN_ACCIONES = ["mantener_datos_del_servidor_central", "mantener_datos_locales", *ACCIONES]
_ALIASES = {
    "mantener_datos_del_servidor_central": "keep_central",
    "mantener_datos_locales": "keep_local",
    **ACCIONES,
}


class _StoreAdmin(admin.ModelAdmin):
    """A page rendered from the Replica API; no add, no delete, no ORM."""

    title = ""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm("tiendasync.view_sincronizacion"))

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.has_perm("tiendasync.change_sincronizacion"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def page(self, request: HttpRequest, **context: Any) -> TemplateResponse:
        replica = conf.get_replica()
        return TemplateResponse(
            request,
            "tiendasync/admin/page.html",
            {
                **self.admin_site.each_context(request),
                **sincronizacion(request),
                "title": self.title,
                "replica_id": replica.replica_id,
                "can_change": self.has_change_permission(request),
                "opts": self.model._meta,  # noqa: SLF001 (Django's documented Options API)
                **context,
            },
        )

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        if not self.has_view_permission(request):
            return HttpResponse("forbidden", status=403)
        if request.method == "POST":
            if not self.has_change_permission(request):
                return HttpResponse("forbidden", status=403)
            try:
                messages.success(request, self.act(request))
            except TiendaSyncError as exc:
                messages.error(request, str(exc))
            return HttpResponseRedirect(request.get_full_path())
        return self.render(request)

    def render(self, request: HttpRequest) -> TemplateResponse:
        raise NotImplementedError

    def act(self, request: HttpRequest) -> str:
        raise InvalidArgument("this page is read-only")


@admin.register(ColaSincronizacion)
class ColaSincronizacionAdmin(_StoreAdmin):
    """The queue: the seed's filters, and conflict resolution (the two named actions + custom)."""

    title = "Cola de sincronización"

    def render(self, request: HttpRequest) -> TemplateResponse:
        q = request.GET
        conflicts = {"True": True, "False": False}.get(q.get("tiene_conflicto", ""))
        status = q.get("estado") if q.get("estado") in STATUSES else None
        rows = conf.get_replica().queue.list(
            conflicts=conflicts, status=status, kind=q.get("tipo") or None, limit=500
        )
        if q.get("prioridad", "").isdigit():
            rows = [r for r in rows if r.priority == int(q["prioridad"])]
        filters = [("todas", ""), ("con conflicto", urlencode({"tiene_conflicto": "True"}))]
        filters += [(s, urlencode({"estado": s})) for s in STATUSES]
        return self.page(
            request,
            filters=filters,
            headers=["id", "tipo", "datos", "prioridad", "estado", "intentos", "resumen"],
            resolvable=True,
            acciones=ADMIN_ACCIONES,
            rows=[
                {
                    "cells": [
                        *(e.id, e.kind, e.data_type, e.priority),
                        *(e.status, e.attempts, e.summary),
                    ],
                    "conflict": e.conflict_ids[0] if e.has_conflict and e.conflict_ids else "",
                }
                for e in rows
            ],
        )

    def act(self, request: HttpRequest) -> str:
        accion = request.POST.get("accion", "")
        conflict_id = request.POST.get("conflicto", "")
        text = request.POST.get("parametros", "").strip() or "{}"
        try:
            params = json.loads(text)
        except ValueError:
            raise InvalidArgument(f"parametros must be a JSON object, got {text!r}") from None
        if not isinstance(params, dict):
            raise InvalidArgument("parametros must be a JSON object")
        conflict = conf.get_replica().conflicts.resolve(
            conflict_id, _ALIASES.get(accion, accion), by=request.user.get_username(), **params
        )
        return f"{conflict.id}: {conflict.status}"


@admin.register(ConfiguracionSincronizacion)
class ConfiguracionSincronizacionAdmin(_StoreAdmin):
    """The store config; the relay's central config replaces it at the next session."""

    title = "Configuración de sincronización"
    _PLAIN = ("enabled", "interval_s")

    def render(self, request: HttpRequest) -> TemplateResponse:
        cfg = conf.get_replica().config.to_dict()
        fields = [(k, cfg[k]) for k in self._PLAIN]
        fields += [(f"prioridad_{k}", v) for k, v in sorted(cfg["priorities"].items())]
        return self.page(request, form_fields=fields)

    def act(self, request: HttpRequest) -> str:
        post = request.POST
        changes: dict[str, Any] = {}
        if "enabled" in post:
            enabled = post["enabled"].strip().lower()
            if enabled not in ("true", "false"):
                raise InvalidArgument(f"enabled must be True or False, got {post['enabled']!r}")
            changes["enabled"] = enabled == "true"
        if "interval_s" in post:
            try:
                changes["interval_s"] = float(post["interval_s"])
            except ValueError:
                raise InvalidArgument("interval_s must be a number") from None
        priorities: dict[str, int] = {}
        for key, value in post.items():
            if key.startswith("prioridad_"):
                if not value.strip().lstrip("-").isdigit():
                    raise InvalidArgument(f"{key} must be an integer, got {value!r}")
                priorities[key.removeprefix("prioridad_")] = int(value)
        if priorities:
            changes["priorities"] = priorities
        conf.get_replica().configure(**changes)
        return "configuración guardada (la del relay central la reemplaza en la próxima sesión)"


@admin.register(RegistroSincronizacion)
class RegistroSincronizacionAdmin(_StoreAdmin):
    """The sync log, read-only."""

    title = "Registros de sincronización"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def render(self, request: HttpRequest) -> TemplateResponse:
        rows = conf.get_replica().log.list(limit=200)
        headers = ["id", "inicio", "fin", "resultado", "modo", "enviadas", "recibidas", "error"]
        return self.page(
            request,
            headers=headers,
            rows=[
                {
                    "cells": [
                        r.id,
                        r.started_at,
                        r.ended_at,
                        r.outcome,
                        r.mode,
                        r.updates_sent,
                        r.updates_received,
                        r.error or "",
                    ]
                }
                for r in rows
            ],
        )
