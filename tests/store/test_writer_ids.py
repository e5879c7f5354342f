"""Writer identities: only an incarnation that writes leaves a Yjs client id behind.

Every read-write open draws a fresh client id, but records it in the file
(``client_ids``) only in the transaction of its first write.  These tests
hold that to real processes killed with SIGKILL: whatever point a process
dies at, every writer in a document's state vector is recorded, and opens
that only read (a shell, a web worker) leave the file's writers unchanged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tiendasync import Replica, UsageError
from tiendasync.protocol.statevector import decode_state_vector

SRC = str(Path(__file__).resolve().parents[2] / "src")

#: Opens the replica read-write; reads; optionally sells ``argv[2]`` times
#: (printing after each commit), then waits to be killed.
WORKER = textwrap.dedent(
    """
    import sys, time
    from tiendasync import Replica
    r = Replica.open(sys.argv[1])
    print("open", r.inventory.stock("CAFE"), flush=True)
    for n in range(int(sys.argv[2])):
        r.record_sale([("CAFE", 1)])
        print("sold", n, flush=True)
    time.sleep(60)
    """
)


def _seed(path: Path) -> None:
    with Replica.open(path, tenant="acme", replica_id="t1", location="t1") as r:
        r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
        r.inventory.receive("CAFE", 1000)


def _writers_in_docs(r: Replica) -> set[int]:
    return {w for d in r.doc_names() for w in decode_state_vector(r.state_vector(d))}


def _run_and_kill(path: Path, sales: int) -> list[str]:
    """Start a WORKER, wait until it reported every sale, SIGKILL it; its lines."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(path), str(sales)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": SRC},
        text=True,
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline().strip() for _ in range(sales + 1)]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    return lines


def test_opens_that_never_write_record_no_writer(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    _seed(path)
    with Replica.open(path, read_only=True) as r:
        seeded = r.wrote_client_ids()
    assert len(seeded) == 1
    for _ in range(5):  # five `manage.py shell` sessions that only look
        with Replica.open(path) as r:
            assert r.inventory.stock("CAFE") == 1000
            assert r.client_id in r.own_client_ids()  # a sync may announce it
    with Replica.open(path) as r:
        assert r.wrote_client_ids() == seeded
        r.record_sale([("CAFE", 2)])
        assert r.wrote_client_ids() == seeded | {r.client_id}
        writer = r.client_id
    with Replica.open(path, read_only=True) as r:
        assert r.wrote_client_ids() == seeded | {writer}
        assert _writers_in_docs(r) <= r.wrote_client_ids()
        assert r.inventory.stock("CAFE") == 998


def test_processes_killed_before_and_after_writing(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    _seed(path)
    with Replica.open(path, read_only=True) as r:
        seeded = r.wrote_client_ids()
    # Killed after opening, never wrote: nothing recorded.
    assert _run_and_kill(path, 0) == ["open 1000"]
    with Replica.open(path, read_only=True) as r:
        assert r.wrote_client_ids() == seeded
    # Killed after three committed sales: its writer is recorded with them.
    assert _run_and_kill(path, 3)[-1] == "sold 2"
    with Replica.open(path, read_only=True) as r:
        assert r.inventory.stock("CAFE") == 997
        assert len(r.wrote_client_ids() - seeded) == 1
        assert _writers_in_docs(r) <= r.wrote_client_ids()


def test_processes_racing_to_write_get_distinct_writers(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    _seed(path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(path), "20"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": SRC},
            text=True,
        )
        for _ in range(3)
    ]
    deadline = time.monotonic() + 60
    for proc in procs:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(21)]
        assert lines[-1] == "sold 19", (lines, proc.stderr)
        assert time.monotonic() < deadline
    for proc in procs:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with Replica.open(path, read_only=True) as r:
        assert r.inventory.stock("CAFE") == 1000 - 60
        assert len(r.wrote_client_ids()) == 4  # the seed's and one per process
        assert _writers_in_docs(r) <= r.wrote_client_ids()


def test_an_id_another_process_recorded_meanwhile_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "shop.db"
    _seed(path)
    fixed = lambda n: 41  # noqa: E731  both draw 42: what chance alone makes 1 in 2**32
    first = Replica.open(path, client_id_source=fixed)
    second = Replica.open(path, client_id_source=fixed)
    try:
        assert first.client_id == second.client_id == 42
        first.record_sale([("CAFE", 1)])
        with pytest.raises(UsageError, match="another process took writer id 42"):
            second.record_sale([("CAFE", 5)])
        assert second.inventory.stock("CAFE") == 999  # nothing of the refused sale kept
    finally:
        second.close()
        first.close()
    with Replica.open(path, read_only=True) as r:
        assert r.inventory.stock("CAFE") == 999
        assert 42 in r.wrote_client_ids()
