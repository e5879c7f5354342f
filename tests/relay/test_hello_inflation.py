"""A connection that has not said HELLO cannot make the relay inflate a big message.

Websocket compression (permessage-deflate) lets a few KiB arrive as megabytes.
Until a HELLO is accepted the relay holds a message, inflated, to the HELLO's
own bound (``RateLimits.max_hello_bytes``); once accepted, the full message limit applies.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tiendasync.relay import RelayServer, SqliteRelayStore
from tiendasync.relay.policy import RateLimits


def test_a_message_inflating_past_the_hello_bound_is_refused_before_hello(
    tmp_path: Path,
) -> None:
    async def scenario() -> tuple[int, str]:
        with SqliteRelayStore(str(tmp_path / "relay.db")) as store:
            async with RelayServer(store, port=0) as relay:
                bomb = bytes(RateLimits().max_hello_bytes + 1)  # zeros: KiB, compressed
                async with connect(
                    f"ws://127.0.0.1:{relay.port}/sync", compression="deflate", max_size=None
                ) as ws:
                    await ws.send(bomb)
                    with pytest.raises(ConnectionClosed) as closed:
                        await asyncio.wait_for(ws.recv(), 10)
                    rcvd = closed.value.rcvd
                    assert rcvd is not None
                return rcvd.code, rcvd.reason

    code, reason = asyncio.run(scenario())
    # Refused while inflating: the relay's own HELLO check ("HELLO of N bytes is over
    # the limit") never saw it, so it never held the whole message.
    assert code == 1009
    assert "HELLO" not in reason


def test_a_relay_can_refuse_compression(tmp_path: Path) -> None:
    """``RelayServer(compression=False)`` (``--no-compression``): a replica offering
    permessage-deflate talks uncompressed; the default negotiates it."""

    async def negotiated(compression: bool) -> list[str]:
        with SqliteRelayStore(str(tmp_path / f"relay-{compression}.db")) as store:
            async with RelayServer(store, port=0, compression=compression) as relay:
                url = f"ws://127.0.0.1:{relay.port}/sync"
                async with connect(url, compression="deflate") as ws:
                    return [e.name for e in ws.protocol.extensions]

    assert asyncio.run(negotiated(True)) == ["permessage-deflate"]
    assert asyncio.run(negotiated(False)) == []
