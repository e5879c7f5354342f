"""Storage faults on real file systems: a full disk, and damaged files.

Full disk: as root (CI) each test mounts its own small tmpfs and later
remounts it bigger; otherwise SQLite's ``PRAGMA max_page_count`` on the
replica's connection stands in for the size limit.  The disk fills up during
sales, during compactions, during ``apply_remote_many`` and at the first
write that needs a new document row.  Every call that returned must be
durable, every call that failed must raise :class:`StorageError`, and
writes must work again once there is space.

Corruption: byte flips and truncations of a closed replica file, and
garbage in stored rows, must surface as :class:`CorruptData` or
:class:`StorageError` (never a raw ``sqlite3``, ``ValueError``,
``JSONDecodeError`` or pycrdt panic).
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import tiendasync.store.core as core_module
from tiendasync import Replica
from tiendasync.errors import ConfigError, CorruptData, StorageError, TiendaSyncError

INITIAL = 100_000
IS_ROOT = os.geteuid() == 0


class Disk:
    """A small disk under ``root``: a real tmpfs as root, else a page-count limit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.limited: list[Replica] = []

    def limit(self, replica: Replica, spare_pages: int = 40) -> None:
        """Leave room for about ``spare_pages`` 4 KiB pages more: as root, empty the WAL
        and fill the tmpfs with a ballast file up to that; else cap ``replica``'s file at
        its current page count plus ``spare_pages`` (its own pages, 1 KiB in a new file)."""
        if IS_ROOT:  # the WAL starts empty, so it has to grow into the room left
            replica.core.storage.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            free = os.statvfs(self.root).f_bavail * os.statvfs(self.root).f_frsize
            ballast = max(free - spare_pages * 4096 - 128 * 1024, 0)  # and room for the -shm
            (self.root / "ballast").write_bytes(b"\0" * ballast)
            return
        conn = replica.core.storage.conn
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        conn.execute(f"PRAGMA max_page_count = {pages + spare_pages}")
        self.limited.append(replica)

    def free(self) -> None:
        """Make room: remount the tmpfs bigger, or lift the page-count caps."""
        if IS_ROOT:
            subprocess.run(
                ["mount", "-o", "remount,size=64m", str(self.root)], check=True, timeout=30
            )
            (self.root / "ballast").unlink(missing_ok=True)
            return
        for replica in self.limited:
            if not replica.core.closed:
                replica.core.storage.conn.execute("PRAGMA max_page_count = 1073741823")


@contextmanager
def small_disk(tmp_path: Path) -> Iterator[Disk]:
    root = tmp_path / "disk"
    root.mkdir()
    if IS_ROOT:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)], check=True, timeout=30
        )
    try:
        yield Disk(root)
    finally:
        if IS_ROOT:
            subprocess.run(["umount", "-l", str(root)], check=False, timeout=30)


def _seed(path: Path) -> Replica:
    r = Replica.open(path, tenant="acme", replica_id="t1", location="t1")
    r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
    r.inventory.receive("CAFE", INITIAL)
    return r


def _fill(call: Callable[[int], object], limit: int = 20_000) -> tuple[list[object], int]:
    """Call ``call(n)`` until it raises; the results that returned, and the failures seen.

    After the first failure it keeps going a few times: a full disk must fail
    the same typed way every time, not only once.
    """
    returned: list[object] = []
    failures = 0
    for n in range(limit):
        try:
            returned.append(call(n))
        except StorageError as exc:
            assert "full" in str(exc).lower() or "disk" in str(exc).lower(), exc
            failures += 1
            if failures >= 5:
                return returned, failures
        except TiendaSyncError as exc:  # any other error is a leak of the wrong type
            raise AssertionError(f"a full disk raised {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"the disk never filled up in {limit} calls")


def _check_sales(path: Path, returned: list[str], *, initial: int = INITIAL) -> None:
    """Every returned sale is there once, and stock agrees with the sales index."""
    with Replica.open(path) as r:
        sales = r.sales.list(limit=1_000_000)
        ids = [s.id for s in sales]
        assert len(ids) == len(set(ids)), "a sale recorded twice"
        missing = set(returned) - set(ids)
        assert not missing, f"returned sales lost: {sorted(missing)[:3]}"
        sold = sum(line.quantity for s in sales for line in s.lines if line.sku == "CAFE")
        assert r.inventory.stock("CAFE") == initial - sold
        assert r.sales.count() == len(ids)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def _sell(r: Replica) -> Callable[[int], object]:
    return lambda _n: r.record_sale([("CAFE", 1)]).id


@pytest.mark.parametrize("compact_every", [None, 4], ids=["sales", "compacting"])
def test_full_disk_during_sales(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compact_every: int | None
) -> None:
    if compact_every is not None:
        monkeypatch.setattr(core_module, "COMPACT_EVERY", compact_every)
    with small_disk(tmp_path) as disk:
        path = disk.root / "till.db"
        r = _seed(path)
        disk.limit(r)
        returned, failures = _fill(_sell(r))
        assert failures and returned, "the disk must fill up after some sales"
        disk.free()
        after = [r.record_sale([("CAFE", 2)]).id for _ in range(3)]  # writes work again
        if compact_every is not None:
            r.compact()
        r.close()
        _check_sales(path, [str(i) for i in returned] + after)


def test_full_disk_during_apply_remote_many(tmp_path: Path) -> None:
    source = Replica.open(tmp_path / "src.db", tenant="acme", replica_id="s", location="t1")
    batches: list[list[tuple[str, bytes]]] = []
    source.on_local_update(batches.append)
    for n in range(1500):
        source.catalog.put(f"SKU-{n:05d}", {"name": "x" * 200, "price_cents": n})
    source.close()
    # Group n carries SKU-10n .. SKU-10n+9, each group causally after the one before.
    groups = [[u for batch in batches[i : i + 10] for u in batch] for i in range(0, 1500, 10)]
    with small_disk(tmp_path) as disk:
        path = disk.root / "central.db"
        r = Replica.open(path, tenant="acme", replica_id="c", location="t1")
        disk.limit(r)
        done: list[int] = []
        failed: list[int] = []
        for n, group in enumerate(groups):
            try:
                r.apply_remote_many(group)
                done.append(n)
            except StorageError:
                failed.append(n)
            if len(failed) >= 5:
                break
        assert done and failed, "the disk must fill up after some merges"
        disk.free()
        r.close()
        first_failure = failed[0]
        with Replica.open(path) as again:  # what returned before the first failure is durable
            skus = set(again.catalog.skus())
            assert {f"SKU-{k:05d}" for k in range(10 * first_failure)} <= skus
            # Merges that returned after it wait (held, durably) for the failed ones:
            for n in failed:
                again.apply_remote_many(groups[n])
            skus = set(again.catalog.skus())
            assert {f"SKU-{10 * n + k:05d}" for n in done for k in range(10)} <= skus
            again.apply_remote_many([u for g in groups for u in g])  # works again
            assert len(again.catalog.skus()) == 1500


def test_full_disk_at_first_write_of_a_new_document(tmp_path: Path) -> None:
    with small_disk(tmp_path) as disk:
        path = disk.root / "till.db"
        r = _seed(path)
        locations = [f"bodega-{n}" for n in range(400)]
        for location in locations:  # declared first: only the stock writes meet a full disk
            r.locations.put(location, {"name": location})
        disk.limit(r, spare_pages=60)
        received: list[str] = []
        failed: list[str] = []
        for location in locations:
            try:  # the first write of the stock document of ``location``
                r.inventory.receive("CAFE", 5, location=location)
                received.append(location)
            except StorageError:
                failed.append(location)
                if len(failed) >= 5:
                    break
        assert received and failed, "the disk must fill up at a new document"
        disk.free()
        retry = failed[0]
        r.inventory.receive("CAFE", 5, location=retry)  # works again
        r.close()
        with Replica.open(path) as again:
            for location in received:
                assert again.inventory.stock("CAFE", location=location) == 5
            for location in failed[1:]:  # a failed write did not happen
                assert again.inventory.stock("CAFE", location=location) == 0
            assert again.inventory.stock("CAFE", location=retry) == 5
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


# -- corruption -------------------------------------------------------------------------


ALLOWED = (CorruptData, StorageError)


def _exercise(path: Path) -> None:
    """Open and read everything; only typed storage errors may come out."""
    with Replica.open(path) as r:
        r.inventory.stock("CAFE")
        r.sales.list(limit=10_000)
        r.catalog.skus()
        r.queue.list(limit=10_000)
        assert r.status is not None
        r.record_sale([("CAFE", 1)])


def _try(path: Path) -> str:
    try:
        _exercise(path)
    except ALLOWED as exc:
        assert str(exc), "an error message says what to do"
        return type(exc).__name__
    return "ok"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pristine") / "till.db"
    r = _seed(path)
    for n in range(60):
        r.record_sale([("CAFE", 1 + n % 3)])
        if n % 10 == 0:
            r.catalog.put(f"SKU-{n}", {"name": f"item {n}", "price_cents": n})
    r.compact("catalog")
    r.close()
    return path


def test_byte_flips_and_truncations_raise_typed_errors(pristine: Path, tmp_path: Path) -> None:
    rng = random.Random(1234)
    size = pristine.stat().st_size
    outcomes: dict[str, int] = {}
    cases: list[tuple[str, int]] = [("flip", off) for off in (0, 16, 18, 24, 28, 40, 56, 96)]
    cases += [("flip", rng.randrange(100, size)) for _ in range(50)]
    cases += [("truncate", cut) for cut in (0, 50, 100, 4096, size // 2, size - 1)]
    for n, (kind, where) in enumerate(cases):
        path = tmp_path / f"case{n}.db"
        shutil.copy(pristine, path)
        data = bytearray(path.read_bytes())
        if kind == "flip":
            data[where] ^= 0xFF
        else:
            del data[where:]
        path.write_bytes(bytes(data))
        if kind == "truncate" and where == 0:
            # An empty file is an empty SQLite database: a replica never created.
            with pytest.raises(ConfigError, match="not a replica yet"):
                _exercise(path)
            continue
        outcome = _try(path)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("CorruptData", 0) > 0, outcomes
    print("corruption outcomes:", outcomes)


GARBAGE = [b"", b"\x00", b"\xff" * 40, b"\x01\x01\xff\xff\xff\xff\x0f", os.urandom(64)]


@pytest.mark.parametrize("garbage", GARBAGE, ids=[f"g{n}" for n in range(len(GARBAGE))])
@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE updates SET data = ? WHERE seq = (SELECT MAX(seq) FROM updates)",
        "UPDATE updates SET data = ? WHERE seq = (SELECT MIN(seq) FROM updates)",
        "UPDATE docs SET snapshot = ? WHERE snapshot IS NOT NULL",
        "INSERT INTO held_updates (doc, data) VALUES ('stock/t1', ?)",
    ],
    ids=["last-update", "first-update", "snapshot", "held"],
)
def test_garbage_rows_raise_corrupt_data(
    pristine: Path, tmp_path: Path, sql: str, garbage: bytes
) -> None:
    path = tmp_path / "till.db"
    shutil.copy(pristine, path)
    with sqlite3.connect(path) as conn:
        conn.execute(sql, (garbage,))
    assert _try(path) in ("ok", "CorruptData")


@pytest.mark.parametrize(
    ("sql", "value"),
    [
        ("UPDATE meta SET value = ? WHERE key = 'config'", "{not json"),
        ("UPDATE meta SET value = ? WHERE key = 'config'", "[1, 2]"),
        ("UPDATE meta SET value = ? WHERE key = 'hlc'", "garbage"),
        ("UPDATE queue SET clocks = ?", "{oops"),
        ("UPDATE queue SET conflict_ids = ?", "nope"),
    ],
    ids=["config-json", "config-shape", "hlc", "queue-clocks", "queue-conflicts"],
)
def test_garbage_settings_raise_typed_errors(
    pristine: Path, tmp_path: Path, sql: str, value: str
) -> None:
    path = tmp_path / "till.db"
    shutil.copy(pristine, path)
    with sqlite3.connect(path) as conn:
        conn.execute(sql, (value,))
    _try(path)  # ok, CorruptData or StorageError; anything else fails the test
