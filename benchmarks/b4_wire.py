"""4. Wire cost: bytes per sale line in steady streaming, and a reconnect after
offline sales.

A counting TCP proxy sits between each replica and the relay, so the figures
include websocket framing (client frames are masked: 6 B header for small
messages) and every protocol byte, but not TCP/IP headers.

* streaming: one store online (``start_sync``) records sales one at a time,
  paced so that each is sent alone (the worst case; a busy till batches
  several frames into one websocket message).  Up = store to relay (the
  sale's two UPDATE frames: ledger + stock counter), acks = relay to store,
  fan-out = relay to a follower.
* reconnect: a store records N sales offline, then ``sync_now``; all bytes
  of the session both ways, per sale, next to the streaming cost per sale.

Each is measured twice in the same run against the same relay: with the
websocket compression replicas offer by default (permessage-deflate, the
window kept across messages), and without it (``TIENDASYNC_WIRE_COMPRESSION=0``,
what every replica sent before); the uncompressed figures are the baselines.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tiendasync import Replica
from tiendasync.store.client import WIRE_COMPRESSION_ENV

from .b8_hocuspocus import cpu_seconds
from .common import (
    TENANT,
    Figure,
    Relay,
    emit,
    proxy,
    record_sale_retrying,
    sessions,
    wait_until,
)

SKUS = 100
TARGET = 64


@contextlib.contextmanager
def _compression(on: bool) -> Iterator[None]:
    """Replicas of this process offer websocket compression (``on``) or not."""
    before = os.environ.get(WIRE_COMPRESSION_ENV)
    os.environ[WIRE_COMPRESSION_ENV] = "1" if on else "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[WIRE_COMPRESSION_ENV]
        else:
            os.environ[WIRE_COMPRESSION_ENV] = before


def _suffix(compress: bool) -> str:
    """Same length both ways: a replica id's length shows in every sale record."""
    return "-z" if compress else "-r"


def _open(workdir: Path, name: str, durability: str = "normal") -> Replica:
    return Replica.open(
        workdir / f"{name}.db", tenant=TENANT, replica_id=name, location=name, durability=durability
    )


def _settle(p: Any, quiet: float = 0.3, timeout: float = 30.0) -> None:
    """Wait until the proxy has seen no bytes for ``quiet`` seconds."""
    last = p.counts()
    t_last = time.monotonic()
    deadline = t_last + timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = p.counts()
        if now != last:
            last, t_last = now, time.monotonic()
        elif time.monotonic() - t_last >= quiet:
            return


def streaming(
    relay: Relay,
    workdir: Path,
    tokens: dict[str, str],
    sales: int,
    lines: int,
    pace_s: float = 0.004,
    *,
    compress: bool = True,
) -> dict[str, Any]:
    store = _open(workdir, f"wire-store-{lines}{_suffix(compress)}")
    follower = _open(workdir, f"wire-follower-{lines}{_suffix(compress)}")
    with _compression(compress):
        return _stream(relay, store, follower, tokens, sales, lines, pace_s) | {
            "compressed": compress
        }


def _stream(
    relay: Relay,
    store: Replica,
    follower: Replica,
    tokens: dict[str, str],
    sales: int,
    lines: int,
    pace_s: float,
) -> dict[str, Any]:
    try:
        store.catalog.put_many(
            {f"SKU-{i:05d}": {"name": f"P{i}", "price_cents": 450} for i in range(SKUS)}
        )
        for i in range(SKUS):
            store.inventory.receive(f"SKU-{i:05d}", 10**9)
        store.sync_now(relay.url, token=tokens[store.replica_id], timeout=60)
        follower.sync_now(relay.url, token=tokens[follower.replica_id], timeout=60)
        with proxy(relay.port) as ps, proxy(relay.port) as pf:
            store.start_sync(ps.url(), token=tokens[store.replica_id])
            follower.start_sync(pf.url(), token=tokens[follower.replica_id])
            wait_until(
                lambda: store.status.state == "online" and follower.status.state == "online",
                30,
                "online",
            )
            _settle(ps)
            _settle(pf)
            cpu0 = cpu_seconds(relay.pid)
            s_up0, s_down0 = ps.counts()
            f_up0, f_down0 = pf.counts()
            before = follower.sales.count()
            errors: list[str] = []
            yjs: dict[str, int] = {}

            def count(updates: list[tuple[str, bytes]]) -> None:
                for doc, data in updates:
                    kind = doc.partition("/")[0]
                    yjs[kind] = yjs.get(kind, 0) + len(data)

            unsubscribe = store.on_local_update(count)
            for n in range(sales):
                record_sale_retrying(
                    store, [(f"SKU-{(n * lines + j) % SKUS:05d}", 1) for j in range(lines)], errors
                )
                time.sleep(pace_s)
            wait_until(
                lambda: (
                    store.queue.pending_count() == 0 and follower.sales.count() - before >= sales
                ),
                60,
                "acked and fanned out",
            )
            unsubscribe()
            _settle(ps)
            _settle(pf)
            s_up, s_down = ps.counts()
            f_up, f_down = pf.counts()
            cpu1 = cpu_seconds(relay.pid)
            store.stop_sync()
            follower.stop_sync()
        n_lines = sales * lines
        return {
            "sales": sales,
            "lines_per_sale": lines,
            "up_per_line": (s_up - s_up0) / n_lines,
            "ack_per_line": (s_down - s_down0) / n_lines,
            "fanout_per_line": (f_down - f_down0) / n_lines,
            "follower_up_per_line": (f_up - f_up0) / n_lines,
            "yjs_update_bytes_per_line": {k: v / n_lines for k, v in yjs.items()},
            # the relay's CPU over the whole window, settling included: compare arms
            "relay_cpu_ms_per_sale": (cpu1 - cpu0) * 1000 / sales,
            "sale_retries": len(errors),
            "sync_sessions": sessions([store]),
        }
    finally:
        store.close()
        follower.close()


def reconnect(
    relay: Relay, workdir: Path, tokens: dict[str, str], sales: int, *, compress: bool = True
) -> dict[str, Any]:
    store = _open(workdir, f"wire-offline{_suffix(compress)}")
    with _compression(compress):
        return _reconnect(relay, store, tokens, sales) | {"compressed": compress}


def _reconnect(relay: Relay, store: Replica, tokens: dict[str, str], sales: int) -> dict[str, Any]:
    try:
        store.catalog.put_many(
            {f"SKU-{i:05d}": {"name": f"P{i}", "price_cents": 450} for i in range(SKUS)}
        )
        for i in range(SKUS):
            store.inventory.receive(f"SKU-{i:05d}", 10**9)
        store.sync_now(relay.url, token=tokens[store.replica_id], timeout=60)
        for n in range(sales):
            store.record_sale([(f"SKU-{n % SKUS:05d}", 1)])
        with proxy(relay.port) as p:
            t0 = time.monotonic()
            report = store.sync_now(p.url(), token=tokens[store.replica_id], timeout=300)
            elapsed = time.monotonic() - t0
            _settle(p, 0.1)
            up, down = p.counts()
        return {
            "sales": sales,
            "up_bytes": up,
            "down_bytes": down,
            "bytes_per_sale": (up + down) / sales,
            "elapsed_s": elapsed,
            "protocol_bytes_sent": report.bytes_sent,
            "protocol_bytes_received": report.bytes_received,
        }
    finally:
        store.close()


def _streaming_figure(result: dict[str, Any], raw: dict[str, Any]) -> Figure:
    lines = result["lines_per_sale"]
    value = result["up_per_line"]
    return Figure(
        "4-wire",
        f"streaming, {lines}-line sales: bytes up per sale line",
        value,
        "B/line",
        baseline=TARGET,
        baseline_name="target 64 B",
        ratio=value / TARGET,
        target="<= 64 B",
        met=value <= TARGET,
        extra=result | {"uncompressed": raw},
    )


def _both_ways(result: dict[str, Any]) -> float:
    return float(result["up_per_line"] + result["ack_per_line"] + result["fanout_per_line"])


def run(workdir: Path, *, sales: int = 200, offline_sales: int = 10_000) -> list[Figure]:
    """Benchmark 4; each measurement with compression (the default), then without."""
    figs: list[Figure] = []
    wd = workdir / "b4"
    wd.mkdir(parents=True, exist_ok=True)
    names = [
        f"{kind}-{n}{suffix}"
        for kind in ("wire-store", "wire-follower")
        for n in (1, 5)
        for suffix in ("-z", "-r")
    ]
    with Relay(wd) as relay:
        tokens = relay.tokens([*names, "wire-offline-z", "wire-offline-r"])
        one, one_raw = (streaming(relay, wd, tokens, sales, 1, compress=c) for c in (True, False))
        five, five_raw = (
            streaming(relay, wd, tokens, max(1, sales // 5), 5, compress=c) for c in (True, False)
        )
        off, off_raw = (
            reconnect(relay, wd, tokens, offline_sales, compress=c) for c in (True, False)
        )
    emit(_streaming_figure(one, one_raw), figs)
    emit(_streaming_figure(five, five_raw), figs)
    emit(
        Figure(
            "4-wire",
            "streaming, 1-line sales: bytes up + ACK + fan-out per sale, compressed",
            _both_ways(one),
            "B/sale",
            baseline=_both_ways(one_raw),
            baseline_name="the same, uncompressed (before)",
            ratio=_both_ways(one) / _both_ways(one_raw),
            extra={"compressed": one, "uncompressed": one_raw},
        ),
        figs,
    )
    per_sale_stream = one["up_per_line"] + one["ack_per_line"]
    emit(
        Figure(
            "4-wire",
            f"reconnect after {offline_sales} offline sales: bytes per sale",
            off["bytes_per_sale"],
            "B/sale",
            baseline=per_sale_stream,
            baseline_name="streaming 1-line sale (up + ack)",
            ratio=off["bytes_per_sale"] / per_sale_stream,
            target="not dominated by the delete set",
            extra=off | {"uncompressed": off_raw},
        ),
        figs,
    )
    return figs
