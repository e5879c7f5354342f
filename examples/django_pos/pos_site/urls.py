"""The POS's URLs: the selling page, the admin, the seed's sync API."""

from django.contrib import admin
from django.urls import include, path
from pos import views

urlpatterns = [
    path("", views.vender, name="vender"),
    path("admin/", admin.site.urls),
    path("api/sincronizacion/", include("tiendasync.contrib.django.urls")),
]
