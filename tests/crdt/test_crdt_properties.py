"""Property tests of the CRDT views (PNCounter, LWWMap, Ledger) over raw pycrdt docs.

Every test builds a small cluster of pycrdt docs (one per replica, each with
its own Yjs client id), makes local writes in transactions, captures the
update each transaction emits, and delivers updates to the other replicas in
arbitrary order, with duplicates, interleaved with more local writes (so
writers act on partial, causal histories and prune what they have seen).
After everything has been delivered everywhere, all replicas must agree with
each other and with a sequential model of the data type.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pycrdt
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from tests.support.helpers import CapturedDoc, FakeWall, LocalUpdate, clock_of
from tiendasync import InvalidArgument
from tiendasync.crdt import MAX_SAFE_INTEGER, ROOT, Ledger, LWWMap, PNCounter
from tiendasync.crdt.keys import SEP
from tiendasync.crdt.lww import TOMBSTONE
from tiendasync.model.hlc import HLC, Timestamp
from tiendasync.protocol.statevector import decode_state_vector

SETTINGS = settings(max_examples=120, deadline=None)

client_id_sets = st.lists(
    st.integers(min_value=1, max_value=2**32 - 1), min_size=2, max_size=5, unique=True
)


# -- the cluster harness ---------------------------------------------------------------

#: How updates reach the other replicas.  ``writer-order``: any order across
#: writers, with duplicates, but an update is held back until the earlier
#: updates of its writer are in (what Yjs itself does for a clock gap, and what
#: pycrdt 0.14 fails to do: see the ``test_pycrdt_0_14_*`` tests below).
#: ``raw``: any order, duplicates, straight into ``apply_update``, followed by a
#: state-vector catch-up (what a replica does on reconnect).
DELIVERIES = ["writer-order", "raw"]


@dataclass
class Cluster:
    """Replicas (pycrdt docs + a view each) and every update they have produced."""

    nodes: list[CapturedDoc]
    views: list[Any]
    view_cls: Callable[[pycrdt.Doc[Any]], Any]
    delivery: str = "writer-order"
    updates: list[LocalUpdate] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        client_ids: list[int],
        view_cls: Callable[[pycrdt.Doc[Any]], Any],
        delivery: str = "writer-order",
    ) -> Cluster:
        nodes = [CapturedDoc(c) for c in client_ids]
        return cls(nodes, [view_cls(n.doc) for n in nodes], view_cls, delivery)

    def local(self, i: int, write: Callable[[Any], Any]) -> Any:
        """Run ``write(view)`` in one local transaction on replica ``i``."""
        node = self.nodes[i]
        before = len(node.outbox)
        with node.local():
            result = write(self.views[i])
        self.updates.extend(node.outbox[before:])
        return result

    def deliver(self, i: int, k: int) -> None:
        if self.delivery == "raw":
            self.nodes[i].receive(self.updates[k].data)
        else:
            self.nodes[i].receive_in_writer_order(self.updates[k])
            if self.nodes[i].held:
                event("an update was held back for an earlier one of its writer")

    def deliver_everything(self, data: st.DataObject) -> None:
        """Every update to every replica, in a drawn order, with some duplicates."""
        n = len(self.updates)
        if n == 0:
            return
        for i in range(len(self.nodes)):
            order = data.draw(st.permutations(range(n)), label=f"final order {i}")
            dups = data.draw(st.lists(st.sampled_from(range(n)), max_size=3), label="dups")
            for k in [*order, *dups]:
                self.deliver(i, k)
        if self.delivery == "raw":
            if not self.same_state_vectors():
                event("raw delivery left an update stranded (repaired by catch-up)")
            self.catch_up()
        assert all(not node.held for node in self.nodes)

    def catch_up(self) -> None:
        """State-vector exchange between every pair (the reconnect path), until settled."""
        for _ in range(10):
            for a in self.nodes:
                for b in self.nodes:
                    if a is not b:
                        b.receive(a.doc.get_update(b.doc.get_state()))
            if self.same_state_vectors():
                return
        raise AssertionError("state vectors still differ after 10 catch-up rounds")

    def same_state_vectors(self) -> bool:
        svs = [decode_state_vector(bytes(n.doc.get_state())) for n in self.nodes]
        return all(sv == svs[0] for sv in svs)

    def random_steps(self, data: st.DataObject, op: Callable[[int], None], max_steps: int) -> None:
        """Interleave local ops (``op(replica)``) with partial, unordered deliveries."""
        steps = data.draw(st.integers(min_value=1, max_value=max_steps), label="steps")
        for _ in range(steps):
            i = data.draw(st.integers(0, len(self.nodes) - 1), label="replica")
            if len(self.updates) > 0 and data.draw(st.booleans(), label="deliver?"):
                k = data.draw(st.integers(0, len(self.updates) - 1), label="update")
                self.deliver(i, k)
            else:
                op(i)
            if self.delivery == "writer-order":
                self.assert_indexes_match_docs()

    def assert_same_docs(self) -> None:
        """Yjs itself converged: identical state vectors and root maps everywhere."""
        svs = [decode_state_vector(bytes(n.doc.get_state())) for n in self.nodes]
        roots = [dict(n.doc.get(ROOT, type=pycrdt.Map).items()) for n in self.nodes]
        for sv, root in zip(svs[1:], roots[1:], strict=True):
            assert sv == svs[0]
            assert root == roots[0]

    def fresh_views(self) -> list[Any]:
        return [fresh_view(self.view_cls, n.doc) for n in self.nodes]

    def assert_indexes_match_docs(self) -> None:
        """Each view's incremental index says what a view built from its doc now says."""
        for view, fresh in zip(self.views, self.fresh_views(), strict=True):
            assert _observable(view) == _observable(fresh)


def checked_views(cluster: Cluster) -> list[Any]:
    """The views whose reads must equal the model once everything is delivered.

    Views built from each doc's final contents always; the incremental views
    too with ``writer-order`` delivery.  With ``raw`` delivery pycrdt 0.14
    does not report some deletions to observers, so incremental indexes can
    be stale until rebuilt (``test_pycrdt_0_14_gap_delete_is_not_reported``).
    """
    fresh = cluster.fresh_views()
    return [*fresh, *cluster.views] if cluster.delivery == "writer-order" else fresh


def fresh_view(view_cls: Callable[[pycrdt.Doc[Any]], Any], doc: pycrdt.Doc[Any]) -> Any:
    """A view indexed from the doc's current contents, not following later changes."""
    view = view_cls(doc)
    view._root.unobserve(view._subscription)
    return view


def _observable(view: Any) -> Any:
    if isinstance(view, PNCounter):
        return {e: (view.value(e), view.contributions(e)) for e in ENTITIES}
    if isinstance(view, LWWMap):
        return {
            r: (view.get(r), {f: view.winner(r, f) for f in [*FIELDS, TOMBSTONE]}) for r in RECORDS
        }
    return {i: view.get(i) for i in SALE_IDS}


# -- PN-counter -------------------------------------------------------------------------

ENTITIES = ["cafe", "leche", "pan"]


@pytest.mark.parametrize("delivery", DELIVERIES)
@SETTINGS
@given(client_ids=client_id_sets, data=st.data())
def test_counter_converges_to_sum_of_all_ops(
    delivery: str, client_ids: list[int], data: st.DataObject
) -> None:
    cluster = Cluster.build(client_ids, PNCounter, delivery)
    model = dict.fromkeys(ENTITIES, 0)

    def op(i: int) -> None:
        entity = data.draw(st.sampled_from(ENTITIES), label="entity")
        delta = data.draw(st.integers(-1000, 1000), label="delta")
        cluster.local(i, lambda v: v.add(entity, delta))
        model[entity] += delta

    cluster.random_steps(data, op, 40)
    cluster.deliver_everything(data)

    cluster.assert_same_docs()
    for view in checked_views(cluster):
        assert {e: view.value(e) for e in ENTITIES} == model
        for e in ENTITIES:
            contributions = view.contributions(e)
            assert sum(inc - dec for inc, dec in contributions.values()) == model[e]
            assert set(contributions) <= {str(c) for c in client_ids}


def test_counter_concurrent_increments_all_count() -> None:
    cluster = Cluster.build([7, 3, 900], PNCounter)
    for i, delta in enumerate([5, -2, 10]):

        def add(v: PNCounter, d: int = delta) -> None:
            v.add("cafe", d)

        cluster.local(i, add)
    for i in range(3):
        for k in reversed(range(len(cluster.updates))):
            cluster.deliver(i, k)
    assert [v.value("cafe") for v in cluster.views] == [13, 13, 13]
    assert cluster.views[0].contributions("cafe") == {"7": (5, 0), "3": (0, 2), "900": (10, 0)}


def test_counter_ints_exact_up_to_2_53_and_refused_beyond() -> None:
    cluster = Cluster.build([1, 2], PNCounter)
    cluster.local(0, lambda v: v.add("big", MAX_SAFE_INTEGER))
    cluster.local(1, lambda v: v.add("big", -MAX_SAFE_INTEGER))
    cluster.local(1, lambda v: v.add("up", MAX_SAFE_INTEGER - 1))
    for k in range(len(cluster.updates)):
        cluster.deliver(0, k)
        cluster.deliver(1, k)
    for view in cluster.views:
        assert view.value("big") == 0
        assert view.contributions("big") == {"1": (MAX_SAFE_INTEGER, 0), "2": (0, MAX_SAFE_INTEGER)}
        assert view.value("up") == MAX_SAFE_INTEGER - 1
        assert isinstance(view.value("up"), int)
    # Yjs carries numbers as doubles; the raw slot is exact up to 2**53 - 1.
    raw = cluster.nodes[0].doc.get(ROOT, type=pycrdt.Map)["big" + SEP + "1"]
    assert int(raw[0]) == MAX_SAFE_INTEGER

    updates_before = len(cluster.updates)
    for bad in (2**53, -(2**53), 2**64, 2.0, 1.5, True, "3", None):

        def add_bad(v: PNCounter, b: Any = bad) -> None:
            v.add("up", b)

        with pytest.raises(InvalidArgument):
            cluster.local(0, add_bad)
    # A slot that would reach 2**53 is refused too, in both directions.
    cluster.local(1, lambda v: v.add("up", 1))
    assert cluster.views[1].value("up") == MAX_SAFE_INTEGER
    with pytest.raises(InvalidArgument):
        cluster.local(1, lambda v: v.add("up", 1))
    with pytest.raises(InvalidArgument):
        cluster.local(0, lambda v: v.add("big", 1))  # slot of replica 0 is at 2**53 - 1
    with pytest.raises(InvalidArgument):
        cluster.local(1, lambda v: v.add("big", -1))  # decrements of replica 1 likewise
    assert len(cluster.updates) == updates_before + 1  # only the legal add emitted anything
    assert cluster.views[1].value("up") == MAX_SAFE_INTEGER
    assert cluster.views[0].value("big") == 0


# -- LWW map -----------------------------------------------------------------------------

RECORDS = ["p0", "p1", "p2"]
FIELDS = ["name", "price", "tags"]
values = st.one_of(
    st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER),
    st.text(max_size=5),
    st.lists(st.integers(0, 9), max_size=2),
    st.none(),
)


@dataclass(frozen=True)
class Write:
    ts: Timestamp
    writer: int
    record: str
    field: str | None  # None: a tombstone
    value: Any = None

    @property
    def order(self) -> tuple[Timestamp, int]:
        return (self.ts, self.writer)


def lww_model(writes: list[Write], record: str) -> dict[str, Any] | None:
    """Sequential spec: per field the greatest (HLC, writer) write, unless a newer tombstone."""
    mine = [w for w in writes if w.record == record]
    tombs = [w.order for w in mine if w.field is None]
    tomb = max(tombs) if tombs else None
    out: dict[str, Any] = {}
    for name in {w.field for w in mine if w.field is not None}:
        best = max((w for w in mine if w.field == name), key=lambda w: w.order)
        if tomb is None or best.order > tomb:
            out[name] = best.value
    return out or None


@pytest.mark.parametrize("delivery", DELIVERIES)
@settings(max_examples=150, deadline=None)
@given(
    client_ids=client_id_sets,
    replica_names=st.lists(st.sampled_from(["s1", "s2", "s3"]), min_size=5, max_size=5),
    observe_remote=st.booleans(),
    data=st.data(),
)
def test_lww_converges_to_greatest_hlc_write(
    delivery: str,
    client_ids: list[int],
    replica_names: list[str],
    observe_remote: bool,
    data: st.DataObject,
) -> None:
    # Replica names are drawn from a small set so that two writers (say, two
    # incarnations of one store) can issue identical HLC timestamps: the tie
    # is then broken by the Yjs client id.
    cluster = Cluster.build(client_ids, LWWMap, delivery)
    walls = [FakeWall(1_000) for _ in client_ids]
    clocks = [HLC(replica_names[i], wall=walls[i]) for i in range(len(client_ids))]
    writes: list[Write] = []

    def op(i: int) -> None:
        walls[i].ms += data.draw(st.integers(-30, 30), label="wall step")
        if observe_remote and cluster.views[i].newest is not None:
            clocks[i].observe(cluster.views[i].newest)  # what Replica does after a merge
        ts = clocks[i].now()
        record = data.draw(st.sampled_from(RECORDS), label="record")
        if data.draw(st.integers(0, 4), label="kind") == 0:
            cluster.local(i, lambda v: v.delete(record, ts))
            writes.append(Write(ts, client_ids[i], record, None))
        else:
            fields = data.draw(
                st.dictionaries(st.sampled_from(FIELDS), values, min_size=1, max_size=3),
                label="fields",
            )
            cluster.local(i, lambda v: v.set(record, fields, ts))
            writes.extend(Write(ts, client_ids[i], record, f, x) for f, x in fields.items())

    cluster.random_steps(data, op, 40)
    cluster.deliver_everything(data)

    cluster.assert_same_docs()
    slots = len(cluster.nodes[0].doc.get(ROOT, type=pycrdt.Map))
    if slots < len({(w.writer, w.record, w.field) for w in writes}):
        event("some slots were pruned")
    expected = {r: lww_model(writes, r) for r in RECORDS}
    for view in checked_views(cluster):
        assert {r: view.get(r) for r in RECORDS} == expected
        assert sorted(view.records()) == sorted(r for r in RECORDS if expected[r] is not None)


def _exchange_all(cluster: Cluster, order: Callable[[int], list[int]] | None = None) -> None:
    for i in range(len(cluster.nodes)):
        ks = list(range(len(cluster.updates)))
        for k in order(i) if order else ks:
            cluster.deliver(i, k)


def test_lww_later_hlc_beats_higher_client_id_unlike_plain_ymap() -> None:
    """Why per-writer slots exist: Y.Map settles concurrent sets by client id, not time.

    Would fail if LWWMap read a field as "the slot of the highest client id"
    (pycrdt's own rule) instead of "the greatest HLC timestamp".
    """
    low, high = 3, 4_000_000_000

    # 1. Plain pycrdt: the low-id replica writes *later*, concurrently; the
    #    high-id replica's older value wins on both sides.
    plain = Cluster.build([low, high], lambda doc: doc.get("m", type=pycrdt.Map))
    plain.local(1, lambda m: m.__setitem__("price", "early, high client id"))
    plain.local(0, lambda m: m.__setitem__("price", "late, low client id"))
    _exchange_all(plain)
    assert [m["price"] for m in plain.views] == ["early, high client id"] * 2

    # 2. LWWMap, same client ids, same concurrency: the later HLC wins everywhere,
    #    whatever the delivery order.
    for reverse in (False, True):
        lww = Cluster.build([low, high, 50], LWWMap)
        early = Timestamp(1_700_000_000_000, 0, "tienda-high")
        late = Timestamp(1_700_000_060_000, 0, "tienda-low")

        def set_early(v: LWWMap, ts: Timestamp = early) -> None:
            v.set("CAFE", {"price_cents": 450}, ts)

        def set_late(v: LWWMap, ts: Timestamp = late) -> None:
            v.set("CAFE", {"price_cents": 500}, ts)

        lww.local(1, set_early)
        lww.local(0, set_late)
        _exchange_all(lww, (lambda i: [1, 0]) if reverse else None)
        for view in lww.views:
            assert view.get("CAFE") == {"price_cents": 500}
            winner = view.winner("CAFE", "price_cents")
            assert winner is not None and winner.writer == low and winner.timestamp == late
            # The concurrent older write is kept as a loser (nobody had seen it).
            losers = view.concurrent_losers("CAFE")["price_cents"]
            assert [(w.writer, w.value) for w in losers] == [(high, 450)]


def test_lww_equal_timestamps_tie_broken_by_client_id() -> None:
    ts = Timestamp(1_000, 0, "same-store")  # two incarnations of one store, same clock
    cluster = Cluster.build([10, 20], LWWMap)
    cluster.local(0, lambda v: v.set("r", {"f": "from 10"}, ts))
    cluster.local(1, lambda v: v.set("r", {"f": "from 20"}, ts))
    _exchange_all(cluster)
    assert [v.get("r") for v in cluster.views] == [{"f": "from 20"}] * 2


def test_lww_concurrent_edits_of_different_fields_both_survive() -> None:
    cluster = Cluster.build([900, 5], LWWMap)
    t0 = Timestamp(1_000, 0, "a")
    cluster.local(0, lambda v: v.set("CAFE", {"name": "Café", "price_cents": 450}, t0))
    _exchange_all(cluster)
    # Concurrently: replica 0 renames (later), replica 1 reprices (earlier).
    cluster.local(0, lambda v: v.set("CAFE", {"name": "Café molido"}, Timestamp(3_000, 0, "a")))
    cluster.local(1, lambda v: v.set("CAFE", {"price_cents": 480}, Timestamp(2_000, 0, "b")))
    _exchange_all(cluster, lambda i: list(reversed(range(len(cluster.updates)))))
    for view in cluster.views:
        assert view.get("CAFE") == {"name": "Café molido", "price_cents": 480}


def _slots(node: CapturedDoc, record: str, field_name: str) -> set[int]:
    prefix = record + SEP + field_name + SEP
    root = node.doc.get(ROOT, type=pycrdt.Map)
    return {int(k[len(prefix) :]) for k in root if k.startswith(prefix)}


def test_lww_never_touches_another_writers_slot_and_tells_races_from_supersedes() -> None:
    a, b, c = 100, 200, 300
    cluster = Cluster.build([a, b, c], LWWMap)
    cluster.local(0, lambda v: v.set("r", {"f": "a1"}, Timestamp(1_000, 0, "A")))
    cluster.deliver(1, 0)  # B has seen A's write ...
    cluster.deliver(2, 0)  # ... and so has C
    # B supersedes it, knowingly; C concurrently writes later than B.
    cluster.local(1, lambda v: v.set("r", {"f": "b1"}, Timestamp(2_000, 0, "B")))
    assert _slots(cluster.nodes[1], "r", "f") == {a, b}  # A's slot is A's: never deleted
    assert cluster.views[1].concurrent_losers("r") == {}
    cluster.local(2, lambda v: v.set("r", {"f": "c1"}, Timestamp(3_000, 0, "C")))
    # A overwrites its own slot, having seen only its own write.
    cluster.local(0, lambda v: v.set("r", {"f": "a2"}, Timestamp(4_000, 0, "A")))
    _exchange_all(cluster, lambda i: list(reversed(range(len(cluster.updates)))))
    cluster.assert_same_docs()
    for view in cluster.views:
        assert view.get("r") == {"f": "a2"}
        assert {w.value for w in view.concurrent_losers("r")["f"]} == {"b1", "c1"}
    # Someone who has seen everything writes: no race is left, every slot stays.
    cluster.local(1, lambda v: v.set("r", {"f": "b2"}, Timestamp(5_000, 0, "B")))
    _exchange_all(cluster)
    for i, view in enumerate(cluster.views):
        assert view.get("r") == {"f": "b2"}
        assert view.concurrent_losers("r") == {}
        assert _slots(cluster.nodes[i], "r", "f") == {a, b, c}


def test_lww_tombstones() -> None:
    cluster = Cluster.build([1, 2], LWWMap)
    cluster.local(0, lambda v: v.set("r", {"name": "x", "price": 1}, Timestamp(1_000, 0, "A")))
    _exchange_all(cluster)
    # Concurrently: B deletes at 2000, A edits price at 3000 (later) and name... not at all.
    cluster.local(1, lambda v: v.delete("r", Timestamp(2_000, 0, "B")))
    assert cluster.views[1].get("r") is None
    assert not cluster.views[1].exists("r")
    cluster.local(0, lambda v: v.set("r", {"price": 2}, Timestamp(3_000, 0, "A")))
    _exchange_all(cluster)
    for view in cluster.views:
        assert view.get("r") == {"price": 2}  # revived with the fields written after the delete
    # A later delete wins over an earlier concurrent edit.
    cluster.local(0, lambda v: v.set("r", {"name": "y"}, Timestamp(4_000, 0, "A")))
    cluster.local(1, lambda v: v.delete("r", Timestamp(5_000, 0, "B")))
    _exchange_all(cluster)
    for view in cluster.views:
        assert view.get("r") is None
        assert list(view.records()) == []


def test_lww_values_are_exact() -> None:
    cluster = Cluster.build([1, 2], LWWMap)
    fields = {"max": MAX_SAFE_INTEGER, "min": -MAX_SAFE_INTEGER, "zero": 0, "nested": [1, {"a": 2}]}
    cluster.local(0, lambda v: v.set("r", fields, Timestamp(1_000, 0, "A")))
    _exchange_all(cluster)
    got = cluster.views[1].get("r")
    assert got == fields
    assert got is not None and type(got["max"]) is int
    for bad in (float("nan"), float("inf"), object(), {1, 2}):

        def set_bad(v: LWWMap, b: object = bad) -> None:
            v.set("r", {"max": b}, Timestamp(2_000, 0, "A"))

        with pytest.raises(InvalidArgument):
            cluster.local(0, set_bad)
    assert cluster.views[0].get("r") == fields


# -- Ledger -------------------------------------------------------------------------------

SALE_IDS = [f"s{n}" for n in range(6)]


def sale_record(sale_id: str) -> dict[str, Any]:
    return {"lines": [[f"SKU-{sale_id}", 1, 450]], "loc": "tienda", "n": int(sale_id[1:])}


@pytest.mark.parametrize("delivery", DELIVERIES)
@SETTINGS
@given(client_ids=client_id_sets, data=st.data())
def test_ledger_converges_to_union_of_records(
    delivery: str, client_ids: list[int], data: st.DataObject
) -> None:
    cluster = Cluster.build(client_ids, Ledger, delivery)
    added: set[str] = set()

    def op(i: int) -> None:
        sale_id = data.draw(st.sampled_from(SALE_IDS), label="sale id")
        already = cluster.views[i].get(sale_id) is not None
        before = len(cluster.updates)
        assert cluster.local(i, lambda v: v.add(sale_id, sale_record(sale_id))) is (not already)
        assert (len(cluster.updates) > before) is (not already)  # a no-op emits nothing
        added.add(sale_id)

    cluster.random_steps(data, op, 30)
    cluster.deliver_everything(data)

    cluster.assert_same_docs()
    for view in checked_views(cluster):
        assert sorted(view.ids()) == sorted(added)
        assert len(view) == len(added)
        for sale_id in SALE_IDS:
            assert view.get(sale_id) == (sale_record(sale_id) if sale_id in added else None)


def test_ledger_same_id_same_content_is_noop_different_content_refused() -> None:
    cluster = Cluster.build([1, 2], Ledger)
    record = {"lines": [["CAFE", 2, MAX_SAFE_INTEGER]], "at": 1}
    assert cluster.local(0, lambda v: v.add("s1", record)) is True
    assert len(cluster.updates) == 1
    assert cluster.local(0, lambda v: v.add("s1", dict(record))) is False
    assert len(cluster.updates) == 1  # nothing written
    with pytest.raises(InvalidArgument):
        cluster.local(0, lambda v: v.add("s1", {**record, "at": 2}))
    assert len(cluster.updates) == 1
    assert cluster.views[0].get("s1") == record

    # The other replica receives it (twice) and behaves the same.
    cluster.deliver(1, 0)
    cluster.deliver(1, 0)
    assert cluster.views[1].get("s1") == record
    assert cluster.local(1, lambda v: v.add("s1", record)) is False
    with pytest.raises(InvalidArgument):
        cluster.local(1, lambda v: v.add("s1", {"lines": []}))
    assert cluster.views[1].get("s1") == record
    assert len(cluster.updates) == 1

    # Annotations are write-once too, and need an existing record.
    assert cluster.local(1, lambda v: v.annotate("s1", "void", {"by": "admin"})) is True
    assert cluster.local(1, lambda v: v.annotate("s1", "void", {"by": "admin"})) is False
    with pytest.raises(InvalidArgument):
        cluster.local(1, lambda v: v.annotate("s1", "void", {"by": "other"}))
    with pytest.raises(InvalidArgument):
        cluster.local(1, lambda v: v.annotate("missing", "void", {}))
    _exchange_all(cluster)
    for view in cluster.views:
        assert view.annotation("s1", "void") == {"by": "admin"}
        assert list(view.ids()) == ["s1"]
        stored = view.doc.get(ROOT, type=pycrdt.Map)["s1"]
        assert json.loads(stored)["lines"][0][2] == MAX_SAFE_INTEGER  # exact, JSON text


# -- pycrdt 0.14 behaviour the views and the sync layer must live with ---------------------
#
# These pin what pycrdt 0.14.13 (yrs) does with an update whose writer has an
# earlier update the receiver lacks (a same-client clock gap).  Yjs would hold
# such an update back until the gap closes; pycrdt does not.  If one of these
# starts failing after a pycrdt upgrade, re-check DESIGN.md's pycrdt facts and
# the ``raw`` delivery mode above.


def _writer_updates(*writes: tuple[str, Any]) -> list[bytes]:
    """One update per transaction of a single writer (client id 2)."""
    writer = CapturedDoc(2)
    root = writer.doc.get(ROOT, type=pycrdt.Map)
    for key, value in writes:
        with writer.local():
            root[key] = value
    return [u.data for u in writer.outbox]


def test_pycrdt_0_14_gap_update_is_visible_before_the_state_vector_covers_it() -> None:
    u0, u1 = _writer_updates(("x", 1), ("y", 2))
    receiver = CapturedDoc(1)
    root = receiver.doc.get(ROOT, type=pycrdt.Map)
    receiver.receive(u1)
    assert dict(root.items()) == {"y": 2.0}  # integrated at once ...
    assert clock_of(receiver.doc, 2) == 0  # ... although the state vector says "nothing from 2"
    receiver.receive(u0)
    assert dict(root.items()) == {"x": 1.0, "y": 2.0}
    assert clock_of(receiver.doc, 2) == 2


def test_pycrdt_0_14_gap_delete_is_not_reported() -> None:
    """Deleting an item that arrived across a gap fires a map event without its key."""
    u0, u1 = _writer_updates(("x", 1), ("y", 2))
    receiver = CapturedDoc(1)
    root = receiver.doc.get(ROOT, type=pycrdt.Map)
    seen: list[dict[str, Any]] = []
    sub = root.observe(lambda e: seen.append(dict(e.keys)))
    receiver.receive(u1)
    assert seen == [{"y": {"action": "add", "newValue": 2.0}}]
    with receiver.local():
        del root["y"]
    assert "y" not in root
    assert seen[1:] == [{}]  # the deletion happened, no observer heard of it
    root.unobserve(sub)
    receiver.receive(u0)
    assert dict(root.items()) == {"x": 1.0}


def test_pycrdt_0_14_out_of_order_updates_can_be_stranded_until_state_vector_sync() -> None:
    # Update 2 overwrites the key of update 0; updates 1 and 2 arrive before 0.
    u0, u1, u2 = _writer_updates(("cafe", [1, 0]), ("leche", [1, 0]), ("cafe", [2, 0]))
    receiver = CapturedDoc(1)
    root = receiver.doc.get(ROOT, type=pycrdt.Map)
    for update in (u1, u2, u0, u0, u1):
        receiver.receive(update)
    assert dict(root.items()) == {"leche": [1.0, 0.0]}  # "cafe" is missing for good
    assert clock_of(receiver.doc, 2) == 2  # but the state vector tells: clock 2 is not in
    # The reconnect path (a state-vector diff) repairs it.
    writer: pycrdt.Doc[Any] = pycrdt.Doc()
    for update in (u0, u1, u2):
        writer.apply_update(update)
    receiver.receive(writer.get_update(receiver.doc.get_state()))
    assert dict(root.items()) == {"cafe": [2.0, 0.0], "leche": [1.0, 0.0]}
    # Held back in writer order instead, nothing is stranded.
    ordered = CapturedDoc(3)
    for data, start in ((u1, 1), (u2, 2), (u0, 0)):
        ordered.receive_in_writer_order(LocalUpdate(2, start, data))
    assert dict(ordered.doc.get(ROOT, type=pycrdt.Map).items()) == dict(root.items())


def test_lww_prune_after_gap_update_does_not_raise_and_keeps_index_right() -> None:
    """LWWMap prunes a slot that arrived across a gap (no delete event): no KeyError."""
    cluster = Cluster.build([1, 2], LWWMap, delivery="raw")
    cluster.local(1, lambda v: v.set("a", {"f": "first"}, Timestamp(1_000, 0, "B")))
    cluster.local(1, lambda v: v.set("p", {"price": 50}, Timestamp(1_001, 0, "B")))
    cluster.deliver(0, 1)  # the second update of B, without the first
    assert cluster.views[0].get("p") == {"price": 50}
    cluster.local(0, lambda v: v.set("p", {"price": 60}, Timestamp(2_000, 0, "A")))
    cluster.local(0, lambda v: v.set("p", {"price": 70}, Timestamp(3_000, 0, "A")))
    cluster.local(0, lambda v: v.delete("p", Timestamp(4_000, 0, "A")))
    cluster.local(0, lambda v: v.set("p", {"price": 80}, Timestamp(5_000, 0, "A")))
    cluster.assert_indexes_match_docs()
    assert cluster.views[0].get("p") == {"price": 80}
    assert cluster.views[0].concurrent_losers("p") == {}
    cluster.deliver(0, 0)
    cluster.catch_up()
    cluster.assert_same_docs()
    for view in cluster.fresh_views():
        assert view.get("p") == {"price": 80}
        assert view.get("a") == {"f": "first"}
