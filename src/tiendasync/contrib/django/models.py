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
