"""``tiendasync relay worker``: review invariants apart from the relay processes.

::

    tiendasync relay worker --store postgresql://... [--cache-dir DIR] [--invariants M:N]

A review worker (:mod:`tiendasync.relay.workers`) on a PostgreSQL store of
record: it takes the free review partitions' leases, reviews, and commits
conflicts that the relay nodes serve.  It runs until SIGTERM or SIGINT, then
releases its leases (the partitions move at once) and exits 0; a store of
record it cannot reach at start, or an SQLite store, fails under the CLI's
one exit-code policy (1, 2).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from typing import Any

from tiendasync.cli.exits import guard
from tiendasync.errors import InvalidArgument, StoragePermissionError
from tiendasync.relay.storage import is_postgresql_url, open_postgresql_store
from tiendasync.relay.workers import ReviewWorker
from tiendasync.store.storage.access import directory_problem

__all__ = ["add_worker_options", "register_worker", "start_worker_thread"]

log = logging.getLogger("tiendasync.relay")


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """The lease options a worker takes (in ``relay worker`` and in ``relay``)."""
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=10.0,
        help="how long a review lease lasts unless renewed: a dead worker's "
        "partitions move after at most this; default 10",
    )
    parser.add_argument(
        "--review-batch",
        type=int,
        default=500,
        help="most updates a worker reviews per partition and commit; default 500",
    )


def register_worker(sub: Any, load_invariants: Callable[[list[str]], list[Any]]) -> None:
    """Add ``worker`` to the ``relay`` sub-commands."""
    worker = sub.add_parser(
        "worker",
        help="review invariants on a PostgreSQL store of record (partitioned, leased)",
        description="Review invariants apart from the relay processes: take the free "
        "review partitions' leases, review what was committed, commit the conflicts. "
        "Stops cleanly on SIGTERM.",
    )
    worker.add_argument(
        "--store",
        "--db",
        dest="worker_db",
        metavar="URL",
        required=True,
        help="the store of record: a postgresql:// URL",
    )
    worker.add_argument(
        "--cache-dir",
        default=None,
        help="where the worker keeps its partitions' scratch replicas (default: a "
        "temporary directory, removed at exit)",
    )
    worker.add_argument(
        "--owner", default=None, help="this worker's name in the leases (default host:pid:random)"
    )
    worker.add_argument(
        "--max-partitions",
        type=int,
        default=None,
        help="most partitions held at once (default: every free one it finds)",
    )
    worker.add_argument(
        "--invariants",
        dest="worker_invariants",
        action="append",
        default=[],
        metavar="MODULE:NAME",
        help="app-defined invariants, as for the relay; repeatable",
    )
    add_worker_options(worker)

    def run(args: argparse.Namespace) -> int:
        return _run_worker(args, load_invariants(args.worker_invariants))

    worker.set_defaults(handler=guard(run))


def _run_worker(args: argparse.Namespace, invariants: list[Any]) -> int:
    if not is_postgresql_url(args.worker_db):
        raise InvalidArgument("review workers need a postgresql:// store of record")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in _SIGNALS}
    try:
        with (
            closing(open_postgresql_store(args.worker_db)) as store,
            _cache(args.cache_dir) as cache_dir,
        ):
            worker = ReviewWorker(
                store,
                cache_dir,
                owner=args.owner,
                invariants=invariants,
                lease_seconds=args.lease_seconds,
                batch=args.review_batch,
                max_partitions=args.max_partitions,
            )
            print(f"tiendasync review worker {worker.owner} running", file=sys.stderr, flush=True)
            worker.run(stop)
            print(
                f"tiendasync review worker {worker.owner} stopped: {worker.reviewed} "
                f"updates reviewed in {worker.commits} commits",
                file=sys.stderr,
                flush=True,
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def _cache(path: str | None) -> Iterator[str]:
    """``--cache-dir`` checked, or a temporary directory removed at exit."""
    if path is None:
        with tempfile.TemporaryDirectory(prefix="tiendasync-review-") as tmp:
            yield tmp
        return
    if (problem := directory_problem(path)) is not None:
        raise StoragePermissionError(f"cannot keep review replicas in {path}: {problem}")
    yield path


def start_worker_thread(
    url: str,
    cache_dir: str,
    invariants: Iterable[Any],
    *,
    lease_seconds: float,
    batch: int,
    on_committed: Callable[[str, list[tuple[str, bytes]]], None],
) -> Callable[[], None]:
    """Run a review worker on a thread of this relay process (its own connection);
    returns the function that stops it (and releases its leases)."""
    store = open_postgresql_store(url)
    worker = ReviewWorker(
        store,
        cache_dir,
        invariants=invariants,
        lease_seconds=lease_seconds,
        batch=batch,
        on_committed=on_committed,
    )
    stop = threading.Event()

    def run() -> None:
        try:
            worker.run(stop)
        except Exception:
            log.exception("the review worker of this relay stopped")
        finally:
            store.close()

    thread = threading.Thread(target=run, name="relay-review-worker", daemon=True)
    thread.start()
    log.info("review worker %s started in this relay", worker.owner)

    def halt() -> None:
        stop.set()
        thread.join(30)

    return halt
