"""Property: the relay's conflict review does not depend on delivery order.

In-process, no network: 2-4 replicas share one location; a "central" replica
(replica_id "relay", location "central") plays the relay.  One random
history is written once; then, for two different delivery orders (each on
fresh copies of the replica databases), updates are exchanged in both
directions with ``diff``/``apply_remote``, the central reviews after each
upload and once more at the end.  The set of open conflict keys must be the
same for both orders and equal what ``invariants.evaluate`` says of the
final state.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiendasync import Replica, TiendaSyncError
from tiendasync.store.invariants import evaluate

LOC = "tienda-1"
SKUS = ("SKU-A", "SKU-B")

op = st.one_of(
    st.tuples(st.just("receive"), st.sampled_from(SKUS), st.integers(1, 3)),
    st.tuples(st.just("sell"), st.sampled_from(SKUS), st.integers(1, 3)),
    st.tuples(st.just("count"), st.sampled_from(SKUS), st.integers(0, 3)),
    st.tuples(st.just("delete"), st.sampled_from(SKUS), st.just(0)),
)


def push(src: Replica, dst: Replica) -> None:
    """Everything ``src`` has that ``dst`` lacks, doc by doc."""
    have = set(dst.doc_names())
    for doc in src.doc_names():
        update = src.diff(doc, dst.state_vector(doc) if doc in have else None)
        dst.apply_remote(doc, update)


def run_history(
    base: Path, n: int, initial: dict[str, int], history: list[tuple[int, tuple[str, str, int]]]
) -> None:
    replicas = [
        Replica.open(base / f"r{i}.db", tenant="acme", replica_id=f"caja-{i}", location=LOC)
        for i in range(n)
    ]
    try:
        seed = replicas[0]
        for sku in SKUS:
            seed.catalog.put(sku, {"price_cents": 100, "name": sku})
            if initial[sku]:
                seed.inventory.receive(sku, initial[sku])
        for r in replicas[1:]:
            push(seed, r)
        for who, (kind, sku, qty) in history:
            r = replicas[who % n]
            try:
                if kind == "receive":
                    r.inventory.receive(sku, qty)
                elif kind == "sell":
                    r.record_sale([(sku, qty)])
                elif kind == "count":
                    r.inventory.count(sku, qty)
                elif sku in r.catalog:
                    r.catalog.delete(sku)
            except TiendaSyncError:
                pass
    finally:
        for r in replicas:
            r.close()


def deliver(
    base: Path, workdir: Path, n: int, rng: random.Random, keys: set[tuple[str, str]]
) -> tuple[set[str], set[str]]:
    workdir.mkdir()
    for i in range(n):
        shutil.copy(base / f"r{i}.db", workdir / f"r{i}.db")
    replicas = [Replica.open(workdir / f"r{i}.db") for i in range(n)]
    central = Replica.open(
        workdir / "central.db", tenant="acme", replica_id="relay", location="central"
    )
    try:
        steps = [(i, d) for i in range(n) for d in ("up", "down")] * 2
        rng.shuffle(steps)
        finale = [(i, "up") for i in range(n)]
        rng.shuffle(finale)
        for i, direction in steps + finale:
            if direction == "up":
                push(replicas[i], central)
                central.conflicts.review(keys)
            else:
                push(central, replicas[i])
        central.conflicts.review(keys)
        open_keys = {c.key for c in central.conflicts.list(status="open", limit=10**6)}
        violated, _ = evaluate(central.conflicts.invariants, central.conflicts.state, sorted(keys))
        return open_keys, set(violated)
    finally:
        for r in [*replicas, central]:
            r.close()


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    n=st.integers(2, 4),
    initial=st.fixed_dictionaries({s: st.integers(0, 3) for s in SKUS}),
    history=st.lists(st.tuples(st.integers(0, 3), op), min_size=1, max_size=10),
    seeds=st.tuples(st.integers(0, 2**32), st.integers(0, 2**32)),
)
def test_open_conflicts_independent_of_delivery_order(
    n: int, initial: dict[str, int], history: list[Any], seeds: tuple[int, int]
) -> None:
    keys = {(LOC, sku) for sku in SKUS}
    with tempfile.TemporaryDirectory(prefix="tiendasync-prop-") as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        run_history(base, n, initial, history)
        open1, expected1 = deliver(base, Path(tmp) / "order1", n, random.Random(seeds[0]), keys)
        open2, expected2 = deliver(base, Path(tmp) / "order2", n, random.Random(seeds[1]), keys)
    assert expected1 == expected2
    assert open1 == expected1
    assert open2 == expected2
