"""Relay storage, tokens and the relay-side doc cache (no sockets)."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from tiendasync.errors import InvalidArgument, NotFound
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.relay import SqliteRelayStore
from tiendasync.relay.auth import authenticate, hash_token, issue_token, token_id_of
from tiendasync.relay.broker import InProcessBroker
from tiendasync.relay.docs import DocCache, compact
from tiendasync.relay.storage import AppendEntry, SessionRecord


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SqliteRelayStore(str(tmp_path / "relay.db"))
    yield s
    s.close()


def test_token_hashed_at_rest(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    with SqliteRelayStore(str(path)) as store:
        token = issue_token(store, tenant="acme", replica_id="tienda-1")
        admin = issue_token(store, admin=True)
        assert token.startswith("ts_") and admin.startswith("ts_")
        rec = authenticate(store, token)
        assert rec is not None and (rec.tenant, rec.replica_id, rec.admin) == (
            "acme",
            "tienda-1",
            False,
        )
        arec = authenticate(store, admin)
        assert arec is not None and arec.admin and arec.tenant is None
        assert rec.token_hash == hash_token(token)
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    for secret in (token, admin):
        assert secret.encode() not in raw
        assert secret.split("_", 2)[2].encode() not in raw
        assert hash_token(secret).encode() in raw


def test_token_revoke_and_wrong_tokens(store: SqliteRelayStore) -> None:
    token = issue_token(store, tenant="acme", replica_id="tienda-1")
    token_id = token_id_of(token)
    assert token_id is not None
    assert authenticate(store, token + "x") is None
    assert authenticate(store, token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert authenticate(store, "") is None
    assert authenticate(store, "ts_") is None
    assert authenticate(store, "garbage") is None
    assert authenticate(store, "ts_zzzzzzzzzzzz_abc") is None
    store.revoke_token(token_id)
    assert authenticate(store, token) is None
    [listed] = store.list_tokens()
    assert listed.revoked and listed.id == token_id
    assert "token_hash" not in listed.public()
    with pytest.raises(NotFound):
        store.revoke_token("000000000000")
    with pytest.raises(InvalidArgument):
        issue_token(store, tenant="acme")
    with pytest.raises(InvalidArgument):
        issue_token(store, tenant="acme", replica_id="x", admin=True)


def test_constant_time_compare_used(store: SqliteRelayStore, monkeypatch: Any) -> None:
    token = issue_token(store, tenant="acme", replica_id="tienda-1")
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert authenticate(store, token) is not None
    assert authenticate(store, "ts_000000000000_nope") is None  # unknown id: still compared
    assert len(calls) == 2


def test_client_id_registry_is_global(store: SqliteRelayStore) -> None:
    assert store.claim_client_ids("acme", "t1", [1, 2]) == []
    assert store.claim_client_ids("acme", "t1", [1, 3]) == []
    assert store.client_ids_of("acme", "t1") == {1, 2, 3}
    assert store.claim_client_ids("acme", "t2", [4, 1]) == [1]
    assert store.client_ids_of("acme", "t2") == set()  # nothing registered on conflict
    assert store.claim_client_ids("globex", "t1", [2]) == [2]


def test_append_many_load_snapshot(store: SqliteRelayStore) -> None:
    res = store.append_many(
        [
            AppendEntry("acme", "catalog", b"u1", "t1", b"\x00"),
            AppendEntry("acme", "catalog", None, "t1", b"\x01\x01\x01"),
            AppendEntry("acme", "catalog", b"u2", "t1", b"\x01\x01\x02"),
            AppendEntry("globex", "catalog", b"g1", "x", b"\x00"),
        ]
    )
    assert res.seqs[1] is None and all(isinstance(s, int) for s in (res.seqs[0], res.seqs[2]))
    assert res.log_counts == {("acme", "catalog"): 2, ("globex", "catalog"): 1}
    assert store.state_vectors("acme") == {"catalog": b"\x01\x01\x02"}
    hist = store.load_doc("acme", "catalog")
    assert [d for _, d in hist.updates] == [b"u1", b"u2"] and hist.snapshot is None
    store.put_snapshot("acme", "catalog", b"snap", hist.updates[0][0])
    hist = store.load_doc("acme", "catalog")
    assert hist.snapshot == b"snap" and [d for _, d in hist.updates] == [b"u2"]
    assert store.log_size("acme", "catalog") == 1
    assert store.load_doc("acme", "nothing").updates == []


def test_replica_config_and_sync_log(store: SqliteRelayStore) -> None:
    assert store.get_replica_config("acme", "t1") is None
    store.set_replica_config("acme", "t1", {"interval_s": 5.0, "read": ["catalog"]})
    assert store.get_replica_config("acme", "t1") == {"interval_s": 5.0, "read": ["catalog"]}
    store.log_session(SessionRecord("s1", "acme", "t1", 1.0, 2.0, "ok", updates_received=3))
    store.log_session(SessionRecord("s2", "acme", "t2", 3.0, 4.0, "error", error="x"))
    assert [r.session_id for r in store.list_sessions(tenant="acme")] == ["s2", "s1"]
    [one] = store.list_sessions(replica_id="t1")
    assert one.updates_received == 3


def _updates(client_id: int, n: int) -> list[bytes]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    out: list[bytes] = []
    doc.observe(lambda e: out.append(bytes(e.update)))
    m = doc.get("root", type=pycrdt.Map)
    for i in range(n):
        m[f"k{i}"] = i
    return out


def test_doc_cache_apply_duplicate_pending(store: SqliteRelayStore) -> None:
    cache = DocCache(store)
    u1, u2 = _updates(7, 2)
    r2 = cache.apply("acme", "catalog", u2, {7: 2})
    assert r2.pending and r2.changed is None
    r1 = cache.apply("acme", "catalog", u1, {7: 1})
    assert not r1.pending and r1.changed is not None
    # u2 was held aside (never applied, so never served) and applies after u1
    assert decode_state_vector(r1.state_vector) == {7: 1}
    [released] = r1.released
    assert decode_state_vector(released.state_vector) == {7: 2}
    assert cache.get("acme", "catalog").clocks() == {7: 2}
    again = cache.apply("acme", "catalog", u1, {7: 1})
    assert again.duplicate
    from tiendasync.errors import RemoteProtocolError

    with pytest.raises(RemoteProtocolError):
        cache.apply("acme", "catalog", b"\x01\x02garbage", {})
    # the broken doc was dropped; reloading from (empty) storage works
    assert cache.get("acme", "catalog").clocks() == {}


def test_doc_cache_bounded_and_compaction(store: SqliteRelayStore) -> None:
    ups = _updates(9, 30)
    store.append_many([AppendEntry("acme", "catalog", u, "t1", b"\x00") for u in ups])
    cache = DocCache(store, max_docs=2)
    for name in ("catalog", "locations", "conflicts", "stock/a"):
        cache.get("acme", name)
    assert len(cache) <= 2
    assert compact(store, "acme", "catalog") == 30
    hist = store.load_doc("acme", "catalog")
    assert hist.snapshot is not None and hist.updates == []
    fresh = DocCache(store).get("acme", "catalog")
    assert fresh.doc.get("root", type=pycrdt.Map).to_py() == {f"k{i}": float(i) for i in range(30)}
    # pinned docs are never unloaded
    cache2 = DocCache(store, max_docs=1)
    cache2.get("acme", "catalog")
    cache2.pin("acme", "catalog")
    cache2.get("acme", "locations")
    assert ("acme", "catalog") in cache2.loaded()
    cache2.unpin("acme", "catalog")
    cache2.sweep()
    assert len(cache2) == 1


def test_broker_never_echoes_to_sender() -> None:
    broker = InProcessBroker()
    got: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    broker.subscribe("acme", lambda d, u, o: got["a"].append(d), session_id="a")
    unsub = broker.subscribe("acme", lambda d, u, o: got["b"].append(d), session_id="b")
    broker.subscribe("globex", lambda d, u, o: got["c"].append(d), session_id="c")
    broker.publish("acme", "catalog", b"x", "a")
    unsub()
    broker.publish("acme", "stock/x", b"y", None)
    assert got == {"a": ["stock/x"], "b": ["catalog"], "c": []}
