"""Long life: a till restarted daily for a simulated year, and a chain at the relay.

``python -m benchmarks.long_life [--days 365] [--sales-per-day 300] [--skus 2000]
[--restart-every 1] [--rollover-slots N] [--stores 5] [--chain-sales-per-day 20]
[--chain-restart-every 30] [--chain-live-every 5] [--chain-live-slots N] [--no-kept-arm]
[--chain-trace FILE] [--no-till]
[--no-chain] [--json out.json]``, and
``--plot run.json ...`` to draw ``docs/img/long-life.png``.  The fast default
(``--days 30``) runs in about 1.5 minutes; ``--days 365`` is the year of issue 14.

* **Till, no relay** (the "without generations" row): each simulated day opens
  the replica (a new incarnation), records ``sales_per_day`` 1-2 line sales
  over ``skus`` products and closes.  On day 1 and at the end of every 30-day
  month it reports, each next to its baseline in the same run: the stock
  document's encoded bytes vs a freshly seeded document with the same totals,
  slots per counter (the first 50 SKUs), state-vector entries of the stock
  document, open time (open + first stock read) and the median time per sale
  (both vs day 1), and the replica file size.
* **Till, generations**: the same sales, but the till syncs (at open and at
  close) with a relay in a thread that restarts every ``--restart-every`` days
  with rollover on (``--rollover-slots``, default a tenth of the SKU count), so the
  till moves to each new generation (docs/generations.md).  Same figures.
* **Chain** (``--stores`` tills, one relay subprocess per arm, the same sales in
  every arm): each simulated day every till opens, sells, syncs once and
  closes; at each month's end each relay's RSS vs its RSS after day 1.  Arms:
  the central writer keeping every sales document (before issue 14 part 4),
  unloading them (after), unloading with rollover at a restart every
  ``--chain-restart-every`` days, and unloading with rollover while running
  (``--chain-live-every`` real seconds at least between two rollovers of a
  document, about as many simulated days), never restarted.
  ``--chain-trace FILE`` runs only the unloading relay, with
  ``benchmarks.chain_relay --tracemalloc FILE``: what its memory holds, dumped
  every simulated month or so.

Targets (issue 14, "Done when"): stock bytes within 2x of fresh, time per
sale within 1.2x of day one, the state vector bounded, the relay's memory
flat.  docs/benchmarks.md says which are met.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes.util
import json
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pycrdt

from tiendasync import Replica
from tiendasync.crdt.keys import ROOT, SEP
from tiendasync.model.docnames import stock_doc
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.relay import RelayServer, SqliteRelayStore, issue_token
from tiendasync.relay.generations import RolloverPolicy

from .b6_state import _db_bytes, _rollover_bytes
from .common import TENANT, Figure, Relay, emit, rss_by_mapping, table

DAY_S = 86_400
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
MONTH_DAYS = 30


def _sell_day(r: Replica, skus: list[str], sales: int, rng: random.Random) -> tuple[float, float]:
    """Record ``sales`` sales; (median, mean) seconds per sale.

    The median is the figure: the day's first sale also loads the month's sales
    document (a cost of opening, which grows through the month and starts
    again with the next), and the mean carries it.
    """
    times: list[float] = []
    for _ in range(sales):
        lines = [(rng.choice(skus), rng.randint(1, 3)) for _ in range(rng.randint(1, 2))]
        t0 = time.perf_counter()
        r.record_sale(lines)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), sum(times) / sales


def _stock_state(r: Replica, skus: list[str]) -> dict[str, float]:
    name = stock_doc(r.location)
    doc = r.core.docs.doc(name)
    root = doc.get(ROOT, type=pycrdt.Map)
    first = set(skus[:50])
    slots = sum(1 for key, _ in root.items() if key.rpartition(SEP)[0] in first)
    levels = {r.location: r.inventory.levels()}
    return {
        "stock_bytes": float(len(doc.get_update())),
        "fresh_bytes": float(_rollover_bytes(levels, writer=1)),
        "slots_per_counter": slots / len(first),
        "sv_entries": float(len(decode_state_vector(r.state_vector(name)))),
    }


def _till_figures(
    figs: list[Figure],
    row: dict[str, float],
    base: dict[str, float],
    day: int,
    mode: dict[str, Any],
    label: str = "",
) -> None:
    """The till's figures of one day (``label``: what the names say after the figure)."""
    extra = {"day": day, "month": day // MONTH_DAYS, **mode}
    for fig in (
        Figure(
            "long_life",
            f"stock doc bytes, {label}day {day}",
            row["stock_bytes"],
            "bytes",
            row["fresh_bytes"],
            "freshly seeded, same totals",
            row["stock_bytes"] / row["fresh_bytes"],
            "<= 2x",
            row["stock_bytes"] <= 2 * row["fresh_bytes"],
            extra,
        ),
        Figure(
            "long_life",
            f"slots per counter, {label}day {day}",
            row["slots_per_counter"],
            "slots",
            1.0,
            "one slot",
            row["slots_per_counter"],
            extra=extra,
        ),
        Figure(
            "long_life",
            f"state-vector entries, {label}day {day}",
            row["sv_entries"],
            "entries",
            base["sv_entries"],
            "day 1",
            row["sv_entries"] / base["sv_entries"],
            "bounded",
            extra=extra,
        ),
        Figure(
            "long_life",
            f"open time, {label}day {day}",
            row["open_s"] * 1000,
            "ms",
            base["open_s"] * 1000,
            "day 1",
            row["open_s"] / base["open_s"],
            extra=extra,
        ),
        Figure(
            "long_life",
            f"time per sale (median), {label}day {day}",
            row["sale_s"] * 1000,
            "ms",
            base["sale_s"] * 1000,
            "day 1",
            row["sale_s"] / base["sale_s"],
            "<= 1.2x",
            row["sale_s"] <= 1.2 * base["sale_s"],
            {
                **extra,
                "mean_ms": row["mean_sale_s"] * 1000,
                "mean_day1_ms": base["mean_sale_s"] * 1000,
            },
        ),
        Figure(
            "long_life",
            f"replica file, {label}day {day}",
            row["file_bytes"] / 1e6,
            "MB",
            base["file_bytes"] / 1e6,
            "day 1",
            row["file_bytes"] / base["file_bytes"],
            extra=extra,
        ),
    ):
        emit(fig, figs)


def till_year(
    workdir: Path, *, days: int, sales_per_day: int, skus: int, seed: int = 14
) -> list[Figure]:
    rng = random.Random(seed)
    path = workdir / "till.db"
    names = [f"SKU{i:05d}" for i in range(skus)]
    start_ms = 1_767_225_600_000  # 2026-01-01: one calendar year of monthly sales docs
    day = 0

    t_start = time.perf_counter()

    def clock() -> int:  # the simulated day, plus real time elapsed (a run is << a day)
        return start_ms + day * DAY_S * 1000 + int((time.perf_counter() - t_start) * 1000)

    with Replica.open(
        path,
        tenant=TENANT,
        replica_id="till",
        location="shop",
        durability="normal",
        wall_clock=clock,
    ) as r:
        r.catalog.put_many({s: {"name": s, "price_cents": 100} for s in names})
        r.inventory.receive_many({s: 1_000_000 for s in names})
    figs: list[Figure] = []
    base: dict[str, float] = {}
    for day in range(1, days + 1):
        t0 = time.perf_counter()
        r = Replica.open(path, durability="normal", wall_clock=clock)
        r.inventory.stock(names[0])
        open_s = time.perf_counter() - t0
        try:
            per_sale, mean_sale = _sell_day(r, names, sales_per_day, rng)
            if day != 1 and day % MONTH_DAYS != 0 and day != days:
                continue
            state = _stock_state(r, names)
        finally:
            r.close()
        row = {
            **state,
            "open_s": open_s,
            "sale_s": per_sale,
            "mean_sale_s": mean_sale,
            "file_bytes": _db_bytes(path),
        }
        if not base:
            base = row
        _till_figures(figs, row, base, day, {"mode": "no relay"})
    return figs


class ThreadRelay:
    """A :class:`~tiendasync.relay.RelayServer` in its own event-loop thread, restartable;
    ``rollover``: documents roll over at each start (docs/generations.md)."""

    def __init__(self, db: Path, rollover: RolloverPolicy | None) -> None:
        self.db = db
        self.rollover = rollover
        self.url = ""
        self.restarts = 0
        self._stop: Callable[[], object] | None = None
        self._thread: threading.Thread | None = None

    def tokens(self, replica_ids: list[str]) -> dict[str, str]:
        with SqliteRelayStore(str(self.db)) as store:
            return {r: issue_token(store, tenant=TENANT, replica_id=r) for r in replica_ids}

    def start(self) -> None:
        store = SqliteRelayStore(str(self.db))
        server = RelayServer(
            store,
            host="127.0.0.1",
            port=0,
            rollover=self.rollover,
            rollover_interval=0,  # a cut at every start: the days are simulated
            central_dir=self.db.parent / "central",
        )
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)

            async def main() -> None:
                await server.start()
                started.set()
                await stop.wait()
                await server.stop()

            try:
                loop.run_until_complete(main())
            finally:
                store.close()
                loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not started.wait(60):
            raise RuntimeError("the relay did not start")
        self._stop = lambda: loop.call_soon_threadsafe(stop.set)
        self.url = f"ws://127.0.0.1:{server.port}"

    def stop(self) -> None:
        if self._stop is not None and self._thread is not None:
            self._stop()
            self._thread.join(60)
            self._stop = self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()
        self.restarts += 1


def _synced(r: Replica, relay: ThreadRelay, token: str) -> None:
    outcome = r.sync_now(relay.url, token=token).outcome
    if outcome != "ok":
        raise RuntimeError(f"sync failed: {outcome}")


def till_generations(
    workdir: Path,
    *,
    days: int,
    sales_per_day: int,
    skus: int,
    restart_every: int = 1,
    rollover_slots: int | None = None,
    seed: int = 14,
) -> list[Figure]:
    """The till of :func:`till_year` syncing with a relay that restarts every
    ``restart_every`` days with rollover on (a cut folding more than ``rollover_slots``
    slots; default: a tenth of the SKU count), so the till moves to each new generation.

    Each day: open, sync (the till moves to the generation the relay rolled to
    overnight), sell, sync, close.  Same sales (same seed) as :func:`till_year`.
    """
    rng = random.Random(seed)
    wd = workdir / "generations"
    wd.mkdir()
    path = wd / "till.db"
    names = [f"SKU{i:05d}" for i in range(skus)]
    # Days in the past: the relay refuses writes dated after its own clock.
    start_ms = int((time.time() - (days + 2) * DAY_S) * 1000)
    day = 0
    t_start = time.perf_counter()

    def clock() -> int:
        return start_ms + day * DAY_S * 1000 + int((time.perf_counter() - t_start) * 1000)

    drift: dict[str, Any] = {"max_clock_drift_ms": (days + 3) * DAY_S * 1000, "wall_clock": clock}
    slots = rollover_slots if rollover_slots is not None else max(1, skus // 10)
    relay = ThreadRelay(wd / "relay.db", RolloverPolicy(max_slots=slots))
    token = relay.tokens(["till"])["till"]
    stock = stock_doc("shop")
    figs: list[Figure] = []
    base: dict[str, float] = {}
    relay.start()
    try:
        with Replica.open(
            path, tenant=TENANT, replica_id="till", location="shop", durability="normal", **drift
        ) as r:
            r.catalog.put_many({s: {"name": s, "price_cents": 100} for s in names})
            r.inventory.receive_many({s: 1_000_000 for s in names})
            _synced(r, relay, token)
        for day in range(1, days + 1):
            t0 = time.perf_counter()
            r = Replica.open(path, durability="normal", **drift)
            r.inventory.stock(names[0])
            open_s = time.perf_counter() - t0
            try:
                _synced(r, relay, token)
                per_sale, mean_sale = _sell_day(r, names, sales_per_day, rng)
                _synced(r, relay, token)
                report = day == 1 or day % MONTH_DAYS == 0 or day == days
                state = _stock_state(r, names) if report else {}
                generation = r.core.generations().get(stock, 0)
            finally:
                r.close()
            if report:
                row = {
                    **state,
                    "open_s": open_s,
                    "sale_s": per_sale,
                    "mean_sale_s": mean_sale,
                    "file_bytes": _db_bytes(path),
                }
                base = base or row
                mode = {"mode": "generations", "generation": generation, "rollover_slots": slots}
                _till_figures(figs, row, base, day, mode, "generations, ")
            if day % restart_every == 0:
                relay.restart()  # the night: documents past the bound roll over
    finally:
        relay.stop()
    return figs


@dataclass(frozen=True)
class Arm:
    """One relay of the chain benchmark: what runs it, and how often it restarts."""

    label: str
    module: str = "tiendasync"
    extra_args: tuple[str, ...] = ()
    restart_every: int = 0  # days; 0: never
    env: tuple[tuple[str, str], ...] = ()  # added to the relay's environment


def chain_arms(
    skus: int,
    restart_every: int,
    doc_idle_s: float = 10.0,
    live_every_s: float = 0.0,
    live_slots: int | None = None,
) -> list[Arm]:
    """The chain's relays, run side by side on the same sales: before issue 14 part 4
    (the central writer keeps every sales document loaded), after it, after it
    with rollover at a restart every ``restart_every`` days (0: no such arm), and
    after it with rollover while running, at most once per ``live_every_s`` real
    seconds per document (``--rollover-interval``; 0: no such arm), never restarted,
    past ``live_slots`` slots (default: as the restarted arm).

    Every arm's document cache unloads what is idle for ``doc_idle_s`` seconds
    (``benchmarks.chain_relay``): a simulated day lasts about a second here.
    """
    slots = str(max(200, skus) // 10)
    idle = ("--doc-idle-s", str(doc_idle_s))
    module = "benchmarks.chain_relay"
    arms = [
        Arm("sales docs kept (before part 4)", module, (*idle, "--keep-sales-docs")),
        Arm("sales docs unloaded", module, idle),
    ]
    if restart_every:
        arms.append(
            Arm(
                f"unloaded + rollover, restart every {restart_every} d",
                module,
                # 0: a cut at every start, however recent the last (the days are simulated)
                (*idle, "--rollover-slots", slots, "--rollover-interval", "0"),
                restart_every,
            )
        )
    if live_every_s:
        arms.append(
            Arm(
                f"unloaded + rollover while running, every {live_every_s:g} s"
                + ("" if live_slots is None else f", past {live_slots} slots"),
                module,
                (
                    *idle,
                    "--rollover-slots",
                    slots if live_slots is None else str(live_slots),
                    "--rollover-interval",
                    str(live_every_s),
                ),
            )
        )
    return arms


def allocator_arms(arm: Arm) -> list[Arm]:
    """``arm`` under glibc's allocator, then under each other allocator installed here
    (preloaded; one that is not found is named and left out), then with Python's
    objects in malloc instead of its own arenas."""
    arms = [replace(arm, label=f"{arm.label}, glibc")]
    for name in ("jemalloc", "mimalloc"):
        library = ctypes.util.find_library(name)
        if library is None:
            print(f"allocator arms: lib{name} not found (apt install lib{name}*); left out")
            continue
        arms.append(replace(arm, label=f"{arm.label}, {name}", env=(("LD_PRELOAD", library),)))
    arms.append(
        replace(arm, label=f"{arm.label}, PYTHONMALLOC=malloc", env=(("PYTHONMALLOC", "malloc"),))
    )
    return arms


def _top_generation(db: Path) -> int:
    """The highest generation of any document in a relay's store (0: none rolled)."""
    with SqliteRelayStore(str(db)) as store:
        return max(store.generations(TENANT).values(), default=0)


def chain_year(
    workdir: Path,
    *,
    days: int,
    stores: int,
    sales_per_day: int,
    skus: int,
    arms: list[Arm] | None = None,
    seed: int = 15,
) -> list[Figure]:
    """``stores`` tills and one relay subprocess per arm, every arm on the same
    sales; each simulated day every till opens, sells, syncs once and closes.
    At each month's end (before that night's restart), each relay's RSS vs its
    RSS after day 1."""
    arms = arms if arms is not None else [Arm("sales docs unloaded")]
    names = [f"SKU{i:05d}" for i in range(skus)]
    ids = [f"store-{i:02d}" for i in range(stores)]
    # Days in the past: the relay refuses writes dated after its own clock.
    start_ms = int((time.time() - (days + 2) * DAY_S) * 1000)
    day = 0

    t_start = time.perf_counter()

    def clock() -> int:
        return start_ms + day * DAY_S * 1000 + int((time.perf_counter() - t_start) * 1000)

    # The tills live in simulated days behind the relay's real clock: its own
    # writes (the central writer's) must not read as a clock error.
    drift: dict[str, Any] = {"max_clock_drift_ms": (days + 3) * DAY_S * 1000, "wall_clock": clock}
    figs: list[Figure] = []
    relays: list[Relay] = []
    try:
        tokens: list[dict[str, str]] = []
        for n, arm in enumerate(arms):
            wd = workdir / f"chain-{n}"
            wd.mkdir()
            relay = Relay(
                wd, "relay", extra_args=arm.extra_args, module=arm.module, env=dict(arm.env)
            )
            relays.append(relay.start())
            tokens.append(relay.tokens(ids))
            for rid in ids:
                with Replica.open(
                    wd / f"{rid}.db",
                    tenant=TENANT,
                    replica_id=rid,
                    location=rid,
                    durability="normal",
                    **drift,
                ) as r:
                    if rid == ids[0]:
                        r.catalog.put_many({s: {"name": s, "price_cents": 100} for s in names})
                    r.sync_now(relay.url, token=tokens[n][rid])
            for rid in ids:  # everyone has the catalog; each receives its stock
                with Replica.open(wd / f"{rid}.db", **drift) as r:
                    r.sync_now(relay.url, token=tokens[n][rid])
                    r.inventory.receive_many({s: 1_000_000 for s in names[:200]})
                    r.sync_now(relay.url, token=tokens[n][rid])
        rngs = [random.Random(seed) for _ in arms]  # the same sales in every arm
        base_kb = [0] * len(arms)
        for day in range(1, days + 1):
            for n, (arm, relay) in enumerate(zip(arms, relays, strict=True)):
                for rid in ids:
                    with Replica.open(workdir / f"chain-{n}" / f"{rid}.db", **drift) as r:
                        _sell_day(r, names[:200], sales_per_day, rngs[n])
                        r.sync_now(relay.url, token=tokens[n][rid])
                if day == 1 or day % MONTH_DAYS == 0 or day == days:
                    rss, _ = relay.rss_kb()
                    base_kb[n] = base_kb[n] or rss
                    emit(
                        Figure(
                            "long_life",
                            f"relay RSS, {stores} stores, {arm.label}, day {day}",
                            rss / 1024,
                            "MiB",
                            base_kb[n] / 1024,
                            "day 1",
                            rss / base_kb[n],
                            "flat",
                            extra={
                                "day": day,
                                "month": day // MONTH_DAYS,
                                "arm": arm.label,
                                "generation": _top_generation(relay.db),
                                "rss_mib_by_mapping": rss_by_mapping(relay.pid),
                            },
                        ),
                        figs,
                    )
                if arm.restart_every and day % arm.restart_every == 0:
                    relay.stop()
                    relay.start()
    finally:
        for relay in relays:
            relay.stop()
    return figs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.long_life", description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--sales-per-day", type=int, default=300)
    parser.add_argument("--skus", type=int, default=2000)
    parser.add_argument("--restart-every", type=int, default=1, help="days between restarts")
    parser.add_argument("--rollover-slots", type=int, default=None)
    parser.add_argument("--stores", type=int, default=5)
    parser.add_argument("--chain-sales-per-day", type=int, default=20)
    parser.add_argument(
        "--chain-restart-every",
        type=int,
        default=30,
        help="days between restarts of the chain's rollover relay (0: no rollover arm)",
    )
    parser.add_argument(
        "--chain-live-every",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="the chain's relay that rolls over while running, at most once per SECONDS per "
        "document (a simulated day lasts about a second; 0: no such arm)",
    )
    parser.add_argument(
        "--chain-live-slots",
        type=int,
        default=None,
        metavar="N",
        help="that relay's --rollover-slots (default: as the restarted arm's)",
    )
    parser.add_argument(
        "--chain-trace",
        type=Path,
        default=None,
        metavar="FILE",
        help="profile: only one relay (--chain-trace-arm), its tracemalloc dumps to FILE",
    )
    parser.add_argument(
        "--chain-trace-arm",
        choices=("unloaded", "live"),
        default="unloaded",
        help="the relay --chain-trace profiles: 'sales docs unloaded' or the one rolling over "
        "while running",
    )
    parser.add_argument(
        "--no-kept-arm",
        action="store_true",
        help="leave out the chain's 'sales docs kept' baseline relay (a shorter run)",
    )
    parser.add_argument(
        "--chain-heap-ab",
        action="store_true",
        help="only the relay rolling over while running, twice: without the heap trim "
        "(benchmarks.chain_relay --no-trim-heap) and with it",
    )
    parser.add_argument(
        "--chain-alloc-ab",
        action="store_true",
        help="only the relay rolling over while running, under each allocator found: "
        "glibc, jemalloc and mimalloc (LD_PRELOAD), and Python's own objects in malloc "
        "(PYTHONMALLOC=malloc)",
    )
    parser.add_argument("--no-till", action="store_true", help="only the chain")
    parser.add_argument("--no-chain", action="store_true", help="only the till")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--plot",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="only draw docs/img/long-life.png from --json files of earlier runs",
    )
    args = parser.parse_args(argv)
    if args.plot:
        from . import plots

        why = plots.available()
        if why is not None:
            raise SystemExit(why)
        runs = [json.loads(p.read_text()) for p in args.plot]
        for path in plots.render_long_life([f for run in runs for f in run], DOCS_IMG):
            print(f"wrote {path}")
        return 0
    figs: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="long_life-") as tmp:
        wd = Path(tmp)
        if not args.no_till:
            t0 = time.perf_counter()
            figs += till_year(wd, days=args.days, sales_per_day=args.sales_per_day, skus=args.skus)
            t1 = time.perf_counter()
            figs += till_generations(
                wd,
                days=args.days,
                sales_per_day=args.sales_per_day,
                skus=args.skus,
                restart_every=args.restart_every,
                rollover_slots=args.rollover_slots,
            )
            print(
                f"till: {t1 - t0:.0f} s without generations, {time.perf_counter() - t1:.0f} s with",
                flush=True,
            )
        if not args.no_chain:
            t0 = time.perf_counter()
            arms = chain_arms(
                args.skus,
                args.chain_restart_every,
                live_every_s=args.chain_live_every,
                live_slots=args.chain_live_slots,
            )
            if args.chain_trace is not None:
                trace = ("--tracemalloc", str(args.chain_trace.resolve()))
                arm = arms[-1] if args.chain_trace_arm == "live" else arms[1]
                arms = [replace(arm, extra_args=(*arm.extra_args, *trace))]
            elif args.chain_alloc_ab:
                arms = allocator_arms(arms[-1])
            elif args.chain_heap_ab:
                live = arms[-1]
                arms = [
                    replace(
                        live,
                        label=f"{live.label}, no heap trim",
                        extra_args=(*live.extra_args, "--no-trim-heap"),
                    ),
                    replace(live, label=f"{live.label}, heap trim"),
                ]
            elif args.no_kept_arm:
                arms = arms[1:]
            figs += chain_year(
                wd,
                days=args.days,
                stores=args.stores,
                sales_per_day=args.chain_sales_per_day,
                skus=args.skus,
                arms=arms,
            )
            print(f"chain: {time.perf_counter() - t0:.0f} s", flush=True)
    print(table(figs, "long life"))
    if args.json is not None:
        args.json.write_text(json.dumps([f.to_dict() for f in figs], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
