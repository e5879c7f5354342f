"""3. Relay throughput: K stores stream sales through the relay to durable storage
and to one follower, sales/s end to end.

Baselines in the same run: pycrdt-websocket + pycrdt-store (SQLite) on the
same workload, and a bare websockets echo server (the transport's limit).

Layout (2 cores): the relay (or the peer, or the echo server) runs in its
own process; the K stores and the follower run in this process, each store
a real ``Replica`` (durability=normal, so that local fsyncs, measured in
benchmark 1, do not hide the relay) streaming with ``start_sync``.  The
clock starts when the first sale is recorded and stops when (a) every store
has had every sale acknowledged (the relay acks only after its
``synchronous=FULL`` commit) and (b) the follower holds every sale.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tiendasync import Replica

from . import echo, peer
from .b3_light import light_stream
from .common import (
    HOST,
    PY,
    TENANT,
    BenchTimeout,
    Figure,
    Relay,
    emit,
    record_sale_retrying,
    sessions,
    stop_process,
    wait_port_file,
    wait_until,
)

SKUS = 20


def _open(workdir: Path, name: str) -> Replica:
    return Replica.open(
        workdir / f"{name}.db", tenant=TENANT, replica_id=name, location=name, durability="normal"
    )


def tiendasync_stream(
    workdir: Path, k: int, per_store: int, timeout: float, profile: Path | None = None
) -> dict[str, Any]:
    """Run the workload through a tiendasync relay subprocess."""
    workdir = workdir / f"b3-ts-k{k}"
    workdir.mkdir(parents=True, exist_ok=True)
    names = [f"store-{i:02d}" for i in range(k)]
    relay = Relay(workdir, profile=profile)
    replicas: list[Replica] = []
    try:
        relay.start()
        tokens = relay.tokens(["hq", "follower", *names])
        hq = _open(workdir, "hq")
        replicas.append(hq)
        hq.catalog.put_many(
            {f"SKU-{i:05d}": {"name": f"Producto {i}", "price_cents": 450} for i in range(SKUS)}
        )
        hq.sync_now(relay.url, token=tokens["hq"], timeout=60)
        stores = [_open(workdir, n) for n in names]
        replicas.extend(stores)

        def prepare(r: Replica) -> None:
            # enough stock that no sale opens a conflict, and the catalog
            for s in range(SKUS):
                r.inventory.receive(f"SKU-{s:05d}", 10**9)
            r.sync_now(relay.url, token=tokens[r.replica_id], timeout=120)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(prepare, stores))
        follower = _open(workdir, "follower")
        replicas.append(follower)
        follower.sync_now(relay.url, token=tokens["follower"], timeout=120)
        before = follower.sales.count()
        for r in [follower, *stores]:
            r.start_sync(relay.url, token=tokens[r.replica_id])
        wait_until(
            lambda: all(r.status.state == "online" for r in [follower, *stores]),
            60,
            "every store online",
        )
        rss0 = relay.rss_kb()[0]
        total = k * per_store
        produced: list[float] = []
        errors: list[str] = []

        def sell(idx: int, r: Replica) -> None:
            for n in range(per_store):
                record_sale_retrying(r, [(f"SKU-{(n + idx) % SKUS:05d}", 1)], errors)
            produced.append(time.monotonic())

        threads = [
            threading.Thread(target=sell, args=(i, r), daemon=True) for i, r in enumerate(stores)
        ]
        t0 = time.monotonic()
        for t in threads:
            t.start()

        def converged() -> bool:
            if len(produced) < k:
                return False
            if follower.sales.count() - before < total:
                return False
            return all(r.queue.pending_count() == 0 for r in stores)

        end = wait_until(converged, timeout, f"{total} sales through the relay (K={k})", 0.01)
        for t in threads:
            t.join(5)
        cur, peak = relay.rss_kb()
        return {
            "k": k,
            "sales": total,
            "elapsed_s": end - t0,
            "produce_s": max(produced) - t0,
            "sales_per_s": total / (end - t0),
            "relay_rss_kb": cur,
            "relay_rss_start_kb": rss0,
            "relay_peak_kb": peak,
            "sale_retries": len(errors),
            "sync_sessions": sessions(stores),
        }
    finally:
        for r in replicas:
            r.close()
        relay.stop()


def peer_stream(workdir: Path, k: int, per_store: int, timeout: float) -> dict[str, Any]:
    workdir = workdir / f"b3-peer-k{k}"
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "peer.db"
    port_file = workdir / "peer.port"
    log = (workdir / "peer.log").open("wb")
    proc = subprocess.Popen(
        [PY, "-m", "benchmarks.peer", "--db", str(db), "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=log,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    log.close()
    try:
        port = wait_port_file(port_file, proc)
        result = asyncio.run(peer.workload(port, db, k, per_store, timeout, SKUS))
        result["k"] = k
        return result
    finally:
        stop_process(proc)


def echo_baseline(workdir: Path, k: int, messages: int, size: int) -> dict[str, Any]:
    port_file = workdir / f"echo-k{k}.port"
    proc = subprocess.Popen(
        [PY, "-m", "benchmarks.echo", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    try:
        port = wait_port_file(port_file, proc)
        return asyncio.run(echo.echo_rate(port, k, messages, size))
    finally:
        stop_process(proc)


def run(
    workdir: Path,
    *,
    ks: tuple[int, ...] = (1, 10),
    sales: int = 1000,
    timeout: float = 120.0,
    with_peer: bool = True,
    echo_messages: int = 2000,
    frame_bytes: int = 260,
) -> list[Figure]:
    """``sales``: total sales per K (split across the K stores)."""
    figs: list[Figure] = []
    why_not = peer.available() if with_peer else "peer disabled"
    for k in ks:
        per_store = max(1, sales // k)
        try:
            ours = tiendasync_stream(workdir, k, per_store, timeout)
        except BenchTimeout as exc:  # reported; the other K still run
            emit(
                Figure(
                    "3-relay",
                    f"K={k} tiendasync did not converge",
                    float(timeout),
                    "s",
                    extra={"error": str(exc)},
                ),
                figs,
            )
            continue
        ech = echo_baseline(workdir, k, max(1, echo_messages // k), frame_bytes)
        frac = ours["sales_per_s"] / ech["per_s"]
        emit(
            Figure(
                "3-relay",
                f"K={k} sales/s vs websockets echo",
                ours["sales_per_s"],
                "sales/s",
                baseline=ech["per_s"],
                baseline_name=f"bare websockets echo, {frame_bytes} B msgs, round trips/s",
                ratio=frac,
                extra={"tiendasync": ours, "echo": ech},
            ),
            figs,
        )
        light = light_stream(workdir, k, per_store, timeout)
        if why_not is None:
            theirs = peer_stream(workdir, k, per_store, timeout)
            ratio = ours["sales_per_s"] / theirs["sales_per_s"]
            emit(
                Figure(
                    "3-relay",
                    f"K={k} sales/s vs pycrdt-websocket+store",
                    ours["sales_per_s"],
                    "sales/s",
                    baseline=theirs["sales_per_s"],
                    baseline_name="pycrdt-websocket + pycrdt-store SQLite",
                    ratio=ratio,
                    extra={"tiendasync": ours, "peer": theirs},
                ),
                figs,
            )
            ratio = light["sales_per_s"] / theirs["sales_per_s"]
            emit(
                Figure(
                    "3-relay",
                    f"K={k} light clients: sales/s vs pycrdt-websocket+store",
                    light["sales_per_s"],
                    "sales/s",
                    baseline=theirs["sales_per_s"],
                    baseline_name="pycrdt-websocket + pycrdt-store (in-memory clients too)",
                    ratio=ratio,
                    target=">= 10",
                    met=ratio >= 10,
                    extra={"tiendasync": light, "peer": theirs},
                ),
                figs,
            )
        else:
            emit(
                Figure(
                    "3-relay",
                    f"K={k} light clients: sales/s (peer not run)",
                    light["sales_per_s"],
                    "sales/s",
                    target=">= 10",
                    extra={"peer_skipped": why_not, "tiendasync": light},
                ),
                figs,
            )
    return figs


__all__ = ["HOST", "run"]
