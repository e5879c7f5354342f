"""A foreign value merged into a replica never fails a read, a sale or a sync:
it is skipped, and ``status.skipped_values`` says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pycrdt

from tiendasync import Replica
from tiendasync.crdt.keys import ROOT


def _raw_update(client_id: int, entries: dict[str, Any]) -> bytes:
    doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
    with doc.transaction():
        root = doc.get(ROOT, type=pycrdt.Map)
        for key, value in entries.items():
            root[key] = value
    return bytes(doc.get_update())


def test_garbage_from_another_writer_is_skipped_and_reported(tmp_path: Path) -> None:
    r = Replica.open(tmp_path / "t.db", tenant="acme", replica_id="t1", location="tienda-1")
    try:
        r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
        r.inventory.receive("CAFE", 5)
        assert r.status.skipped_values == 0
        # what a relay without the ownership gate (or a corrupt file) could deliver
        r.apply_remote("stock/tienda-1", _raw_update(9001, {"CAFE|9001": pycrdt.Array(["abc", 1])}))
        r.apply_remote("catalog", _raw_update(9001, {"CAFE|price_cents|9001": "not a slot"}))
        month = "2026-01"
        r.apply_remote(f"sales/tienda-1/{month}", _raw_update(9001, {"bogus": "not json {"}))
        assert r.inventory.stock("CAFE") == 5
        assert r.catalog.get("CAFE") == {"name": "Café", "price_cents": 450}
        r.record_sale([("CAFE", 1)])
        assert r.inventory.stock("CAFE") == 4
        r.sales.list(limit=10)  # reading the sales with garbage among them
        skipped = r.status.skipped_values
        assert skipped == 3, skipped  # the stock slot, the catalog slot, the sale record
        r.sales.list(limit=10)
        assert r.status.skipped_values == skipped  # counted once, not per read
        json.dumps(r.status.__dict__)
    finally:
        r.close()
