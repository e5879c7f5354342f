"""``tiendasync relay``: tokens and the server, as real subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from websockets.asyncio.client import connect

from tiendasync.protocol import ReplicaConnection, Welcome

SRC = str(Path(__file__).resolve().parents[2] / "src")


def tiendasync(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "tiendasync", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=check,
    )


def test_token_add_list_revoke(tmp_path: Path) -> None:
    db = str(tmp_path / "relay.db")
    out = tiendasync(
        "relay", "token", "add", "--db", db, "--tenant", "acme", "--replica", "tienda-1"
    ).stdout
    token = out.strip()
    assert out == token + "\n" and re.fullmatch(r"ts_[0-9a-f]{12}_[\w-]{43}", token)
    admin = tiendasync("relay", "token", "add", "--db", db, "--admin").stdout.strip()
    assert admin.startswith("ts_") and admin != token
    listing = tiendasync("relay", "token", "list", "--db", db).stdout
    assert token not in listing and admin not in listing
    token_id = token[3:15]
    assert token_id in listing and "tienda-1" in listing
    rows = json.loads(tiendasync("relay", "token", "list", "--db", db, "--json").stdout)
    assert [(r["tenant"], r["replica_id"], r["admin"]) for r in rows] == [
        ("acme", "tienda-1", False),
        (None, None, True),
    ]
    assert token not in json.dumps(rows)
    tiendasync("relay", "token", "revoke", "--db", db, token_id)
    rows = json.loads(tiendasync("relay", "token", "list", "--db", db, "--json").stdout)
    assert rows[0]["revoked_at"] is not None and rows[1]["revoked_at"] is None
    bad = tiendasync("relay", "token", "revoke", "--db", db, "000000000000", check=False)
    assert bad.returncode == 2 and "no token" in bad.stderr
    bad = tiendasync("relay", "token", "add", "--db", db, "--tenant", "acme", check=False)
    assert bad.returncode == 2


def test_relay_runs_and_stops_on_sigterm(tmp_path: Path) -> None:
    db = str(tmp_path / "relay.db")
    token = tiendasync(
        "relay", "token", "add", "--db", db, "--tenant", "acme", "--replica", "t1"
    ).stdout.strip()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tiendasync",
            "relay",
            "--db",
            db,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        port = None
        for _ in range(50):
            line = proc.stderr.readline()
            m = re.search(r"listening on ws://127\.0\.0\.1:(\d+)/sync", line)
            if m:
                port = int(m.group(1))
                break
        assert port

        async def hello() -> Welcome:
            async with connect(f"ws://127.0.0.1:{port}/sync") as ws:
                conn = ReplicaConnection()
                conn.hello(
                    tenant="acme", replica_id="t1", token=token, client_id=7, state_vectors={}
                )
                await ws.send(conn.data_to_send())
                while True:
                    data = await ws.recv()
                    assert isinstance(data, bytes)
                    conn.receive_data(data)
                    for ev in conn.events():
                        if isinstance(ev, Welcome):
                            return ev

        assert asyncio.run(asyncio.wait_for(hello(), 10)).state_vectors == {}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
