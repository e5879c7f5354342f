"""Websocket compression between replicas and the relay (permessage-deflate, RFC 7692).

Real relay, real websockets on 127.0.0.1, a byte-counting TCP proxy in between.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from benchmarks.common import CountingProxy
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.store.test_client import RelayThread, relay, wait_until  # noqa: F401  (fixture)
from tiendasync import ConfigError, Replica
from tiendasync.protocol.frames import HelloFrame
from tiendasync.relay import RelayServer, SqliteRelayStore
from tiendasync.relay.auth import issue_token
from tiendasync.store.client import WIRE_COMPRESSION_ENV, wire_compression

SALES = 30


def _till(tmp: Path, name: str) -> Replica:
    r = Replica.open(tmp / f"{name}.db", tenant="acme", replica_id=name, location="t1")
    r.catalog.put_many({f"SKU-{i:05d}": {"name": f"P{i}", "price_cents": 450} for i in range(20)})
    for i in range(20):
        r.inventory.receive(f"SKU-{i:05d}", 1000)
    return r


def _bytes_up_per_sale(r: Replica, relay_port: int, token: str) -> float:
    """Stream SALES 1-line sales one at a time (each ACKed before the next)."""
    p = CountingProxy(relay_port)
    try:
        r.start_sync(p.url(), token=token)
        wait_until(lambda: r.status.state == "online" and r.status.pending == 0)
        time.sleep(0.2)
        up0 = p.up
        for n in range(SALES):
            r.record_sale([(f"SKU-{n % 20:05d}", 1)])
            wait_until(lambda: r.status.pending == 0)
        time.sleep(0.2)
        per_sale = (p.up - up0) / SALES
        r.stop_sync()
    finally:
        p.close()
    return per_sale


def test_a_streamed_sale_is_compressed_by_default_and_plain_when_turned_off(
    relay: RelayThread,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(WIRE_COMPRESSION_ENV, raising=False)
    port = relay.server.port
    z, plain = _till(tmp_path, "caja-z"), _till(tmp_path, "caja-p")  # same-length ids
    compressed = _bytes_up_per_sale(z, port, relay.token("caja-z"))
    monkeypatch.setenv(WIRE_COMPRESSION_ENV, "off")  # what replicas before it sent
    uncompressed = _bytes_up_per_sale(plain, port, relay.token("caja-p"))
    assert compressed <= 64, compressed
    assert uncompressed > 100, uncompressed
    assert compressed < uncompressed / 3
    # both arrived whole: a third till (plain) reads every sale of both
    with Replica.open(tmp_path / "f.db", tenant="acme", replica_id="f", location="t2") as f:
        f.sync_now(relay.url, token=relay.token("f"), full=True)
        for r in (z, plain):
            assert f.sales.list(location="t1", limit=1000)
            for sale in r.sales.list(limit=1000):
                assert f.sales.get(sale.id) == sale
        assert (
            f.inventory.stock("SKU-00000", location="t1") == 2 * 1000 - 2 * 2
        )  # both received 1000, each sold 2
    z.close()
    plain.close()


def test_compressing_and_plain_replicas_share_a_relay_live(
    relay: RelayThread,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain follower gets a compressing store's sales live, and the other way round."""
    a, b = _till(tmp_path, "a"), _till(tmp_path, "b")
    monkeypatch.setenv(WIRE_COMPRESSION_ENV, "0")
    b.start_sync(relay.url, token=relay.token("b"))  # reads the setting as it connects
    wait_until(lambda: b.status.state == "online")
    monkeypatch.setenv(WIRE_COMPRESSION_ENV, "1")
    a.start_sync(relay.url, token=relay.token("a"))
    wait_until(lambda: a.status.state == "online")
    sale_a = a.record_sale([("SKU-00001", 2)])
    sale_b = b.record_sale([("SKU-00002", 3)])
    wait_until(lambda: b.sales.get(sale_a.id) is not None and a.sales.get(sale_b.id) is not None)
    assert b.sales.get(sale_a.id) == sale_a and a.sales.get(sale_b.id) == sale_b
    a.stop_sync()
    b.stop_sync()
    a.close()
    b.close()


@pytest.mark.parametrize("value", ["", "1", "on", "TRUE", " yes "])
def test_compression_on_values(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(WIRE_COMPRESSION_ENV, value)
    assert wire_compression() is True


@pytest.mark.parametrize("value", ["0", "off", "False", "no"])
def test_compression_off_values(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(WIRE_COMPRESSION_ENV, value)
    assert wire_compression() is False


_ENV_TEXT = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12
)


@given(value=st.one_of(_ENV_TEXT, st.sampled_from(["on", " OFF", "Yes ", "0", "1 ", "n0"])))
def test_any_setting_is_on_off_or_a_config_error(value: str) -> None:
    """Whatever the environment holds: on, off, or ConfigError naming the variable."""
    mp = pytest.MonkeyPatch()
    mp.setenv(WIRE_COMPRESSION_ENV, value)
    try:
        word = value.strip().lower()
        if word in ("", "1", "on", "true", "yes"):
            assert wire_compression() is True
        elif word in ("0", "off", "false", "no"):
            assert wire_compression() is False
        else:
            with pytest.raises(ConfigError, match=WIRE_COMPRESSION_ENV):
                wire_compression()
    finally:
        mp.undo()


def test_a_bad_compression_setting_is_a_config_error_and_loses_nothing(
    relay: RelayThread,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = _till(tmp_path, "a")
    a.record_sale([("SKU-00001", 1)])
    pending = a.status.pending
    monkeypatch.setenv(WIRE_COMPRESSION_ENV, "maybe")
    with pytest.raises(ConfigError, match=WIRE_COMPRESSION_ENV):
        a.sync_now(relay.url, token=relay.token("a"))
    assert a.status.pending == pending
    monkeypatch.delenv(WIRE_COMPRESSION_ENV)
    a.sync_now(relay.url, token=relay.token("a"))
    assert a.status.pending == 0
    a.close()


def test_the_relay_refuses_a_message_that_inflates_past_its_limit(tmp_path: Path) -> None:
    """A few KiB on the wire that inflate to 4 MiB: closed with 1009, nothing else hurt."""
    limit = 64 * 1024

    async def scenario() -> tuple[int | None, bool]:
        store = SqliteRelayStore(str(tmp_path / "relay.db"))
        server = RelayServer(store, host="127.0.0.1", port=0, max_message_bytes=limit)
        await server.start()
        url = f"ws://127.0.0.1:{server.port}/sync"
        token = issue_token(store, tenant="acme", replica_id="x")
        try:
            async with connect(url, compression="deflate", max_size=None) as ws:
                assert ws.response is not None
                assert "permessage-deflate" in ws.response.headers.get(
                    "Sec-WebSocket-Extensions", ""
                )
                await ws.send(HelloFrame(1, "acme", "x", token, 7, {}).encode())
                await asyncio.wait_for(ws.recv(), 5)  # WELCOME
                await ws.send(b"\x00" * (4 * 2**20))  # deflates to about 4 KiB
                with pytest.raises(ConnectionClosed):
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                code = ws.close_code
            # the relay lives on and serves the next one
            async with connect(url, compression="deflate") as ws2:
                await ws2.send(HelloFrame(1, "acme", "x", token, 7, {}).encode())
                welcomed = bool(await asyncio.wait_for(ws2.recv(), 5))
            return code, welcomed
        finally:
            await server.stop()
            store.close()

    code, welcomed = asyncio.run(scenario())
    assert code == 1009 and welcomed
