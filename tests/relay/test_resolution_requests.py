"""Stores ask, the relay resolves: resolution requests through ``resolutions/<location>``.

Only the relay writes ``conflicts``.  A store's ``queue.resolve`` records a
request under its own location; the relay's writer applies it (once) when the
conflict is at that location or involves the requesting replica, and records
a refusal in the conflict's history otherwise.  Deterministic: the simulated
network drives the relay's core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.simnet import SimNet
from tiendasync.store.conflicts import Conflict


def _overdrawn(net: SimNet) -> Conflict:
    """Store ``a`` (tienda-1) sells 4 of 3 in stock: the relay opens a conflict."""
    net.relay.store.set_replica_config(net.tenant, "a", {"write": ["catalog"]})
    a = net.add_replica("a", "tienda-1", bound=True).replica
    a.catalog.put("CAFE", {"name": "Café", "price_cents": 100})
    a.inventory.receive("CAFE", 3)
    a.record_sale([("CAFE", 4, 100)])
    net.connect("a")
    net.run()
    (conflict,) = [c for c in a.conflicts.list(status="open") if c.sku == "CAFE"]
    return conflict


def test_a_store_request_is_applied_by_the_relay_once(tmp_path: Path) -> None:
    net = SimNet(tmp_path, seed=3)
    try:
        conflict = _overdrawn(net)
        a = net.replica("a")
        net.disconnect("a")
        pending = a.queue.resolve(conflict.id, "adjust", quantity=1, note="found one")
        # offline: still open here, with the request showing
        assert pending.status == "open" and pending.requested is not None
        assert pending.requested["action"] == "adjust"
        assert pending.requested["params"] == {"quantity": 1}
        net.connect("a")
        net.run()
        done = a.conflicts.get(conflict.id)
        assert done.status == "resolved" and done.requested is None
        assert a.inventory.stock("CAFE") == 0
        (event,) = [h for h in done.history if h.get("event") == "resolved"]
        assert event["location"] == "tienda-1" and event["requested_by"] == "a"
        central = net.relay.central()
        assert central.replica.inventory.stock("CAFE", location="tienda-1") == 0
        # a full re-sync re-delivers the request: it is not applied twice
        net.disconnect("a")
        net.connect("a", full=True)
        net.run()
        assert central.replica.inventory.stock("CAFE", location="tienda-1") == 0
        assert (
            len(
                [
                    h
                    for h in central.replica.conflicts.get(conflict.id).history
                    if h.get("event") == "resolved"
                ]
            )
            == 1
        )
    finally:
        net.close()


def test_a_request_for_another_locations_conflict_is_refused(tmp_path: Path) -> None:
    net = SimNet(tmp_path, seed=4)
    try:
        conflict = _overdrawn(net)
        b = net.add_replica("b", "tienda-2", bound=True).replica
        net.connect("b")
        net.run()
        assert b.conflicts.get(conflict.id).status == "open"
        b.queue.resolve(conflict.id, "adjust", quantity=1)
        net.run()
        seen = b.conflicts.get(conflict.id)
        assert seen.status == "open" and seen.requested is None
        (refusal,) = [h for h in seen.history if h.get("event") == "request_refused"]
        assert "tienda-2" in refusal["reason"] and refusal["replica"] == "b"
        assert net.relay.central().replica.inventory.stock("CAFE", location="tienda-1") == -1
    finally:
        net.close()


def test_a_hostile_request_with_bad_params_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """A store that skips ``resolve``'s checks (a modified till) and writes its
    request by hand gets a refusal in the history, never a compensating write."""
    net = SimNet(tmp_path, seed=5)
    try:
        conflict = _overdrawn(net)
        a = net.replica("a")
        central = net.relay.central().replica
        hostile: list[tuple[str, Any]] = [
            ("adjust", {"quantity": "lots"}),
            ("adjust", {"quantity": 1, "sku": "TE"}),  # a parameter the action does not take
            ("recount", {"count": -4}),
            ("void", {"sale_ids": ["not-a-sale-of-this-conflict"]}),
        ]
        for number, (action, params) in enumerate(hostile, start=1):
            a.conflicts._request(conflict, action, params, by=None, note=None)
            net.run()
            record = central.conflicts.get(conflict.id)
            refusals = [h for h in record.history if h.get("event") == "request_refused"]
            assert len(refusals) == number, (action, params)
            assert record.status == "open"
            assert central.inventory.stock("CAFE", location="tienda-1") == -1
        # the store sees the refusals, and an honest request still works afterwards
        seen = a.conflicts.get(conflict.id)
        assert len([h for h in seen.history if h.get("event") == "request_refused"]) == 4
        a.queue.resolve(conflict.id, "adjust", quantity=1)
        net.run()
        resolved = central.conflicts.get(conflict.id)
        assert resolved.status == "resolved"
        # not even a request: an unknown action or params that are not an object
        # never pass the relay's gate, so they reach no conflict's history
        gated: list[tuple[str, Any]] = [("launch", {}), ("recount", ["count", 0])]
        for action, params in gated:
            a.conflicts._request(conflict, action, params, by=None, note=None)
            net.run()
            assert central.conflicts.get(conflict.id).history == resolved.history
            assert central.inventory.stock("CAFE", location="tienda-1") == 0
    finally:
        net.close()
