"""The transport's limit: a bare ``websockets`` echo server on loopback.

Run as a subprocess (``python -m benchmarks.echo --port-file FILE``).
:func:`echo_rate` pipelines messages of a given size over K connections
(at most ``window`` in flight on each) and returns round trips per second.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"


async def _serve(port_file: str) -> None:
    import websockets

    async def handler(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with websockets.serve(handler, HOST, 0, compression=None) as server:
        Path(port_file).write_text(str(next(iter(server.sockets)).getsockname()[1]))
        await stop.wait()


async def echo_rate(
    port: int, k: int, messages: int, size: int, window: int = 64, timeout: float = 60.0
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    payload = b"x" * size

    async def one(i: int) -> int:
        async with connect(f"ws://{HOST}:{port}/", compression=None) as ws:
            slots = asyncio.Semaphore(window)
            done = 0

            async def sender() -> None:
                for _ in range(messages):
                    await slots.acquire()
                    await ws.send(payload)

            task = asyncio.create_task(sender())
            while done < messages:
                await ws.recv()
                done += 1
                slots.release()
            await task
            return done

    t0 = time.monotonic()
    counts = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(k))), timeout)
    elapsed = time.monotonic() - t0
    return {"messages": sum(counts), "elapsed_s": elapsed, "per_s": sum(counts) / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    args = ap.parse_args()
    asyncio.run(_serve(args.port_file))


if __name__ == "__main__":
    main()
