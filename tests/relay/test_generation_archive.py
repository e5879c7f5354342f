"""Archiving past generations out of the store of record and putting them back
(``tiendasync.relay.generation_archive``, docs/generations.md), on both stores:
what is archived, that nothing of it is lost, that a late update to an archived
generation is refused with a clear reason and carried once after a restore,
and that a damaged archive file is refused whole."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.relay.test_generations import STOCK, TENANT, Till, _current, _log, _stock
from tests.store.test_client import RelayThread, wait_until
from tiendasync import Replica
from tiendasync.errors import InvalidArgument, NotFound, ProtocolError
from tiendasync.protocol import CLOSE_VERSION
from tiendasync.relay.admin import RelayAdmin
from tiendasync.relay.admin_api import create_admin_app
from tiendasync.relay.auth import issue_token
from tiendasync.relay.generation_archive import (
    archivable,
    archive_generations,
    read_archive,
    restore_generations,
)
from tiendasync.relay.generations import Generations, carry_outcome
from tiendasync.relay.records import PastGeneration
from tiendasync.relay.storage import RelayStore, SqliteRelayStore, open_relay_store

DAY = 86_400.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["sqlite", "postgresql"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "relay.db")
    url: str = request.getfixturevalue("pg_url")
    return url


def _four_generations(store: RelayStore) -> tuple[Till, Generations]:
    """Stock at generation 4; an offline till holds 0 and sent one late sale to it."""
    gens = Generations(store, writer_id=iter(range(7000, 8000)).__next__)
    base = Till(1)
    _log(store, STOCK, "base", base.receive("CAFE", 100))
    offline = Till(50, bytes(_current(store, STOCK).get_update()))
    gens.roll_over(TENANT, STOCK)
    gens.carry_late(TENANT, STOCK, 0, offline.sell("CAFE", 3), replica="t5", received_at=7.0)
    for _ in range(3):
        gens.roll_over(TENANT, STOCK)
    return offline, gens


def test_archivable_keeps_recent_cuts_and_the_one_before_the_current() -> None:
    past = [PastGeneration("stock/t1", g, 100.0 * g, 0, 10) for g in range(4)]
    chosen = archivable(past, {"stock/t1": 4}, now=1000.0, older_than_s=750.0)
    assert [p.generation for p in chosen] == [0, 1, 2]  # cut at 0, 100, 200 (<= 250)
    assert [p.generation for p in archivable(past, {"stock/t1": 4}, now=1e9, older_than_s=0)] == [
        0,
        1,
        2,
    ]
    assert archivable(past, {"stock/t1": 4}, now=1000.0, older_than_s=1000.0) == [past[0]]
    with pytest.raises(InvalidArgument):
        archivable(past, {}, now=0.0, older_than_s=-1.0)


def test_old_generations_move_to_a_file_and_back_and_late_sales_count_once(
    spec: str, tmp_path: Path
) -> None:
    store = open_relay_store(spec)
    offline, gens = _four_generations(store)
    assert _stock(_current(store, STOCK)) == {"CAFE": 97}
    listed = store.past_generations(TENANT)
    assert [(p.generation, p.late_updates) for p in listed] == [(0, 1), (1, 0), (2, 0), (3, 0)]
    assert all(p.stored_bytes > 0 for p in listed)
    archive = tmp_path / "old.tsgen"
    report = archive_generations(store, TENANT, archive, older_than_s=0.0, now=listed[-1].cut_at)
    assert report.done == [(STOCK, 0), (STOCK, 1), (STOCK, 2)] and report.kept == []
    assert [p.generation for p in store.past_generations(TENANT)] == [3]
    entries = list(read_archive(archive))
    assert [(e.doc, e.generation, len(e.late)) for e in entries] == [
        (STOCK, 0, 1),
        (STOCK, 1, 0),
        (STOCK, 2, 0),
    ]
    assert entries[0].late[0][1:] == ("t5", 7.0)  # who sent it and when, kept
    # the till offline since 0 sells again: refused, with the reason, nothing stored
    late = offline.sell("CAFE", 2)
    outcome = carry_outcome(
        gens, TENANT, STOCK, 0, late, replica="t5", received_at=8.0, check=lambda _: None
    )
    assert isinstance(outcome, tuple) and outcome[0] == CLOSE_VERSION
    assert "restore-generations" in outcome[1]
    with pytest.raises(NotFound):
        store.load_generation(TENANT, STOCK, 0)
    with pytest.raises(NotFound):  # a carry computed before the drop is refused too
        store.append_late(
            TENANT,
            STOCK,
            generation=0,
            data=late,
            replica="t5",
            after_seq=0,
            carry=None,
            into_generation=4,
            state_vector=b"\x00",
            received_at=8.0,
        )
    assert _stock(_current(store, STOCK)) == {"CAFE": 97}
    # a second archive run finds nothing to archive (3 is the one before the current)
    assert archive_generations(store, TENANT, tmp_path / "again", older_than_s=0.0).done == []
    assert not (tmp_path / "again").exists()
    with pytest.raises(InvalidArgument, match="exists"):  # never over an existing file
        archive_generations(store, TENANT, archive, older_than_s=0.0)
    # put back: the late sale is carried once, the first one not again
    restored = restore_generations(store, archive)
    assert restored.done == [(STOCK, 0), (STOCK, 1), (STOCK, 2)]
    assert restore_generations(store, archive).kept[0][2] == "already kept by the store"
    assert store.load_generation(TENANT, STOCK, 0).updates[0][1] == entries[0].late[0][0]
    for at in (9.0, 10.0):
        gens.carry_late(TENANT, STOCK, 0, late, replica="t5", received_at=at)
    assert _stock(_current(store, STOCK)) == {"CAFE": 95}
    store.close()


def test_a_generation_that_got_a_late_update_while_it_was_archived_stays(
    spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_relay_store(spec)
    offline, gens = _four_generations(store)
    real = store.drop_generation
    sale = offline.sell("CAFE", 1)

    def late_then_drop(tenant: str, doc: str, generation: int, *, upto_seq: int) -> bool:
        if generation == 0:  # the till's late sale lands between the read and the drop
            gens.carry_late(TENANT, STOCK, 0, sale, replica="t5", received_at=9.0)
        return real(tenant, doc, generation, upto_seq=upto_seq)

    monkeypatch.setattr(store, "drop_generation", late_then_drop)
    report = archive_generations(store, TENANT, tmp_path / "a", older_than_s=0.0, now=1e12)
    assert report.done == [(STOCK, 1), (STOCK, 2)]
    assert report.kept == [(STOCK, 0, "late updates since: archive again")]
    assert len(store.load_generation(TENANT, STOCK, 0).updates) == 2  # both late sales
    assert _stock(_current(store, STOCK)) == {"CAFE": 96}
    store.close()


def test_the_admin_api_lists_what_is_kept_and_what_was_archived(tmp_path: Path) -> None:
    with SqliteRelayStore(str(tmp_path / "relay.db")) as store:
        _four_generations(store)
        admin = issue_token(store, admin=True)
        server = SimpleNamespace(store=store, forwarder=None, tenants=lambda: ["acme"])
        app = create_admin_app(RelayAdmin(cast(Any, server)))

        async def get() -> dict[str, Any]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://admin") as http:
                answer = await http.get(
                    "/api/sync/generations/?tenant=acme",
                    headers={"Authorization": f"Bearer {admin}"},
                )
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            return body

        shown = asyncio.run(get())
        assert shown["current"] == {STOCK: 4}
        assert [(r["generation"], r["late_updates"]) for r in shown["results"]] == [
            (0, 1),
            (1, 0),
            (2, 0),
            (3, 0),
        ]
        archive_generations(store, TENANT, tmp_path / "a", older_than_s=0.0, now=1e12)
        assert [r["generation"] for r in asyncio.run(get())["results"]] == [3]


#: Any value msgpack packs: what a hostile archive entry may hold.
HOSTILE_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _archive_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "relay.db"
    with SqliteRelayStore(str(path)) as store:
        _four_generations(store)
        archive_generations(store, TENANT, tmp_path / "a.tsgen", older_than_s=0.0, now=1e12)
    return (tmp_path / "a.tsgen").read_bytes()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_damaged_archive_is_refused_whole_with_a_typed_error(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """Flipped, cut or appended bytes, or a hostile file of valid msgpack: reading
    raises InvalidArgument (never another error), or the file still reads as an
    archive; restoring a refused one changes nothing in the store."""
    tmp = tmp_path_factory.mktemp("arch")
    good = _archive_bytes(tmp)
    how = data.draw(st.sampled_from(["flip", "cut", "append", "hostile"]))
    if how == "flip":
        at = data.draw(st.integers(0, len(good) - 1))
        bad = good[:at] + bytes([good[at] ^ data.draw(st.integers(1, 255))]) + good[at + 1 :]
    elif how == "cut":
        bad = good[: data.draw(st.integers(0, len(good) - 1))]
    elif how == "append":
        bad = good + data.draw(st.binary(min_size=1, max_size=64))
    else:
        junk: Any = data.draw(HOSTILE_VALUES)
        header = {"format": "tiendasync.generations", "version": 1, "tenant": TENANT, "count": 1}
        bad = msgpack.packb(header) + msgpack.packb(junk)
    path = tmp / "bad.tsgen"
    path.write_bytes(bad)
    with SqliteRelayStore(str(tmp / "relay.db")) as store:
        before = store.past_generations(TENANT)
        try:
            entries = list(read_archive(path))
        except InvalidArgument:
            with pytest.raises(InvalidArgument):
                restore_generations(store, path)
            assert store.past_generations(TENANT) == before
            return
        assert how in ("flip", "hostile")  # a cut or extended file is always refused
        for entry in entries:  # what did read is whole: its checksums held
            assert isinstance(entry.cut, bytes) and entry.generation >= 0


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-m", "tiendasync", "relay", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_till_holding_an_archived_generation_waits_for_its_restore(tmp_path: Path) -> None:
    """A real relay and two stores; t2 offline across three cuts while the operator
    archives them with the CLI: t2's sync is refused (4010, naming the restore) and
    it keeps its sales; restored with the CLI, it syncs and every sale counts once."""
    relay = RelayThread(tmp_path)
    t1, t2 = (
        Replica.open(tmp_path / f"{n}.db", tenant="acme", replica_id=n, location="t1")
        for n in ("t1", "t2")
    )
    try:
        t1.inventory.receive("CAFE", 100)
        for r in (t1, t2):
            assert r.sync_now(relay.url, token=relay.token(r.replica_id)).outcome == "ok"
        for cut in (1, 2, 3):
            assert relay.run(relay.server.roll_over("acme", STOCK)) == cut
            t1.record_sale([("CAFE", 1)])
            assert t1.sync_now(relay.url, token=relay.token("t1")).outcome == "ok"
        t2.record_sale([("CAFE", 5)])  # generation 0
        db = str(tmp_path / "relay.db")
        listed = _cli("generations", "--db", db, "--tenant", "acme", cwd=tmp_path)
        assert listed.returncode == 0 and f"{STOCK}  " in listed.stdout, listed
        archived = _cli(
            "archive-generations", "--db", db, "--tenant", "acme", "--older-than-days", "0",
            "-o", "stock.tsgen", cwd=tmp_path,
        )  # fmt: skip
        assert archived.returncode == 0, archived.stderr
        assert f"{STOCK} generation 0: archived" in archived.stdout
        with pytest.raises(ProtocolError, match="restore-generations"):
            t2.sync_now(relay.url, token=relay.token("t2"))
        assert t2.inventory.stock("CAFE") == 95  # its sale, still there and queued
        restored = _cli("restore-generations", "--db", db, "stock.tsgen", cwd=tmp_path)
        assert restored.returncode == 0 and "restored" in restored.stdout, restored.stderr
        for _ in range(3):  # catch up, carry, move
            assert t2.sync_now(relay.url, token=relay.token("t2")).outcome == "ok"
        assert t2.core.generations()[STOCK] == 3
        wait_until(lambda: t1.sync_now(relay.url, token=relay.token("t1")).outcome == "ok"
                   and t1.inventory.stock("CAFE") == 92)  # fmt: skip
        assert t2.inventory.stock("CAFE") == 92
        broken = tmp_path / "broken.tsgen"
        broken.write_bytes((tmp_path / "stock.tsgen").read_bytes()[:-3])
        failed = _cli("restore-generations", "--db", db, str(broken), cwd=tmp_path)
        assert failed.returncode != 0 and "cut off" in failed.stderr
    finally:
        for r in (t1, t2):
            r.close()
        relay.close()
