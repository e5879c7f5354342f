"""The relay's disk fills up while stores sync: nothing it acknowledged is lost.

A relay process keeps ``--db`` and ``--central-dir`` on a small tmpfs that
this test mounts (3 MiB; root only, as in CI).  Two stores (in-process
replicas) record sales and ``sync_now`` in rounds until the file system has
no space left, then keep going a few rounds while it is full.  Then:

* the relay process is still running;
* every sale whose queue entry the relay acknowledged is held by the relay
  (a fresh replica full-syncing from it receives it), before and after the
  disk is grown (``mount -o remount,size=64m``) and after a relay restart;
* once space is back, syncing again acknowledges every remaining entry;
* no sale is duplicated.

Long form (``@pytest.mark.soak``, ``TIENDASYNC_SOAK=1``): more stores, more
rounds while full, and several fill/grow cycles.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.tills import Relay
from tiendasync import Replica, TiendaSyncError

SALES_PER_ROUND = 20


@contextmanager
def small_tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` on ``mnt`` (root only); unmount at the end."""
    if os.geteuid() != 0:
        pytest.fail("test_relay_disk_full mounts a tmpfs and must run as root (CI does)")
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _free_kb(mnt: Path) -> int:
    st = os.statvfs(mnt)
    return st.f_bavail * st.f_frsize // 1024


def _fill(path: Path, *, leave_kb: int) -> None:
    """Write ``path`` until about ``leave_kb`` are left free on its disk, or the disk is
    full: the relay writes meanwhile (its WAL, its central writer), so the space left
    is not known in advance."""
    chunk = b"\0" * (64 * 1024)
    with path.open("wb", buffering=0) as f:
        try:
            while _free_kb(path.parent) > leave_kb + 64:
                f.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


def _acked_sales(r: Replica) -> set[str]:
    return {
        str(e.ref) for e in r.queue.list(kind="sale", status="acknowledged", limit=10**7) if e.ref
    }


def _fresh_sales(relay: Relay, tmp: Path, name: str) -> list[str]:
    """Sale ids (with repeats, if any) a brand-new replica receives from the relay."""
    with Replica.open(
        tmp / f"{name}.db", tenant="acme", replica_id="fresh", location="fresh"
    ) as fresh:
        fresh.sync_now(relay.url, token=relay.tokens["fresh"], full=True, timeout=30)
        return [s.id for s in fresh.sales.list(limit=10**7)]


def _sync_round(stores: dict[str, Replica], relay: Relay, stats: dict[str, Any]) -> None:
    for name, r in stores.items():
        for _ in range(SALES_PER_ROUND):
            stats["written"].add(r.record_sale([("CAFE", 1)]).id)
        try:
            r.sync_now(relay.url, token=relay.tokens[name], timeout=15)
        except TiendaSyncError as exc:  # the relay refused or dropped us: retried later
            stats["sync_errors"] += 1
            stats["last_error"] = f"{type(exc).__name__}: {exc}"


def disk_full(tmp_path: Path, stores_n: int, rounds_full: int, cycles: int) -> dict[str, Any]:
    names = [f"store-{i}" for i in range(stores_n)]
    stats: dict[str, Any] = {"written": set(), "sync_errors": 0, "last_error": None}
    fills = 0
    with small_tmpfs(tmp_path / "relayfs", "3m") as mnt:
        relay = Relay(mnt, [*names, "fresh"])
        relay.start()
        stores = {
            n: Replica.open(tmp_path / f"{n}.db", tenant="acme", replica_id=n, location=n)
            for n in names
        }
        try:
            for r in stores.values():
                r.catalog.put("CAFE", {"name": "Café " + "x" * 1000, "price_cents": 450})
                r.inventory.receive("CAFE", 10**6)
            for cycle in range(cycles):
                for _ in range(400):  # fill: 3 MiB goes in well under 100 rounds
                    _sync_round(stores, relay, stats)
                    if _free_kb(mnt) == 0:
                        break
                assert _free_kb(mnt) == 0, "the relay's disk never filled"
                fills += 1
                for _ in range(rounds_full):
                    _sync_round(stores, relay, stats)
                assert relay.proc is not None and relay.proc.poll() is None, (
                    "the relay died when its disk filled:\n"
                    + (mnt / "relay.log").read_text()[-3000:]
                )
                acked = set().union(*(_acked_sales(r) for r in stores.values()))
                unacked = stats["written"] - acked
                # grow the disk; whatever was acknowledged while full is at the relay
                size = 3 + 61 * (cycle + 1)
                subprocess.run(["mount", "-o", f"remount,size={size}m", str(mnt)], check=True)
                seen = _fresh_sales(relay, tmp_path, f"fresh-grown-{cycle}")
                lost = acked - set(seen)
                assert not lost, f"{len(lost)} acknowledged sales lost after the disk filled"
                assert len(seen) == len(set(seen)), "a sale was duplicated"
                for name, r in stores.items():  # space is back: everything gets acknowledged
                    r.sync_now(relay.url, token=relay.tokens[name], timeout=30)
                    left = {k: v for k, v in r.queue.counts().items() if k != "acknowledged" and v}
                    assert not left, f"{name}: entries not acknowledged with space back: {left}"
                if cycle + 1 < cycles:  # fill the grown disk up again
                    _fill(mnt / "filler", leave_kb=400)
            relay.stop()
            relay.start()
            seen = _fresh_sales(relay, tmp_path, "fresh-restarted")
        finally:
            for r in stores.values():
                r.close()
            relay.stop()
    assert set(seen) == stats["written"], (
        f"{len(stats['written'] - set(seen))} sales missing after restart"
    )
    assert len(seen) == len(set(seen)), "a sale was duplicated"
    result = {
        "stores": stores_n,
        "disk_fills": fills,
        "sales": len(stats["written"]),
        "unacked_while_full": len(unacked),
        "sync_calls_failed_while_full": stats["sync_errors"],
        "acked_sales_lost": 0,
        "duplicates": 0,
    }
    print(f"\nrelay disk full: {result} last sync error: {stats['last_error']}")
    return result


@pytest.mark.slow
def test_relay_disk_full(tmp_path: Path) -> None:
    disk_full(tmp_path, stores_n=2, rounds_full=5, cycles=1)


@pytest.mark.soak
@pytest.mark.skipif(not os.environ.get("TIENDASYNC_SOAK"), reason="set TIENDASYNC_SOAK=1")
def test_relay_disk_full_long(tmp_path: Path) -> None:
    disk_full(tmp_path, stores_n=4, rounds_full=30, cycles=3)
