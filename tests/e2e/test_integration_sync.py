"""Integration: a real relay process and three real POS processes (examples/pos.py).

Everything listens on 127.0.0.1 only.  The POS processes are driven through
their ``--json`` mode, exactly like ``examples/demo.py``; a tiny wrapper adds
two commands pos.py lacks (``transfer`` and ``sale-ids``).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
sys.path.insert(0, str(EXAMPLES))
import demo  # noqa: E402

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

    def start_relay(self) -> None:
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


REPLICAS = {"caja-1": "tienda-1", "caja-2": "tienda-1", "caja-3": "tienda-2"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, REPLICAS)
    try:
        yield c
    finally:
        c.close()


def _all_have(cluster: Cluster, sale_ids: set[str]) -> bool:
    return all(sale_ids <= set(p.do("sale-ids")) for p in cluster.stores())


def test_offline_writes_converge(cluster: Cluster) -> None:
    c1, c2, c3 = (cluster.pos[r] for r in REPLICAS)
    sold: set[str] = set()
    # offline everywhere (never started sync)
    c1.do("product CAFE-500 450 Café 500 g")
    c1.do("receive CAFE-500 10")
    c2.do("product LECHE-1L 120 Leche 1 L")
    c2.do("receive LECHE-1L 5")
    c3.do("product PAN 80 Pan")
    c3.do("receive PAN 20")
    c3.do("transfer PAN 4 tienda-1")
    sold.add(c1.do("sell CAFE-500 2")["id"])
    sold.add(c2.do("sell LECHE-1L 1")["id"])
    sold.add(c3.do("sell PAN 3")["id"])
    for p in cluster.stores():
        assert p.do("status")["state"] == "offline"
    for p in cluster.stores():
        p.do("online")
    wait_until(lambda: _all_have(cluster, sold) and cluster.converged(), "convergence")
    snap = c1.do("snapshot")
    assert set(snap["catalog"]) == {"CAFE-500", "LECHE-1L", "PAN"}
    assert snap["stock"]["tienda-1"] == {"CAFE-500": 8, "LECHE-1L": 4, "PAN": 4}
    assert snap["stock"]["tienda-2"] == {"PAN": 13}
    assert snap["sales"] == 3


def test_relay_sigkill_and_restart(cluster: Cluster) -> None:
    c1, c2, c3 = (cluster.pos[r] for r in REPLICAS)
    c1.do("product CAFE-500 450 Café 500 g")
    c1.do("receive CAFE-500 100")
    c3.do("product PAN 80 Pan")
    c3.do("receive PAN 100")
    for p in cluster.stores():
        p.do("online")
    for p in cluster.stores():
        p.do("wait-synced 20")
    sold: set[str] = set()
    for p in cluster.stores():
        sold.add(p.do("sell CAFE-500 1")["id"])
    cluster.kill_relay()
    # keep selling while the relay is dead
    for p in cluster.stores():
        sold.add(p.do("sell PAN 1")["id"])
    cluster.start_relay()
    for p in cluster.stores():
        sold.add(p.do("sell CAFE-500 1 PAN 1")["id"])
    wait_until(
        lambda: all(
            p.do("status")["pending"] == 0 and p.do("status")["state"] == "online"
            for p in cluster.stores()
        ),
        "replicas reconnect by themselves and flush",
        30,
    )
    wait_until(lambda: _all_have(cluster, sold) and cluster.converged(), "convergence", 30)
    snap = c2.do("snapshot")
    assert snap["sales"] == len(sold) == 9
    # caja-1/caja-2 sell at tienda-1, caja-3 at tienda-2 (it received the PAN)
    assert snap["stock"]["tienda-1"] == {"CAFE-500": 100 - 4, "PAN": -4}
    assert snap["stock"]["tienda-2"] == {"CAFE-500": -2, "PAN": 100 - 2}


def test_replica_sigkill_and_restart(cluster: Cluster) -> None:
    c1, c2, c3 = (cluster.pos[r] for r in REPLICAS)
    c1.do("product CAFE-500 450 Café 500 g")
    c1.do("receive CAFE-500 50")
    for p in cluster.stores():
        p.do("online")
    for p in cluster.stores():
        p.do("wait-synced 20")
    sold: set[str] = set()
    for _ in range(3):
        sold.add(c2.do("sell CAFE-500 1")["id"])
    c2.kill()  # right after acknowledging the sales
    own = set(sold)
    sold.add(c1.do("sell CAFE-500 2")["id"])
    c2.start()
    # every sale c2 acknowledged before the SIGKILL survived in its database
    assert own <= set(c2.do("sale-ids"))
    c2.do("online")
    wait_until(lambda: _all_have(cluster, sold) and cluster.converged(), "convergence", 30)
    assert c3.do("snapshot")["stock"]["tienda-1"]["CAFE-500"] == 50 - 5
    assert c3.do("snapshot")["sales"] == 4
