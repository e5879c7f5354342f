"""Crash safety of the one-pass bulk import: SIGKILL it at random moments.

A child process imports batches of products with their opening stock in one
``catalog.put_many(products, stock=...)`` call each, printing the batch number
(flushed) only after the call returned.  The parent kills it with SIGKILL at a
random moment and reopens the file: every reported batch is there, whole
(products and stock), no batch is there in part, and SQLite is intact.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tiendasync import Replica

BATCH = 200

CHILD = f"""
import sys
from tiendasync import Replica

r = Replica.open(sys.argv[1])
n = int(sys.argv[2])
print("READY", flush=True)
while True:
    skus = [f"B{{n}}-{{i}}" for i in range({BATCH})]
    r.catalog.put_many({{s: {{"name": s, "price_cents": n}} for s in skus}},
                       stock={{s: n + 1 for s in skus}})
    print(n, flush=True)
    n += 1
"""


def _run_and_kill(script: Path, db: Path, first: int, delay: float) -> list[int]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    child = subprocess.Popen(
        [sys.executable, str(script), str(db), str(first)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == b"READY\n"
        time.sleep(delay)
        assert child.poll() is None
    finally:
        child.send_signal(signal.SIGKILL)
        out, _ = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    return [int(line) for line in out.split(b"\n")[:-1]]  # a cut last line was not reported


def test_sigkill_never_leaves_part_of_a_bulk_import(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    rng = random.Random(19)
    finished = 0
    for cycle in range(5):
        db = tmp_path / f"till-{cycle}.db"  # a fresh file each time: the checks stay cheap
        Replica.open(db, tenant="acme", replica_id="t1", location="t1").close()
        reported = _run_and_kill(script, db, 0, rng.uniform(0.05, 0.3))
        with Replica.open(db) as r:
            skus = r.catalog.skus()
            levels = r.inventory.levels()
            batches = {int(sku[1:].split("-")[0]) for sku in skus}
            for n in batches:  # whole or absent: products and stock together
                names = [f"B{n}-{i}" for i in range(BATCH)]
                assert all(r.catalog.get(s) == {"name": s, "price_cents": n} for s in names[::25])
                assert sum(1 for s in skus if s.startswith(f"B{n}-")) == BATCH
                assert all(levels[s] == n + 1 for s in names)
            assert len(levels) == len(skus)
        assert set(reported) <= batches  # nothing acknowledged was lost
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finished += bool(batches)
    assert finished, "no import finished before a kill: the delays are too short"
