"""``tiendasync relay --store postgresql://...``: the relay and its token commands on a
PostgreSQL store of record, as real processes against a real server (``pg_url``)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.cli.relay_process import SRC, tiendasync
from tests.support.relay_client import Client, Writer, run, values
from tiendasync.protocol import Ack
from tiendasync.relay.pgstore import PostgresRelayStore

ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _start(url: str, central: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tiendasync",
                "relay",
                "--store",
                url,
                "--central-dir",
                str(central),
                "--port",
                "0",
                "--no-admin",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=ENV,
        )


def _port(proc: subprocess.Popen[bytes], log_path: Path) -> int:
    deadline = time.monotonic() + 30
    while not (found := re.search(r"listening on ws://[\d.]+:(\d+)/sync", log_path.read_text())):
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
    return int(found.group(1))


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_tokens_and_a_relay_on_a_postgresql_store(pg_url: str, tmp_path: Path) -> None:
    token = tiendasync(
        "relay", "token", "add", "--store", pg_url, "--tenant", "acme", "--replica", "t1"
    ).stdout.strip()
    listed = json.loads(tiendasync("relay", "token", "list", "--store", pg_url, "--json").stdout)
    assert [(t["tenant"], t["replica_id"]) for t in listed] == [("acme", "t1")]

    central = tmp_path / "central"
    first = _start(pg_url, central, tmp_path / "first.log")
    try:
        port = _port(first, tmp_path / "first.log")

        async def sale() -> int:
            client = await Client.open(port, replica="t1", token=token, client_id=41)
            await client.until_synced()
            await client.send_update("catalog", Writer(41).set("CAFE", 3))
            ack = await client.wait_for(Ack)
            await client.close()
            return ack.clock

        assert run(sale()) == 1
        with PostgresRelayStore(pg_url) as store:  # acknowledged: in the store of record
            assert len(store.load_doc("acme", "catalog").updates) == 1

        # a second relay on the same database is a second node of a cluster
        second = _start(pg_url, tmp_path / "c2", tmp_path / "second.log")
        try:
            port2 = _port(second, tmp_path / "second.log")

            async def catch_up() -> dict[str, object]:
                client = await Client.open(port2, replica="t1", token=token, client_id=41)
                _, diffs = await client.until_synced()
                await client.close()
                seen = Writer(41)
                for d in diffs:
                    seen.doc.apply_update(d.data)
                return values(seen.doc)

            assert run(catch_up())["CAFE"] == 3
        finally:
            _stop(second)
        assert "Traceback" not in (tmp_path / "second.log").read_text()

        first.send_signal(signal.SIGKILL)  # a node killed: another starts in its place
        first.wait(10)
        again = _start(pg_url, central, tmp_path / "again.log")
        try:
            _port(again, tmp_path / "again.log")
        finally:
            _stop(again)
    finally:
        _stop(first)


def test_a_postgresql_store_needs_a_central_dir_and_a_server(pg_url: str, tmp_path: Path) -> None:
    no_dir = tiendasync("relay", "--store", pg_url, "--port", "0", check=False)
    assert no_dir.returncode != 0 and "give --central-dir" in no_dir.stderr
    gone = pg_url.replace("postgresql://postgres@/", "postgresql://postgres:s3cretpw@/no_such_db_")
    down = tiendasync("relay", "token", "list", "--store", gone, check=False)
    assert down.returncode != 0 and "cannot connect to relay database" in down.stderr
    assert "s3cretpw" not in down.stderr
    assert "Traceback" not in no_dir.stderr + down.stderr
