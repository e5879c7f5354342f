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
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        result = breakdown(Path(d), args.lines)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{args.lines}-line sale, up, one websocket message: {result['total']} B")
    print(f"  websocket header (masked)      {result['websocket_header']:4} B")
    for kind, part in result["docs"].items():
        print(f"  {kind} UPDATE frame envelope    {part['envelope']:4} B")
        print(
            f"  {kind} Yjs update              {part['update']:4} B: keys {part['keys']}, "
            f"text content {part['content']}, the rest {part['other']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
