"""A live stock dashboard that follows one location's stock through the relay.

    python examples/stock_dashboard.py --relay ws://127.0.0.1:8765 \\
        --tenant acme --location tienda-1 --token TOKEN [--once]

It speaks the *standard* Yjs sync protocol to the relay's read-only
``/yjs/<tenant>/stock/<location>`` endpoint, like any off-the-shelf Yjs
client would, and reads the PN-counters with tiendasync's own view.  It
redraws the table on every change.  ``--once`` prints the table once synced
and exits (used by the tests).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any
from urllib.parse import quote

import pycrdt
from websockets.asyncio.client import connect

from tiendasync.crdt import PNCounter


def render(counter: PNCounter, location: str) -> str:
    rows = sorted(counter.items())
    lines = [f"stock at {location}", f"{'SKU':<20} {'units':>8}", "-" * 29]
    lines += [
        f"{sku:<20} {units:>8}" + ("  <- negative!" if units < 0 else "") for sku, units in rows
    ]
    return "\n".join(lines)


async def follow(url: str, tenant: str, location: str, token: str, once: bool) -> int:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    counter = PNCounter(doc)
    path = f"{url}/yjs/{quote(tenant)}/stock/{quote(location)}?token={quote(token)}"
    async with connect(path) as ws:
        await ws.send(pycrdt.create_sync_message(doc))  # SyncStep1: what we have
        synced = False
        async for message in ws:
            if not isinstance(message, bytes) or message[:1] != bytes([pycrdt.YMessageType.SYNC]):
                continue
            reply = pycrdt.handle_sync_message(message[1:], doc)
            if reply is not None:
                await ws.send(reply)
            if message[1] == pycrdt.YSyncMessageType.SYNC_STEP2:
                synced = True
            if synced:
                print("\033[2J\033[H" if sys.stdout.isatty() else "", end="")
                print(render(counter, location), flush=True)
                if once:
                    return 0
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--relay", default="ws://127.0.0.1:8765")
    parser.add_argument("--tenant", default="acme")
    parser.add_argument("--location", required=True)
    parser.add_argument("--token", required=True, help="any token of that tenant")
    parser.add_argument("--once", action="store_true", help="print once synced, then exit")
    args = parser.parse_args()
    try:
        return asyncio.run(follow(args.relay, args.tenant, args.location, args.token, args.once))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
