"""The test site's URLconf: the seed's API where the docs say to include it."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/sincronizacion/", include("tiendasync.contrib.django.urls")),
]
