"""The Replica facade, as DESIGN.md's contract describes it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tiendasync.store.core
from tests.support.helpers import FakeWall, replica_state, sync_pair
from tiendasync import (
    ConfigError,
    InvalidArgument,
    Replica,
    ReplicaClosed,
    Sale,
    TiendaSyncError,
    UnknownLocation,
)
from tiendasync.crdt import MAX_SAFE_INTEGER

OpenReplica = Callable[..., Replica]


@pytest.fixture
def shop(open_replica: OpenReplica) -> Replica:
    """A replica at location t1 that knows t2, with CAFE-500 (10 units) and LECHE."""
    r = open_replica("t1")
    r.locations.put("t2", {"name": "Tienda 2"})
    r.catalog.put("CAFE-500", {"name": "Café 500 g", "price_cents": 450})
    r.catalog.put("LECHE", {"name": "Leche 1 l", "price_cents": 120})
    r.inventory.receive("CAFE-500", 10)
    r.inventory.receive("LECHE", 5)
    return r


def footprint(r: Replica) -> tuple[Any, ...]:
    """What a refused call must leave untouched."""
    return (
        {loc: r.inventory.levels(loc) for loc in r.inventory.locations()},
        len(r.queue.list(limit=100_000)),
        r.sales.count(),
        dict(r.catalog.items()),
        r.locations.list(),
        r.doc_names(),
    )


# -- the contract, end to end ---------------------------------------------------------------


def test_contract_walkthrough(tmp_path: Path) -> None:
    with Replica.open(
        tmp_path / "tienda-1.db", tenant="acme", replica_id="tienda-1", location="tienda-1"
    ) as r:
        assert (r.tenant, r.replica_id, r.location) == ("acme", "tienda-1", "tienda-1")
        r.catalog.put("CAFE-500", {"name": "Café 500 g", "price_cents": 450})
        assert r.catalog.get("CAFE-500") == {"name": "Café 500 g", "price_cents": 450}
        r.catalog.put("CAFE-500", {"price_cents": 475})  # other fields are kept
        assert r.catalog.get("CAFE-500") == {"name": "Café 500 g", "price_cents": 475}

        assert r.inventory.receive("CAFE-500", 10).stock == 10
        assert r.inventory.adjust("CAFE-500", -2, reason="broken").stock == 8
        movement = r.inventory.count("CAFE-500", 7)
        assert (movement.delta, movement.stock) == (-1, 7)
        r.locations.put("tienda-2")
        moved = r.inventory.transfer("CAFE-500", 3, to_location="tienda-2")
        assert (moved.delta, moved.stock) == (-3, 4)
        assert r.inventory.stock("CAFE-500") == 4
        assert r.inventory.stock("CAFE-500", location="tienda-2") == 3

        sale = r.record_sale([("CAFE-500", 2)])
        assert isinstance(sale, Sale)
        assert sale.total_cents == 2 * 475
        assert sale.warnings == ()
        assert r.inventory.stock("CAFE-500") == 2
        stored = r.sales.get(sale.id)
        assert stored is not None
        assert (stored.id, stored.lines, stored.location) == (sale.id, sale.lines, "tienda-1")

        r.catalog.delete("CAFE-500")
        assert r.catalog.get("CAFE-500") is None
        assert "CAFE-500" not in r.catalog

        entries = r.queue.list()
        kinds = [e.kind for e in entries]
        assert kinds.count("sale") == 1
        assert {"product_put", "product_delete", "receive", "adjust", "count", "transfer"} <= set(
            kinds
        )
        assert all(e.status == "pending" for e in entries)
        assert r.queue.list(conflicts=True) == []
        assert len(r.queue.list(conflicts=False)) == len(entries)

        status = r.status
        assert status.state == "offline"
        assert not status.online
        assert status.pending == len(entries)
        assert status.open_conflicts == 0
        assert status.last_sync_at is None
    with pytest.raises(ReplicaClosed):
        r.inventory.stock("CAFE-500")


def test_open_requires_identity_then_remembers_it(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with pytest.raises(ConfigError):
        Replica.open(path)
    Replica.open(path, tenant="acme", replica_id="x", location="x").close()
    with Replica.open(path) as r:
        assert (r.tenant, r.replica_id, r.location) == ("acme", "x", "x")
    with pytest.raises(ConfigError):
        Replica.open(path, tenant="other")


def test_each_open_uses_a_new_client_id(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    ids = []
    for _ in range(5):
        with Replica.open(path, tenant="acme", replica_id="x", location="x") as r:
            ids.append(r.client_id)
            r.inventory.receive("CAFE", 1)
    assert len(set(ids)) == 5
    assert all(0 < i < 2**53 for i in ids)
    with Replica.open(path) as r:
        assert r.client_id not in ids
        assert r.inventory.stock("CAFE") == 5


def test_close_then_use_raises_replica_closed(shop: Replica) -> None:
    sale = shop.record_sale([("CAFE-500", 1)])
    shop.close()
    shop.close()  # idempotent
    calls: list[Callable[[], object]] = [
        lambda: shop.record_sale([("CAFE-500", 1)]),
        lambda: shop.sales.get(sale.id),
        lambda: shop.sales.count(),
        lambda: shop.catalog.get("CAFE-500"),
        lambda: shop.catalog.put("CAFE-500", {"price_cents": 1}),
        lambda: shop.catalog.delete("CAFE-500"),
        lambda: shop.inventory.stock("CAFE-500"),
        lambda: shop.inventory.receive("CAFE-500", 1),
        lambda: shop.inventory.adjust("CAFE-500", 1, reason="found"),
        lambda: shop.inventory.transfer("CAFE-500", 1, to_location="t2"),
        lambda: shop.queue.list(),
        lambda: shop.status,
        lambda: shop.doc_names(),
        lambda: shop.compact(),
    ]
    for call in calls:
        with pytest.raises(ReplicaClosed):
            call()


# -- refusals leave the store unchanged ---------------------------------------------------------

BAD_SKUS: list[Any] = ["", "   ", "A\x1fB", "A\nB", "x" * 201, 123, None, b"CAFE-500"]
BAD_QUANTITIES: list[Any] = [0, -1, 2.0, 1.5, True, 2**53, "3", None]

REFUSALS: list[tuple[str, Callable[[Replica], object], type[Exception]]] = [
    *[
        (f"receive qty {q!r}", lambda r, q=q: r.inventory.receive("CAFE-500", q), InvalidArgument)
        for q in BAD_QUANTITIES
    ],
    *[
        (f"receive sku {s!r}", lambda r, s=s: r.inventory.receive(s, 1), InvalidArgument)
        for s in BAD_SKUS
    ],
    *[
        (
            f"adjust {d!r}",
            lambda r, d=d: r.inventory.adjust("CAFE-500", d, reason="x"),
            InvalidArgument,
        )
        for d in [0, 2.0, True, 2**53, -(2**53)]
    ],
    (
        "adjust without reason",
        lambda r: r.inventory.adjust("CAFE-500", 1, reason=" "),
        InvalidArgument,
    ),
    *[
        (f"count {c!r}", lambda r, c=c: r.inventory.count("CAFE-500", c), InvalidArgument)
        for c in [-1, 2.0, True, 2**53, None]
    ],
    *[
        (
            f"transfer qty {q!r}",
            lambda r, q=q: r.inventory.transfer("CAFE-500", q, to_location="t2"),
            InvalidArgument,
        )
        for q in BAD_QUANTITIES
    ],
    (
        "transfer to unknown",
        lambda r: r.inventory.transfer("CAFE-500", 1, to_location="nowhere"),
        UnknownLocation,
    ),
    (
        "transfer from unknown",
        lambda r: r.inventory.transfer("CAFE-500", 1, to_location="t2", from_location="nowhere"),
        UnknownLocation,
    ),
    (
        "transfer to itself",
        lambda r: r.inventory.transfer("CAFE-500", 1, to_location="t1"),
        InvalidArgument,
    ),
    (
        "receive at unknown",
        lambda r: r.inventory.receive("CAFE-500", 1, location="nowhere"),
        UnknownLocation,
    ),
    (
        "stock at unknown",
        lambda r: r.inventory.stock("CAFE-500", location="nowhere"),
        UnknownLocation,
    ),
    ("empty sale", lambda r: r.record_sale([]), InvalidArgument),
    ("sale of a string", lambda r: r.record_sale("CAFE-500"), InvalidArgument),
    ("sale line too short", lambda r: r.record_sale([("CAFE-500",)]), InvalidArgument),
    *[
        (f"sale qty {q!r}", lambda r, q=q: r.record_sale([("CAFE-500", q)]), InvalidArgument)
        for q in BAD_QUANTITIES
    ],
    *[
        (f"sale cents {c!r}", lambda r, c=c: r.record_sale([("CAFE-500", 1, c)]), InvalidArgument)
        for c in [4.5, 450.0, "450", True, -1, 2**53]
    ],
    *[
        (f"sale sku {s!r}", lambda r, s=s: r.record_sale([(s, 1)]), InvalidArgument)
        for s in BAD_SKUS
    ],
    (
        "sale with a bad second line",
        lambda r: r.record_sale([("CAFE-500", 1), ("LECHE", 0)]),
        InvalidArgument,
    ),
    (
        "sale at unknown location",
        lambda r: r.record_sale([("CAFE-500", 1)], location="nowhere"),
        UnknownLocation,
    ),
    ("too many sale lines", lambda r: r.record_sale([("LECHE", 1)] * 1001), InvalidArgument),
    *[
        (f"catalog put sku {s!r}", lambda r, s=s: r.catalog.put(s, {"name": "x"}), InvalidArgument)
        for s in BAD_SKUS
    ],
    *[
        (
            f"catalog price {p!r}",
            lambda r, p=p: r.catalog.put("CAFE-500", {"price_cents": p}),
            InvalidArgument,
        )
        for p in [4.5, "450", True, -1, 2**53, None]
    ],
    ("catalog put no fields", lambda r: r.catalog.put("NEW", {}), InvalidArgument),
    ("catalog put nan", lambda r: r.catalog.put("NEW", {"w": float("nan")}), InvalidArgument),
    ("catalog put bad field name", lambda r: r.catalog.put("NEW", {"a\x00": 1}), InvalidArgument),
    ("catalog delete bad sku", lambda r: r.catalog.delete(""), InvalidArgument),
    ("sales.get bad id", lambda r: r.sales.get(""), InvalidArgument),
]


@pytest.mark.parametrize(
    ("call", "error"), [(c, e) for _, c, e in REFUSALS], ids=[label for label, _, _ in REFUSALS]
)
def test_bad_arguments_raise_typed_errors_and_change_nothing(
    shop: Replica, call: Callable[[Replica], object], error: type[Exception]
) -> None:
    before = footprint(shop)
    with pytest.raises(error) as info:
        call(shop)
    assert isinstance(info.value, TiendaSyncError)
    assert footprint(shop) == before
    # The replica still works afterwards.
    shop.record_sale([("CAFE-500", 1)])
    assert shop.inventory.stock("CAFE-500") == 9


def test_a_sale_that_would_overflow_the_counter_is_refused_atomically(shop: Replica) -> None:
    shop.record_sale([("LECHE", MAX_SAFE_INTEGER - 10, 0)])  # exact up to 2**53 - 1
    assert shop.inventory.stock("LECHE") == 5 - (MAX_SAFE_INTEGER - 10)
    before = footprint(shop)
    with pytest.raises(InvalidArgument):
        shop.record_sale([("CAFE-500", 1), ("LECHE", 11, 0)])  # decrements would reach 2**53
    assert footprint(shop) == before


# -- sales are never refused for business reasons ----------------------------------------------


def test_sale_can_take_stock_negative_and_is_flagged(shop: Replica) -> None:
    sale = shop.record_sale([("CAFE-500", 12), ("LECHE", 1)])
    assert sale.negative_stock == ("CAFE-500",)
    assert sale.unknown_skus == ()
    assert len(sale.warnings) == 1 and "CAFE-500" in sale.warnings[0]
    assert shop.inventory.stock("CAFE-500") == -2
    assert shop.inventory.stock("LECHE") == 4
    assert shop.sales.get(sale.id) is not None
    assert sale.total_cents == 12 * 450 + 120


def test_sale_of_unknown_or_deleted_sku_is_recorded_and_flagged(shop: Replica) -> None:
    shop.catalog.delete("LECHE")
    sale = shop.record_sale([("NOPE", 2), ("LECHE", 1), ("CAFE-500", 1)])
    assert sale.unknown_skus == ("LECHE", "NOPE")
    assert sale.negative_stock == ("NOPE",)
    assert len(sale.warnings) == 3
    assert [ln.unit_price_cents for ln in sale.lines] == [0, 0, 450]  # no catalog price
    stored = shop.sales.get(sale.id)
    assert stored is not None and stored.lines == sale.lines
    assert shop.inventory.stock("NOPE") == -2
    assert shop.inventory.stock("LECHE") == 4
    assert shop.sales.count() == 1


def test_explicit_prices_and_repeated_lines(shop: Replica) -> None:
    sale = shop.record_sale(
        [("CAFE-500", 2, 400), {"sku": "CAFE-500", "quantity": 1}, ("LECHE", 1, 0)]
    )
    assert [(ln.quantity, ln.unit_price_cents) for ln in sale.lines] == [(2, 400), (1, 450), (1, 0)]
    assert sale.total_cents == 800 + 450
    assert shop.inventory.stock("CAFE-500") == 7
    assert len(shop.queue.list(kind="sale")) == 1  # one durable write for the whole ticket


def test_transfer_is_one_queue_entry_touching_two_locations(shop: Replica) -> None:
    before = len(shop.queue.list(limit=1000))
    moved = shop.inventory.transfer("CAFE-500", 4, to_location="t2")
    assert moved.stock == 6
    assert shop.inventory.stock("CAFE-500") == 6
    assert shop.inventory.stock("CAFE-500", location="t2") == 4
    entries = shop.queue.list(limit=1000)
    assert len(entries) == before + 1
    entry = entries[0] if entries[0].kind == "transfer" else shop.queue.list(kind="transfer")[0]
    assert entry.kind == "transfer" and entry.ref == "CAFE-500"
    assert "t1" in entry.summary and "t2" in entry.summary
    docs = shop.core.storage.conn.execute(
        "SELECT doc FROM queue_clocks WHERE entry_id = ? ORDER BY doc", (entry.id,)
    ).fetchall()
    assert [d for (d,) in docs] == ["stock/t1", "stock/t2"]


def test_transfer_can_take_the_source_negative_with_a_warning(shop: Replica) -> None:
    moved = shop.inventory.transfer("LECHE", 8, to_location="t2")
    assert moved.stock == -3
    assert moved.warnings and "-3" in moved.warnings[-1]


# -- merging ------------------------------------------------------------------------------------


def test_stocktake_concurrent_with_a_remote_sale_keeps_the_sale(open_replica: OpenReplica) -> None:
    a = open_replica("a", location="t1")
    b = open_replica("b", location="t1")  # a second till in the same store
    a.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
    a.inventory.receive("CAFE", 10)
    sync_pair(a, b)
    assert b.inventory.stock("CAFE") == 10
    # Offline, concurrently: A counts 7 on the shelf, B sells 2.
    a.inventory.count("CAFE", 7)
    sale = b.record_sale([("CAFE", 2)])
    assert (a.inventory.stock("CAFE"), b.inventory.stock("CAFE")) == (7, 8)
    sync_pair(a, b)
    assert a.inventory.stock("CAFE") == b.inventory.stock("CAFE") == 5
    assert a.sales.get(sale.id) is not None


def _busy_replica(r: Replica) -> None:
    r.locations.put("t2")
    r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
    r.catalog.put("PAN", {"name": "Pan", "price_cents": 90})
    r.catalog.put("OLD", {"name": "Old"})
    r.catalog.delete("OLD")
    r.inventory.receive("CAFE", 30)
    r.inventory.receive("PAN", 5, location="t2")
    r.inventory.adjust("CAFE", -1, reason="broken")
    r.inventory.transfer("CAFE", 4, to_location="t2")
    r.inventory.count("PAN", 3, location="t2")
    for n in range(6):
        r.record_sale([("CAFE", 1 + n % 2), ("PAN", 1)], location="t1" if n % 3 else "t2")
    r.catalog.put("CAFE", {"price_cents": 500})


def test_in_process_sync_makes_two_replicas_equal(open_replica: OpenReplica) -> None:
    a = open_replica("a", location="t1")
    b = open_replica("b", location="t2")
    _busy_replica(a)
    b.catalog.put("TE", {"name": "Té", "price_cents": 300})
    b.inventory.receive("TE", 9)
    b.record_sale([("TE", 2)])
    b_sales = b.sales.count()
    assert set(a.doc_names()) != set(b.doc_names())  # each has docs the other lacks

    assert sync_pair(a, b) > 0
    assert a.doc_names() == b.doc_names()
    state_a, state_b = replica_state(a), replica_state(b)
    for key in ("stock", "catalog", "locations", "sales", "sales_count"):
        assert state_a[key] == state_b[key], key
    assert state_a["sales_count"] == 6 + b_sales
    assert a.inventory.stock("TE", location="t2") == 7
    assert b.catalog.get("CAFE") == {"name": "Café", "price_cents": 500}
    assert b.catalog.get("OLD") is None
    # The queue holds local writes only: merging adds nothing to it.
    assert state_a["queue"] == replica_state(a)["queue"]
    assert sorted(e.kind for e in b.queue.list()) == [
        "location_put",
        "product_put",
        "receive",
        "sale",
    ]

    # Redelivery changes nothing, in both directions, for every doc.
    for src, dst in ((a, b), (b, a)):
        for name in src.doc_names():
            assert dst.apply_remote(name, src.diff(name)) is False
            assert dst.apply_remote(name, src.diff(name, dst.state_vector(name))) is False
    assert sync_pair(a, b) == 0
    assert replica_state(a)["stock"] == state_a["stock"]


# -- durability of the derived state -----------------------------------------------------------


def _reopen(r: Replica, open_replica: OpenReplica) -> Replica:
    path = r.path
    r.close()
    return open_replica(path=path, tenant=None, replica_id=None, location=None)


def test_reopen_rebuilds_exactly_the_same_state(open_replica: OpenReplica) -> None:
    wall = FakeWall(1_706_000_000_000)  # late January
    r = open_replica("t1", wall_clock=wall)
    _busy_replica(r)
    wall.ms += 20 * 24 * 3600 * 1000  # February: sales go to a new ledger doc
    r.record_sale([("CAFE", 1)])
    assert len([n for n in r.doc_names() if n.startswith("sales/t1/")]) == 2
    before = replica_state(r)
    r = _reopen(r, open_replica)
    assert replica_state(r) == before
    # ... and keeps working under its new client id.
    r.record_sale([("CAFE", 1)])
    assert r.inventory.stock("CAFE") == before["stock"]["t1"]["CAFE"] - 1


def test_reopen_after_forced_compaction(open_replica: OpenReplica) -> None:
    r = open_replica("t1")
    _busy_replica(r)
    before = replica_state(r)
    r.compact()
    rows = r.core.storage.conn.execute("SELECT COUNT(*) FROM updates").fetchone()[0]
    assert rows == 0
    assert replica_state(r) == before
    r = _reopen(r, open_replica)
    assert replica_state(r) == before
    r.record_sale([("PAN", 1)])
    r = _reopen(r, open_replica)
    assert r.inventory.stock("PAN") == before["stock"]["t1"]["PAN"] - 1


def test_reopen_after_automatic_compaction(
    open_replica: OpenReplica, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tiendasync.store.core, "COMPACT_EVERY", 4)
    r = open_replica("t1")
    _busy_replica(r)
    for _ in range(10):
        r.record_sale([("CAFE", 1)])
    store = r.core.storage
    snapshots = store.conn.execute("SELECT COUNT(*) FROM docs WHERE snapshot IS NOT NULL")
    assert snapshots.fetchone()[0] >= 2  # at least stock/t1 and its sales doc were folded
    for name in r.doc_names():
        assert store.updates_since_snapshot(name) < 4
    before = replica_state(r)
    r = _reopen(r, open_replica)
    assert replica_state(r) == before


# -- concurrency inside one process -------------------------------------------------------------


def test_threads_recording_sales_concurrently(open_replica: OpenReplica) -> None:
    r = open_replica("t1")
    r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
    r.inventory.receive("CAFE", 1000)
    per_thread, threads = 25, 4
    ids: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(threads)

    def work() -> None:
        try:
            start.wait()
            for _ in range(per_thread):
                sale = r.record_sale([("CAFE", 2)])
                with lock:
                    ids.append(sale.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert errors == []
    total = per_thread * threads
    assert len(set(ids)) == total
    assert r.sales.count() == total
    assert r.inventory.stock("CAFE") == 1000 - 2 * total
    assert len(r.queue.list(kind="sale", limit=1000)) == total
    assert all(r.sales.get(i) is not None for i in ids)
