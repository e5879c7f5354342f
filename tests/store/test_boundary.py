"""Only ``TiendaSyncError`` leaves a public call of the store, whatever it is given."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiendasync import (
    CorruptData,
    InternalError,
    Replica,
    StorageError,
    TiendaSyncError,
    UsageError,
)
from tiendasync.store.boundary import public_api, translate

# Anything a careless caller (or a value read from a form) could pass.
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.tuples(st.text(max_size=5), st.floats()),
)

CALLS: list[tuple[str, Callable[[Replica, Any], object]]] = [
    ("catalog.put(sku)", lambda r, x: r.catalog.put(x, {"name": "x"})),
    ("catalog.put(fields)", lambda r, x: r.catalog.put("SKU", x)),
    ("catalog.get", lambda r, x: r.catalog.get(x)),
    ("catalog.put_many", lambda r, x: r.catalog.put_many(x)),
    ("inventory.receive", lambda r, x: r.inventory.receive("SKU", x)),
    ("inventory.receive_many", lambda r, x: r.inventory.receive_many(x)),
    ("inventory.adjust", lambda r, x: r.inventory.adjust("SKU", 1, reason=x)),
    ("inventory.count", lambda r, x: r.inventory.count(x, 3)),
    ("inventory.transfer", lambda r, x: r.inventory.transfer("SKU", 1, to_location=x)),
    ("inventory.stock", lambda r, x: r.inventory.stock("SKU", x)),
    ("record_sale", lambda r, x: r.record_sale(x)),
    ("record_sale(line)", lambda r, x: r.record_sale([x])),
    ("sales.get", lambda r, x: r.sales.get(x)),
    ("sales.void", lambda r, x: r.sales.void(x)),
    ("sales.list", lambda r, x: r.sales.list(limit=x)),
    ("queue.list", lambda r, x: r.queue.list(status=x)),
    ("queue.get", lambda r, x: r.queue.get(x)),
    ("queue.resolve", lambda r, x: r.queue.resolve("C-1", x)),
    ("log.list", lambda r, x: r.log.list(limit=x)),
    ("locations.put", lambda r, x: r.locations.put(x)),
    ("configure", lambda r, x: r.configure(interval_s=x)),
    ("apply_remote(doc)", lambda r, x: r.apply_remote(x, b"\x00\x00")),
    ("apply_remote(update)", lambda r, x: r.apply_remote("catalog", x)),
    ("state_vector", lambda r, x: r.state_vector(x)),
    ("conflicts.get", lambda r, x: r.conflicts.get(x)),
]


@pytest.mark.parametrize("name,call", CALLS, ids=[c[0] for c in CALLS])
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=junk)
def test_public_calls_raise_only_tiendasync_errors(
    tmp_path: Path, name: str, call: Callable[[Replica, Any], object], value: Any
) -> None:
    with Replica.open(tmp_path / "b.db", tenant="acme", replica_id="b", location="t1") as r:
        try:
            call(r, value)
        except InternalError:
            raise  # a bad argument is the caller's to fix, not a bug here
        except TiendaSyncError:
            pass
        # Anything else propagates and fails the test with its own traceback.


def test_translation_by_what_the_caller_can_do() -> None:
    assert isinstance(translate(sqlite3.OperationalError("database is locked")), StorageError)
    assert isinstance(translate(sqlite3.DatabaseError("file is not a database")), CorruptData)
    assert isinstance(translate(KeyError("x")), InternalError)
    same = UsageError("mine")
    assert translate(same) is same


def test_a_foreign_exception_becomes_internal_error_with_its_cause() -> None:
    @public_api
    class Facet:
        def broken(self) -> None:
            raise KeyError("slot")

        @property
        def value(self) -> int:
            raise ZeroDivisionError

    with pytest.raises(InternalError) as info:
        Facet().broken()
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(InternalError):
        _ = Facet().value


def test_keyboard_interrupt_is_not_translated() -> None:
    @public_api
    class Facet:
        def stop(self) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Facet().stop()
