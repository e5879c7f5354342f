"""The one-pass bulk import writes the same document as the per-row path.

``catalog.put_many(products, stock=...)`` writes every catalog slot and stock
slot in one pass, without per-key observer events; its views index what they
wrote themselves (from ``bulk_min`` slots on; below it, through the observer:
both are tested).  Two replicas with the same writer id and clock, one fed
row by row (``catalog.put``, ``inventory.receive``) and one in one pass, must
hold the same documents, the same values in memory and after reopening.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiendasync import InvalidArgument, Replica
from tiendasync.crdt import LWWMap, PNCounter
from tiendasync.model.docnames import CATALOG, stock_doc

SKUS = st.sampled_from([f"SKU-{i}" for i in range(12)])
FIELDS = st.dictionaries(
    st.sampled_from(["name", "price_cents", "brand", "cost_cents"]),
    st.one_of(st.integers(0, 10_000), st.text(max_size=6), st.booleans(), st.none()),
    min_size=1,
    max_size=3,
).map(
    lambda d: {
        k: (v if k not in ("price_cents", "cost_cents") or type(v) is int else 1)
        for k, v in d.items()
    }
)
PRODUCTS = st.dictionaries(SKUS, FIELDS, max_size=8)
STOCK = st.dictionaries(SKUS, st.integers(1, 500), max_size=8)


def _open(path: Path) -> Replica:
    return Replica.open(
        path,
        tenant="acme",
        replica_id="caja-1",
        location="tienda-1",
        wall_clock=lambda: 1_700_000_000_000,
        client_id_source=random.Random(7).randrange,
    )


def _state(r: Replica) -> tuple[Any, ...]:
    docs = r.core.docs
    stock = stock_doc("tienda-1")
    return (  # a document never written reads as empty, whether it is loaded or not
        docs.doc(CATALOG).get("t", type=pycrdt.Map).to_py(),
        docs.doc(stock).get("t", type=pycrdt.Map).to_py() if stock in docs else {},
        dict(r.catalog.items()),
        r.inventory.levels(),
    )


@dataclass
class Both:
    """Two replicas with the same writer id, clock and history: ``rows`` is fed row by
    row, ``once`` in one pass."""

    rows: Replica
    once: Replica

    def __iter__(self) -> Iterator[Replica]:
        return iter((self.rows, self.once))

    def import_(self, products: dict[str, dict[str, Any]], stock: dict[str, int]) -> None:
        """The same import both ways; both then hold the same."""
        for sku, fields in products.items():
            self.rows.catalog.put(sku, fields)
        for sku, units in stock.items():
            self.rows.inventory.receive(sku, units)
        assert self.once.catalog.put_many(products, stock=stock) == len(products)
        assert _state(self.once) == _state(self.rows)


SameHistory = Callable[[dict[str, dict[str, Any]], dict[str, int]], AbstractContextManager[Both]]


@pytest.fixture(params=[0, 10**9], ids=["muted-observer", "observer"])
def bulk_min(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """From how many slots the views take the bulk path (0: every write takes it; else
    the observer indexes every write)."""
    value: int = request.param
    monkeypatch.setattr(LWWMap, "bulk_min", value)
    monkeypatch.setattr(PNCounter, "bulk_min", value)
    return value


@pytest.fixture
def same_history(tmp_path_factory: pytest.TempPathFactory, bulk_min: int) -> SameHistory:
    """``with same_history(products, stock) as both``: a :class:`Both` in a new
    directory (one per hypothesis example), each replica fed the same products and
    receipts first.  On leaving, ``once`` is reopened from its file and must hold what
    ``rows`` held last (what memory held is what the file holds)."""

    @contextlib.contextmanager
    def both(before: dict[str, dict[str, Any]], stock: dict[str, int]) -> Iterator[Both]:
        tmp = tmp_path_factory.mktemp("bulk")
        with _open(tmp / "rows.db") as rows, _open(tmp / "once.db") as once:
            for r in (rows, once):
                for sku, fields in before.items():
                    r.catalog.put(sku, fields)
                for sku, units in stock.items():
                    r.inventory.receive(sku, units)
            yield Both(rows, once)
            expected = _state(rows)
        with _open(tmp / "once.db") as reopened:
            assert _state(reopened) == expected

    return both


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=PRODUCTS, stock_before=STOCK, products=PRODUCTS, stock=STOCK, after=PRODUCTS)
def test_one_pass_import_equals_the_per_row_path(
    same_history: SameHistory,
    before: dict[str, dict[str, Any]],
    stock_before: dict[str, int],
    products: dict[str, dict[str, Any]],
    stock: dict[str, int],
    after: dict[str, dict[str, Any]],
) -> None:
    with same_history(before, stock_before) as both:
        both.import_(products, stock)
        for r in both:  # the views still hear later writes
            for sku, fields in after.items():
                r.catalog.put(sku, fields)
        assert _state(both.once) == _state(both.rows)


# Products as an import file gives them: every one with the same fields, in the same
# order, each field all strings or all integers (the column-at-a-time path).
COLUMNS = (
    st.lists(SKUS, unique=True, max_size=10)
    .flatmap(
        lambda skus: st.tuples(
            st.just(skus),
            st.lists(st.text(max_size=6), min_size=len(skus), max_size=len(skus)),
            st.lists(st.integers(0, 10_000), min_size=len(skus), max_size=len(skus)),
            st.booleans(),
        )
    )
    .map(
        lambda t: {
            sku: ({"price_cents": p, "name": n} if t[3] else {"name": n, "price_cents": p})
            for sku, n, p in zip(t[0], t[1], t[2], strict=True)
        }
    )
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(before=PRODUCTS, stock_before=STOCK, products=COLUMNS, stock=STOCK)
def test_a_uniform_import_written_by_columns_equals_the_per_row_path(
    same_history: SameHistory,
    before: dict[str, dict[str, Any]],
    stock_before: dict[str, int],
    products: dict[str, dict[str, Any]],
    stock: dict[str, int],
) -> None:
    # products and stock there already: slots to supersede
    with same_history(before, stock_before) as both:
        both.import_(products, stock)


@pytest.fixture
def replica(tmp_path: Path) -> Iterator[Replica]:
    """One replica on ``tmp_path / "a.db"``, closed afterwards."""
    with _open(tmp_path / "a.db") as r:
        yield r


def test_a_bad_row_leaves_nothing_written(replica: Replica) -> None:
    before = len(replica.queue.list(limit=100))
    cases: list[tuple[dict[str, dict[str, Any]], dict[str, int]]] = [
        ({"A": {"name": "x"}, "B": {"price_cents": -1}}, {}),
        ({"A": {"name": "x"}}, {"A": 0}),
        ({"A": {"name": "x"}}, {"": 3}),
        ({"A": {"name": float("nan")}}, {}),
        ({f"P{i}": {"name": "x", "price_cents": i - 1} for i in range(100)}, {}),
        ({f"P{i}": {"name": "x", "price_cents": True} for i in range(100)}, {}),
        ({f"P{i}": {"name": "x"} for i in range(100)}, {f"P{i}": i for i in range(100)}),
        ({f"P{i}": {"name": "x"} for i in range(100)}, {"P1": 2**53}),
        ({f"P{i}": {"name": "x"} for i in range(99)} | {"P\n": {"name": "x"}}, {}),
        ({f"P{i}": {"name": "x"} for i in range(100)}, {" ": 1}),
        ({f"P{i}": {"bad\x00": "x"} for i in range(100)}, {}),
        ({f"P{i}": {"name": float("inf")} for i in range(100)}, {}),
    ]
    for products, stock in cases:
        try:
            replica.catalog.put_many(products, stock=stock)
        except InvalidArgument:
            pass
        else:
            raise AssertionError(f"{products}, {stock} was accepted")
    assert replica.catalog.get("A") is None and replica.inventory.levels() == {}
    assert len(replica.queue.list(limit=100)) == before


def test_one_pass_import_is_one_queue_entry_and_survives_reopen(tmp_path: Path) -> None:
    products = {f"P{i}": {"name": f"Producto {i}", "price_cents": i} for i in range(300)}
    with _open(tmp_path / "a.db") as r:
        before = len(r.queue.list(limit=100))
        r.catalog.put_many(products, stock={sku: 5 for sku in products})
        entries = r.queue.list(limit=100)
        assert len(entries) == before + 1 and entries[0].kind == "product_import"
    with _open(tmp_path / "a.db") as r:
        assert dict(r.catalog.items()) == products
        assert r.inventory.levels() == {sku: 5 for sku in products}


def test_sold_keys_are_the_same_for_few_and_many_skus(replica: Replica) -> None:
    replica.catalog.put_many({f"P{i}": {"name": "x"} for i in range(3)})
    for sku in ("P0", "P2", "GONE"):
        replica.record_sale([(sku, 1)])
    sales = replica.core.storage.sales
    few = {"P0", "P1", "P2", "GONE"}
    many = few | {f"X{i}" for i in range(600)}  # past one query's worth of SKUs
    expected = {("tienda-1", "P0"), ("tienda-1", "P2"), ("tienda-1", "GONE")}
    assert sales.sold_keys(few) == sales.sold_keys(many) == expected
    assert sales.sold_keys(set()) == set()
