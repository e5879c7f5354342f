"""The Django admin pages over the store, rendered from and writing through the Replica API."""

from __future__ import annotations

from django.contrib.auth.models import Permission, User
from django.test import Client

from tiendasync.contrib.django import conf

ADMIN = "/admin/tiendasync"


def _staff(*perms: str) -> Client:
    name = "staff-" + "-".join(perms)
    user = User.objects.filter(username=name).first() or User.objects.create_user(
        name, password="x", is_staff=True
    )
    for perm in perms:
        user.user_permissions.add(Permission.objects.get(codename=f"{perm}_sincronizacion"))
    client = Client()
    client.force_login(user)
    return client


def test_queue_page_lists_and_filters(store: dict[str, str]) -> None:
    replica = conf.get_replica()
    replica.inventory.receive("CAFE-500", 4)
    client = _staff("view")
    page = client.get(f"{ADMIN}/colasincronizacion/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "receive" in text and "sin conexión" in text and "Resolver" not in text
    only_conflicts = client.get(f"{ADMIN}/colasincronizacion/", {"tiene_conflicto": "True"})
    assert "receive" not in only_conflicts.content.decode()
    assert client.get(f"{ADMIN}/registrosincronizacion/").status_code == 200
    assert client.post(f"{ADMIN}/colasincronizacion/", {"accion": "aceptar"}).status_code == 403
    assert Client().get(f"{ADMIN}/colasincronizacion/").status_code == 302  # to the login


def test_config_page_writes_through_configure(store: dict[str, str]) -> None:
    client = _staff("view", "change")
    replica = conf.get_replica()
    assert "interval_s" in client.get(f"{ADMIN}/configuracionsincronizacion/").content.decode()
    done = client.post(
        f"{ADMIN}/configuracionsincronizacion/",
        {"enabled": "False", "interval_s": "12", "prioridad_catalog": "9"},
        follow=True,
    )
    assert done.status_code == 200 and "onfiguración guardada" in done.content.decode()
    cfg = replica.config
    assert (cfg.enabled, cfg.interval_s, cfg.priority("catalog")) == (False, 12.0, 9)
    bad = client.post(
        f"{ADMIN}/configuracionsincronizacion/",
        {"interval_s": "-1", "prioridad_sales": "500"},
        follow=True,
    )
    assert bad.status_code == 200 and "interval_s" in bad.content.decode()
    assert replica.config == cfg  # nothing changed


def test_resolving_an_unknown_conflict_is_an_error_message(store: dict[str, str]) -> None:
    client = _staff("view", "change")
    done = client.post(
        f"{ADMIN}/colasincronizacion/",
        {"accion": "mantener_datos_del_servidor_central", "conflicto": "C-nope"},
        follow=True,
    )
    assert done.status_code == 200 and "C-nope" in done.content.decode()
