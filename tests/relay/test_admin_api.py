"""The admin API over a fake backend: the model route, error statuses, resolve validation.

No relay runs here: :class:`FakeBackend` implements
:class:`tiendasync.relay.admin_api.AdminBackend` and records the calls, so
each test sees exactly what reached the backend (nothing, for a refused
request).
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import asdict
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette

from tiendasync.errors import (
    ConflictClosed,
    ConflictNotFound,
    InternalError,
    InvalidArgument,
    StorageError,
    TiendaSyncError,
)
from tiendasync.model.actions import ACTIONS, action_table
from tiendasync.model.docnames import DATA_TYPES
from tiendasync.relay.admin_api import AdminBackend, create_admin_app
from tiendasync.relay.forward import check_key

TOKEN = "admin-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeBackend:
    """A one-tenant relay whose operations can be told to raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.raises: TiendaSyncError | None = None

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))
        if self.raises is not None:
            raise self.raises

    def is_admin(self, token: str) -> bool:
        return token == TOKEN

    def tenants(self) -> list[str]:
        return ["acme"]

    def list_conflicts(self, tenant: str, **filters: Any) -> list[dict[str, Any]]:
        self._call("list_conflicts", tenant, **filters)
        return []

    def get_conflict(self, tenant: str, conflict_id: str) -> dict[str, Any]:
        self._call("get_conflict", tenant, conflict_id)
        return {"id": conflict_id}

    def process_conflict(
        self, tenant: str, conflict_id: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        self._call("process_conflict", tenant, conflict_id, idempotency_key=idempotency_key)
        return {"id": conflict_id}

    def resolve_conflict(
        self,
        tenant: str,
        conflict_id: str,
        action: str,
        *,
        by: str,
        note: str | None,
        params: dict[str, Any],
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        self._call("resolve_conflict", tenant, conflict_id, action, by=by, note=note, params=params)
        return {"id": conflict_id, "status": "resolved"}

    def list_configs(self, tenant: str) -> list[dict[str, Any]]:
        self._call("list_configs", tenant)
        return []

    def set_config(self, tenant: str, replica_id: str, config: dict[str, Any]) -> dict[str, Any]:
        self._call("set_config", tenant, replica_id, config)
        return {"replica": replica_id, "config": config}

    def sync_now(self, tenant: str, replica_id: str, full: bool) -> bool:
        self._call("sync_now", tenant, replica_id, full)
        return replica_id == "caja-1"

    def list_sessions(
        self, tenant: str, *, replica_id: str | None, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        self._call("list_sessions", tenant, replica_id=replica_id, limit=limit, offset=offset)
        return []

    def list_replicas(self, tenant: str) -> list[dict[str, Any]]:
        self._call("list_replicas", tenant)
        return []

    def conflict_sales(self, tenant: str, conflict_id: str) -> list[dict[str, Any]]:
        self._call("conflict_sales", tenant, conflict_id)
        return []

    def conflict_timeline(self, tenant: str, conflict_id: str) -> dict[str, Any]:
        self._call("conflict_timeline", tenant, conflict_id)
        return {"conflict": conflict_id, "timeline": None}

    def metrics(self) -> dict[str, float]:
        return {"connections": 0.0}

    def list_nodes(self) -> list[dict[str, Any]]:
        self._call("list_nodes")
        return [{"node": "n1"}]

    def sales_months(self, tenant: str, location: str | None) -> list[dict[str, str]]:
        self._call("sales_months", tenant, location)
        return [{"location": "t1", "period": "2025-01"}]

    def past_generations(self, tenant: str) -> dict[str, Any]:
        self._call("past_generations", tenant)
        return {"current": {}, "results": []}

    def month_sales(
        self, tenant: str, location: str, period: str, *, limit: int, offset: int
    ) -> dict[str, Any]:
        self._call("month_sales", tenant, location, period, limit=limit, offset=offset)
        return {"location": location, "period": period, "count": 0, "results": []}


class Client:
    """Synchronous requests to the ASGI app in memory (no server, no sockets)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def request(
        self, method: str, path: str, *, headers: dict[str, str], json: Any = None
    ) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
                return await http.request(method, path, headers=headers, json=json)

        return asyncio.run(send())

    def get(self, path: str, *, headers: dict[str, str]) -> httpx.Response:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, *, headers: dict[str, str], json: Any = None) -> httpx.Response:
        return self.request("POST", path, headers=headers, json=json)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def client(backend: FakeBackend) -> Client:
    typed: AdminBackend = backend  # the fake satisfies the protocol
    return Client(create_admin_app(typed))


# -- the model route --------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["no token", "wrong token", "not bearer"],
)
def test_model_needs_the_admin_token(client: Client, headers: dict[str, str]) -> None:
    r = client.get("/api/sync/model/", headers=headers)
    assert r.status_code == 401
    assert r.json() == {"error": "missing or invalid admin token"}


def test_model_is_the_model_tables(client: Client) -> None:
    r = client.get("/api/sync/model/", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"data_types", "actions"}
    # exactly the tables, in their order (JSON turns tuples into lists)
    assert body["data_types"] == [asdict(t) for t in DATA_TYPES.values()]
    assert body["actions"] == json.loads(json.dumps(action_table()))
    assert [t["name"] for t in body["data_types"]] == list(DATA_TYPES)
    for row in body["data_types"]:
        table = DATA_TYPES[row["name"]]
        assert (row["default_priority"], row["pattern"]) == (table.default_priority, table.pattern)
    assert [a["name"] for a in body["actions"]] == list(ACTIONS)
    for row in body["actions"]:
        action = ACTIONS[row["name"]]
        assert row["help"] == action.help
        assert row["applies_to"] == list(action.applies_to)
        assert [(p["name"], p["kind"], p["required"]) for p in row["params"]] == [
            (p.name, p.kind, p.required) for p in action.params
        ]


def test_model_needs_no_tenant(backend: FakeBackend) -> None:
    backend.tenants = lambda: []  # type: ignore[method-assign]
    client = Client(create_admin_app(backend))
    assert client.get("/api/sync/model/", headers=AUTH).status_code == 200
    assert client.get("/api/sync/queue/", headers=AUTH).status_code == 400


# -- errors answer with their own http_status ---------------------------------------------


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (StorageError("database is locked"), 503),
        (ConflictNotFound("no conflict 'C-x'"), 404),
        (ConflictClosed("conflict C-x is already resolved"), 409),
        (InternalError("a bug"), 500),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/sync/queue/"),
        ("GET", "/api/sync/queue/C-x/"),
        ("POST", "/api/sync/queue/C-x/process/"),
        ("GET", "/api/sync/config/"),
        ("GET", "/api/sync/log/"),
        ("GET", "/api/sync/replicas/"),
        ("GET", "/api/sync/queue/C-x/sales/"),
    ],
)
def test_errors_answer_their_http_status(
    client: Client,
    backend: FakeBackend,
    error: TiendaSyncError,
    status: int,
    method: str,
    path: str,
) -> None:
    backend.raises = error
    r = client.request(method, path, headers=AUTH)
    assert r.status_code == status == error.http_status
    assert r.json() == {"error": str(error)}


def test_storage_error_on_resolve_is_503_not_409(client: Client, backend: FakeBackend) -> None:
    backend.raises = StorageError("disk full")
    r = client.post("/api/sync/queue/C-x/resolve/", headers=AUTH, json={"action": "accept"})
    assert (r.status_code, r.json()) == (503, {"error": "disk full"})


def test_sync_now_to_a_store_that_is_not_connected_is_409(client: Client) -> None:
    r = client.post("/api/sync/config/caja-1/sync_now/", headers=AUTH, json={"full": True})
    assert r.json() == {"replica": "caja-1", "requested": True, "full": True}
    r = client.post("/api/sync/config/caja-2/sync_now/", headers=AUTH)
    assert (r.status_code, r.json()) == (409, {"error": "replica 'caja-2' is not connected now"})


def test_timeline_is_a_read_of_the_backend(client: Client, backend: FakeBackend) -> None:
    r = client.get("/api/sync/queue/C-x/timeline/", headers=AUTH)
    assert r.json() == {"tenant": "acme", "conflict": "C-x", "timeline": None}
    assert backend.calls[-1][:2] == ("conflict_timeline", ("acme", "C-x"))


# -- resolve: one validation, the actions table's --------------------------------------------


def _resolve(client: Client, body: Any) -> tuple[int, Any]:
    r = client.post("/api/sync/queue/C-x/resolve/", headers=AUTH, json=body)
    return r.status_code, r.json()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, 'body needs "action"'),
        ({"quantity": 1}, 'body needs "action"'),
        ({"action": "explode"}, "unknown action 'explode'; use one of accept, adjust, recount"),
        ({"action": 1}, "unknown action 1"),
        ({"action": "adjust"}, "action 'adjust' needs quantity"),
        ({"action": "adjust", "count": 1}, "action 'adjust' takes quantity parameters, not count"),
        ({"action": "adjust", "quantity": "one"}, "quantity"),
        ({"action": "transfer", "from_location": "b", "quantity": 0}, "quantity"),
        ({"action": "void", "sale_ids": []}, "sale_ids must be a non-empty list"),
        ({"action": "accept", "by": 5}, '"by" and "note" must be strings'),
        ({"action": "accept", "note": ["x"]}, '"by" and "note" must be strings'),
    ],
)
def test_resolve_refuses_what_the_table_refuses(
    client: Client, backend: FakeBackend, body: dict[str, Any], message: str
) -> None:
    status, answer = _resolve(client, body)
    assert status == 400, answer
    assert message in answer["error"]
    assert backend.calls == []  # nothing reached the relay


def test_resolve_passes_the_checked_params(client: Client, backend: FakeBackend) -> None:
    status, answer = _resolve(client, {"action": "void", "sale_ids": "s-1, s-2"})
    assert (status, answer) == (200, {"id": "C-x", "status": "resolved"})
    assert backend.calls == [
        (
            "resolve_conflict",
            ("acme", "C-x", "void"),
            {"by": "admin", "note": None, "params": {"sale_ids": ["s-1", "s-2"]}},
        )
    ]
    backend.calls.clear()
    body = {"action": "adjust", "quantity": -2, "by": "ana", "note": "back room"}
    assert _resolve(client, body)[0] == 200
    assert backend.calls[0][2] == {"by": "ana", "note": "back room", "params": {"quantity": -2}}


def test_sales_lists_months_or_one_months_sales(client: Client, backend: FakeBackend) -> None:
    r = client.get("/api/sync/sales/?tenant=acme&location=t1", headers=AUTH)
    assert r.status_code == 200
    assert r.json() == {"tenant": "acme", "months": [{"location": "t1", "period": "2025-01"}]}
    assert backend.calls[-1][:2] == ("sales_months", ("acme", "t1"))
    r = client.get(
        "/api/sync/sales/?tenant=acme&location=t1&period=2025-01&limit=5&offset=10", headers=AUTH
    )
    assert r.status_code == 200 and r.json()["period"] == "2025-01"
    assert backend.calls[-1] == (
        "month_sales",
        ("acme", "t1", "2025-01"),
        {"limit": 5, "offset": 10},
    )


@pytest.mark.parametrize(
    "query",
    [
        "period=2025-01",
        "location=t1&period=2025-13",
        "location=t1&period=x",
        "location=t1&period=2025-01&limit=-1",
    ],
)
def test_bad_sales_queries_are_400_and_reach_nothing(
    client: Client, backend: FakeBackend, query: str
) -> None:
    r = client.get(f"/api/sync/sales/?tenant=acme&{query}", headers=AUTH)
    assert r.status_code == 400 and "error" in r.json()
    assert backend.calls == []


# -- idempotency keys -----------------------------------------------------------------------


@given(st.from_regex(r"[A-Za-z0-9._:-]{8,100}", fullmatch=True))
def test_a_valid_idempotency_key_reaches_the_backend(key: str) -> None:
    backend = FakeBackend()
    client = Client(create_admin_app(backend))
    r = client.request(
        "POST", "/api/sync/queue/C-1/process/", headers={**AUTH, "Idempotency-Key": key}
    )
    assert r.status_code == 200
    assert backend.calls == [("process_conflict", ("acme", "C-1"), {"idempotency_key": key})]


@given(
    st.text(max_size=120).filter(
        lambda k: (
            not re.fullmatch(r"[A-Za-z0-9._:-]{8,100}", k.strip())
            and k.isascii()
            and k.isprintable()
        )
    )
)
def test_a_malformed_idempotency_key_is_refused_before_anything_runs(key: str) -> None:
    backend = FakeBackend()
    client = Client(create_admin_app(backend))
    r = client.post(
        "/api/sync/queue/C-1/resolve/",
        headers={**AUTH, "Idempotency-Key": key},
        json={"action": "accept"},
    )
    assert r.status_code == 400 and "Idempotency-Key" in r.json()["error"]
    assert backend.calls == []
    with pytest.raises(InvalidArgument):
        check_key(key)
