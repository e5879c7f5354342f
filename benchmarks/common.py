"""Shared helpers: figures, tables, relay subprocesses, a byte-counting proxy, RSS."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tiendasync import Replica

HOST = "127.0.0.1"
PY = sys.executable
TENANT = "acme"


# -- figures -------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured figure, next to its baseline when there is one."""

    bench: str
    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    ratio: float | None = None  # value / baseline unless said otherwise
    target: str | None = None
    met: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None and v != {}}


def emit(fig: Figure, sink: list[Figure] | None = None) -> Figure:
    """Print one JSON line for ``fig`` (and keep it in ``sink``)."""
    print(json.dumps(fig.to_dict(), sort_keys=True), flush=True)
    if sink is not None:
        sink.append(fig)
    return fig


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def table(figs: list[Figure], title: str = "") -> str:
    """A plain-text table of figures."""
    rows = [("bench", "figure", "value", "unit", "baseline", "ratio", "target", "met")]
    for f in figs:
        met = "-" if f.met is None else ("yes" if f.met else "NO")
        rows.append(
            (
                f.bench,
                f.name,
                _fmt(f.value),
                f.unit,
                _fmt(f.baseline),
                _fmt(f.ratio),
                f.target or "-",
                met,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [title] if title else []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- time-bounded waiting --------------------------------------------------------------


class BenchTimeout(RuntimeError):
    pass


def wait_until(
    pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
) -> float:
    """Poll ``pred`` until true; return the monotonic time it first was.  Bounded."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if pred():
            return now
        if now > deadline:
            raise BenchTimeout(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# -- processes -------------------------------------------------------------------------


def rss_kb(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of a process in KiB, from /proc (Linux)."""
    cur = peak = 0
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1])
    return cur, peak


def rss_by_mapping(pid: int) -> dict[str, float]:
    """Where a process's RSS is, in MiB, from ``/proc/PID/smaps`` (Linux): ``heap`` (the
    main allocator arena, grown with brk), ``anon`` (anonymous mappings: other arenas,
    Python's object arenas, thread stacks), ``libs`` (shared objects) and ``files``
    (other mapped files, e.g. SQLite's shared-memory index); empty where unreadable."""
    kib = {"heap": 0, "anon": 0, "libs": 0, "files": 0}
    where = "anon"
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            head = line.split(maxsplit=6)
            if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
                name = head[5].strip() if len(head) > 5 else ""
                if name == "[heap]":
                    where = "heap"
                elif name.startswith("/") and ".so" in name:
                    where = "libs"
                elif name.startswith("/"):
                    where = "files"
                else:
                    where = "anon"
            elif line.startswith("Rss:"):
                kib[where] += int(line.split()[1])
    return {k: round(v / 1024, 1) for k, v in kib.items()} if any(kib.values()) else {}


def stop_process(proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Relay:
    """``python -m tiendasync relay`` in a subprocess on a free loopback port."""

    def __init__(
        self,
        workdir: Path,
        name: str = "relay",
        *,
        profile: Path | None = None,
        central: bool = True,
        extra_args: tuple[str, ...] = (),
        module: str = "tiendasync",
        env: dict[str, str] | None = None,
    ) -> None:
        """``module``: what ``python -m`` runs (``benchmarks.ungated_relay`` for the
        benchmark 7 baseline); it takes the ``tiendasync`` command's arguments.
        ``env``: variables added to the relay's environment."""
        self.workdir = workdir
        self.db = workdir / f"{name}.db"
        self.log_path = workdir / f"{name}.log"
        self.profile = profile
        self.central = central
        self.extra_args = extra_args
        self.module = module
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def token(self, replica_id: str) -> str:
        from tiendasync.relay import SqliteRelayStore, issue_token

        with SqliteRelayStore(str(self.db)) as store:
            return issue_token(store, tenant=TENANT, replica_id=replica_id)

    def tokens(self, replica_ids: list[str]) -> dict[str, str]:
        from tiendasync.relay import SqliteRelayStore, issue_token

        with SqliteRelayStore(str(self.db)) as store:
            return {r: issue_token(store, tenant=TENANT, replica_id=r) for r in replica_ids}

    def read_only_own_docs(self, replica_ids: list[str], *, all_stock: bool = False) -> None:
        """Grant each replica read access to its own documents and the shared ones only.

        ``all_stock``: every location's stock too (what a store needs for
        transfers), but not the other stores' sales.
        """
        from tiendasync.relay import SqliteRelayStore

        with SqliteRelayStore(str(self.db)) as store:
            for r in replica_ids:
                stock = "stock/*" if all_stock else f"stock/{r}"
                store.set_replica_config(
                    TENANT,
                    r,
                    {
                        "read": ["catalog", "locations", "conflicts", stock, f"sales/{r}/*"],
                        "write": ["*"],
                    },
                )

    def start(self, timeout: float = 30.0) -> Relay:
        from tiendasync.relay import SqliteRelayStore

        SqliteRelayStore(str(self.db)).close()  # create the schema before the relay runs
        cmd = [PY]
        if self.profile is not None:
            cmd += ["-m", "cProfile", "-o", str(self.profile)]
        cmd += [
            "-m",
            self.module,
            "relay",
            "--db",
            str(self.db),
            "--host",
            HOST,
            "--port",
            "0",
            "--no-admin",
            *self.extra_args,
        ]
        log = self.log_path.open("wb")
        env = {**os.environ, **self.env} if self.env else None
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        log.close()
        self.port = wait_listening(self.proc, self.log_path, "the relay", timeout)
        return self

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/sync"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kb(self) -> tuple[int, int]:
        return rss_kb(self.pid)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


_LISTENING = re.compile(rb"listening on ws://[^:]+:(\d+)")


def wait_listening(
    proc: subprocess.Popen[Any], log_path: Path, what: str, timeout: float = 30.0
) -> int:
    """The port a ``tiendasync relay`` process says it listens on (in its log at
    ``log_path``); RuntimeError with the log's tail if it dies first."""
    port = 0

    def listening() -> bool:
        nonlocal port
        if proc.poll() is not None:
            raise RuntimeError(f"{what} died: {log_path.read_text()[-2000:]}")
        m = _LISTENING.search(log_path.read_bytes())
        if m:
            port = int(m.group(1))
        return bool(m)

    wait_until(listening, timeout, f"{what} to listen", 0.05)
    return port


async def sell_in_turn(
    sell: Callable[[int, int], Awaitable[None]], k: int, per_store: int, rate: float
) -> None:
    """Make ``per_store`` sales in each of ``k`` stores: ``sell(store, n)`` for the
    store's n-th sale.  ``rate`` > 0: every store at ``rate`` sales/s, interleaved on
    one schedule; 0: as fast as possible, one sale per store in turn."""
    total = k * per_store
    if rate > 0:
        t0 = time.monotonic()
        interval = 1 / (k * rate)
        j = 0
        while j < total:
            now = time.monotonic()
            while j < total and t0 + j * interval <= now:
                await sell(j % k, j // k)
                j += 1
            if j < total:
                await asyncio.sleep(max(0.0, t0 + j * interval - time.monotonic()))
    else:
        for n in range(per_store):
            for i in range(k):
                await sell(i, n)
            await asyncio.sleep(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_port_file(path: Path, proc: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"server process died (exit {proc.returncode})")
        return path.exists() and path.read_text().strip().isdigit()

    wait_until(ready, timeout, f"{path.name}", 0.05)
    return int(path.read_text().strip())


# -- an event loop on a thread --------------------------------------------------------


class LoopThread:
    """An asyncio loop on a daemon thread; ``run(coro)`` blocks for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="bench-loop")
        self.thread.start()

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# -- a byte-counting TCP proxy ----------------------------------------------------------


class CountingProxy:
    """Forwards 127.0.0.1:port to a target port, counting bytes each way.

    Counts TCP payload: websocket framing and the protocol's own bytes, not
    TCP/IP headers.  ``up``: client to server; ``down``: server to client.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0
        self.down = 0
        self.messages_up = 0
        self._lt = LoopThread()
        self._server: asyncio.base_events.Server | None = None
        self.port = self._lt.run(self._start(), 10)

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if up:
                    self.up += len(data)
                else:
                    self.down += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            r2, w2 = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, w2, True), self._pipe(r2, writer, False))

    def counts(self) -> tuple[int, int]:
        return self.up, self.down

    def url(self, path: str = "/sync") -> str:
        return f"ws://{HOST}:{self.port}{path}"

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()

        with contextlib.suppress(Exception):
            self._lt.run(stop(), 5)
        self._lt.close()


@contextlib.contextmanager
def proxy(target_port: int) -> Iterator[CountingProxy]:
    p = CountingProxy(target_port)
    try:
        yield p
    finally:
        p.close()


def machine() -> dict[str, Any]:
    import platform

    import pycrdt  # noqa: F401

    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        info["mem_gib"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("pycrdt", "websockets", "pycrdt-websocket", "pycrdt-store", "tiendasync"):
        with contextlib.suppress(PackageNotFoundError):
            info[pkg] = version(pkg)
    return info


def record_sale_retrying(r: Replica, lines: list[Any], errors: list[str]) -> None:
    """``record_sale``, retried when it fails with StorageError.

    Workaround, counted and reported: the background sync thread writes the
    queue (``_mark_sent``/``_acknowledge``) without the replica lock, so a
    sale on another thread can hit "cannot start a transaction within a
    transaction".  A failed sale is rolled back (nothing recorded), so a
    retry is safe.
    """
    from tiendasync.errors import StorageError as TiendaSyncStorageError

    for _ in range(1000):
        try:
            r.record_sale(lines)
            return
        except TiendaSyncStorageError as exc:
            errors.append(str(exc))
            time.sleep(0.001)
    raise RuntimeError(f"record_sale kept failing: {errors[-1]}")


def sessions(replicas: list[Replica]) -> int:
    """Sync sessions opened by the replicas (1 each when nothing reconnected)."""
    return sum(len(r.log.list(limit=10**6)) for r in replicas)


def ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000
