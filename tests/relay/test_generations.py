"""Document generations at the relay: the ownership rule for seeded copies, the store of
record's generations (both stores), and the relay's rollover and carry paths."""

from __future__ import annotations

import json
from typing import Any

import pycrdt
import pytest

from tiendasync.crdt.keys import ROOT, SEP
from tiendasync.model.docnames import parse_doc
from tiendasync.protocol.yjs_update import parse_update
from tiendasync.relay.ownership import Writer, check_update

NOW_MS = 1_781_524_800_000


def _slot_update(writer: int, key: str, value: list[Any]) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=writer)
    with doc.transaction():
        doc.get(ROOT, type=pycrdt.Map)[key] = value
    return doc.get_update()


@pytest.mark.parametrize("relay", [False, True])
def test_only_the_relays_writer_may_write_a_seeded_copy(relay: bool) -> None:
    """A copy names another writer as its origin (and carries its replica id): from a
    store, that would pass its edit off as someone else's, so only the relay may."""
    me = 2222
    copy = [NOW_MS - 1000, 0, "victim", json.dumps(500), "price_cents", None, 1111]
    data = _slot_update(me, "CAFE" + SEP + "price_cents" + SEP + str(me), copy)
    writer = Writer(frozenset({me}), "relay" if relay else "mallory", relay=relay)
    refusal = check_update(
        parse_doc("catalog"),
        parse_update(data, items=True),
        writer,
        known={},
        deleted=lambda r: False,
        now_ms=NOW_MS,
    )
    assert (refusal is None) is relay
    if not relay:
        assert (
            refusal is not None
            and "[wall_ms, counter, replica_id, json, field, seen]" in refusal.reason
        )
    bad = _slot_update(me, "CAFE" + SEP + "price_cents" + SEP + str(me), [*copy[:6], -1])
    assert (
        check_update(
            parse_doc("catalog"),
            parse_update(bad, items=True),
            writer,
            known={},
            deleted=lambda r: False,
            now_ms=NOW_MS,
        )
        is not None
    )  # a negative origin is not a writer, even from the relay
