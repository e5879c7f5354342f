"""The seed's paths; include under ``api/sincronizacion/``."""

from __future__ import annotations

from django.urls import path

from tiendasync.contrib.django import views

app_name = "tiendasync"

urlpatterns = [
    path("cola/", views.cola, name="cola"),
    path("cola/<int:entry_id>/procesar/", views.procesar, name="procesar"),
    path("cola/<int:entry_id>/resolver/", views.resolver, name="resolver"),
    path(
        "configuracion/<str:store_id>/sincronizar_ahora/",
        views.sincronizar_ahora,
        name="sincronizar_ahora",
    ),
    path("registros/", views.registros, name="registros"),
]
