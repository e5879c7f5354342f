"""The two sync state machines driven through a simulated network (tests/simnet.py).

Real replicas (SQLite files), the real ``ReplicaSync`` and ``RelayCore`` over a
SQLite relay store with a central writer; only the wire is simulated: every
message is the bytes of one ``data_to_send()`` call, delivered, reordered,
duplicated, lost or cut by the test.  No sockets, no asyncio, deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.simnet import DOWN, UP, SimNet, decode_frames, frame_types, replica_snapshot
from tiendasync import Replica
from tiendasync.model.config import DEFAULT_PRIORITIES
from tiendasync.model.docnames import data_type_of
from tiendasync.protocol import FrameType
from tiendasync.protocol.statevector import decode_state_vector

LOCS = ["tienda-1", "tienda-2"]


@pytest.fixture
def net(tmp_path: Path) -> Iterator[SimNet]:
    n = SimNet(tmp_path, seed=1234)
    yield n
    n.close()


def two(net: SimNet) -> tuple[Any, Any]:
    a = net.add_replica("a", "tienda-1").replica
    b = net.add_replica("b", "tienda-2").replica
    a.locations.put("tienda-2")
    b.locations.put("tienda-1")
    return a, b


def frames(
    messages: list[bytes], kind: FrameType | None = None
) -> list[tuple[FrameType, list[Any]]]:
    out = [f for m in messages for f in decode_frames(m)]
    return [f for f in out if kind is None or f[0] is kind]


def doc_name(field: Any) -> Any:
    """The document a frame names: the first mention is ``(alias, name)``, later the alias."""
    return field[1] if isinstance(field, tuple) else field


def update_docs(messages: list[bytes]) -> list[str]:
    return [doc_name(fields[0]) for _, fields in frames(messages, FrameType.UPDATE)]


def priority_key(doc: str, priorities: dict[str, int] = DEFAULT_PRIORITIES) -> tuple[int, str]:
    return -priorities.get(data_type_of(doc), 0), doc


def statuses(r: Replica) -> dict[str, int]:
    return r.queue.counts()


def assert_converged(net: SimNet) -> None:
    assert net.divergences() == []
    assert net.content_divergences() == []
    central = net.relay.central().replica
    states = {name: replica_snapshot(node.replica, LOCS) for name, node in net.nodes.items()}
    states["relay"] = replica_snapshot(central, LOCS)
    first = next(iter(states.values()))
    for name, state in states.items():
        assert state == first, f"{name} differs"


# -- handshake and catch-up ---------------------------------------------------------------


def test_handshake_and_catch_up_in_priority_order(net: SimNet) -> None:
    a, b = two(net)
    a.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
    a.inventory.receive("CAFE", 10)
    sale = a.record_sale([("CAFE", 2)])

    link = net.connect("a")
    assert link is not None
    [hello] = link.up
    assert frame_types(hello) == ["HELLO"]
    _, fields = decode_frames(hello)[0]
    _version, tenant, replica_id, _token, client_id, svs, flags = fields
    assert (tenant, replica_id, client_id) == ("acme", "a", a.client_id)
    assert set(svs) == set(a.doc_names())
    assert flags == {
        "full": False,
        "past": [],
        "config": a.config.to_dict(),
        "sales_from": a.sales_floor(),
        # every counter and LWW document held, at generation 0 (none rolled over)
        "gens": {"catalog": 0, "locations": 0, "stock/tienda-1": 0},
    }

    net.deliver(link, UP)
    [welcome] = link.down
    assert frame_types(welcome) == ["WELCOME", "SYNCED"]  # the relay holds nothing yet
    net.deliver(link, DOWN)
    [catch_up] = link.up
    docs = update_docs([catch_up])
    assert set(docs) == {"catalog", "locations", "stock/tienda-1", sale_doc(a)}
    assert docs == sorted(docs, key=priority_key)
    assert docs[0].startswith("sales/")  # sales first, then stock, then catalog

    net.run()
    assert a.queue.pending_count() == 0

    # A replica with nothing gets the relay's catch-up, also in priority order.
    link_b = net.connect("b")
    assert link_b is not None
    net.deliver(link_b, UP)
    [answer] = link_b.down
    types = frame_types(answer)
    assert types[0] == "WELCOME" and types[-1] == "SYNCED"
    relay_docs = update_docs([answer])
    assert relay_docs == sorted(relay_docs, key=priority_key)
    assert relay_docs[0].startswith("sales/")
    net.run()
    assert b.sales.get(sale.id) is not None
    assert b.inventory.stock("CAFE", location="tienda-1") == 8
    assert_converged(net)


def sale_doc(r: Replica) -> str:
    [doc] = [d for d in r.doc_names() if d.startswith("sales/")]
    return doc


def test_central_config_changes_the_catch_up_order(net: SimNet) -> None:
    a, _ = two(net)
    a.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
    a.record_sale([("CAFE", 1)])
    priorities = {**DEFAULT_PRIORITIES, "catalog": 20}
    net.relay.store.set_replica_config("acme", "a", {"priorities": priorities})
    link = net.connect("a")
    assert link is not None
    net.deliver(link, UP)
    net.deliver(link, DOWN)  # WELCOME carries the config; the replica adopts it
    docs = update_docs(link.up)
    assert docs[0] == "catalog"
    assert docs == sorted(docs, key=lambda d: priority_key(d, priorities))
    assert a.config.priorities["catalog"] == 20


# -- live streaming and acknowledgements ----------------------------------------------------


def test_live_streaming_both_ways(net: SimNet) -> None:
    a, b = two(net)
    a.catalog.put("PAN", {"name": "Pan", "price_cents": 120})
    la, lb = net.connect("a"), net.connect("b")
    assert la is not None and lb is not None
    net.run()
    assert la.sync.conn.state == lb.sync.conn.state == "live"

    sale = a.record_sale([("PAN", 3)])
    [message] = la.up  # streamed at once, one message per committed write
    assert set(update_docs([message])) == {sale_doc(a), "stock/tienda-1"}
    net.deliver(la, UP)
    assert lb.down == []  # nothing fans out before it is stored
    net.flush_storage()
    assert set(update_docs(lb.down)) == {sale_doc(a), "stock/tienda-1"}
    net.run()
    assert b.sales.get(sale.id) is not None
    assert b.inventory.stock("PAN", location="tienda-1") == -3

    b.inventory.receive("PAN", 7, location="tienda-1")
    net.run()
    assert a.inventory.stock("PAN") == 4
    assert_converged(net)
    assert a.status.state == b.status.state == "online"


def test_ack_only_after_storage_flush(net: SimNet) -> None:
    a, _ = two(net)
    link = net.connect("a")
    assert link is not None
    net.run()
    a.inventory.receive("CAFE", 5)
    a.inventory.receive("CAFE", 6)
    assert [e.status for e in a.queue.list(kind="receive")] == ["sent", "sent"]
    net.deliver(link, UP)
    net.deliver(link, UP)
    assert len(net.relay.pending) == 2
    assert frames(link.down, FrameType.ACK) == []
    assert net.relay.store.load_doc("acme", "stock/tienda-1").updates == []

    net.flush_storage(limit=1)  # group commit of the first write only
    assert len(net.relay.store.load_doc("acme", "stock/tienda-1").updates) == 1
    acks = frames(link.down, FrameType.ACK)
    assert [(doc_name(f[0]), f[1]) for _, f in acks] == [("stock/tienda-1", a.client_id)]
    net.deliver(link, DOWN)
    newest, oldest = a.queue.list(kind="receive")
    assert (oldest.status, newest.status) == ("acknowledged", "sent")

    net.flush_storage()
    net.run()
    assert statuses(a).get("sent", 0) == 0
    assert a.queue.pending_count() == 0


# -- duplicates and reordering ----------------------------------------------------------------


def test_duplicated_updates_and_acks_are_harmless(net: SimNet) -> None:
    a, b = two(net)
    la, lb = net.connect("a"), net.connect("b")
    assert la is not None and lb is not None
    net.run()
    for i in range(5):
        a.inventory.receive("CAFE", i + 1)
        b.record_sale([("CAFE", 1, 100)], location="tienda-2")
    for _ in range(200):
        busy = [(lk, d) for lk in net.links for d in (UP, DOWN) if lk.queue(d)]
        if not busy:
            if not net.relay.pending:
                break
            net.flush_storage()
            continue
        lk, d = busy[0]
        types = frame_types(lk.queue(d)[0])
        if set(types) <= {"UPDATE", "ACK"}:
            net.duplicate(lk, d)
            net.deliver(lk, d)
        net.deliver(lk, d)
    assert net.faults.get("duplicate", 0) >= 10
    assert all(lk.outcome is None for lk in (la, lb))  # no protocol error, still connected
    assert a.inventory.stock("CAFE") == 15
    assert b.inventory.stock("CAFE", location="tienda-2") == -5
    assert_converged(net)


def test_duplicated_control_frame_closes_the_link_and_reconnect_repairs(net: SimNet) -> None:
    a, _ = two(net)
    a.inventory.receive("CAFE", 3)
    link = net.connect("a")
    assert link is not None
    net.duplicate(link, UP)  # HELLO twice: not part of the protocol
    net.deliver(link, UP)
    net.deliver(link, UP)
    assert link.relay_closed
    assert any(t == "ERROR" for m in link.down for t in frame_types(m))
    net.run()
    assert link not in net.links and link.outcome and "error" in link.outcome
    assert net.nodes["a"].link is None
    assert net.heal() == 1
    assert_converged(net)


def test_reordered_messages_within_a_window(net: SimNet) -> None:
    a, b = two(net)
    la, lb = net.connect("a"), net.connect("b")
    assert la is not None and lb is not None
    net.run()
    a.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
    for qty in (1, 2, 3, 4):
        a.inventory.receive("CAFE", qty)
        a.catalog.put("CAFE", {"price_cents": 450 + qty})
    a.record_sale([("CAFE", 2)])
    assert len(la.up) == 10
    window = 3
    while la.up:  # newest of each window first
        net.deliver(la, UP, min(window, len(la.up)) - 1)
    net.flush_storage()
    while lb.down:
        net.deliver(lb, DOWN, min(window, len(lb.down)) - 1)
    net.run()
    # A reordered message may use a document alias before the message that named
    # the document: that is a protocol error and the link closes (over a real
    # websocket messages never overtake each other).  Either way, the next
    # reconnect's state-vector exchange must leave everything identical.
    assert net.faults["reorder"] >= 1
    net.heal()
    assert a.inventory.stock("CAFE") == 8
    assert b.inventory.stock("CAFE", location="tienda-1") == 8
    assert b.catalog.get("CAFE") == {"name": "Café", "price_cents": 454}
    assert_converged(net)


# -- losses, breaks, restarts ------------------------------------------------------------------


def test_dropped_message_breaks_the_link_and_reconnect_repairs(net: SimNet) -> None:
    a, b = two(net)
    la, lb = net.connect("a"), net.connect("b")
    assert la is not None and lb is not None
    net.run()
    a.inventory.receive("CAFE", 4)
    net.drop(la, UP)
    assert la not in net.links and net.nodes["a"].link is None
    assert a.status.state == "offline"
    a.inventory.receive("CAFE", 1)  # keeps working offline
    assert not la.up and net.relay.pending == []
    assert a.queue.pending_count() == 2
    net.connect("a")
    net.run()
    assert b.inventory.stock("CAFE", location="tienda-1") == 5
    assert_converged(net)


def test_lost_messages_on_a_live_link_are_repaired_by_the_next_reconnect(net: SimNet) -> None:
    a, b = two(net)
    la, lb = net.connect("a"), net.connect("b")
    assert la is not None and lb is not None
    net.run()
    # 1. an update from A is lost, the next one gets through (a clock gap).  The
    # document is named on this link first: a message that uses the document's
    # alias after the naming one was lost would close the link instead.
    a.inventory.receive("CAFE", 1)
    net.run()
    first = net.relay.doc_clocks()["stock/tienda-1"][a.client_id]
    a.inventory.receive("CAFE", 4)
    net.lose(la, UP)
    a.inventory.receive("CAFE", 5)
    net.run()
    assert a.queue.pending_count() == 2  # neither is acknowledged: the relay has a gap
    assert net.relay.doc_clocks()["stock/tienda-1"][a.client_id] == first
    # 2. a fan-out to A is lost
    b.inventory.receive("LECHE", 2)
    net.deliver(lb, UP)
    net.flush_storage()
    assert "UPDATE" in frame_types(la.down[0])
    net.lose(la, DOWN)
    net.run()
    assert a.inventory.stock("LECHE", location="tienda-2") == 0
    assert net.divergences() != []
    assert net.heal() == 1
    assert a.inventory.stock("LECHE", location="tienda-2") == 2
    assert b.inventory.stock("CAFE", location="tienda-1") == 10
    assert a.queue.pending_count() == b.queue.pending_count() == 0
    assert_converged(net)


def test_lost_ack_is_repaired_by_the_next_reconnect(net: SimNet) -> None:
    """Regression (fixed in 92eb55f): a stored update whose ACK was lost stayed 'sent'
    forever -- the WELCOME state vector covered it, so nothing was resent or acked."""
    b = net.add_replica("b").replica
    lb = net.connect("b")
    assert lb is not None
    net.run()
    b.inventory.receive("LECHE", 3)
    net.deliver(lb, UP)
    net.flush_storage()  # stored durably; the ACK is in flight ...
    [ack] = [i for i, m in enumerate(lb.down) if "ACK" in frame_types(m)]
    net.lose(lb, DOWN, ack)  # ... and lost
    net.run()
    assert b.queue.pending_count() == 1
    net.disconnect("b")
    net.connect("b")  # a new session must settle it
    net.run()
    assert b.queue.pending_count() == 0


def test_relay_restart_loses_uncommitted_writes_and_the_replica_resends(net: SimNet) -> None:
    a, b = two(net)
    la, lb = net.connect("a"), net.connect("b")
    assert la is not None and lb is not None
    net.run()
    a.inventory.receive("CAFE", 3)
    sale = a.record_sale([("CAFE", 1, 100)])
    net.deliver(la, UP)
    net.deliver(la, UP)
    assert len(net.relay.pending) >= 2
    assert a.queue.pending_count() == 2
    lost = net.restart_relay()
    assert lost >= 2
    assert net.links == [] and a.status.state == "offline"
    assert net.relay.store.load_doc("acme", "stock/tienda-1").updates == []
    sent = {e.id: e.status for e in a.queue.list()}
    assert sorted(s for s in sent.values() if s != "acknowledged") == ["sent", "sent"]
    la2 = net.connect("a")
    assert la2 is not None
    net.run()
    assert a.queue.pending_count() == 0
    assert len(net.relay.store.load_doc("acme", "stock/tienda-1").updates) >= 1
    net.connect("b")
    net.run()
    assert b.sales.get(sale.id) is not None
    assert b.inventory.stock("CAFE", location="tienda-1") == 2
    assert_converged(net)


def test_relay_restart_between_storage_and_ack(net: SimNet) -> None:
    """Stored but not acknowledged (the ACK was in flight): the resend is a duplicate."""
    a, _ = two(net)
    la = net.connect("a")
    assert la is not None
    net.run()
    a.inventory.receive("CAFE", 3)
    net.deliver(la, UP)
    net.flush_storage()
    assert frames(la.down, FrameType.ACK)
    net.restart_relay()  # the ACK dies with the connection
    assert a.queue.pending_count() == 1
    net.connect("a")
    net.run()
    assert a.queue.pending_count() == 0
    net.heal()
    assert_converged(net)


def test_sync_now_request_from_the_relay(net: SimNet) -> None:
    a, _ = two(net)
    a.inventory.receive("CAFE", 2)
    assert net.request_sync("a") is False  # not connected
    la = net.connect("a")
    assert la is not None
    net.run()
    assert net.request_sync("a", full=True) is True
    assert frame_types(la.down[-1]) == ["SYNC_NOW"]
    net.deliver(la, DOWN)
    assert la.replica_closed and la.outcome == "resync (full=True)"
    new = net.nodes["a"].link  # the client starts the next session at once, full
    assert new is not None and new is not la
    _, fields = decode_frames(new.up[0])[0]
    assert fields[5] == {} and fields[6]["full"] is True
    net.run()
    assert new.sync.conn.state == "live"
    # full: the relay sent every doc, whatever the replica had
    assert set(update_docs(new.received)) >= {"stock/tienda-1", "locations"}
    net.connect("b")
    net.run()
    assert_converged(net)


def test_one_shot_sync_ends_with_bye_once_everything_is_acknowledged(net: SimNet) -> None:
    a, _ = two(net)
    a.inventory.receive("CAFE", 2)
    link = net.connect("a", live=False)
    assert link is not None
    net.run()
    assert link.outcome == "ok" and link not in net.links
    assert frame_types(link.sent[-1])[-1] == "BYE"
    assert a.queue.pending_count() == 0
    assert a.log.list()[0].outcome == "ok"


def test_crashed_replica_reopens_with_a_new_client_id_and_converges(net: SimNet) -> None:
    a, b = two(net)
    la = net.connect("a")
    assert la is not None
    net.run()
    a.inventory.receive("CAFE", 10)  # acknowledged
    net.run()
    old_id = a.client_id
    net.disconnect("a")
    sale = a.record_sale([("CAFE", 4, 100)])  # offline, unacknowledged
    a2 = net.crash_replica("a")
    assert a2.client_id != old_id
    assert {old_id, a2.client_id} <= a2.own_client_ids()
    assert a2.sales.get(sale.id) is not None  # the call returned: it survived
    assert a2.inventory.stock("CAFE") == 6
    assert a2.queue.pending_count() == 1
    la2 = net.connect("a")
    assert la2 is not None
    _, hello = decode_frames(la2.up[0])[0]
    assert hello[4] == a2.client_id and hello[6]["past"] == [old_id]
    net.run()
    assert a2.queue.pending_count() == 0
    a2.inventory.receive("CAFE", 1)  # the new incarnation writes under its new id
    net.connect("b")
    net.run()
    assert net.relay.store.client_ids_of("acme", "a") >= {old_id, a2.client_id}
    assert b.inventory.stock("CAFE", location="tienda-1") == 7
    clocks = decode_state_vector(b.state_vector("stock/tienda-1"))
    assert old_id in clocks and a2.client_id in clocks
    assert_converged(net)


def test_partitioned_replica_keeps_selling_and_catches_up(net: SimNet) -> None:
    a, b = two(net)
    a.catalog.put("CAFE", {"name": "Café", "price_cents": 100})
    net.connect("a")
    net.connect("b")
    net.run()
    net.partition("a")
    assert net.connect("a") is None
    ids = [a.record_sale([("CAFE", 1, 100)]).id for _ in range(3)]
    b.inventory.receive("CAFE", 5, location="tienda-1")
    net.run()
    assert a.inventory.stock("CAFE") == -3
    net.unpartition("a")
    net.connect("a")
    net.run()
    assert all(b.sales.get(i) is not None for i in ids)
    assert a.inventory.stock("CAFE") == b.inventory.stock("CAFE", location="tienda-1") == 2
    assert_converged(net)
    # the transient negative stock opened a conflict that healed itself
    central = net.relay.central()
    assert central.conflicts(status="open") == []
    assert [c.status for c in central.conflicts()] in ([], ["self_healed"])


def test_an_acknowledged_update_is_stored_even_when_the_doc_cache_is_full(tmp_path: Path) -> None:
    """Regression (fixed in 92eb55f): with max_docs reached by pinned docs,
    DocCache.get() evicted (and unobserved) the doc it had just loaded; the update
    went to the orphan, nothing was captured, it counted as a duplicate and was not
    stored -- yet its state vector was saved and it was ACKed."""
    net = SimNet(tmp_path, central=False, max_docs=1)
    try:
        a = net.add_replica("a", "tienda-1").replica
        net.connect("a")
        net.run()
        a.record_sale([("CAFE", 2, 100)])  # one write, two docs: sales/... and stock/...
        net.run()
        assert a.queue.pending_count() == 0  # both docs acknowledged ...
        net.restart_relay()
        stored = net.relay.stored_docs()
        assert sale_doc(a) in stored
        assert "stock/tienda-1" in stored  # ... but the stock update was never stored
    finally:
        net.close()
