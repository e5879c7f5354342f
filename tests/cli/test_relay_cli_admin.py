"""`tiendasync relay sync-now` and `tiendasync relay --invariants`, with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))

import demo  # noqa: E402

RULES = """
from tiendasync.store.invariants import invariant

@invariant("shelf_capacity", watches=("stock",))
def shelf_capacity(state, location, sku):
    units = state.stock(location, sku)
    return f"{units} units of {sku} do not fit on the shelf (max 10)" if units > 10 else None

RULES = [shelf_capacity]
"""


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tiendasync", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.slow
def test_sync_now_and_app_invariants(tmp_path: Path) -> None:
    (tmp_path / "shop_rules.py").write_text(RULES)
    db = str(tmp_path / "relay.db")
    token = demo.tiendasync(
        "relay", "token", "add", "--db", db, "--tenant", "acme", "--replica", "caja-1"
    )
    admin_token = demo.tiendasync("relay", "token", "add", "--db", db, "--admin")
    reserved = cli("relay", "token", "add", "--db", db, "--tenant", "acme", "--replica", "relay")
    assert reserved.returncode != 0 and "reserved" in reserved.stderr
    port, admin_port = demo.free_port(), demo.free_port()
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    relay = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tiendasync",
            "relay",
            "--db",
            db,
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
            "--invariants",
            "shop_rules:RULES",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = None
    try:

        def up() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/healthz", timeout=1):
                    return True
            except OSError:
                return False

        wait_until(up)
        store = demo.Store(tmp_path, "caja-1", f"ws://127.0.0.1:{port}", token)
        store.do("product AGUA 50 Agua 1 L")
        store.do("receive AGUA 12")
        store.do("online")
        store.do("wait-synced 20")

        def conflicts() -> list[dict[str, object]]:
            answer = demo.admin(
                admin_port, admin_token, "GET", "/api/sync/queue/?conflict=true&status=open"
            )
            return list(answer["results"])

        wait_until(lambda: any(c["invariant"] == "shelf_capacity" for c in conflicts()))

        def sessions() -> int:
            return len(
                demo.admin(admin_port, admin_token, "GET", "/api/sync/log/?replica=caja-1")[
                    "results"
                ]
            )

        before = sessions()
        admin_url = f"http://127.0.0.1:{admin_port}"
        done = cli(
            "relay",
            "sync-now",
            "--replica",
            "caja-1",
            "--full",
            "--admin-url",
            admin_url,
            env={**os.environ, "TIENDASYNC_ADMIN_TOKEN": admin_token},
        )
        assert done.returncode == 0, done.stderr
        assert "asked caja-1 to sync now (full)" in done.stdout
        wait_until(lambda: sessions() > before)  # the store ended its session and resynced
        store.do("wait-synced 20")
        unknown = cli(
            "relay",
            "sync-now",
            "--replica",
            "nobody",
            "--admin-url",
            admin_url,
            "--token",
            admin_token,
        )
        assert unknown.returncode == 1 and "no replica" in unknown.stderr
        no_token = cli(
            "relay",
            "sync-now",
            "--replica",
            "caja-1",
            "--admin-url",
            admin_url,
            env={k: v for k, v in os.environ.items() if k != "TIENDASYNC_ADMIN_TOKEN"},
        )
        assert no_token.returncode == 2 and "admin token" in no_token.stderr
    finally:
        if store is not None:
            store.close()
        relay.terminate()
        relay.wait(10)


def test_bad_invariant_spec_is_a_clean_error(tmp_path: Path) -> None:
    done = cli(
        "relay",
        "--db",
        str(tmp_path / "r.db"),
        "--port",
        "0",
        "--invariants",
        "no_such_module:RULES",
    )
    assert done.returncode == 2
    assert "cannot load invariants" in done.stderr and "Traceback" not in done.stderr
