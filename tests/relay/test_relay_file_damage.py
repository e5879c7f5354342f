"""A damaged relay.db: the relay starts and serves consistently, or refuses cleanly.

A relay process takes sales from a store and is stopped.  Its relay.db is
then copied and damaged: bytes flipped at seeded offsets (the header, the
first pages, the middle, the tail) or the file truncated.  A relay process
started on each damaged copy must either

* start and serve consistently: a fresh replica full-syncing from it holds
  every clock the relay's WELCOME state vectors claim (new tokens are added
  first: a 0-byte file is, for SQLite and the relay, a new empty database),
  and once the store that made the sales syncs again (it still holds them:
  the relay announces only what it can serve, so the store re-sends the
  rest) a fresh replica holds every sale: nothing is lost; or
* exit non-zero, with exactly one ``tiendasync: error:`` line on stderr that
  names the file, and no Python traceback.

The assertion message counts both outcomes.  ``TIENDASYNC_DAMAGE_SEED``
fixes the offsets; the long form (``@pytest.mark.soak``) tries many more.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.support.tills import Relay
from tiendasync import Replica
from tiendasync.protocol import ReplicaConnection, Welcome
from tiendasync.protocol.statevector import decode_state_vector

SEED = int(os.environ.get("TIENDASYNC_DAMAGE_SEED", "20261202"))
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _pristine(tmp: Path) -> tuple[Path, int]:
    """A stopped relay's files after a store synced sales to it; the sales."""
    work = tmp / "pristine"
    work.mkdir()
    relay = Relay(work, ["store"])
    relay.start()
    try:
        with Replica.open(tmp / "store.db", tenant="acme", replica_id="store", location="s") as r:
            r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
            r.inventory.receive("CAFE", 10_000)
            for _ in range(6):
                for _ in range(25):
                    r.record_sale([("CAFE", 1)])
                r.sync_now(relay.url, token=relay.tokens["store"])
            sales = r.sales.count()
    finally:
        relay.stop()
    for extra in ("relay.db-wal", "relay.db-shm"):
        assert not (work / extra).exists() or (work / extra).stat().st_size == 0, extra
    return work, sales


def _damage(data: bytes, rng: random.Random, kind: str) -> tuple[bytes, str]:
    n = len(data)
    if kind == "truncate":
        cut = rng.choice([0, 50, 100, 4096, rng.randrange(n // 4, n), n - 1])
        return data[:cut], f"truncate to {cut} of {n}"
    where = {
        "header": rng.randrange(0, 100),
        "first-pages": rng.randrange(100, min(n, 3 * 4096)),
        "middle": rng.randrange(n // 4, 3 * n // 4),
        "tail": rng.randrange(max(0, n - 4096), n),
    }[kind]
    out = bytearray(data)
    for off in range(where, min(n, where + rng.choice([1, 1, 8, 64]))):
        out[off] ^= rng.randrange(1, 256)
    return bytes(out), f"flip at {where} ({kind})"


def _start(db: Path, log: Path) -> tuple[subprocess.Popen[bytes], int | None, int | None]:
    """Start the relay; (process, ws port, admin port) once listening, or ports None on exit."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tiendasync", "relay", "--db", str(db), "--port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=out,
            env=env,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        ws = re.search(r"listening on ws://127\.0\.0\.1:(\d+)/sync", text)
        api = re.search(r"admin API on http://127\.0\.0\.1:(\d+)/", text)
        if ws and api:
            return proc, int(ws.group(1)), int(api.group(1))
        if proc.poll() is not None:
            return proc, None, None
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise AssertionError(f"relay neither started nor exited: {log.read_text()[-2000:]}")


def _token(db: Path, replica: str) -> str:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    args = ["relay", "token", "add", "--db", str(db), "--tenant", "acme", "--replica", replica]
    return subprocess.run(
        [sys.executable, "-m", "tiendasync", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    ).stdout.strip()


async def _welcome(port: int, token: str) -> Welcome:
    async with connect(f"ws://127.0.0.1:{port}/sync") as ws:
        conn = ReplicaConnection()
        conn.hello(tenant="acme", replica_id="probe", token=token, client_id=7, state_vectors={})
        await ws.send(conn.data_to_send())
        while True:
            data = await ws.recv()
            assert isinstance(data, bytes)
            conn.receive_data(data)
            for ev in conn.events():
                if isinstance(ev, Welcome):
                    return ev
                raise AssertionError(f"relay answered HELLO with {ev!r}")


def _serves_consistently(tmp: Path, port: int, tokens: dict[str, str], label: str) -> int:
    """Everything the WELCOME claims reaches a fresh replica; its sale count."""
    claimed = asyncio.run(asyncio.wait_for(_welcome(port, tokens["probe"]), 15)).state_vectors
    with Replica.open(
        tmp / f"fresh-{label}.db", tenant="acme", replica_id="fresh", location="fresh"
    ) as fresh:
        fresh.sync_now(f"ws://127.0.0.1:{port}/sync", token=tokens["fresh"], full=True)
        for doc, sv in claimed.items():
            have = decode_state_vector(fresh.state_vector(doc))
            short = {c: k for c, k in decode_state_vector(sv).items() if have.get(c, 0) < k}
            assert not short, f"{label}: the relay claims {doc} {short} but did not serve it"
        return fresh.sales.count()


def _healed(tmp: Path, case: Path, port: int, tokens: dict[str, str], label: str) -> int:
    """The store (a copy of it) syncs to the damaged relay; a fresh replica's sale count."""
    shutil.copy(tmp / "store.db", case / "store.db")
    url = f"ws://127.0.0.1:{port}/sync"
    with Replica.open(case / "store.db") as store:
        store.sync_now(url, token=tokens["store"], full=True)
    with Replica.open(
        case / f"healed-{label}.db", tenant="acme", replica_id="fresh", location="fresh"
    ) as fresh:
        fresh.sync_now(url, token=tokens["fresh"], full=True)
        return fresh.sales.count()


def damage_run(tmp_path: Path, trials: int) -> dict[str, Any]:
    work, sales = _pristine(tmp_path)
    data = (work / "relay.db").read_bytes()
    rng = random.Random(SEED)
    kinds = ["header", "first-pages", "middle", "tail", "truncate"]
    outcomes: dict[str, list[str]] = {"served": [], "refused": []}
    for i in range(trials):
        kind = kinds[i % len(kinds)]
        case = tmp_path / f"case-{i}"
        shutil.copytree(work, case)
        damaged, what = _damage(data, rng, kind)
        (case / "relay.db").write_bytes(damaged)
        log = case / "relay.stderr"
        proc, port, _ = _start(case / "relay.db", log)
        try:
            if port is not None:
                # new tokens: an empty (0-byte) file is a new relay, with no tokens
                names = ("probe", "fresh", "store")
                tokens = {n: _token(case / "relay.db", n) for n in names}
                got = _serves_consistently(case, port, tokens, f"{i}")
                healed = _healed(tmp_path, case, port, tokens, f"{i}")
                assert healed == sales, f"{what}: {healed}/{sales} sales after the store synced"
                outcomes["served"].append(f"{what}: {got}/{sales} sales, {healed} after")
                proc.send_signal(signal.SIGTERM)
                proc.wait(15)
            else:
                err = log.read_text(errors="replace")
                errors = [ln for ln in err.splitlines() if ln.startswith("tiendasync: error:")]
                assert proc.returncode != 0, f"{what}: exited 0 without serving"
                assert "Traceback" not in err, f"{what}: traceback on stderr:\n{err[-3000:]}"
                assert len(errors) == 1 and "relay.db" in errors[0], f"{what}: stderr:\n{err}"
                outcomes["refused"].append(f"{what}: rc={proc.returncode}: {errors[0]}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    summary = (
        f"{trials} damaged copies: {len(outcomes['served'])} served consistently, "
        f"{len(outcomes['refused'])} refused cleanly"
    )
    print(f"\n{summary}")
    for k, v in outcomes.items():
        for line in v:
            print(f"  {k}: {line}")
    assert len(outcomes["served"]) + len(outcomes["refused"]) == trials, summary
    return {"trials": trials, **{k: len(v) for k, v in outcomes.items()}}


@pytest.mark.slow
def test_damaged_relay_db(tmp_path: Path) -> None:
    damage_run(tmp_path, trials=10)


@pytest.mark.soak
@pytest.mark.skipif(not os.environ.get("TIENDASYNC_SOAK"), reason="set TIENDASYNC_SOAK=1")
def test_damaged_relay_db_long(tmp_path: Path) -> None:
    damage_run(tmp_path, trials=100)
