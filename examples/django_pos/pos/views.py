"""The selling page: one form, one sale per POST, stock shown; works with no network."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from tiendasync import InvalidArgument
from tiendasync.contrib.django.conf import get_replica
from tiendasync.contrib.django.signals import registrar_venta


def vender(request: HttpRequest) -> HttpResponse:
    """GET: the catalog with stock; POST ``sku`` + ``cantidad``: record a sale."""
    replica = get_replica()
    mensaje, status = "", 200
    if request.method == "POST":
        try:
            cantidad = int(request.POST.get("cantidad", "1"))
            venta = registrar_venta(replica, [(request.POST.get("sku", ""), cantidad)])
            mensaje = f"venta {venta.id}: {venta.total_cents / 100:.2f}"
            if venta.warnings:
                mensaje += " (" + "; ".join(venta.warnings) + ")"
        except (ValueError, InvalidArgument) as exc:
            mensaje, status = f"error: {exc}", 400
    productos = [
        (sku, fields.get("name", sku), replica.inventory.stock(sku))
        for sku, fields in sorted(replica.catalog.items())
    ]
    return render(
        request, "pos/vender.html", {"productos": productos, "mensaje": mensaje}, status=status
    )
