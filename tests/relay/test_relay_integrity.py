"""A garbage row in relay.db: the relay says so at start and never announces what it lacks."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pycrdt
import pytest

from tests.support.relay_client import Client, Writer, run, values
from tiendasync.errors import CorruptData
from tiendasync.protocol import Ack
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.relay import RelayServer, SqliteRelayStore
from tiendasync.relay.auth import issue_token
from tiendasync.relay.docs import replay
from tiendasync.relay.integrity import verify_store

SALES = "sales/t1/2026-01"
#: 2026-01-15 12:00 UTC: sales of SALES.
JANUARY_2026_MS = 1_768_478_400_000
GARBAGE = b"\x01\x02\xff\xff\xff\x07garbage"


def _sell(store: SqliteRelayStore, token: str, n: int) -> None:
    async def main() -> None:
        server = RelayServer(store, host="127.0.0.1", port=0)
        await server.start()
        try:
            a = await Client.open(server.port, replica="t1", token=token, client_id=11)
            await a.until_synced()
            w = Writer(11)
            for i in range(n):
                await a.send_update(SALES, w.sell(JANUARY_2026_MS + i))
            for _ in range(n):
                await a.wait_for(Ack)
            await a.close()
        finally:
            await server.stop()

    run(main())


async def _fresh_view(port: int, token: str) -> tuple[dict[int, int], pycrdt.Doc[Any]]:
    """What a fresh replica (t2) is told and served of SALES: the WELCOME's claimed
    clocks and the document rebuilt from the diffs it received."""
    c = await Client.open(port, replica="t2", token=token, client_id=22)
    welcome, diffs = await c.until_synced()
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    for d in diffs:
        if d.doc == SALES:
            doc.apply_update(d.data)
    await c.close()
    return decode_state_vector(welcome.state_vectors[SALES]), doc


def _corrupt(path: Path, index: int) -> int:
    """Overwrite the ``index``-th stored update of SALES with garbage that carries no
    checksum (as rows stored before schema 4 do); returns its seq."""
    with sqlite3.connect(path) as conn:
        seqs = [
            r[0]
            for r in conn.execute("SELECT seq FROM updates WHERE doc = ? ORDER BY seq", (SALES,))
        ]
        conn.execute(
            "UPDATE updates SET data = ?, checksum = NULL WHERE seq = ?", (GARBAGE, seqs[index])
        )
    return int(seqs[index])


def _flip_inside(path: Path, index: int) -> int:
    """Flip one byte inside the sale record of the ``index``-th stored update of SALES,
    in place (as a bad disk sector would): the update still parses and applies, so
    only its checksum can tell.  Returns its seq."""
    with sqlite3.connect(path) as conn:
        seq, data = conn.execute(
            "SELECT seq, data FROM updates WHERE doc = ? ORDER BY seq LIMIT 1 OFFSET ?",
            (SALES, index),
        ).fetchone()
        flipped = bytearray(data)
        at = bytes(data).index(b"CAFE")  # a byte of the sale's JSON value
        flipped[at] ^= 0x01  # "CAFE" -> "BAFE": still valid JSON, still a valid update
        conn.execute("UPDATE updates SET data = ? WHERE seq = ?", (bytes(flipped), seq))
    return int(seq)


def test_garbage_row_is_quarantined_and_never_announced(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "relay.db"
    store = SqliteRelayStore(str(path))
    try:
        t1 = issue_token(store, tenant="acme", replica_id="t1")
        t2 = issue_token(store, tenant="acme", replica_id="t2")
        _sell(store, t1, 30)
        assert decode_state_vector(store.state_vectors("acme")[SALES]) == {11: 30}
    finally:
        store.close()
    bad_seq = _corrupt(path, 10)

    store = SqliteRelayStore(str(path))
    try:

        async def main() -> None:
            server = RelayServer(store, host="127.0.0.1", port=0)
            with caplog.at_level(logging.ERROR, logger="tiendasync.relay"):
                await server.start()
            try:
                report = server.verified
                assert report is not None and not report.clean
                assert report.quarantined == [("acme", SALES, bad_seq)]
                assert report.overclaimed == [("acme", SALES)]
                text = caplog.text
                assert "CORRUPT relay data acme/" + SALES in text
                assert f"stored update {bad_seq} cannot be applied" in text
                # the garbage is set aside (its bytes kept), not served and not retried
                assert [q[:3] for q in store.quarantined()] == [("acme", SALES, bad_seq)]
                assert all(seq != bad_seq for seq, _ in store.load_doc("acme", SALES).updates)
                # what is announced is what a fresh replica gets
                claimed, doc = await _fresh_view(server.port, t2)
                assert claimed == {11: 10}  # the ten updates before the garbage
                assert decode_state_vector(bytes(doc.get_state())) == claimed
                assert len(values(doc)) == 10
            finally:
                await server.stop()

        run(main())
        # repaired once: the next start is clean
        assert verify_store(store).clean
    finally:
        store.close()


def test_replay_raises_corrupt_data_for_each_garbage_update(tmp_path: Path) -> None:
    store = SqliteRelayStore(str(tmp_path / "relay.db"))
    try:
        t1 = issue_token(store, tenant="acme", replica_id="t1")
        _sell(store, t1, 3)
    finally:
        store.close()
    bad_seq = _corrupt(tmp_path / "relay.db", 2)
    with SqliteRelayStore(str(tmp_path / "relay.db")) as store:
        doc, bad = replay(store.load_doc("acme", SALES), "acme", SALES)
        assert [seq for seq, _ in bad] == [bad_seq]
        assert all(isinstance(exc, CorruptData) for _, exc in bad)
        assert decode_state_vector(bytes(doc.get_state())) == {11: 2}


def test_a_flipped_byte_inside_a_stored_update_is_caught_by_its_checksum(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Damage that leaves a valid update (a sale's SKU changed on disk) passes SQLite's
    checks and the CRDT engine alike: the row's checksum catches it at start, the row
    is quarantined, and re-sending the original heals the relay."""
    path = tmp_path / "relay.db"
    store = SqliteRelayStore(str(path))
    try:
        t1 = issue_token(store, tenant="acme", replica_id="t1")
        t2 = issue_token(store, tenant="acme", replica_id="t2")
        _sell(store, t1, 30)
        original = dict(store.load_doc("acme", SALES).updates)
    finally:
        store.close()
    bad_seq = _flip_inside(path, 29)  # the last sale: nothing depends on it
    with SqliteRelayStore(str(path)) as reader:
        flipped = dict(reader.load_doc("acme", SALES).damaged)
    assert flipped == {bad_seq: f"stored update {bad_seq}: its bytes do not match their checksum"}

    store = SqliteRelayStore(str(path))
    try:

        async def main() -> None:
            server = RelayServer(store, host="127.0.0.1", port=0)
            with caplog.at_level(logging.ERROR, logger="tiendasync.relay"):
                await server.start()
            try:
                report = server.verified
                assert report is not None and report.quarantined == [("acme", SALES, bad_seq)]
                assert f"stored update {bad_seq}: its bytes do not match" in caplog.text
                claimed, doc = await _fresh_view(server.port, t2)
                assert claimed == {11: 29}
                served = values(doc)
                assert len(served) == 29
                assert all(sale["l"][0][0] == "CAFE" for sale in served.values())  # no "BAFE"
                # the store still holds the sale: re-sent, it is stored again, whole
                a = await Client.open(server.port, replica="t1", token=t1, client_id=11)
                await a.until_synced()
                await a.send_update(SALES, original[bad_seq])
                await a.wait_for(Ack)
                await a.close()
                assert decode_state_vector(store.state_vectors("acme")[SALES]) == {11: 30}
            finally:
                await server.stop()

        run(main())
        assert verify_store(store).clean
    finally:
        store.close()
