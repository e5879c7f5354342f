"""One unmanaged model, only to carry the app's permissions; it has no table.

The store's data lives in the Replica's file and is read and written only
through the Replica API, never through the ORM.  Grant
``tiendasync.view_sincronizacion`` to read the API and
``tiendasync.change_sincronizacion`` to act on it.
"""

from __future__ import annotations

from django.db import models


class Sincronizacion(models.Model):
    """Permissions holder: ``view_sincronizacion`` and ``change_sincronizacion``."""

    class Meta:
        managed = False
        default_permissions = ("view", "change")
        verbose_name = "sincronización"
        verbose_name_plural = "sincronización"


class _StoreView(models.Model):
    """An admin entry over the store's data; no table, read through the Replica API."""

    class Meta:
        abstract = True
        managed = False
        default_permissions = ()


class ColaSincronizacion(_StoreView):
    """The sync queue in the admin (``replica.queue``)."""

    class Meta(_StoreView.Meta):
        verbose_name = verbose_name_plural = "cola de sincronización"


class ConfiguracionSincronizacion(_StoreView):
    """The store config in the admin (``replica.config`` / ``replica.configure``)."""

    class Meta(_StoreView.Meta):
        verbose_name = verbose_name_plural = "configuración de sincronización"


class RegistroSincronizacion(_StoreView):
    """The sync log in the admin (``replica.log``), read-only."""

    class Meta(_StoreView.Meta):
        verbose_name = verbose_name_plural = "registros de sincronización"
