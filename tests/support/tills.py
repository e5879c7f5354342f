"""Crash-test processes: a relay process that tests SIGKILL and restart, and tills.

A :class:`Till` runs a child script (the tests' ``TILL`` text: it opens a
replica, starts live sync, prints ``READY`` and then one sale id per line) and
reads what it printed, so a kill tells which sales had returned.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import IO

from tests.support.processes import HOST, demo, wait_until
from tiendasync import Replica

__all__ = ["INITIAL", "Relay", "Till", "setup_till", "storage_errors"]

#: the units of CAFE a till starts with (enough never to run out)
INITIAL = 1_000_000


class Relay:
    """A relay process (``python -m tiendasync relay``) with a token for each replica."""

    def __init__(self, workdir: Path, replicas: list[str]) -> None:
        self.workdir = workdir
        self.db = str(workdir / "relay.db")
        self.tokens = {
            r: demo.tiendasync(
                "relay", "token", "add", "--db", self.db, "--tenant", "acme", "--replica", r
            )
            for r in replicas
        }
        self.port, self.admin_port = demo.free_port(), demo.free_port()
        self.url = f"ws://{HOST}:{self.port}/sync"
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with (self.workdir / "relay.log").open("a") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tiendasync",
                    "relay",
                    "--db",
                    self.db,
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                    "--admin-port",
                    str(self.admin_port),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "relay exited"
            with urllib.request.urlopen(f"http://{HOST}:{self.admin_port}/healthz", timeout=1):
                return True

        wait_until(up, "relay up", 20)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class ReportedLines:
    """What a child process prints, one line per sale id after ``READY``, read on a thread.

    A line cut by a SIGKILL (no newline) does not count as reported.
    """

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: list[bytes] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line == b"READY\n":
                self.ready.set()

    def reported(self) -> list[str]:
        return [ln.decode().strip() for ln in self.lines if ln.endswith(b"\n") and ln != b"READY\n"]


class Till:
    """A child process selling one unit at a time while syncing live."""

    def __init__(
        self, script: Path, db: Path, relay: Relay, replica: str, pause: float = 0.0
    ) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = (
            str(Path(__file__).resolve().parents[2] / "src")
            + os.pathsep
            + env.get("PYTHONPATH", "")
        )
        self.stderr: IO[bytes] = (db.parent / f"{replica}.stderr").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(db), relay.url, relay.tokens[replica], str(pause)],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
        )
        self.output = ReportedLines(self.proc)

    @property
    def ready(self) -> threading.Event:
        return self.output.ready

    def kill(self) -> list[str]:
        """SIGKILL; the sale ids it reported (whole lines only)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self.output.reader.join(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.stderr.close()
        assert self.proc.returncode == -signal.SIGKILL
        return self.output.reported()


def setup_till(db: Path, replica: str, location: str) -> None:
    """Create the till's replica with the product CAFE and INITIAL units of it in stock."""
    with Replica.open(db, tenant="acme", replica_id=replica, location=location) as r:
        if r.catalog.get("CAFE") is None:
            r.catalog.put("CAFE", {"name": "Café", "price_cents": 450})
            r.inventory.receive("CAFE", INITIAL)


def storage_errors(workdir: Path) -> int:
    """Sale calls that raised StorageError in the tills (the lock race, not data loss)."""
    return sum(
        p.read_bytes().count(b"\nERR ") + p.read_bytes().startswith(b"ERR ")
        for p in workdir.glob("*.stderr")
    )
