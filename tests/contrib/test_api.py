"""The seed's REST API through Django's test client, on a real store file."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from tests.cli.relay_process import RunningRelay
from tiendasync.contrib.django import conf, signals
from tiendasync.contrib.django.context_processors import sincronizacion

API = "/api/sincronizacion"


def _client(*perms: str) -> Client:
    name = "u-" + "-".join(perms or ("none",))
    user = User.objects.filter(username=name).first()
    user = user or User.objects.create_user(name, password="x")
    for perm in perms:
        user.user_permissions.add(Permission.objects.get(codename=f"{perm}_sincronizacion"))
    client = Client()
    client.force_login(user)
    return client


def _queue_state() -> list[dict[str, Any]]:
    return [e.to_dict() for e in conf.get_replica().queue.list(limit=500)]


def test_auth_and_permissions(store: dict[str, str]) -> None:
    anon = Client().get(f"{API}/cola/")
    assert anon.status_code == 401 and anon.json()["error"] == "authentication required"
    assert _client().get(f"{API}/cola/").status_code == 403
    assert _client("view").get(f"{API}/cola/").status_code == 200
    denied = _client("view").post(f"{API}/cola/1/procesar/")
    assert denied.status_code == 403 and "change_sincronizacion" in denied.json()["error"]


def test_queue_list_filters_and_paging(store: dict[str, str]) -> None:
    replica = conf.get_replica()
    replica.catalog.put("CAFE-500", {"name": "Café", "price_cents": 450})
    replica.inventory.receive("CAFE-500", 5)
    for _ in range(3):
        replica.record_sale([("CAFE-500", 1)])
    client = _client("view")
    sales = client.get(f"{API}/cola/", {"tipo": "sale", "estado": "pending"}).json()
    assert [r["kind"] for r in sales["resultados"]] == ["sale"] * 3 and not sales["siguiente"]
    page1 = client.get(f"{API}/cola/", {"limite": 2}).json()
    page2 = client.get(f"{API}/cola/", {"limite": 2, "pagina": 2}).json()
    assert page1["siguiente"] and len(page1["resultados"]) == 2
    ids = [r["id"] for r in page1["resultados"] + page2["resultados"]]
    assert len(ids) == len(set(ids)) == min(4, replica.queue.pending_count())
    assert client.get(f"{API}/cola/", {"tiene_conflicto": "true"}).json()["resultados"] == []


@pytest.mark.parametrize(
    ("query", "word"),
    [
        ({"estado": "bogus"}, "estado"),
        ({"limite": "0"}, "limite"),
        ({"limite": "abc"}, "limite"),
        ({"pagina": "-1"}, "pagina"),
        ({"tiene_conflicto": "quizá"}, "tiene_conflicto"),
    ],
)
def test_bad_queue_query_is_400_json(
    store: dict[str, str], query: dict[str, str], word: str
) -> None:
    before = _queue_state()
    response = _client("view").get(f"{API}/cola/", query)
    assert response.status_code == 400 and word in response.json()["error"]
    assert _queue_state() == before


def test_post_queue_is_405_with_reason(store: dict[str, str]) -> None:
    before = _queue_state()
    response = _client("view").post(f"{API}/cola/", {"kind": "sale"})
    assert response.status_code == 405 and "written by the store" in response.json()["error"]
    assert _queue_state() == before


def test_procesar_without_relay_counts_an_attempt(store: dict[str, str]) -> None:
    entry = conf.get_replica().queue.list()[0]
    client = _client("view", "change")
    done = client.post(f"{API}/cola/{entry.id}/procesar/")
    assert done.status_code == 200 and done.json()["attempts"] == entry.attempts + 1
    assert client.post(f"{API}/cola/999999/procesar/").status_code == 404
    assert client.get(f"{API}/cola/{entry.id}/procesar/").status_code == 405


def test_resolver_bad_input_changes_nothing(store: dict[str, str]) -> None:
    entry = conf.get_replica().queue.list()[0]
    client = _client("view", "change")
    before = _queue_state()
    for body in ("not json", "[1]", json.dumps({"accion": "mantener_central"})):
        response = client.post(f"{API}/cola/{entry.id}/resolver/", body, "application/json")
        assert response.status_code == 400, response.content
        assert isinstance(response.json()["error"], str)
    assert client.post(f"{API}/cola/424242/resolver/", "{}", "application/json").status_code == 404
    assert _queue_state() == before


def test_sincronizar_ahora_errors(store: dict[str, str]) -> None:
    client = _client("view", "change")
    wrong = client.post(f"{API}/configuracion/otra-tienda/sincronizar_ahora/")
    assert wrong.status_code == 404 and "tienda-1" in wrong.json()["error"]
    unconfigured = client.post(f"{API}/configuracion/tienda-1/sincronizar_ahora/")
    assert unconfigured.status_code == 400 and unconfigured.json()["error"]
    bad = client.post(
        f"{API}/configuracion/tienda-1/sincronizar_ahora/", {"completa": "x"}, "application/json"
    )
    assert bad.status_code == 400


def test_sincronizar_ahora_with_a_relay_and_signals(
    store: dict[str, str], relay: RunningRelay, relay_token: str
) -> None:
    store["RELAY_URL"] = relay.url
    store["TOKEN"] = relay_token
    seen: list[str] = []

    def on_sale(sender: Any, venta: Any, **kwargs: Any) -> None:
        seen.append(f"venta {venta.total_cents}")

    def on_sync(sender: Any, informe: Any, error: Any, **kwargs: Any) -> None:
        seen.append(f"sync {informe.outcome if informe else error}")

    signals.venta_registrada.connect(on_sale)
    signals.sincronizacion_finalizada.connect(on_sync)
    try:
        replica = conf.get_replica()
        replica.catalog.put("CAFE-500", {"name": "Café", "price_cents": 450})
        replica.inventory.receive("CAFE-500", 10)  # in stock: the sale opens no conflict
        signals.registrar_venta(replica, [("CAFE-500", 2)])
        assert sincronizacion(None)["pendientes_sincronizacion"] == replica.queue.pending_count()
        client = _client("view", "change")
        done = client.post(f"{API}/configuracion/tienda-1/sincronizar_ahora/")
        assert done.status_code == 200, done.content
        assert done.json()["outcome"] == "ok" and replica.queue.pending_count() == 0
        logs = client.get(f"{API}/registros/", {"resultado": "ok"}).json()["resultados"]
        assert len(logs) == 1 and logs[0]["relay"] == relay.url
        assert client.get(f"{API}/registros/", {"resultado": "x"}).status_code == 400
    finally:
        signals.venta_registrada.disconnect(on_sale)
        signals.sincronizacion_finalizada.disconnect(on_sync)
    assert seen == ["venta 900", "sync ok"]
    indicator = sincronizacion(None)
    assert indicator == {
        "modo_offline": True,
        "pendientes_sincronizacion": 0,
        "conflictos_abiertos": 0,
    }


def test_status_signal_on_writes(store: dict[str, str]) -> None:
    states: list[int] = []

    def on_status(sender: Any, estado: Any, **kwargs: Any) -> None:
        states.append(estado.pending)

    signals.estado_cambiado.connect(on_status)
    try:
        replica = conf.get_replica()
        replica.inventory.receive("CAFE-500", 3)
    finally:
        signals.estado_cambiado.disconnect(on_status)
    assert states == [replica.queue.pending_count()]
