"""The peer: pycrdt-websocket's server with pycrdt-store's SQLite store.

This is the stack a Python developer would otherwise pick.  Run as a
subprocess (``python -m benchmarks.peer --db FILE --port-file FILE``); it
needs the ``bench`` extra.  One room (one Yjs doc) per store; every update
a room applies is broadcast to the room's clients and written to the
SQLiteYStore (one row and one commit per update, as pycrdt-store does).

:func:`workload` drives the same sale workload as tiendasync's relay
benchmark through it, with pycrdt's own ``Provider`` on the client side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


def available() -> str | None:
    """None if the peer can run here, else why not."""
    try:
        import pycrdt.store
        import pycrdt.websocket  # noqa: F401
    except ImportError as exc:
        return f"peer not installed ({exc}); pip install -e '.[bench]'"
    return None


async def _serve(db: str, port_file: str) -> None:
    import websockets
    from pycrdt.store import SQLiteYStore
    from pycrdt.websocket import WebsocketServer, YRoom, exception_logger

    from .wschannel import WsChannel

    class Store(SQLiteYStore):
        db_path = db

    class Server(WebsocketServer):
        async def get_room(self, name: str) -> YRoom:
            if name not in self.rooms:
                self.rooms[name] = YRoom(
                    ready=True,
                    ystore=Store(path=name),
                    exception_handler=exception_logger,
                    log=self.log,
                )
            room = self.rooms[name]
            await self.start_room(room)
            return room

    # Create the schema once, up front: rooms that open a new database at the
    # same time race to create it (and move each other's file aside).
    async with Store(path="_init") as init:
        assert init.db_initialized is not None
        await init.db_initialized.wait()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Server(auto_clean_rooms=False, exception_handler=exception_logger) as ys:

        async def handler(ws: Any) -> None:
            await ys.serve(WsChannel(ws, ws.request.path))

        async with websockets.serve(handler, HOST, 0, compression=None, max_size=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            Path(port_file).write_text(str(port))
            await stop.wait()


def stored_updates(db: Path) -> int:
    """Rows in the peer's update table (0 before it exists)."""
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM yupdates").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def _record(i: int, store: str, sku: str) -> str:
    return json.dumps(
        {"at": int(time.time() * 1000), "by": store, "lines": [[sku, 1, 450]], "loc": store},
        separators=(",", ":"),
        sort_keys=True,
    )


async def workload(
    port: int, db: Path, k: int, per_store: int, timeout: float, skus: int = 20
) -> dict[str, Any]:
    """K stores stream ``per_store`` sales each; one follower holds every room.

    Each sale is one transaction: the sale record (the same JSON text as
    tiendasync's ledger) and the store's stock slot of that SKU.  Done when
    the follower holds every sale and the peer's database every update.
    """
    import pycrdt
    from websockets.asyncio.client import connect

    from .wschannel import WsChannel

    total = k * per_store
    async with contextlib.AsyncExitStack() as stack:
        producers = []
        followers = []
        for i in range(k):
            path = f"/acme/store-{i:02d}"
            for role in ("store", "follower"):
                ws = await stack.enter_async_context(
                    connect(f"ws://{HOST}:{port}{path}", compression=None, max_size=None)
                )
                doc: Any = pycrdt.Doc()
                sales = doc.get("sales", type=pycrdt.Map)
                stock = doc.get("stock", type=pycrdt.Map)
                provider = pycrdt.Provider(doc, WsChannel(ws, path))
                await stack.enter_async_context(provider)
                (producers if role == "store" else followers).append((doc, sales, stock, i))
        t0 = time.monotonic()
        counters: dict[tuple[int, str], int] = {}
        for n in range(per_store):
            for doc, sales, stock, i in producers:
                store = f"store-{i:02d}"
                sku = f"SKU-{(n + i) % skus:05d}"
                sale_id = f"{int(time.time() * 1000):013d}.{n:010d}.{store}"
                dec = counters.get((i, sku), 0) + 1
                counters[(i, sku)] = dec
                with doc.transaction():
                    sales[sale_id] = _record(n, store, sku)
                    stock[f"{sku}\x1f{doc.client_id}"] = [0, dec]
                await asyncio.sleep(0)
        produced = time.monotonic()
        deadline = t0 + timeout
        got = stored = 0
        while time.monotonic() < deadline:
            got = sum(len(s) for _, s, _, _ in followers)
            if got >= total:
                stored = await asyncio.to_thread(stored_updates, db)
                if stored >= total:
                    break
            await asyncio.sleep(0.02)
        end = time.monotonic()
    done = got >= total and stored >= total
    return {
        "sales": total,
        "elapsed_s": end - t0,
        "produce_s": produced - t0,
        "sales_per_s": total / (end - t0) if done else got / (end - t0),
        "follower_got": got,
        "stored": stored,
        "complete": done,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--port-file", required=True)
    args = ap.parse_args()
    asyncio.run(_serve(args.db, args.port_file))


if __name__ == "__main__":
    main()
