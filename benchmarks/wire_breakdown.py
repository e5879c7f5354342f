"""Where the bytes of a 1-line sale streamed to the relay go (issue 19 part 5).

``python -m benchmarks.wire_breakdown [--lines 1]``

A replica records one sale (after its catalog and stock exist); its two
local updates (the sales ledger and the stock counter) are split into what
the wire carries for them: the websocket header of the message (a client
frame is masked: 6 B below 126 B of payload, 8 B up to 64 KiB), each UPDATE
frame's msgpack envelope (type, interned doc reference, bin header) and the
Yjs update.  A Yjs update is split into its map keys, its content (the JSON
text of the sale record) and the rest (struct headers, client ids and
clocks as varints, origins, the parent's name, the delete set, numbers such
as the counter slot's).
Nothing here changes the layout; it measures the current one.

Replicas compress by default (permessage-deflate, its window kept across
messages): ``compressed`` replays a stream of such sales through the same
deflate settings as websockets (12-bit window, memLevel 5, a sync flush per
message whose 4-byte tail the extension drops) and gives the median message
of the last half: the deflated payload and its websocket header.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from tiendasync import Replica
from tiendasync.protocol.frames import FrameType, encode
from tiendasync.protocol.yjs_update import parse_update

SKUS = 100


def _ws_header(payload: int) -> int:
    """Bytes of a masked (client) websocket frame header for ``payload`` bytes."""
    return 2 + 4 + (0 if payload < 126 else 2 if payload < 65536 else 8)


def _varuint_len(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def _split_update(data: bytes) -> dict[str, int]:
    """The update's bytes: keys (with their length prefix), content, the rest."""
    parsed = parse_update(data, items=True)
    keys = content = 0
    for item in parsed.items:
        if item.key is not None:
            raw = item.key.encode("utf-8")
            keys += _varuint_len(len(raw)) + len(raw)
        for value in item.values or ():
            if isinstance(value, str):
                raw = value.encode("utf-8")
                content += 1 + _varuint_len(len(raw)) + len(raw)  # lib0 Any: tag, length
    return {"keys": keys, "content": content, "other": len(data) - keys - content}


def breakdown(workdir: Path, lines: int = 1) -> dict[str, Any]:
    """Bytes per part of one ``lines``-line sale, as streamed alone."""
    with Replica.open(workdir / "till.db", tenant="acme", replica_id="caja-1", location="t1") as r:
        r.catalog.put_many(
            {f"SKU-{i:05d}": {"name": f"P{i}", "price_cents": 450} for i in range(SKUS)}
        )
        for i in range(SKUS):
            r.inventory.receive(f"SKU-{i:05d}", 1000)
        captured: list[tuple[str, bytes]] = []
        r.on_local_update(captured.extend)
        r.record_sale([(f"SKU-{i:05d}", 1, 450) for i in range(lines)])
    docs: dict[str, Any] = {}
    payload = 0
    for n, (doc, data) in enumerate(captured):
        # After the first use a doc name travels as a small integer (interned).
        frame = len(encode(FrameType.UPDATE, n + 1, data))
        payload += frame
        kind = doc.split("/")[0]
        docs[kind] = {"update": len(data), "envelope": frame - len(data), **_split_update(data)}
    total = payload + _ws_header(payload)
    return {
        "lines": lines,
        "total": total,
        "websocket_header": total - payload,
        "docs": docs,
        "captured_docs": [d for d, _ in captured],
    }


def _messages(workdir: Path, sales: int, lines: int) -> list[bytes]:
    """The payload of each message a till streams for ``sales`` sales, one message a sale."""
    path = workdir / "till-z.db"
    with Replica.open(path, tenant="acme", replica_id="caja-1", location="t1") as r:
        r.catalog.put_many(
            {f"SKU-{i:05d}": {"name": f"P{i}", "price_cents": 450} for i in range(SKUS)}
        )
        for i in range(SKUS):
            r.inventory.receive(f"SKU-{i:05d}", 1000)
        captured: list[list[tuple[str, bytes]]] = []
        r.on_local_update(lambda updates: captured.append(list(updates)))
        for n in range(sales):
            r.record_sale([(f"SKU-{(n * lines + j) % SKUS:05d}", 1, 450) for j in range(lines)])
    aliases: dict[str, int] = {}
    out = []
    for updates in captured:
        frames = b""
        for doc, data in updates:
            ref: Any = aliases.get(doc)
            if ref is None:
                ref = aliases[doc] = len(aliases)
                ref = [ref, doc]
            frames += encode(FrameType.UPDATE, ref, data)
        out.append(frames)
    return out


def _extension_cost(messages: list[bytes], repeat: int = 10) -> tuple[float, float]:
    """CPU µs per message of websockets' own permessage-deflate, to deflate and to inflate."""
    from websockets.extensions.permessage_deflate import PerMessageDeflate
    from websockets.frames import Frame, Opcode

    sender = PerMessageDeflate(False, False, 12, 12, {"memLevel": 5})
    receiver = PerMessageDeflate(False, False, 12, 12, {"memLevel": 5})
    frames = [Frame(Opcode.BINARY, m) for m in messages] * repeat
    t0 = time.process_time()
    sent = [sender.encode(f) for f in frames]
    t1 = time.process_time()
    got = [receiver.decode(f, max_size=2**26) for f in sent]
    t2 = time.process_time()
    assert [f.data for f in got] == [f.data for f in frames]
    n = len(frames)
    return (t1 - t0) * 1e6 / n, (t2 - t1) * 1e6 / n


def compressed(workdir: Path, lines: int = 1, sales: int = 200) -> dict[str, Any]:
    """Bytes of a streamed ``lines``-line sale, deflated as the websocket extension does."""
    messages = _messages(workdir, sales, lines)
    deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12, 5)
    sizes = []
    for payload in messages:
        body = deflate.compress(payload) + deflate.flush(zlib.Z_SYNC_FLUSH)
        sizes.append((len(payload), len(body) - 4))  # the 00 00 ff ff tail is not sent
    encode_us, decode_us = _extension_cost(messages)
    tail = sizes[len(sizes) // 2 :]
    deflated = statistics.median(z for _, z in tail)
    plain = statistics.median(p for p, _ in tail)
    return {
        "lines": lines,
        "sales": sales,
        "uncompressed_payload": plain,
        "deflated_payload": deflated,
        "websocket_header": _ws_header(int(deflated)),
        "total": deflated + _ws_header(int(deflated)),
        "extension_deflate_us": encode_us,
        "extension_inflate_us": decode_us,
        # a real connection's window already holds its HELLO and catch-up by then
        "first_message": sizes[0][1] + _ws_header(sizes[0][1]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        result = breakdown(Path(d), args.lines)
        deflated = compressed(Path(d), args.lines)
    if args.json:
        print(json.dumps(result | {"compressed": deflated}, indent=1))
        return 0
    print(f"{args.lines}-line sale, up, one websocket message: {result['total']} B")
    print(f"  websocket header (masked)      {result['websocket_header']:4} B")
    for kind, part in result["docs"].items():
        print(f"  {kind} UPDATE frame envelope    {part['envelope']:4} B")
        print(
            f"  {kind} Yjs update              {part['update']:4} B: keys {part['keys']}, "
            f"text content {part['content']}, the rest {part['other']}"
        )
    print(
        f"compressed (the default), median of the last {deflated['sales'] // 2} of "
        f"{deflated['sales']} streamed sales: {deflated['total']:g} B"
    )
    print(f"  websocket header (masked)      {deflated['websocket_header']:4} B")
    print(
        f"  deflated frames                {deflated['deflated_payload']:4g} B "
        f"(of {deflated['uncompressed_payload']:g} B)"
    )
    print(f"  (the first, into an empty window: {deflated['first_message']} B)")
    print(
        f"  websockets' extension: {deflated['extension_deflate_us']:.1f} µs CPU to deflate "
        f"a message, {deflated['extension_inflate_us']:.1f} µs to inflate one"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
