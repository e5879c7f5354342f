"""5. Reconnect storm: S stores, each with M offline sales, reconnect at once.

Every store calls ``sync_now`` at the same moment (a barrier); a follower is
online throughout.  Stores read every location's stock but only their own
sales (the grants a chain would configure: a till has no use for the other
stores' tickets), and the follower reads everything.  Converged = every
store's sync returned with all its sales acknowledged (durable at the relay)
and the follower holds all S x M sales.  Baselines: the relay's idle RSS
(ratio = peak / idle), and the time the follower alone takes to download the
final state with ``sync_now`` from scratch (ratio = storm time / that).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tiendasync import Replica

from .common import TENANT, Figure, Relay, emit, wait_until

SKUS = 20


def _open(workdir: Path, name: str) -> Replica:
    return Replica.open(
        workdir / f"{name}.db", tenant=TENANT, replica_id=name, location=name, durability="normal"
    )


def run(
    workdir: Path, *, stores: int = 50, sales: int = 1000, timeout: float = 600.0
) -> list[Figure]:
    figs: list[Figure] = []
    wd = workdir / "b5"
    wd.mkdir(parents=True, exist_ok=True)
    names = [f"store-{i:02d}" for i in range(stores)]
    replicas: list[Replica] = []
    with Relay(wd) as relay:
        tokens = relay.tokens(["hq", "follower", "late", *names])
        relay.read_only_own_docs(names, all_stock=True)
        hq = _open(wd, "hq")
        replicas.append(hq)
        hq.catalog.put_many(
            {f"SKU-{i:05d}": {"name": f"P{i}", "price_cents": 450} for i in range(SKUS)}
        )
        hq.sync_now(relay.url, token=tokens["hq"], timeout=60)
        try:
            reps = [_open(wd, n) for n in names]
            replicas.extend(reps)

            def offline(r: Replica) -> None:
                r.sync_now(relay.url, token=tokens[r.replica_id], timeout=120)  # catalog
                for s in range(SKUS):
                    r.inventory.receive(f"SKU-{s:05d}", 10**9)
                for n in range(sales):
                    r.record_sale([(f"SKU-{n % SKUS:05d}", 1)])

            t_setup = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(offline, reps))
            t_setup = time.monotonic() - t_setup
            follower = _open(wd, "follower")
            replicas.append(follower)
            follower.start_sync(relay.url, token=tokens["follower"])
            wait_until(lambda: follower.status.state == "online", 60, "follower online")
            idle_kb = relay.rss_kb()[0]
            barrier = threading.Barrier(stores + 1)
            done: list[float] = []
            failures: list[str] = []

            def reconnect(r: Replica) -> None:
                barrier.wait(60)
                try:
                    r.sync_now(relay.url, token=tokens[r.replica_id], timeout=timeout)
                except Exception as exc:  # reported, and the run then times out
                    failures.append(f"{r.replica_id}: {exc}")
                done.append(time.monotonic())

            threads = [threading.Thread(target=reconnect, args=(r,), daemon=True) for r in reps]
            for t in threads:
                t.start()
            peak_seen = [0]
            barrier.wait(60)
            t0 = time.monotonic()
            total = stores * sales

            def converged() -> bool:
                peak_seen[0] = max(peak_seen[0], relay.rss_kb()[0])
                if failures:
                    raise RuntimeError(f"sync failed during the storm: {failures[:3]}")
                return (
                    len(done) == stores
                    and follower.sales.count() >= total
                    and all(r.queue.pending_count() == 0 for r in reps)
                )

            end = wait_until(converged, timeout, "the storm to converge", 0.05)
            for t in threads:
                t.join(10)
            _, peak_kb = relay.rss_kb()
            follower.stop_sync()
            late = _open(wd, "late")
            replicas.append(late)
            t1 = time.monotonic()
            late.sync_now(relay.url, token=tokens["late"], timeout=timeout)
            t_late = time.monotonic() - t1
            late_count = late.sales.count()
        finally:
            for r in replicas:
                r.close()
    storm_s = end - t0
    extra: dict[str, Any] = {
        "stores": stores,
        "sales_per_store": sales,
        "total_sales": total,
        "uploads_acked_s": max(done) - t0,
        "setup_s": t_setup,
        "late_joiner_sales": late_count,
        "late_joiner_s": t_late,
    }
    emit(
        Figure(
            "5-storm",
            f"{stores} stores x {sales} offline sales: time to converge",
            storm_s,
            "s",
            baseline=t_late,
            baseline_name="one fresh replica downloading the final state",
            ratio=storm_s / t_late,
            extra={**extra, "sales_per_s": total / storm_s},
        ),
        figs,
    )
    emit(
        Figure(
            "5-storm",
            "relay peak RSS during the storm",
            peak_kb / 1024,
            "MiB",
            baseline=idle_kb / 1024,
            baseline_name="relay RSS before the storm",
            ratio=peak_kb / max(1, idle_kb),
            extra={**extra, "peak_polled_kb": peak_seen[0]},
        ),
        figs,
    )
    return figs
