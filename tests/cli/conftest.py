"""A real ``tiendasync relay`` process for the command-line tests."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .relay_process import SRC, RunningRelay


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RunningRelay]:
    """``tiendasync relay`` on free ports (stderr to a file, so it never blocks)."""
    db = str(tmp_path / "relay.db")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log_path = tmp_path / "relay.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tiendasync", "relay", "--db", db, "--port", "0"],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        url = admin = None
        while not (url and admin):
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            text = log_path.read_text()
            ws = re.search(r"listening on (ws://127\.0\.0\.1:\d+/sync)", text)
            api = re.search(r"admin API on (http://127\.0\.0\.1:\d+)/api/sync/", text)
            url, admin = (ws.group(1) if ws else None), (api.group(1) if api else None)
            time.sleep(0.05)
        yield RunningRelay(db, url, admin)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
