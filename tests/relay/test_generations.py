"""Document generations at the relay: the ownership rule for seeded copies, the store of
record's generations (both stores), and the relay's rollover and carry paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.relay_client import Client, run, values
from tests.support.relay_client import Writer as Peer
from tests.support.rollovers import EVERYTHING
from tiendasync.crdt.counter import PNCounter
from tiendasync.crdt.generations import counter_slots
from tiendasync.crdt.keys import ROOT, SEP
from tiendasync.crdt.lww import LWWMap
from tiendasync.errors import InvalidArgument, RemoteProtocolError
from tiendasync.model.docnames import parse_doc
from tiendasync.model.hlc import Timestamp
from tiendasync.protocol import Ack, CloseCode, UpdateReceived
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.protocol.yjs_update import parse_update
from tiendasync.relay import RelayServer
from tiendasync.relay.auth import issue_token
from tiendasync.relay.central import CENTRAL_REPLICA_ID
from tiendasync.relay.docs import replay
from tiendasync.relay.generations import Generations, RolloverPolicy, ownership_check
from tiendasync.relay.ownership import Writer, check_update
from tiendasync.relay.records import AppendEntry
from tiendasync.relay.storage import RelayStore, SqliteRelayStore, open_relay_store

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


# -- rollover and carry against a store of record ---------------------------------------------

KINDS = ["sqlite", "postgresql"]
TENANT, STOCK = "acme", "stock/t1"


@pytest.fixture(params=KINDS)
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "relay.db")
    url: str = request.getfixturevalue("pg_url")
    return url


class Till:
    """A store's writer: its own pycrdt doc of one document, sending what is new."""

    def __init__(self, client_id: int, *base: bytes) -> None:
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
        for update in base:
            self.doc.apply_update(update)
        self.sent = bytes(self.doc.get_state())

    def sell(self, sku: str, qty: int) -> bytes:
        with self.doc.transaction():
            PNCounter(self.doc).add(sku, -qty)
        return self._new()

    def receive(self, sku: str, qty: int) -> bytes:
        with self.doc.transaction():
            PNCounter(self.doc).add(sku, qty)
        return self._new()

    def edit(self, record: str, fields: dict[str, Any], ts: Timestamp) -> bytes:
        with self.doc.transaction():
            LWWMap(self.doc).set(record, fields, ts)
        return self._new()

    def _new(self) -> bytes:
        update = bytes(self.doc.get_update(self.sent))
        self.sent = bytes(self.doc.get_state())
        return update


def _log(store: RelayStore, doc: str, replica: str, *updates: bytes) -> None:
    """Store updates of the current generation as the relay's group commit does."""
    current, _ = replay(store.load_doc(TENANT, doc), TENANT, doc)
    for update in updates:
        current.apply_update(update)
        store.append_many([AppendEntry(TENANT, doc, update, replica, bytes(current.get_state()))])


def _current(store: RelayStore, doc: str) -> pycrdt.Doc[Any]:
    current, bad = replay(store.load_doc(TENANT, doc), TENANT, doc)
    assert bad == []
    return current


def _stock(doc: pycrdt.Doc[Any]) -> dict[str, int]:
    return {sku: v for sku, v in PNCounter(doc).items() if v}


def test_a_stock_rollover_keeps_totals_and_late_sales_count_once(spec: str) -> None:
    store = open_relay_store(spec)
    a, b = Till(101), Till(202)
    _log(store, STOCK, "a", a.receive("CAFE", 50), a.sell("CAFE", 3), a.receive("TE", 9))
    _log(store, STOCK, "b", b.sell("CAFE", 2))
    offline = Till(303, bytes(_current(store, STOCK).get_update()))  # synced, then offline
    _log(store, STOCK, "b", b.sell("TE", 1))
    g = _current(store, STOCK)
    gens = Generations(
        store, RolloverPolicy(max_slots=1), writer_id=iter(range(7000, 8000)).__next__
    )
    assert gens.due(TENANT, STOCK) is True  # four slots, a seed's two: two fold
    assert gens.roll_over(TENANT, STOCK) == 1
    assert _stock(_current(store, STOCK)) == _stock(g) == {"CAFE": 45, "TE": 8}
    assert len(list(_current(store, STOCK).get(ROOT, type=pycrdt.Map).keys())) == 2  # one slot each
    assert gens.due(TENANT, STOCK) is False
    assert 7000 in store.client_ids_of(TENANT, CENTRAL_REPLICA_ID)
    # the offline till sold meanwhile; it sends after the cut: carried into g+1 once
    late1, late2 = offline.sell("CAFE", 4), offline.receive("TE", 5)
    gens.carry_late(TENANT, STOCK, 0, late1, replica="o", received_at=1.0)
    gens.carry_late(TENANT, STOCK, 0, late1, replica="o", received_at=2.0)  # re-sent
    store.close()  # the relay restarts between two late updates
    store = open_relay_store(spec)
    gens = Generations(store, writer_id=iter(range(8000, 9000)).__next__)
    gens.carry_late(TENANT, STOCK, 0, late2, replica="o", received_at=3.0)
    gens.carry_late(TENANT, STOCK, 0, late1 + b"", replica="o", received_at=4.0)
    # a till already in g+1 sells too
    c = Till(404, bytes(_current(store, STOCK).get_update()))
    _log(store, STOCK, "c", c.sell("CAFE", 1))
    assert _stock(_current(store, STOCK)) == {"CAFE": 45 - 4 - 1, "TE": 8 + 5}
    assert len(store.load_generation(TENANT, STOCK, 0).updates) == 4  # every late one kept
    store.close()


def test_a_late_update_that_lacks_its_predecessor_is_refused_until_they_arrive(spec: str) -> None:
    store = open_relay_store(spec)
    a = Till(101)
    _log(store, STOCK, "a", a.receive("CAFE", 10))
    gens = Generations(store, writer_id=iter(range(7000, 8000)).__next__)
    gens.roll_over(TENANT, STOCK)
    first, second = a.sell("CAFE", 1), a.sell("CAFE", 2)
    with pytest.raises(InvalidArgument, match="lacks earlier updates"):
        gens.carry_late(TENANT, STOCK, 0, second, replica="a", received_at=1.0)
    assert store.load_generation(TENANT, STOCK, 0).updates == []
    gens.carry_late(TENANT, STOCK, 0, first, replica="a", received_at=2.0)
    gens.carry_late(TENANT, STOCK, 0, second, replica="a", received_at=3.0)
    assert _stock(_current(store, STOCK)) == {"CAFE": 7}
    # two generations on, a late update to 0 is still carried, straight into 2, once
    assert gens.roll_over(TENANT, STOCK) == 2
    third = a.sell("CAFE", 1)
    for at in (4.0, 5.0):
        gens.carry_late(TENANT, STOCK, 0, third, replica="a", received_at=at)
    assert _stock(_current(store, STOCK)) == {"CAFE": 6}
    assert len(store.load_doc(TENANT, STOCK).updates) == 1  # the second send carried nothing
    with pytest.raises(InvalidArgument, match="not a past one"):
        gens.carry_late(TENANT, STOCK, 2, a.sell("CAFE", 1), replica="a", received_at=6.0)
    with pytest.raises(InvalidArgument):
        gens.roll_over(TENANT, "sales/t1/2026-06")
    store.close()


def test_a_catalog_rollover_keeps_winners_and_carries_a_newer_late_edit(spec: str) -> None:
    store = open_relay_store(spec)
    t = Timestamp
    a, b = Till(101), Till(202)
    _log(
        store, "catalog", "a", a.edit("CAFE", {"name": "Café", "price_cents": 450}, t(100, 0, "a"))
    )
    _log(store, "catalog", "b", b.edit("CAFE", {"price_cents": 475}, t(110, 0, "b")))
    offline = Till(303, bytes(_current(store, "catalog").get_update()))
    gens = Generations(store, writer_id=iter(range(7000, 8000)).__next__)
    gens.roll_over(TENANT, "catalog")
    assert LWWMap(_current(store, "catalog")).get("CAFE") == {"name": "Café", "price_cents": 475}
    newer = offline.edit("CAFE", {"price_cents": 500}, t(120, 0, "o"))
    older = offline.edit("CAFE", {"name": "Cafe viejo"}, t(90, 0, "o"))
    for update in (newer, older, newer):
        gens.carry_late(TENANT, "catalog", 0, update, replica="o", received_at=1.0)
    assert len(store.load_doc(TENANT, "catalog").updates) == 1  # only the newer edit carried
    assert LWWMap(_current(store, "catalog")).get("CAFE") == {"name": "Café", "price_cents": 500}
    # an edit made in g+1 after the cut, older than the late one, still loses to it
    c = Till(404, bytes(_current(store, "catalog").get_update()))
    _log(store, "catalog", "c", c.edit("CAFE", {"price_cents": 480}, t(115, 0, "c")))
    assert LWWMap(_current(store, "catalog")).get("CAFE") == {"name": "Café", "price_cents": 500}
    # two cuts later, a late edit to 0 still wins where it is newer, and only there
    gens.roll_over(TENANT, "catalog")
    gens.roll_over(TENANT, "catalog")
    d = Till(505, bytes(_current(store, "catalog").get_update()))
    _log(store, "catalog", "d", d.edit("CAFE", {"name": "Café de olla"}, t(130, 0, "d")))
    latest = offline.edit("CAFE", {"name": "Café viejo", "price_cents": 520}, t(125, 0, "o"))
    gens.carry_late(TENANT, "catalog", 0, latest, replica="o", received_at=2.0)
    assert LWWMap(_current(store, "catalog")).get("CAFE") == {
        "name": "Café de olla",
        "price_cents": 520,
    }
    store.close()


def test_the_policy_is_off_by_default_and_measures_what_a_cut_folds(tmp_path: Path) -> None:
    with SqliteRelayStore(str(tmp_path / "relay.db")) as store:
        a, b = Till(101), Till(202)
        _log(store, STOCK, "a", *(a.receive(f"SKU{i}", 1) for i in range(5)))
        _log(store, "sales/t1/2026-06", "a", b"\x00\x00")
        assert not RolloverPolicy().enabled
        assert Generations(store).due(TENANT, STOCK) is False
        # one writer: five slots, as many as a seed's, so a cut would fold nothing
        for bound in (RolloverPolicy(max_slots=1), RolloverPolicy(max_bytes=1)):
            assert Generations(store, bound).due(TENANT, STOCK) is False
        _log(store, STOCK, "b", b.sell("SKU0", 1), b.sell("SKU1", 1))  # seven: two fold
        assert Generations(store, RolloverPolicy(max_slots=2)).due(TENANT, STOCK) is False
        assert Generations(store, RolloverPolicy(max_slots=1)).due(TENANT, STOCK) is True
        folded = store.stored_bytes(TENANT, STOCK) * 2 // 7  # the share of those two
        assert folded > 1
        assert Generations(store, RolloverPolicy(max_bytes=folded)).due(TENANT, STOCK) is False
        assert Generations(store, RolloverPolicy(max_bytes=folded - 1)).due(TENANT, STOCK) is True
        assert (
            Generations(store, RolloverPolicy(max_slots=1)).due(TENANT, "sales/t1/2026-06") is False
        )
        with pytest.raises(InvalidArgument):
            RolloverPolicy(max_slots=0)


def test_a_writer_id_of_a_store_is_never_the_relays(tmp_path: Path) -> None:
    with SqliteRelayStore(str(tmp_path / "relay.db")) as store:
        assert store.claim_client_ids(TENANT, "t1", [7000]) == []
        _log(store, STOCK, "a", Till(7000).receive("CAFE", 1))
        Generations(store, writer_id=iter([7000, 7001]).__next__).roll_over(TENANT, STOCK)
        assert set(counter_slots(_current(store, STOCK))["CAFE"]) == {7001}


# -- over websockets: a relay that rolled over at start -----------------------------------


def test_a_till_a_generation_behind_has_its_late_sales_carried_once(tmp_path: Path) -> None:
    path = str(tmp_path / "relay.db")
    t1, t3 = Peer(11), Peer(33, "t3")
    late: list[bytes] = []

    async def before(server: RelayServer, store: Any, tokens: dict[str, str]) -> None:
        a = await Client.open(server.port, replica="t1", token=tokens["t1"], client_id=11)
        c = await Client.open(server.port, replica="t3", token=tokens["t3"], client_id=33)
        await a.until_synced()
        await c.until_synced()
        await a.send_update(STOCK, t1.count("CAFE", 50))
        await a.wait_for(Ack)
        t3.doc.apply_update((await c.wait_for(UpdateReceived)).data)
        await c.send_update(STOCK, t3.count("CAFE", -2))
        await c.wait_for(Ack)
        late.append(t3.count("CAFE", -4))  # sold offline: not sent before the cut

    tokens = _relay(path, before)

    async def after(server: RelayServer, store: Any, issued: dict[str, str]) -> None:
        assert store.generations(TENANT) == {STOCK: 1}  # rolled over at start
        old = await Client.open(server.port, replica="t2", token=tokens["t2"], client_id=22)
        code, reason = await old.closed()
        assert code == CloseCode.VERSION and "upgrade" in reason  # it would merge g+1 into g
        b = await Client.open(
            server.port, replica="t2", token=tokens["t2"], client_id=22, generations={}
        )
        _, diffs = await b.until_synced()
        assert b.generations == {STOCK: 1}
        reader: pycrdt.Doc[Any] = pycrdt.Doc()
        for d in diffs:
            reader.apply_update(d.data)
        assert values(reader) == {"CAFE": 48}
        c = await Client.open(
            server.port,
            replica="t3",
            token=tokens["t3"],
            client_id=33,
            svs={STOCK: bytes(t3.doc.get_state())},
            generations={STOCK: 0},
        )
        welcome, diffs = await c.until_synced()
        assert c.generations == {STOCK: 1} and diffs == []  # nothing of g+1 into its g
        # told g's state vector (what it re-sends is measured against g, not g+1):
        # its own first sale is there, the one sold offline is not
        told = decode_state_vector(welcome.state_vectors[STOCK])
        assert told[33] == decode_state_vector(bytes(t3.doc.get_state()))[33] - 1
        # g+1 comes beside it, as NEXT frames: the whole current generation
        assert [(e.doc, e.generation) for e in c.next_updates] == [(STOCK, 1)]
        staging: pycrdt.Doc[Any] = pycrdt.Doc()
        staging.apply_update(c.next_updates[0].data)
        assert values(staging) == {"CAFE": 48}
        for _ in range(2):  # re-sent (an ACK lost): carried once
            await c.send_update(STOCK, late[0])
            await c.wait_for(Ack)  # (one, then the other, each after its commit)
        await c.quiet(0.3)
        assert c.received == []  # nothing of g+1 reaches its generation 0 as UPDATE
        # the carry of its own late sale reached its g+1 before the ACK did
        assert len(c.next_updates) == 2
        staging.apply_update(c.next_updates[1].data)
        assert values(staging) == {"CAFE": 44}
        clock = decode_state_vector(bytes(t3.doc.get_state()))[33]
        assert c.acked == [(STOCK, 33, clock)] * 2
        carried = [e for e in await b.quiet(0.5) if isinstance(e, UpdateReceived)]
        assert len(carried) == 1
        reader.apply_update(carried[0].data)
        assert values(reader) == {"CAFE": 44}
        assert _stock(_current(store, STOCK)) == {"CAFE": 44}
        ahead = await Client.open(
            server.port, replica="t3", token=tokens["t3"], client_id=33, generations={STOCK: 2}
        )
        code, reason = await ahead.closed()
        assert code == CloseCode.PROTOCOL and "newer than the relay's" in reason

    _relay(path, after, rollover=EVERYTHING, tokens=tokens)


def _relay(
    path: str, scenario: Any, *, tokens: dict[str, str] | None = None, **server: Any
) -> dict[str, str]:
    """Run ``scenario`` against a relay on the store of record at ``path``, then stop it."""
    store = SqliteRelayStore(path)
    if tokens is None:
        tokens = {r: issue_token(store, tenant=TENANT, replica_id=r) for r in ("t1", "t2", "t3")}

    async def main() -> None:
        relay = RelayServer(store, host="127.0.0.1", port=0, **server)
        await relay.start()
        try:
            await scenario(relay, store, tokens)
        finally:
            await relay.stop()

    try:
        run(main())
    finally:
        store.close()
    return tokens


# -- every interleaving of late writers, duplicates and relay restarts -------------------------

#: One step: which till sells how much, whether it re-sends its whole document, whether
#: the relay restarts after, rolls the document over after, and the till then syncs
#: (moves to the current generation and goes offline again).
STEPS = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.integers(1, 5),
        st.booleans(),
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
    min_size=1,
    max_size=10,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=STEPS)
def test_late_writers_any_generations_behind_count_each_sale_once(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[int, int, bool, bool, bool, bool]],
) -> None:
    """Tills offline across any number of cuts send to the generation they hold, in any
    order, twice, with restarts between: each sale is in the current stock once."""
    path = str(tmp_path_factory.mktemp("gen") / "relay.db")
    store = SqliteRelayStore(path)
    base = Till(1)
    _log(store, STOCK, "base", base.receive("CAFE", 100))
    synced = bytes(_current(store, STOCK).get_update())
    tills = [Till(10 + i, synced) for i in range(3)]  # all offline from here on
    held = [0, 0, 0]  # the generation each till holds
    ids, next_till = iter(range(50_000, 60_000)), iter(range(100, 10_000))
    Generations(store, writer_id=ids.__next__).roll_over(TENANT, STOCK)
    sold = 0
    for which, qty, whole, restart, roll, rejoin in steps:
        till = tills[which]
        update = till.sell("CAFE", qty)
        sold += qty
        sent = bytes(till.doc.get_update()) if whole else update  # a whole-doc diff re-sends all
        gens = Generations(store, writer_id=ids.__next__)
        if held[which] == gens.generation(TENANT, STOCK):
            _log(store, STOCK, str(which), sent, update)
        else:
            for data in (sent, update):  # again: an ACK lost
                gens.carry_late(TENANT, STOCK, held[which], data, replica="x", received_at=1.0)
        if restart:
            store.close()
            store = SqliteRelayStore(path)
        if roll:
            Generations(store, writer_id=ids.__next__).roll_over(TENANT, STOCK)
        if rejoin:  # every write of it is in: it takes the current generation
            tills[which] = Till(next(next_till), bytes(_current(store, STOCK).get_update()))
            held[which] = Generations(store).generation(TENANT, STOCK)
    assert _stock(_current(store, STOCK)) == {"CAFE": 100 - sold}
    store.close()


def test_a_late_update_is_held_to_the_ownership_rule_of_its_generation(tmp_path: Path) -> None:
    with SqliteRelayStore(str(tmp_path / "relay.db")) as store:
        victim = Till(101)
        _log(store, STOCK, "victim", victim.receive("CAFE", 10))
        gens = Generations(store, writer_id=iter(range(7000, 8000)).__next__)
        gens.roll_over(TENANT, STOCK)
        forged = _slot_update(2222, "CAFE" + SEP + "101", [0, 10])  # the victim's slot
        mallory = Writer(frozenset({2222}), "mallory")
        check = ownership_check(STOCK, forged, mallory, NOW_MS)
        with pytest.raises(RemoteProtocolError):
            gens.carry_late(
                TENANT, STOCK, 0, forged, replica="mallory", received_at=1.0, check=check
            )
        assert store.load_generation(TENANT, STOCK, 0).updates == []
        assert _stock(_current(store, STOCK)) == {"CAFE": 10}


def test_a_document_the_store_may_no_longer_read_is_not_taken_for_a_newer_one() -> None:
    """A store that lost access to a document it holds at generation 1 is not refused
    as ahead of the relay (the generation is compared with the stored one)."""
    from tiendasync.protocol import Hello
    from tiendasync.relay.sessions import _generation_refusal

    hello = Hello("acme", "t3", "tok", 33, {}, generations={STOCK: 1})
    assert _generation_refusal(hello, {}, {STOCK: 1}) is None
    refused = _generation_refusal(hello, {}, {})
    assert refused is not None and "newer than the relay's 0" in refused[1]
