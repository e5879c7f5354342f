"""Conflicts reach the stores when review workers review, on a PostgreSQL relay.

Real relay and worker processes on a real server (``pg_url``), real replicas
syncing over websockets: two tills of one shop each sell the last unit while
apart, and a third store, syncing afterwards, receives the conflict.  Once
with the relay's own worker thread (the default), once with the review left
to a separate ``tiendasync relay worker`` (``--review-workers 0``), whose
commit the relay serves from the store of record.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.relay_process import SRC
from tests.support.processes import wait_until
from tiendasync import Replica
from tiendasync.relay.auth import issue_token
from tiendasync.relay.pgstore import PostgresRelayStore

ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _spawn(log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tiendasync", "relay", *args],
            stdout=subprocess.DEVNULL,
            stderr=out,
            env=ENV,
        )


def _relay(url: str, tmp_path: Path, log: Path, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    proc = _spawn(
        log,
        "--store",
        url,
        "--central-dir",
        str(tmp_path / "central"),
        "--port",
        "0",
        "--no-admin",
        "--lease-seconds",
        "2",
        *extra,
    )
    deadline = time.monotonic() + 30
    while not (found := re.findall(r"listening on (ws://[\d.]+:\d+/sync)", log.read_text())):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return proc, found[-1]


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(5)


def _tokens(url: str) -> dict[str, str]:
    with PostgresRelayStore(url) as store:  # (the token command is tested on its own)
        return {
            r: issue_token(store, tenant="acme", replica_id=r)
            for r in ("caja-1", "caja-2", "office")
        }


def _last_unit_sold_twice(tmp_path: Path, relay: str, tokens: dict[str, str]) -> None:
    a, b = (
        Replica.open(tmp_path / f"{r}.db", tenant="acme", replica_id=r, location="tienda-1")
        for r in ("caja-1", "caja-2")
    )
    try:
        a.catalog.put("LECHE", {"name": "Leche", "price_cents": 120})
        a.inventory.receive("LECHE", 1)
        a.sync_now(relay, token=tokens["caja-1"])
        b.sync_now(relay, token=tokens["caja-2"])
        assert b.inventory.stock("LECHE") == 1
        a.record_sale([("LECHE", 1)])  # apart: each sells the last one
        b.record_sale([("LECHE", 1)])
        a.sync_now(relay, token=tokens["caja-1"])
        b.sync_now(relay, token=tokens["caja-2"])
    finally:
        a.close()
        b.close()


def _office_sees_the_conflict(tmp_path: Path, relay: str, token: str) -> list[str]:
    office = Replica.open(
        tmp_path / "office.db", tenant="acme", replica_id="office", location="oficina"
    )
    try:
        found: list[str] = []

        def arrived() -> bool:
            office.sync_now(relay, token=token)
            found[:] = [c.id for c in office.conflicts.list(status="open") if c.sku == "LECHE"]
            return bool(found)

        wait_until(arrived, "the conflict at the office", 20)
        return found
    finally:
        office.close()


def test_the_relays_own_worker_reviews_and_serves_the_conflict(pg_url: str, tmp_path: Path) -> None:
    tokens = _tokens(pg_url)
    log = tmp_path / "relay.log"
    relay, url = _relay(pg_url, tmp_path, log)
    try:
        _last_unit_sold_twice(tmp_path, url, tokens)
        found = _office_sees_the_conflict(tmp_path, url, tokens["office"])
    finally:
        assert _stop(relay) == 0
    with PostgresRelayStore(pg_url) as store:
        rows = store.list_conflicts("acme")
        assert [(r.id, r.location, r.sku, r.status) for r in rows] == [
            (found[0], "tienda-1", "LECHE", "open")
        ]
        leases = [store.read_lease("acme", loc) for loc in ("-", "tienda-1")]
        assert all(lease is not None and lease.owner is None for lease in leases)  # released
    assert "Traceback" not in log.read_text()


def test_a_separate_worker_reviews_and_the_relay_serves_its_commit(
    pg_url: str, tmp_path: Path
) -> None:
    tokens = _tokens(pg_url)
    log = tmp_path / "relay.log"
    relay, url = _relay(pg_url, tmp_path, log, "--review-workers", "0")
    worker = _spawn(tmp_path / "worker.log", "worker", "--store", pg_url, "--lease-seconds", "2")
    try:
        _last_unit_sold_twice(tmp_path, url, tokens)
        with PostgresRelayStore(pg_url) as store:
            wait_until(lambda: len(store.list_conflicts("acme")) == 1, "the worker's conflict", 20)
            (row,) = store.list_conflicts("acme")
        # This relay reviews nothing itself; a relay (re)started after the worker's commit
        # serves it from the store of record (live, between nodes: issue 15 part 2).
        assert _stop(relay) == 0
        log = tmp_path / "relay-again.log"
        relay, url = _relay(pg_url, tmp_path, log, "--review-workers", "0")
        assert _office_sees_the_conflict(tmp_path, url, tokens["office"]) == [row.id]
    finally:
        assert _stop(relay) == 0
        assert _stop(worker) == 0
    assert "Traceback" not in log.read_text() + (tmp_path / "worker.log").read_text()
