"""Editing a store's config centrally never widens what it may write.

A store whose token names a location writes, by default, only that
location's documents.  That default is not stored, so an administrator who
changes the sync interval must not turn it into the unbound ``["*"]``.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

from tiendasync.relay.admin import RelayAdmin
from tiendasync.relay.auth import issue_token
from tiendasync.relay.policy import Grants
from tiendasync.relay.storage import SqliteRelayStore


def _admin(store: SqliteRelayStore) -> RelayAdmin:
    return RelayAdmin(cast(Any, SimpleNamespace(store=store, forwarder=None)))


def test_editing_a_bound_store_config_keeps_its_write_grants(tmp_path: Path) -> None:
    with SqliteRelayStore(str(tmp_path / "relay.db")) as store:
        issue_token(store, tenant="acme", replica_id="caja-1", location="tienda-1")
        issue_token(store, tenant="acme", replica_id="hq-tool")
        admin = _admin(store)
        shown = {c["replica"]: c["config"] for c in admin.list_configs("acme")}
        assert shown["caja-1"]["write"] == [] and shown["hq-tool"]["write"] == ["*"]

        answer = admin.set_config("acme", "caja-1", {"interval_s": 30})
        assert answer["config"]["write"] == [] and answer["config"]["interval_s"] == 30
        raw = store.get_replica_config("acme", "caja-1")
        assert raw is not None and "write" not in raw and "read" not in raw
        grants = Grants.from_config(raw, "tienda-1")
        assert not grants.writes.can_write("catalog")
        assert not grants.writes.can_write("stock/tienda-2")
        assert grants.writes.can_write("stock/tienda-1")

        # An explicit grant is stored, and stays through later edits.
        admin.set_config("acme", "caja-1", {"write": ["catalog"]})
        admin.set_config("acme", "caja-1", {"interval_s": 45})
        raw = store.get_replica_config("acme", "caja-1")
        assert raw is not None and raw["write"] == ["catalog"]
        assert Grants.from_config(raw, "tienda-1").writes.can_write("catalog")
