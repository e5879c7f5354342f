"""One relay per database: a second ``tiendasync relay --db same.db`` exits at once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiendasync.relay.dblock import RelayLocked, relay_lock

SRC = str(Path(__file__).resolve().parents[2] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _start(db: str, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "tiendasync", "relay", "--db", db, "--port", "0", "--no-admin"],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=ENV,
        )


def _wait_listening(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while not re.search(r"listening on ws://", log_path.read_text()):
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_second_relay_on_the_same_db_exits_non_zero_at_once(tmp_path: Path) -> None:
    db = str(tmp_path / "relay.db")
    first = _start(db, tmp_path / "first.log")
    try:
        _wait_listening(first, tmp_path / "first.log")
        began = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "tiendasync", "relay", "--db", db, "--port", "0", "--no-admin"],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=30,
        )
        assert second.returncode == 1, second.stderr
        assert time.monotonic() - began < 15
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert "another relay" in lines[0] and f"already running on {db}" in lines[0]
        assert f"pid {first.pid}" in lines[0]
        assert first.poll() is None  # the first one keeps serving
    finally:
        _stop(first)


def test_the_lock_is_released_when_the_relay_dies(tmp_path: Path) -> None:
    db = str(tmp_path / "relay.db")
    first = _start(db, tmp_path / "first.log")
    try:
        _wait_listening(first, tmp_path / "first.log")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert Path(db + ".lock").exists()  # a stale file: harmless
        again = _start(db, tmp_path / "again.log")
        try:
            _wait_listening(again, tmp_path / "again.log")
        finally:
            _stop(again)
    finally:
        _stop(first)


def test_relay_lock_in_process(tmp_path: Path) -> None:
    db = str(tmp_path / "relay.db")
    with relay_lock(db):
        with pytest.raises(RelayLocked) as caught, relay_lock(db):
            pass
        assert caught.value.exit_code == 1
    with relay_lock(db):  # released at the end of the block
        pass
