"""9. A relay cluster on PostgreSQL: 1, 2 and 3 relay nodes on this machine (issue 15).

Every node is ``python -m tiendasync relay --store postgresql://...`` on one
throwaway PostgreSQL server that fsyncs like a production one.  K light
stores (benchmark 3b's clients) are spread over the nodes round-robin; HQ
sits on the first node and the follower on the last, so with two nodes or
more most of the follower's updates cross between nodes.  Each run reports:

- sales per second end to end (every sale acknowledged and at the follower);
- ACK latency (write to the ACK of the store's sales update) and
  write-to-follower latency, p50 and p99;
- CPU per sale of the relay nodes and of the PostgreSQL server;
- PostgreSQL rows and bytes per sale (the footprint the 1,000-store model
  scales up), and the relay's memory per idle connection.

The machine has two cores shared by the nodes, the server and the clients,
so more nodes cannot mean more throughput here; the benchmark shows what a
node costs and what saturates first, which is what the model needs.

``python -m benchmarks.b9_cluster --nodes 1 2 3 --json benchmarks/results-cluster.json``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from tiendasync.crdt import Ledger, PNCounter

from .b3_light import SKUS, LightStore, period, setup
from .b8_hocuspocus import _percentile, cpu_seconds
from .common import HOST, PY, TENANT, sell_in_turn, stop_process, wait_listening

__all__ = ["cluster_run", "main", "model"]


class Node:
    """One relay process on the shared PostgreSQL store of record."""

    def __init__(self, workdir: Path, store_url: str, index: int) -> None:
        self.workdir = workdir
        self.store_url = store_url
        self.index = index
        self.log_path = workdir / f"node-{index}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 60.0) -> None:
        central = self.workdir / f"central-{self.index}"
        central.mkdir(exist_ok=True)
        cmd = [
            PY,
            "-m",
            "tiendasync",
            "relay",
            "--store",
            self.store_url,
            "--central-dir",
            str(central),
            "--host",
            HOST,
            "--port",
            "0",
            "--no-admin",
            "--max-msgs-per-s",
            "0",
        ]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
        self.port = wait_listening(self.proc, self.log_path, f"relay node {self.index}", timeout)

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/sync"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def _server_cpu_seconds(data_dir: Path) -> float:
    """CPU of the PostgreSQL postmaster and all its backends (children), in seconds."""
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    total = cpu_seconds(postmaster)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == postmaster:
            try:
                total += cpu_seconds(int(entry.name))
            except OSError:
                continue
    return total


def _prepare(store_url: str, names: list[str]) -> dict[str, str]:
    """Schema, tokens and read grants (each store reads its own documents)."""
    from tiendasync.relay import issue_token
    from tiendasync.relay.pgstore import PostgresRelayStore

    store = PostgresRelayStore(store_url)
    try:
        tokens = {r: issue_token(store, tenant=TENANT, replica_id=r) for r in names}
        for r in names:
            if r.startswith("store-"):
                store.set_replica_config(
                    TENANT,
                    r,
                    {
                        "read": ["catalog", "locations", "conflicts", f"stock/{r}", f"sales/{r}/*"],
                        "write": ["*"],
                    },
                )
        return tokens
    finally:
        store.close()


def _footprint(store_url: str) -> dict[str, int]:
    import psycopg

    with psycopg.connect(store_url) as conn:
        rows = conn.execute(
            "SELECT count(*), coalesce(sum(length(data)), 0) FROM updates"
        ).fetchone()
        sizes = conn.execute(
            "SELECT pg_total_relation_size('updates'), pg_database_size(current_database())"
        ).fetchone()
    assert rows is not None and sizes is not None
    return {
        "update_rows": int(rows[0]),
        "update_payload_bytes": int(rows[1]),
        "updates_table_bytes": int(sizes[0]),
        "database_bytes": int(sizes[1]),
    }


async def _drive(
    nodes: list[Node], tokens: dict[str, str], k: int, per_store: int, rate: float, timeout: float
) -> dict[str, Any]:
    hq, follower, stores = await _connect_spread(nodes, tokens, k)
    month = period()
    views = [(s, s.doc(f"sales/{s.name}/{month}"), s.doc(f"stock/{s.name}")) for s in stores]
    ledgers = [Ledger(ledger_doc) for _, ledger_doc, _ in views]
    counters = [PNCounter(stock_doc) for _, _, stock_doc in views]
    index = {s.name: i for i, s in enumerate(stores)}
    written: list[list[float]] = [[] for _ in stores]
    pending_acks: list[list[tuple[int, float]]] = [[] for _ in stores]
    seen = [0] * k
    to_follower: list[float] = []
    to_ack: list[float] = []

    def arrived(doc: str) -> None:
        # One update per sale, forwarded in order: the n-th is the store's n-th sale.
        # Between nodes delivery is at least once: a rare repeat is not a sale.
        if doc.startswith("sales/"):
            i = index[doc.split("/")[1]]
            if seen[i] < len(written[i]):
                to_follower.append(time.perf_counter() - written[i][seen[i]])
                seen[i] += 1

    def acked_by(i: int) -> Any:
        def on_ack(doc: str, clock: int) -> None:
            if not doc.startswith("sales/"):
                return
            now = time.perf_counter()
            queue = pending_acks[i]
            while queue and queue[0][0] <= clock:
                to_ack.append(now - queue.pop(0)[1])

        return on_ack

    follower.on_update = arrived
    for i, s in enumerate(stores):
        s.on_ack = acked_by(i)

    async def sell(i: int, n: int) -> None:
        s, ledger_doc, stock_doc = views[i]
        sku = f"SKU-{(n + i) % SKUS:05d}"
        t = time.perf_counter()
        written[i].append(t)
        with ledger_doc.transaction():
            ledgers[i].add(
                f"{int(time.time() * 1000):011x}-{n:x}-{s.client_id:x}",
                {"by": s.name, "l": [[sku, 1, 450]]},
            )
        pending_acks[i].append((s.clock(f"sales/{s.name}/{month}"), t))
        with stock_doc.transaction():
            counters[i].add(sku, -1)
        await s.flush()

    total = k * per_store
    cpu0 = sum(cpu_seconds(n.pid) for n in nodes)
    t0 = time.monotonic()
    await sell_in_turn(sell, k, per_store, rate)
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if sum(seen) >= total and all(s.all_acked() for s in stores):
            break
        await asyncio.sleep(0.002)
    end = time.monotonic()
    cpu1 = sum(cpu_seconds(n.pid) for n in nodes)
    done = sum(seen) >= total and all(s.all_acked() for s in stores)
    for s in [hq, follower, *stores]:
        if s.ws is not None:
            await s.ws.close()

    def pct(values: list[float], q: float) -> float | None:
        p = _percentile(values, q)
        return None if p is None else 1000 * p

    return {
        "sales": total,
        "complete": done,
        "follower_sales": sum(seen),
        "follower_repeats": follower.sales_seen - sum(seen),
        "elapsed_s": end - t0,
        "sales_per_s": (total if done else sum(seen)) / (end - t0),
        "relay_cpu_ms_per_sale": 1000 * (cpu1 - cpu0) / total,
        "ack_p50_ms": pct(to_ack, 0.5),
        "ack_p99_ms": pct(to_ack, 0.99),
        "follower_p50_ms": pct(to_follower, 0.5),
        "follower_p99_ms": pct(to_follower, 0.99),
    }


async def _connect_spread(
    nodes: list[Node], tokens: dict[str, str], k: int
) -> tuple[LightStore, LightStore, list[LightStore]]:
    """HQ on the first node, the follower on the last, store i on node i mod N."""
    hq, follower, _ = await setup(nodes[0].url, tokens, 0)
    if len(nodes) > 1:
        assert follower.ws is not None
        await follower.ws.close()
        follower = LightStore("follower", tokens["follower"])
        await follower.connect(nodes[-1].url)
    stores = [LightStore(f"store-{i:02d}", tokens[f"store-{i:02d}"]) for i in range(k)]
    for i, s in enumerate(stores):
        await s.connect(nodes[i % len(nodes)].url)
    for s in stores:
        stock = PNCounter(s.doc(f"stock/{s.name}"))
        with s.doc(f"stock/{s.name}").transaction():
            for sku in range(SKUS):
                stock.add(f"SKU-{sku:05d}", 10**9)
        await s.flush()
    ready = time.monotonic() + 60
    while not all(s.all_acked() for s in stores) and time.monotonic() < ready:
        await asyncio.sleep(0.005)
    return hq, follower, stores


async def _idle_connections(node: Node, tokens: dict[str, str], count: int) -> float:
    """The node's memory per idle synced connection (kB), from ``count`` of them."""
    before = node.rss_kb()
    idle = []
    for i in range(count):
        s = LightStore(f"idle-{i:03d}", tokens[f"idle-{i:03d}"])
        await s.connect(node.url)
        idle.append(s)
    await asyncio.sleep(0.5)
    after = node.rss_kb()
    for s in idle:
        assert s.ws is not None
        await s.ws.close()
    return (after - before) / count


def cluster_run(
    pg: Any,
    workdir: Path,
    node_count: int,
    k: int,
    per_store: int,
    rate: float,
    timeout: float,
    *,
    idle: int = 0,
) -> dict[str, Any]:
    """One run on a fresh database of ``pg`` (a ``tests.support.postgres.PgServer``)."""
    store_url = pg.new_database()
    run_dir = workdir / f"b9-n{node_count}-k{k}-r{rate:g}-{time.monotonic_ns()}"
    run_dir.mkdir(parents=True)
    names = ["hq", "follower", *(f"store-{i:02d}" for i in range(k))]
    names += [f"idle-{i:03d}" for i in range(idle)]
    tokens = _prepare(store_url, names)
    nodes = [Node(run_dir, store_url, i) for i in range(node_count)]
    try:
        for node in nodes:
            node.start()
        server0 = _server_cpu_seconds(pg.data)
        before = _footprint(store_url)
        result = asyncio.run(_drive(nodes, tokens, k, per_store, rate, timeout))
        server1 = _server_cpu_seconds(pg.data)
        after = _footprint(store_url)
        sales = result["sales"]
        result.update(
            nodes=node_count,
            k=k,
            rate_per_store=rate,
            pg_cpu_ms_per_sale=1000 * (server1 - server0) / sales,
            rows_per_sale=(after["update_rows"] - before["update_rows"]) / sales,
            payload_bytes_per_sale=(after["update_payload_bytes"] - before["update_payload_bytes"])
            / sales,
            table_bytes_per_sale=(after["updates_table_bytes"] - before["updates_table_bytes"])
            / sales,
            node_rss_kb=[n.rss_kb() for n in nodes],
        )
        if idle:
            per_connection = asyncio.run(_idle_connections(nodes[0], tokens, idle))
            result["kb_per_idle_connection"] = per_connection
        return result
    finally:
        for node in nodes:
            node.stop()


def model(
    measured: dict[str, Any],
    *,
    stores: int = 1000,
    tills: int = 2,
    busy_day: float = 3.0,
    kb_per_connection: float | None = None,
) -> dict[str, Any]:
    """A 1,000-store chain scaled from one measured paced run (see docs/benchmarks.md).

    Assumptions, stated so they can be changed: each till makes 300 sales a
    day; the busiest hour carries 15% of a day's sales and its busiest minute
    twice that hour's average; the busiest day of the year (``busy_day``)
    has three times an ordinary day's sales; every till keeps one sync
    connection and each store one dashboard follower; a node's usable CPU is
    0.7 of a core.  CPU per sale comes from a paced run, the cost of a
    steady trickle, not from a bulk one.
    """
    sales_per_day = stores * tills * 300
    peak_per_s = sales_per_day * busy_day * 0.15 / 3600 * 2
    relay_ms = measured["relay_cpu_ms_per_sale"]
    pg_ms = measured["pg_cpu_ms_per_sale"]
    per_node_sales_s = 0.7 * 1000 / relay_ms
    connections = stores * (tills + 1)
    nodes_needed = max(1, -(-peak_per_s // per_node_sales_s))
    kb_per_conn = kb_per_connection
    return {
        "stores": stores,
        "tills": stores * tills,
        "sales_per_day": sales_per_day,
        "peak_sales_per_s": round(peak_per_s, 1),
        "peak_updates_per_s": round(peak_per_s * measured["rows_per_sale"], 1),
        "relay_cpu_cores_at_peak": round(peak_per_s * relay_ms / 1000, 2),
        "pg_cpu_cores_at_peak": round(peak_per_s * pg_ms / 1000, 2),
        "sales_per_s_per_node": round(per_node_sales_s),
        "nodes_for_cpu": int(nodes_needed),
        "connections": connections,
        "connections_per_node_at_3": connections // 3,
        "relay_mb_for_connections": None
        if kb_per_conn is None
        else round(connections * kb_per_conn / 1024, 1),
        "pg_rows_per_day": round(sales_per_day * measured["rows_per_sale"]),
        "pg_mb_per_day": round(sales_per_day * measured["table_bytes_per_sale"] / 2**20, 1),
        "pg_gb_per_year": round(sales_per_day * 365 * measured["table_bytes_per_sale"] / 2**30, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--stores", type=int, default=12, help="K light stores")
    parser.add_argument("--sales", type=int, default=3000, help="sales per run, over all stores")
    parser.add_argument(
        "--rate", type=float, default=40.0, help="paced run: sales/s per store (0: none)"
    )
    parser.add_argument("--idle", type=int, default=200, help="idle connections to measure")
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.postgres import PgServer

    per_store = max(1, args.sales // args.stores)
    results: list[dict[str, Any]] = []
    pg = PgServer(durable=True)
    try:
        with TemporaryDirectory(prefix="tiendasync-b9-") as tmp:
            for n in args.nodes:
                for rate in [0.0, args.rate] if args.rate else [0.0]:
                    label = "bulk" if rate == 0 else f"paced {rate:g}/s/store"
                    print(f"# {n} node(s), {label}", file=sys.stderr, flush=True)
                    r = cluster_run(
                        pg,
                        Path(tmp),
                        n,
                        args.stores,
                        per_store,
                        rate,
                        args.timeout,
                        idle=args.idle if (n == 1 and rate == 0) else 0,
                    )
                    results.append(r)
                    print(json.dumps(r), flush=True)
    finally:
        pg.stop()
    one_node = [r for r in results if r["nodes"] == 1] or results
    paced = next((r for r in one_node if r["rate_per_store"] > 0), one_node[0])
    idle_kb = next(
        (r["kb_per_idle_connection"] for r in one_node if "kb_per_idle_connection" in r), None
    )
    chain = model(paced, kb_per_connection=idle_kb)
    print(json.dumps({"model_1000_stores": chain}, indent=1))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"runs": results, "model_1000_stores": chain, "cpus": os.cpu_count()}, indent=1
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
