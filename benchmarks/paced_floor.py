"""The machine's floor for paced load: a trivial asyncio echo server, bulk against paced.

``python -m benchmarks.paced_floor [--k 10] [--rates 10,100] [--seconds 5] [--bulk 3000]``

A server that does nothing but echo 150-byte messages (``asyncio.start_server``,
a subprocess) costs more CPU per message when the messages come at a slow,
steady pace than when they come in a burst: every message then wakes an idle
process (caches cold, a halted virtual CPU woken).  Benchmark 8's target for
the relay ("paced CPU per sale within 2x of bulk") is to be read next to this
ratio, measured the same way (``/proc/PID/stat``) on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

from .b8_hocuspocus import cpu_seconds

SERVER = """
import asyncio

async def handle(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)

async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""

MESSAGE = b"x" * 150


async def _run(port: int, pid: int, k: int, per_conn: int, rate: float) -> float:
    """Server CPU microseconds per message: ``k`` connections, ``rate`` messages/s each
    (0: as fast as they can)."""
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(k)]
    total = k * per_conn
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    if rate > 0:
        interval = 1 / (k * rate)
        for j in range(total):
            await asyncio.sleep(max(0.0, t0 + j * interval - time.monotonic()))
            reader, writer = conns[j % k]
            writer.write(MESSAGE)
            await reader.readexactly(len(MESSAGE))
    else:
        for _ in range(per_conn):
            for _, writer in conns:
                writer.write(MESSAGE)
            for reader, _ in conns:
                await reader.readexactly(len(MESSAGE))
    used = cpu_seconds(pid) - cpu0
    for _, writer in conns:
        writer.close()
    return 1e6 * used / total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=10, help="connections")
    ap.add_argument("--rates", default="10,100", help="messages/s per connection")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of a paced run")
    ap.add_argument("--bulk", type=int, default=3000, help="messages per connection, bulk")
    args = ap.parse_args(argv)
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        bulk = asyncio.run(_run(port, server.pid, args.k, args.bulk, 0))
        print(f"echo server, bulk: {bulk:.0f} us CPU per message")
        for rate in (float(r) for r in args.rates.split(",")):
            per_conn = max(1, int(rate * args.seconds))
            paced = asyncio.run(_run(port, server.pid, args.k, per_conn, rate))
            # /proc counts 10 ms ticks: a tiny bulk run may measure 0
            ratio = f"{paced / bulk:.1f}x bulk" if bulk else "bulk under one clock tick"
            print(
                f"echo server, {args.k} x {rate:g}/s ({args.k * rate:g}/s): "
                f"{paced:.0f} us CPU per message ({ratio})"
            )
    finally:
        server.kill()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
