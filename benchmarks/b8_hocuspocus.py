"""8. Against Hocuspocus: our relay beside the relay a JavaScript team would pick.

``python -m benchmarks.b8_hocuspocus [--sales N] [--rounds R] [--ks 1,10,50] ...``
(``make bench-hocuspocus``).  The peer is ``@hocuspocus/server`` with
``@hocuspocus/extension-sqlite`` (versions pinned in
``benchmarks/hocuspocus/package-lock.json``, installed here with ``npm ci``
when ``node_modules`` is missing or older than the lock file), run by
``benchmarks/hocuspocus/server.mjs`` in one of two settings:

``default``
    Hocuspocus's own: an update is acknowledged (SyncStatus) once applied in
    memory, the document is stored after 2 s without changes (at most 10 s
    after the first unsaved one).
``every-change``
    ``debounce: 0, maxDebounce: 0``: every change stores the document.

Its clients (``benchmarks/hocuspocus/client.mjs``, Node, ``@hocuspocus/provider``)
write the same documents and layout as benchmark 3b's light clients
(:mod:`benchmarks.b3_light`), which drive our relay here: per sale one ledger
record and one stock slot, two updates; one follower subscribed to every
store's documents; ``synchronous=FULL`` on our side, acknowledged after the
commit.

Two workloads, each run in alternating order (A/B, then B/A) per round, with
the ratio ours/theirs taken per round:

bulk
    K stores write as fast as they can, ``--sales`` in all per K.  For
    Hocuspocus two rates: sales acknowledged per second (in memory) and sales
    on disk per second (read back from its SQLite file and decoded).
paced
    K stores at a fixed rate each (``--paced-rates``, sales/s per store):
    process CPU time of the relay process per sale (from ``/proc``, between
    the first sale and the last one acknowledged or on disk) and
    write-to-follower latency p50/p99 (the follower runs in the writers'
    process: one clock).

Everything runs on this machine: the server in one process, all clients in
another, so the clients' CPU competes with the relay's on a small machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tiendasync.crdt import Ledger, PNCounter

from .b3_light import SKUS, period, setup
from .common import (
    Figure,
    Relay,
    emit,
    rss_kb,
    sell_in_turn,
    stop_process,
    table,
    wait_port_file,
)

HERE = Path(__file__).resolve().parent / "hocuspocus"
SETTINGS = ("default", "every-change")


# -- the peer's installation ------------------------------------------------------------


def ensure_installed() -> str | None:
    """``npm ci`` the peer's packages if needed; None when ready, else why not."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return "node and npm are needed for the Hocuspocus peer"
    lock = HERE / "package-lock.json"
    installed = HERE / "node_modules" / ".package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return None
    print("# npm ci --prefix benchmarks/hocuspocus ...", file=sys.stderr, flush=True)
    done = subprocess.run(
        [npm, "ci", "--prefix", str(HERE), "--no-audit", "--no-fund"],
        stdout=sys.stderr,
        stderr=sys.stderr,
        check=False,
    )
    if done.returncode != 0:
        return f"npm ci failed (exit {done.returncode})"
    return None


def node_version() -> str:
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux ``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    # fields[0] is the state (field 3 of stat): utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- theirs -------------------------------------------------------------------------------


def hocuspocus_run(
    workdir: Path, setting: str, k: int, per_store: int, rate: float, timeout: float
) -> dict[str, Any]:
    """One Hocuspocus server (fresh SQLite file) and one client process."""
    workdir = workdir / f"b8-hp-{setting}-k{k}-r{rate:g}-{time.monotonic_ns()}"
    workdir.mkdir(parents=True)
    db = workdir / "hocuspocus.db"
    port_file = workdir / "port"
    log = (workdir / "server.log").open("wb")
    server = subprocess.Popen(
        [
            *("node", str(HERE / "server.mjs"), "--db", str(db), "--port-file", str(port_file)),
            *("--setting", setting),
        ],
        stdout=log,
        stderr=log,
    )
    log.close()
    try:
        port = wait_port_file(port_file, server)
        client = subprocess.Popen(
            [
                *("node", str(HERE / "client.mjs"), "--url", f"ws://127.0.0.1:{port}"),
                *("--db", str(db), "--k", str(k), "--per-store", str(per_store)),
                *("--rate", f"{rate:g}", "--timeout", f"{timeout:g}", "--skus", str(SKUS)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert client.stdout is not None
        cpu0 = cpu1 = 0.0
        result: dict[str, Any] | None = None
        for line in client.stdout:
            if line.strip() == "START":
                cpu0 = cpu_seconds(server.pid)
            elif line.startswith("{"):
                cpu1 = cpu_seconds(server.pid)
                result = json.loads(line)
        _, err = client.communicate(timeout=30)
        if result is None:
            raise RuntimeError(f"hocuspocus client failed: {err[-2000:]}")
        result["setting"] = setting
        result["relay_cpu_s"] = cpu1 - cpu0
        result["cpu_ms_per_sale"] = 1000 * (cpu1 - cpu0) / result["sales"]
        result["relay_rss_kb"] = rss_kb(server.pid)[0]
        # the rate that counts for a durable comparison
        result["sales_per_s"] = result["acked_per_s"]
        return result
    finally:
        stop_process(server)


# -- ours ---------------------------------------------------------------------------------


async def _ours(
    relay: Relay, tokens: dict[str, str], k: int, per_store: int, rate: float, timeout: float
) -> dict[str, Any]:
    hq, follower, stores = await setup(relay.url, tokens, k)
    ready = time.monotonic() + 60
    while not all(s.all_acked() for s in stores) and time.monotonic() < ready:
        await asyncio.sleep(0.005)
    month = period()
    views = [(s, s.doc(f"sales/{s.name}/{month}"), s.doc(f"stock/{s.name}")) for s in stores]
    ledgers = [Ledger(ledger_doc) for _, ledger_doc, _ in views]
    counters = [PNCounter(stock_doc) for _, _, stock_doc in views]
    index = {s.name: i for i, s in enumerate(stores)}
    written: list[list[float]] = [[] for _ in stores]
    seen = [0] * k
    latencies: list[float] = []

    def arrived(doc: str) -> None:
        # The relay forwards a document's updates in order, one per sale: the
        # n-th update of a store's sales document is that store's n-th sale.
        if doc.startswith("sales/"):
            i = index[doc.split("/")[1]]
            latencies.append(time.perf_counter() - written[i][seen[i]])
            seen[i] += 1

    follower.on_update = arrived

    async def sell(i: int, n: int) -> None:
        s, ledger_doc, stock_doc = views[i]
        sku = f"SKU-{(n + i) % SKUS:05d}"
        written[i].append(time.perf_counter())
        with ledger_doc.transaction():
            ledgers[i].add(
                f"{int(time.time() * 1000):011x}-{n:x}-{s.client_id:x}",
                {"by": s.name, "l": [[sku, 1, 450]]},
            )
        with stock_doc.transaction():
            counters[i].add(sku, -1)
        await s.flush()

    total = k * per_store
    cpu0 = cpu_seconds(relay.pid)
    t0 = time.monotonic()
    await sell_in_turn(sell, k, per_store, rate)
    produced = time.monotonic()
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if follower.sales_seen >= total and all(s.all_acked() for s in stores):
            break
        await asyncio.sleep(0.002)
    end = time.monotonic()
    cpu1 = cpu_seconds(relay.pid)
    done = follower.sales_seen >= total and all(s.all_acked() for s in stores)
    for s in [hq, follower, *stores]:
        if s.ws is not None:
            await s.ws.close()
    return {
        "k": k,
        "sales": total,
        "rate_per_store": rate,
        "produce_s": produced - t0,
        "acked_s": end - t0,
        "sales_per_s": (total if done else follower.sales_seen) / (end - t0),
        "complete": done,
        "follower_sales": follower.sales_seen,
        "relay_cpu_s": cpu1 - cpu0,
        "cpu_ms_per_sale": 1000 * (cpu1 - cpu0) / total,
        "latency_n": len(latencies),
        "lat_p50_ms": None if not latencies else 1000 * (_percentile(latencies, 0.5) or 0),
        "lat_p99_ms": None if not latencies else 1000 * (_percentile(latencies, 0.99) or 0),
    }


def ours_run(
    workdir: Path,
    k: int,
    per_store: int,
    rate: float,
    timeout: float,
    *,
    profile: Path | None = None,
) -> dict[str, Any]:
    """Our relay (a subprocess, fresh relay.db) and K light stores in this process.

    ``profile``: run the relay under cProfile and write its stats there.
    """
    workdir = workdir / f"b8-ours-k{k}-r{rate:g}-{time.monotonic_ns()}"
    workdir.mkdir(parents=True)
    # The per-connection message rate limit (a policy against floods) is lifted, as in 3b.
    relay = Relay(workdir, extra_args=("--max-msgs-per-s", "0"), profile=profile)
    try:
        relay.start()
        names = [f"store-{i:02d}" for i in range(k)]
        tokens = relay.tokens(["hq", "follower", *names])
        relay.read_only_own_docs(names)
        result = asyncio.run(_ours(relay, tokens, k, per_store, rate, timeout))
        result["relay_rss_kb"] = relay.rss_kb()[0]
        return result
    finally:
        relay.stop()


# -- rounds -------------------------------------------------------------------------------


def _rounds(
    workdir: Path, k: int, per_store: int, rate: float, rounds: int, timeout: float
) -> list[dict[str, Any]]:
    """``rounds`` rounds of ours and both Hocuspocus settings, order reversed every round."""
    out = []
    for r in range(rounds):
        order = ["ours", *SETTINGS]
        if r % 2:
            order.reverse()
        runs: dict[str, Any] = {"round": r, "order": order}
        for who in order:
            print(f"# k={k} rate={rate:g} round {r}: {who}", file=sys.stderr, flush=True)
            if who == "ours":
                runs[who] = ours_run(workdir, k, per_store, rate, timeout)
            else:
                runs[who] = hocuspocus_run(workdir, who, k, per_store, rate, timeout)
        out.append(runs)
    return out


def _median(rows: list[dict[str, Any]], who: str, key: str) -> float:
    values = [row[who][key] for row in rows if row[who].get(key) is not None]
    return statistics.median(values) if values else float("nan")


def _ratios(rows: list[dict[str, Any]], theirs: str, key: str) -> list[float]:
    return [row["ours"]["sales_per_s"] / row[theirs][key] for row in rows]


def run(
    workdir: Path,
    *,
    ks: tuple[int, ...] = (1, 10, 50),
    sales: int = 1000,
    rounds: int = 2,
    paced_k: int = 10,
    paced_rates: tuple[float, ...] = (5, 50),
    paced_seconds: float = 5.0,
    timeout: float = 120.0,
) -> tuple[list[Figure], dict[str, Any]]:
    """Bulk at each K, then paced at ``paced_k``; figures and every run's numbers."""
    why_not = ensure_installed()
    if why_not is not None:
        raise RuntimeError(why_not)
    figs: list[Figure] = []
    raw: dict[str, Any] = {"bulk": {}, "paced": {}}
    for k in ks:
        rows = _rounds(workdir, k, max(1, sales // k), 0, rounds, timeout)
        raw["bulk"][str(k)] = rows
        ours = _median(rows, "ours", "sales_per_s")
        for theirs, key, what in (
            ("default", "acked_per_s", "acknowledged (in memory)"),
            ("default", "disk_per_s", "on disk (2 s debounce)"),
            ("every-change", "acked_per_s", "acknowledged, store-on-every-change"),
            ("every-change", "disk_per_s", "on disk, store-on-every-change"),
        ):
            ratios = _ratios(rows, theirs, key)
            target = ">= 1" if (theirs, key) == ("default", "acked_per_s") and k > 1 else None
            emit(
                Figure(
                    "8-hocuspocus",
                    f"K={k} bulk sales/s (durable ack) vs Hocuspocus {what}",
                    ours,
                    "sales/s",
                    baseline=_median(rows, theirs, key),
                    baseline_name=f"Hocuspocus {theirs}, {key}",
                    ratio=statistics.median(ratios),
                    target=target,
                    met=None if target is None else statistics.median(ratios) >= 1,
                    extra={"ratios_per_round": ratios},
                ),
                figs,
            )
        bulk_cpu = _median(rows, "ours", "cpu_ms_per_sale")
        emit(
            Figure(
                "8-hocuspocus",
                f"K={k} bulk relay CPU per sale",
                bulk_cpu,
                "ms",
                baseline=_median(rows, "default", "cpu_ms_per_sale"),
                baseline_name="Hocuspocus default",
                ratio=bulk_cpu / _median(rows, "default", "cpu_ms_per_sale"),
            ),
            figs,
        )
    bulk_cpu_k = (
        _median(raw["bulk"][str(paced_k)], "ours", "cpu_ms_per_sale")
        if str(paced_k) in raw["bulk"]
        else None
    )
    for rate in paced_rates:
        per_store = max(1, int(rate * paced_seconds))
        rows = _rounds(workdir, paced_k, per_store, rate, rounds, timeout)
        raw["paced"][f"{rate:g}"] = rows
        label = f"K={paced_k} x {rate:g} sales/s ({paced_k * rate:g}/s)"
        cpu = _median(rows, "ours", "cpu_ms_per_sale")
        emit(
            Figure(
                "8-hocuspocus",
                f"{label} paced: relay CPU per sale vs our bulk",
                cpu,
                "ms",
                baseline=bulk_cpu_k,
                baseline_name=f"our relay, bulk K={paced_k}",
                ratio=None if bulk_cpu_k is None else cpu / bulk_cpu_k,
                target="<= 2x bulk",
                met=None if bulk_cpu_k is None else cpu <= 2 * bulk_cpu_k,
                extra={s: _median(rows, s, "cpu_ms_per_sale") for s in SETTINGS},
            ),
            figs,
        )
        for q in ("p50", "p99"):
            mine = _median(rows, "ours", f"lat_{q}_ms")
            target = "<= 2 ms" if q == "p50" and paced_k * rate >= 500 else None
            emit(
                Figure(
                    "8-hocuspocus",
                    f"{label} paced: write-to-follower {q}",
                    mine,
                    "ms",
                    baseline=_median(rows, "default", f"lat_{q}_ms"),
                    baseline_name="Hocuspocus default",
                    ratio=mine / _median(rows, "default", f"lat_{q}_ms"),
                    target=target,
                    met=None if target is None else mine <= 2,
                    extra={"every-change": _median(rows, "every-change", f"lat_{q}_ms")},
                ),
                figs,
            )
    return figs, raw


# -- the plot (hand-written SVG: matplotlib is not a dependency here) ------------------------

_BULK_PLOT = (
    ("default", "acked_per_s", "Hocuspocus default, acknowledged (in memory)", "#4c78a8"),
    ("default", "disk_per_s", "Hocuspocus default, on disk", "#72b7b2"),
    ("every-change", "disk_per_s", "Hocuspocus store-on-every-change, on disk", "#f58518"),
)


def svg(runs: dict[str, Any]) -> str:
    """Bulk throughput ratios ours/theirs per K on a log axis; dots are the rounds."""
    import math

    lo, hi = 0.1, 100.0
    left, width, row, gap = 70, 520, 16, 14
    ks = sorted(runs["bulk"], key=int)
    height = 60 + len(ks) * (len(_BULK_PLOT) * row + gap) + 20 * len(_BULK_PLOT) + 10

    def x(v: float) -> float:
        v = min(max(v, lo), hi)
        return left + width * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="16" font-size="13">Bulk sales/s, ours (durable ack) / Hocuspocus '
        "(median bar, rounds as dots)</text>",
    ]
    top = 40
    for tick in (0.1, 0.3, 1, 3, 10, 30, 100):
        tx = x(tick)
        bottom = top + len(ks) * (len(_BULK_PLOT) * row + gap)
        colour = "#000" if tick == 1 else "#ccc"
        out.append(
            f'<line x1="{tx:.1f}" y1="{top - 6}" x2="{tx:.1f}" y2="{bottom}" stroke="{colour}"/>'
        )
        out.append(f'<text x="{tx:.1f}" y="{top - 9}" text-anchor="middle">{tick:g}x</text>')
    y = top
    for k in ks:
        rows = runs["bulk"][k]
        out.append(
            f'<text x="{left - 8}" y="{y + row * len(_BULK_PLOT) / 2 + 4:.0f}" '
            f'text-anchor="end">K={k}</text>'
        )
        for theirs, key, _, colour in _BULK_PLOT:
            ratios = [r["ours"]["sales_per_s"] / r[theirs][key] for r in rows if r[theirs][key]]
            if ratios:
                med = statistics.median(ratios)
                x0, x1 = sorted((x(1), x(med)))
                out.append(
                    f'<rect x="{x0:.1f}" y="{y + 2}" width="{max(x1 - x0, 1):.1f}" '
                    f'height="{row - 4}" fill="{colour}"/>'
                )
                out.append(
                    f'<text x="{x(med) + (4 if med >= 1 else -4):.1f}" y="{y + row - 4}" '
                    f'text-anchor="{"start" if med >= 1 else "end"}">{med:.2f}</text>'
                )
                for v in ratios:
                    out.append(f'<circle cx="{x(v):.1f}" cy="{y + row / 2}" r="2" fill="#000"/>')
            y += row
        y += gap
    y += 10
    for _, _, label, colour in _BULK_PLOT:
        out.append(f'<rect x="{left}" y="{y}" width="12" height="10" fill="{colour}"/>')
        out.append(f'<text x="{left + 18}" y="{y + 9}">ours / {label}</text>')
        y += 20
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.b8_hocuspocus",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--sales", type=int, default=1000, help="bulk sales per K (brief: 10000)")
    ap.add_argument("--ks", default="1,10,50", help="store counts for the bulk runs")
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds per point")
    ap.add_argument("--paced-k", type=int, default=10)
    ap.add_argument("--paced-rates", default="5,50", help="sales/s per store, paced runs")
    ap.add_argument("--paced-seconds", type=float, default=5.0, help="length of a paced run")
    ap.add_argument("--timeout", type=float, default=120.0, help="per run, seconds")
    ap.add_argument("--json", type=Path, help="write figures and every run's numbers here")
    ap.add_argument("--svg", type=Path, help="write the bulk ratios' plot here")
    ap.add_argument(
        "--replot", type=Path, metavar="JSON", help="only redraw --svg from a --json file"
    )
    args = ap.parse_args(argv)
    if args.replot is not None:
        if args.svg is None:
            ap.error("--replot needs --svg")
        args.svg.write_text(svg(json.loads(args.replot.read_text())["runs"]))
        return 0
    with tempfile.TemporaryDirectory(prefix="tiendasync-b8-") as tmp:
        figs, raw = run(
            Path(tmp),
            ks=tuple(int(x) for x in args.ks.split(",")),
            sales=args.sales,
            rounds=args.rounds,
            paced_k=args.paced_k,
            paced_rates=tuple(float(x) for x in args.paced_rates.split(",")),
            paced_seconds=args.paced_seconds,
            timeout=args.timeout,
        )
    print(table(figs, "benchmark 8: against Hocuspocus"))
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "node": node_version(),
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "figures": [f.to_dict() for f in figs],
                    "runs": raw,
                },
                indent=1,
                sort_keys=True,
            )
            + "\n"
        )
    if args.svg is not None:
        args.svg.write_text(svg(raw))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
