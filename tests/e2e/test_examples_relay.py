"""The relay-side examples: the launcher and the live stock dashboard (real processes)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))

import demo  # noqa: E402


def test_relay_launcher_and_stock_dashboard(tmp_path: Path) -> None:
    port = demo.free_port()
    launcher = subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "relay_launcher.py"),
            "--dir",
            str(tmp_path / "relay"),
            "--tenant",
            "acme",
            "--store",
            "caja-1",
            "--store",
            "tablero",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    store = None
    try:
        tokens_file = tmp_path / "relay" / "tokens.json"
        deadline = time.monotonic() + 30
        while not tokens_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        tokens = json.loads(tokens_file.read_text())
        assert set(tokens) == {"admin", "caja-1", "tablero"}
        assert oct(tokens_file.stat().st_mode & 0o777) == "0o600"
        store = demo.Store(tmp_path, "caja-1", f"ws://127.0.0.1:{port}", tokens["caja-1"])
        store.do("product CAFE-500 450 Café")
        store.do("receive CAFE-500 7")
        store.do("sell CAFE-500 9")
        store.do("online")
        store.do("wait-synced 20")
        shown = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "stock_dashboard.py"),
                "--relay",
                f"ws://127.0.0.1:{port}",
                "--tenant",
                "acme",
                "--location",
                "tienda-1",
                "--token",
                tokens["tablero"],
                "--once",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 0, shown.stderr
        assert "stock at tienda-1" in shown.stdout
        line = next(ln for ln in shown.stdout.splitlines() if ln.startswith("CAFE-500"))
        assert line.split()[1] == "-2" and "negative" in line
    finally:
        if store is not None:
            store.close()
        launcher.send_signal(signal.SIGINT)
        try:
            launcher.wait(15)
        except subprocess.TimeoutExpired:
            launcher.kill()
