"""The Django app config of ``tiendasync.contrib.django``."""

from __future__ import annotations

from django.apps import AppConfig


class TiendaSyncConfig(AppConfig):
    """The app; its label ``tiendasync`` prefixes its permissions."""

    name = "tiendasync.contrib.django"
    label = "tiendasync"
    verbose_name = "Sincronización (tiendasync)"
    default_auto_field = "django.db.models.AutoField"
