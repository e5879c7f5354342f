"""Real processes for end-to-end tests: a relay (``python -m tiendasync relay``) and
POS processes (``examples/pos.py --json``), all on 127.0.0.1.

:class:`Cluster` starts a relay with one token per replica and one :class:`Pos`
per replica; :func:`wait_until` polls a predicate (connection errors and failed
assertions count as "not yet").  ``demo`` (``examples/demo.py``) is importable
once this module is: it puts ``examples/`` on ``sys.path``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
import demo  # noqa: E402

__all__ = ["DRIVER", "EXAMPLES", "HOST", "PY", "Cluster", "Pos", "demo", "wait_until"]

PY = sys.executable
HOST = "127.0.0.1"

# pos.py plus two commands: ``transfer SKU QTY TO_LOCATION`` and ``sale-ids``.
DRIVER = f"""
import sys
sys.path.insert(0, {str(EXAMPLES)!r})
import pos
_orig = pos.run_command
def run_command(r, words, relay, token):
    if words[0] == "transfer":
        if words[3] not in r.inventory.locations():
            r.locations.put(words[3], {{"name": words[3]}})
        m = r.inventory.transfer(words[1], int(words[2]), to_location=words[3])
        return m.stock
    if words[0] == "sale-ids":
        return sorted(s.id for s in r.sales.list(limit=100000))
    return _orig(r, words, relay, token)
pos.run_command = run_command
sys.argv = ["pos.py", *sys.argv[1:]]
raise SystemExit(pos.main())
"""


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 25.0) -> None:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, AssertionError) as exc:  # relay still down, etc.
            last_exc = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {what} (last error: {last_exc})")


class Pos:
    """One POS process (pos.py --json via DRIVER)."""

    def __init__(self, workdir: Path, replica: str, location: str, relay: str, token: str) -> None:
        self.name = replica
        self.args = [
            PY,
            "-c",
            DRIVER,
            "--json",
            "--db",
            str(workdir / f"{replica}.db"),
            "--tenant",
            "acme",
            "--replica",
            replica,
            "--location",
            location,
            "--relay",
            relay,
            "--token",
            token,
        ]
        self.stderr = (workdir / f"{replica}.stderr").open("a")
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            bufsize=1,
        )

    def do(self, command: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"{self.name} died (rc={self.proc.poll()})"
        answer = json.loads(line)
        assert answer["ok"], f"{self.name}: {command!r} failed: {answer['result']}"
        return answer["result"]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        self.stderr.close()


class Cluster:
    """A relay process and one POS process per ``{replica: location}``; admin token too."""

    def __init__(self, workdir: Path, replicas: dict[str, str]) -> None:
        self.workdir = workdir
        self.db = str(workdir / "relay.db")
        self.port, self.admin_port = demo.free_port(), demo.free_port()
        self.url = f"ws://{HOST}:{self.port}"
        self.tokens = {
            r: demo.tiendasync(
                "relay", "token", "add", "--db", self.db, "--tenant", "acme", "--replica", r
            )
            for r in replicas
        }
        self.admin_token = demo.tiendasync("relay", "token", "add", "--db", self.db, "--admin")
        self.relay: subprocess.Popen[str] | None = None
        self.start_relay()
        self.pos = {
            r: Pos(workdir, r, loc, self.url, self.tokens[r]) for r, loc in replicas.items()
        }

    def start_relay(self, *extra_args: str) -> None:
        """Start the relay process (``extra_args``: more ``tiendasync relay`` options)."""
        with (self.workdir / "relay.log").open("a") as log:
            self.relay = subprocess.Popen(
                [
                    PY,
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
                    *extra_args,
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                text=True,
            )

        def up() -> bool:
            assert self.relay is not None and self.relay.poll() is None, "relay exited"
            with urllib.request.urlopen(f"http://{HOST}:{self.admin_port}/healthz", timeout=1):
                return True

        wait_until(up, "relay is listening", 15)

    def kill_relay(self) -> None:
        assert self.relay is not None
        self.relay.send_signal(signal.SIGKILL)
        self.relay.wait(10)

    def stores(self) -> list[Pos]:
        return list(self.pos.values())

    def converged(self) -> bool:
        snaps = [p.do("snapshot") for p in self.stores()]
        return all(s == snaps[0] for s in snaps[1:])

    def close(self) -> None:
        for p in self.stores():
            p.close()
        if self.relay is not None and self.relay.poll() is None:
            self.relay.terminate()
            try:
                self.relay.wait(10)
            except subprocess.TimeoutExpired:
                self.relay.kill()
                self.relay.wait(5)
