"""The ownership rule as an attacker tries it: generated updates from an authenticated writer.

A victim's data (stock slots, catalog fields, sales) sits in a relay document.
Mallory, with a valid token and the victim's data merged, makes arbitrary raw
changes to the document's root map (her own keys and the victim's, honest and
garbage values, deletes, clocks ten years ahead, forged client ids) and sends
what the relay lacks.  Whatever :func:`check_update` accepts, applied to the
relay's document, leaves every key and value of the victim unchanged, and the
replicas' readers never raise on it.
"""

from __future__ import annotations

import json
from typing import Any

import pycrdt
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tiendasync.crdt.counter import PNCounter
from tiendasync.crdt.keys import ROOT
from tiendasync.crdt.ledger import Ledger
from tiendasync.crdt.lww import LWWMap
from tiendasync.model.docnames import parse_doc
from tiendasync.model.hlc import Timestamp
from tiendasync.model.sales import new_sale_id
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.protocol.yjs_update import parse_update, restrict_deletes
from tiendasync.relay.ownership import DEFAULT_MAX_DRIFT_MS, Writer, check_update, deleted_in

#: The relay's clock in these tests: 2026-06-15 12:00 UTC.
NOW_MS = 1_781_524_800_000
VICTIM, MALLORY = 1111, 2222
MALLORY_WRITER = Writer(frozenset({MALLORY}), "mallory", location="t1")
DOCS = ("stock/t1", "catalog", "sales/t1/2026-06", "locations", "conflicts", "resolutions/t1")


def _victim_doc(doc_name: str) -> pycrdt.Doc[Any]:
    """The relay's document holding the victim's honest writes (one of them deleted)."""
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=VICTIM)
    kind = parse_doc(doc_name).data_type
    stamp = Timestamp(NOW_MS - 60_000, 0, "victim")
    with doc.transaction():
        if kind == "stock":
            PNCounter(doc).add("CAFE", 7)
            PNCounter(doc).add("TE", -2)
        elif kind == "sales":
            Ledger(doc).add(
                new_sale_id(NOW_MS - 1000, 1, VICTIM), {"by": "victim", "l": [["CAFE", 2, 450]]}
            )
        else:
            LWWMap(doc).set("CAFE", {"name": "Café", "price_cents": 450}, stamp)
    with doc.transaction():  # a second write over the first: the doc has a delete set
        if kind == "stock":
            PNCounter(doc).add("CAFE", 1)
        elif kind != "sales":
            LWWMap(doc).set("CAFE", {"price_cents": 475}, stamp._replace(counter=1))
    return doc


def _raw(doc: pycrdt.Doc[Any]) -> dict[str, Any]:
    return dict(doc.get(ROOT, type=pycrdt.Map).to_py() or {})


VICTIM_KEYS = st.sampled_from(["CAFE|1111", "TE|1111", "CAFE|price_cents|1111", "CAFE|name|1111"])
OWN_KEYS = st.sampled_from(
    ["CAFE|2222", "CAFE|price_cents|2222", "CAFE|name|2222", "t1|name|2222", "t2|name|2222"]
)
WALLS = st.sampled_from(
    [NOW_MS - 1000, NOW_MS, NOW_MS + DEFAULT_MAX_DRIFT_MS + 1, NOW_MS + 10 * 365 * 86_400_000]
)
VALUES = st.one_of(
    st.lists(
        st.one_of(st.integers(-3, 2**53 - 1), st.floats(allow_nan=False)), min_size=2, max_size=2
    ),  # counter slots, sane or not
    st.builds(
        lambda wall, rid, value, field: [wall, 0, rid, value, field, None],
        WALLS,
        st.sampled_from(["mallory", "victim"]),
        st.sampled_from([json.dumps(500), json.dumps("x"), "not json", json.dumps(-1), "true"]),
        st.sampled_from(["price_cents", "name", "\x00deleted"]),
    ),
    st.text(max_size=20),
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.none(),
    st.builds(
        lambda wall, by: json.dumps({"by": by, "l": [["CAFE", 1, 100]]}),
        WALLS,
        st.sampled_from(["mallory", "victim"]),
    ),
)
SALE_KEYS = st.builds(
    lambda wall, writer, tail: new_sale_id(wall, 1, writer) + tail,
    WALLS,
    st.sampled_from([MALLORY, VICTIM]),
    st.sampled_from(["", "|void|2222", "|void|1111", "|remap:TE|2222"]),
)
ACTIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("set"),
            st.one_of(VICTIM_KEYS, OWN_KEYS, SALE_KEYS, st.text(max_size=12)),
            VALUES,
        ),
        st.tuples(st.just("delete"), st.one_of(VICTIM_KEYS, OWN_KEYS), st.none()),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc_name=st.sampled_from(DOCS),
    actions=ACTIONS,
    as_client=st.sampled_from([MALLORY, MALLORY, VICTIM, 3333]),
)
def test_nothing_of_another_writer_changes_whatever_an_attacker_sends(
    doc_name: str, actions: list[tuple[str, str, Any]], as_client: int
) -> None:
    relay_doc = _victim_doc(doc_name)
    before = _raw(relay_doc)
    attacker: pycrdt.Doc[Any] = pycrdt.Doc(client_id=as_client)
    attacker.apply_update(relay_doc.get_update())
    root = attacker.get(ROOT, type=pycrdt.Map)
    with attacker.transaction():
        for op, key, value in actions:
            if op == "set":
                root[key] = value
            elif key in root:
                del root[key]
    update = bytes(attacker.get_update(relay_doc.get_state()))
    parsed = parse_update(update, items=True)
    relay_deletes = list(parse_update(bytes(relay_doc.get_update())).deletes)
    refusal = check_update(
        parse_doc(doc_name),
        parsed,
        MALLORY_WRITER,
        known=_clocks(relay_doc),
        deleted=deleted_in(relay_deletes),
        now_ms=NOW_MS,
    )
    event("refused" if refusal is not None else f"accepted into {doc_name}")
    if refusal is not None:
        assert refusal.reason and 4000 <= refusal.code < 5000
        return
    relay_doc.apply_update(update)
    after = _raw(relay_doc)
    assert {k: after.get(k) for k in before} == before, (doc_name, actions)
    # what was accepted is readable, and no timestamp runs ahead of the relay's clock
    kind = parse_doc(doc_name).data_type
    if kind == "stock":
        reader = PNCounter(relay_doc)
        assert reader.skipped == 0 and reader.value("CAFE") == 8 + sum(
            int(v[0]) - int(v[1]) for k, v in after.items() if k == "CAFE|2222"
        )
    elif kind == "sales":
        ledger = Ledger(relay_doc)
        assert all(ledger.get(sale_id) is not None for sale_id in ledger.ids())
    else:
        lww = LWWMap(relay_doc)
        assert lww.skipped == 0
        for record in list(lww.records()):
            lww.get(record)
        for key, slot in after.items():
            if key not in before:
                assert slot[0] <= NOW_MS + DEFAULT_MAX_DRIFT_MS and slot[2] == "mallory"
    assert kind not in ("conflicts",) or after == before


def _clocks(doc: pycrdt.Doc[Any]) -> dict[int, int]:
    return decode_state_vector(bytes(doc.get_state()))


@settings(max_examples=200, deadline=None)
@given(
    writes=st.lists(
        st.tuples(st.sampled_from([1, 2, 3]), st.sampled_from(["a", "b", "c"]), st.booleans()),
        min_size=1,
        max_size=12,
    ),
    keep=st.sets(st.sampled_from([1, 2, 3])),
)
def test_restrict_deletes_keeps_the_items_and_only_the_kept_clients_deletes(
    writes: list[tuple[int, str, bool]], keep: set[int]
) -> None:
    docs = {c: pycrdt.Doc[Any](client_id=c) for c in (1, 2, 3)}
    for client, key, delete in writes:
        doc = docs[client]
        for other in docs.values():  # every writer sees everything so far
            doc.apply_update(other.get_update())
        root = doc.get(ROOT, type=pycrdt.Map)
        if delete and key in root:
            del root[key]
        else:
            root[key] = client
    merged: pycrdt.Doc[Any] = pycrdt.Doc()
    for doc in docs.values():
        merged.apply_update(doc.get_update())
    full = bytes(merged.get_update())
    cut = restrict_deletes(full, keep.__contains__)
    before, after = parse_update(full), parse_update(cut)
    assert after.structs == before.structs
    assert {(r.client, r.clock, r.length) for r in after.deletes} == {
        (r.client, r.clock, r.length) for r in before.deletes if r.client in keep
    }
    fresh: pycrdt.Doc[Any] = pycrdt.Doc()
    fresh.apply_update(cut)
    assert _clocks(fresh) == _clocks(merged)
