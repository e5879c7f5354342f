"""The relay of the long-life chain benchmark, in simulated time; never a product mode.

``python -m benchmarks.chain_relay [--doc-idle-s S] [--keep-sales-docs] relay ...``
runs ``tiendasync relay`` with two benchmark-only changes, taken out of the
arguments before the command reads them:

* ``--doc-idle-s S``: the relay's document cache unloads a document idle for
  ``S`` seconds (600 by default).  The benchmark plays a simulated day in
  about a second, so with the default every sales month it ever served would
  still count as recently used; ``S`` brings the cache back to simulated time.
* ``--keep-sales-docs``: :meth:`CentralWriter.trim` taken out, so the central
  writer keeps every sales document it merged loaded, as before issue 14
  part 4: the baseline of the relay's memory in the same run.
* ``--no-trim-heap``: the relay built with ``trim_heap=False`` (the relay before
  ``relay.heap``); ``--trim-every S``: ``malloc_trim`` every ``S`` seconds from a
  thread, whatever the relay does (an upper bound of what trimming can give).

* ``--no-central``: the relay built without central writers (no invariant
  review): what the review's documents add to the relay's memory.
* ``--recycle-central-every S``: every ``S`` seconds, when nothing is under
  review, the central writers are closed and opened again at their next use
  (without a catch-up: they were current): whether a writer's memory comes
  back when it is closed.

* ``--tracemalloc FILE [--tracemalloc-every S]``: traces allocations and,
  every ``S`` seconds (30 by default, about a simulated month), appends to
  ``FILE`` the traced size, the top growth by traceback since the last dump,
  the count of live pycrdt documents and the size of every container
  attribute of the relay's long-lived objects (doc cache, doc sets, sessions,
  policy, ownership gate, fanout...): what grows with time shows there.
  Each dump also gives the RSS before and after glibc's ``malloc_trim`` (so
  the relay's heap is trimmed once a dump: a profile, not a memory figure).

Everything else is the product's own code; nothing in ``src/`` turns either on.
"""

from __future__ import annotations

import gc
import sqlite3
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

from tiendasync.cli import main
from tiendasync.relay.central import CentralWriter
from tiendasync.relay.docs import DocCache
from tiendasync.relay.server import RelayServer


def _keep_all(self: CentralWriter) -> list[str]:
    return []


# Classes whose container attributes are counted at each dump (by class name,
# so that the profiler imports nothing it does not need).
WATCHED = (
    "DocCache",
    "DocSet",
    "ReplicaCore",
    "CentralWriter",
    "SyncSessions",
    "RelayCore",
    "RelayServer",
    "Policy",
    "Grants",
    "RateLimits",
    "OwnershipGate",
    "Fanout",
    "Broker",
)


def _containers(obj: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    # list() copies the items under the GIL: the relay's loop mutates them meanwhile.
    for key, value in list(getattr(obj, "__dict__", {}).items()):
        if isinstance(value, (dict, list, set, tuple, frozenset)):
            out[key] = len(value)
    return out


def _counts() -> list[str]:
    lines: list[str] = []
    docs = conns = 0
    for obj in gc.get_objects():
        cls = type(obj)  # a weakref proxy's own type: asking it nothing of its referent
        if cls.__name__ == "Doc" and cls.__module__.startswith("pycrdt"):
            docs += 1
        elif cls is sqlite3.Connection:
            conns += 1
        elif cls.__name__ in WATCHED:
            sizes = {k: v for k, v in _containers(obj).items() if v}
            lines.append(f"  {cls.__name__}@{id(obj):x} {sizes}")
    return [
        # Only counts: touching a pycrdt document from this thread (get_update)
        # while the relay's loop writes to it failed a sync with an internal error.
        f"  pycrdt.Doc alive: {docs}",
        f"  sqlite3 connections: {conns}",
        *sorted(lines),
    ]


def _malloc() -> str:
    """glibc's view of the heap: what native code (pycrdt's Rust) holds shows
    here and not in tracemalloc; "free" is heap kept by the allocator."""
    try:
        import ctypes

        class MallInfo2(ctypes.Structure):
            _fields_ = [
                (n, ctypes.c_size_t)
                for n in (
                    "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                    "fsmblks", "uordblks", "fordblks", "keepcost",
                )
            ]  # fmt: skip

        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return "  malloc: unavailable"
    mib = 2**20
    return (
        f"  malloc: in use {(m.uordblks + m.hblkhd) / mib:.1f} MiB, "
        f"free in heap {m.fordblks / mib:.1f} MiB, arena {m.arena / mib:.1f} MiB"
    )


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _process() -> str:
    """Where the RSS is (anonymous memory or mapped files) and what the process holds open."""
    fields: dict[str, str] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    fds = len(list(Path("/proc/self/fd").iterdir()))
    return (
        f"  rss anon {fields.get('RssAnon', '?')}, file {fields.get('RssFile', '?')}, "
        f"threads {threading.active_count()}, open fds {fds}"
    )


def _trim(rss: float) -> float:
    """RSS once glibc returned the free heap of all its arenas (``malloc_trim``):
    what the allocator kept of freed memory is the difference."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return rss
    return _rss_mib()


def _dump(path: Path, n: int, last: tracemalloc.Snapshot, t0: float) -> tracemalloc.Snapshot:
    """Append dump ``n`` to ``path``: growth since ``last``; the new snapshot."""
    gc.collect()
    snap = tracemalloc.take_snapshot()
    current, peak = tracemalloc.get_traced_memory()
    top = snap.compare_to(last, "traceback")[:12]
    with path.open("a") as f:
        f.write(
            f"=== dump {n} t={time.monotonic() - t0:.0f}s traced "
            f"{current / 2**20:.1f} MiB (peak {peak / 2**20:.1f})\n"
        )
        rss = _rss_mib()
        f.write(f"  rss {rss:.1f} MiB, after malloc_trim {_trim(rss):.1f} MiB\n")
        f.write(f"{_malloc()}\n{_process()}\n")
        f.write("\n".join(_counts()) + "\n")
        for stat in top:
            f.write(
                f"-- {stat.size_diff / 1024:+.0f} KiB ({stat.count_diff:+d} blocks),"
                f" now {stat.size / 1024:.0f} KiB\n"
            )
            for line in stat.traceback.format(limit=6, most_recent_first=True):
                f.write(f"   {line}\n")
    return snap


def start_profiler(path: Path, every_s: float) -> None:
    """Trace allocations and dump their growth to ``path`` every ``every_s`` s."""
    tracemalloc.start(12)
    t0 = time.monotonic()

    def run() -> None:
        last = tracemalloc.take_snapshot()
        n = 0
        while True:
            time.sleep(every_s)
            n += 1
            try:
                last = _dump(path, n, last, t0)
            except Exception as exc:  # a profile must not end silently: say it and go on
                with path.open("a") as f:
                    f.write(f"=== dump {n} failed: {exc!r}\n")

    threading.Thread(target=run, name="tracemalloc-dump", daemon=True).start()


def _default_kwarg(cls: Any, name: str, value: Any) -> None:
    """``cls(...)`` gets ``name=value`` unless the caller passes it."""
    init = cls.__init__

    def patched(self: Any, *a: Any, _init: Any = init, **kw: Any) -> None:
        kw.setdefault(name, value)
        _init(self, *a, **kw)

    cls.__init__ = patched


def _forced_kwarg(cls: Any, name: str, value: Any) -> None:
    """``cls(...)`` gets ``name=value`` whatever the caller passes."""
    init = cls.__init__

    def patched(self: Any, *a: Any, _init: Any = init, **kw: Any) -> None:
        kw[name] = value
        _init(self, *a, **kw)

    cls.__init__ = patched


def _recycle_central(every_s: float) -> None:
    """Every ``every_s`` s, at a quiet moment, the relay closes its central writers and
    opens them again at their next use, without the catch-up (they were current)."""
    import asyncio

    from tiendasync.relay.reviews import CentralReviews

    start = RelayServer.start
    writer = CentralReviews.writer
    fresh: set[str] = set()

    def reopened(self: CentralReviews, tenant: str) -> CentralWriter:
        if tenant not in fresh or tenant in self._writers:
            return writer(self, tenant)
        fresh.discard(tenant)
        opened = CentralWriter.open(
            self.directory,
            tenant,
            lambda doc, data: self.call_soon(self._ingest, tenant, doc, data),
            self.invariants,
            client_id_source=self.client_id_source,
            wall_clock=self.wall_clock,
        )
        self._writers[tenant] = opened
        return opened

    async def recycle(server: RelayServer) -> None:
        while True:
            await asyncio.sleep(every_s)
            reviews = server.core.reviews
            if reviews is None:
                continue
            reviews.flush()
            await server._in_reviews(lambda: None)
            await asyncio.sleep(0)
            for tenant, w in list(reviews._writers.items()):
                if reviews._pending or server.core.rolling(tenant) or w.needs_retry:
                    continue
                if w.retry_queued:
                    continue
                del reviews._writers[tenant]
                w.close()
                fresh.add(tenant)

    async def started(self: RelayServer) -> None:
        await start(self)
        self._spawn(recycle(self))

    RelayServer.start = started  # type: ignore[method-assign]
    CentralReviews.writer = reopened  # type: ignore[method-assign]


def start_trimmer(every_s: float) -> None:
    """Return the allocator's free heap to the system every ``every_s`` s (glibc's
    ``malloc_trim``): what a relay's RSS would be if it did so itself."""
    import ctypes

    trim = ctypes.CDLL("libc.so.6").malloc_trim

    def run() -> None:
        while True:
            time.sleep(every_s)
            trim(0)

    threading.Thread(target=run, name="malloc-trim", daemon=True).start()


def configure(argv: list[str]) -> list[str]:
    """Apply the benchmark's options in ``argv``; the arguments left for the command."""
    rest: list[str] = []
    args = iter(argv)
    trace: Path | None = None
    every = 30.0
    for arg in args:
        if arg == "--keep-sales-docs":
            CentralWriter.trim = _keep_all  # type: ignore[method-assign]
        elif arg == "--doc-idle-s":
            idle = float(next(args))
            init = DocCache.__init__

            def patched(
                self: DocCache, *a: Any, _init: Any = init, _idle: float = idle, **kw: Any
            ) -> None:
                kw["idle_seconds"] = _idle
                _init(self, *a, **kw)

            DocCache.__init__ = patched  # type: ignore[method-assign]
        elif arg == "--tracemalloc":
            trace = Path(next(args))
        elif arg == "--tracemalloc-every":
            every = float(next(args))
        elif arg == "--no-trim-heap":
            _default_kwarg(RelayServer, "trim_heap", False)
        elif arg == "--recycle-central-every":
            _recycle_central(float(next(args)))
        elif arg == "--no-central":
            _forced_kwarg(RelayServer, "central_dir", None)
        elif arg == "--trim-every":
            start_trimmer(float(next(args)))
        else:
            rest.append(arg)
    if trace is not None:
        start_profiler(trace, every)
    return rest


if __name__ == "__main__":
    raise SystemExit(main(configure(sys.argv[1:])))
