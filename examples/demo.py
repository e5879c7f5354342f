"""The seed's example flow, with a real relay and two real store processes.

    make demo        (or: python examples/demo.py)

1. Two tills of the same store (caja-1, caja-2, location tienda-1) sync with
   a relay; caja-1 loads the catalog and receives stock.
2. The internet goes down: both keep selling, and both sell the LAST unit of
   milk (leche).
3. The connection comes back: the sales sync by themselves.
4. The relay sees stock of leche at -1: it opens ONE conflict linking both
   sales.  An administrator resolves it through the relay's HTTP API.
5. Every replica ends with identical data; the conflict reads resolved
   everywhere; the sync log shows each session.

Every step is checked; the script exits non-zero if anything is wrong.  It
works in a temporary directory that it removes when it passes (``--keep``
keeps it); when a step fails the directory is kept, with the relay's log.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

PY = sys.executable
HOST = "127.0.0.1"


def say(step: str) -> None:
    print(f"\n== {step}", flush=True)


def check(condition: bool, what: str) -> None:
    if not condition:
        print(f"   FAILED: {what}", flush=True)
        raise SystemExit(1)
    print(f"   ok: {what}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def tiendasync(*args: str) -> str:
    out = subprocess.run(
        [PY, "-m", "tiendasync", *args], check=True, capture_output=True, text=True, timeout=60
    )
    return out.stdout.strip()


class Store:
    """A POS process (examples/pos.py) driven through its --json mode."""

    def __init__(self, workdir: Path, replica: str, relay: str, token: str) -> None:
        self.name = replica
        self.proc = subprocess.Popen(
            [
                PY,
                str(Path(__file__).with_name("pos.py")),
                "--json",
                "--db",
                str(workdir / f"{replica}.db"),
                "--tenant",
                "acme",
                "--replica",
                replica,
                "--location",
                "tienda-1",
                "--relay",
                relay,
                "--token",
                token,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def do(self, command: str) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.name} died")
        answer = json.loads(line)
        if not answer["ok"]:
            raise SystemExit(f"{self.name}: {command!r} failed: {answer['result']}")
        return answer["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def admin(port: int, token: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_for(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            check(True, what)
            return
        time.sleep(0.2)
    check(False, what)


def start_relay(workdir: Path, relay_db: str, port: int, admin_port: int) -> subprocess.Popen[str]:
    """A relay process on ``relay_db`` (its log in ``workdir/relay.log``), once it listens."""
    with (workdir / "relay.log").open("w") as relay_log:  # the child keeps its own descriptor
        relay = subprocess.Popen(
            [PY, "-m", "tiendasync", "relay", "--db", relay_db, "--host", HOST,
             "--port", str(port), "--admin-port", str(admin_port)],
            stdout=subprocess.DEVNULL, stderr=relay_log, text=True,
        )  # fmt: skip

    def relay_up() -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{admin_port}/healthz", timeout=1):
                return True
        except OSError:
            return relay.poll() is not None  # died: stop waiting, the check below fails

    wait_for(relay_up, "relay is listening")
    check(relay.poll() is None, "relay is running")
    return relay


def sessions_sentence(name: str, log: list[str]) -> str:
    """``caja-1 synced in 1 session: 3 updates sent, 2 received.`` from pos.py's log lines."""
    done = [re.match(r"ok: sent (\d+), received (\d+)", line) for line in log]
    ok = [m for m in done if m]
    sent = sum(int(m.group(1)) for m in ok)
    received = sum(int(m.group(2)) for m in ok)
    still = " (and is still connected)" if any(ln.startswith("running") for ln in log) else ""
    return (
        f"{name} synced in {len(ok)} finished session(s){still}: "
        f"{sent} update(s) sent, {received} received."
    )


def main(argv: list[str] | None = None) -> int:
    keep = "--keep" in (sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    passed = False
    workdir = Path(tempfile.mkdtemp(prefix="tiendasync-demo-"))
    relay_db = str(workdir / "relay.db")
    port, admin_port = free_port(), free_port()
    url = f"ws://{HOST}:{port}"
    stores: list[Store] = []
    relay: subprocess.Popen[str] | None = None
    try:
        say("Setting up: a relay and two tills (caja-1, caja-2) of store tienda-1")
        tokens = {
            r: tiendasync(
                "relay",
                "token",
                "add",
                "--db",
                relay_db,
                "--tenant",
                "acme",
                "--replica",
                r,
                "--location",
                "tienda-1",
            )  # a till writes only its own store's stock, sales and requests ...
            for r in ("caja-1", "caja-2")
        }
        admin_token = tiendasync("relay", "token", "add", "--db", relay_db, "--admin")
        relay = start_relay(workdir, relay_db, port, admin_port)
        print(f"   relay on {url}, admin API on http://{HOST}:{admin_port}")
        # ... unless granted more: caja-1 is the store's back office and edits the catalog.
        granted = admin(
            admin_port, admin_token, "PUT", "/api/sync/config/caja-1", {"write": ["catalog"]}
        )
        configs = {
            c["replica"]: c["config"]
            for c in admin(admin_port, admin_token, "GET", "/api/sync/config/")["results"]
        }
        check(
            granted["config"]["write"] == ["catalog"] and configs["caja-2"]["write"] == [],
            "tills bound to tienda-1; caja-1 may also edit the catalog, caja-2 may not",
        )
        caja1 = Store(workdir, "caja-1", url, tokens["caja-1"])
        caja2 = Store(workdir, "caja-2", url, tokens["caja-2"])
        stores += [caja1, caja2]

        say("caja-1 loads the catalog and receives stock; both tills go online")
        caja1.do("product CAFE-500 450 Café 500 g")
        caja1.do("product LECHE-1L 120 Leche 1 L")
        caja1.do("receive CAFE-500 10")
        caja1.do("receive LECHE-1L 1")
        for store in stores:
            store.do("online")
        for store in stores:
            store.do("wait-synced 20")
        wait_for(lambda: caja2.do("stock LECHE-1L") == 1, "caja-2 sees 1 unit of leche")

        say("The internet goes down: both tills keep selling")
        for store in stores:
            store.do("offline")
        s1 = caja1.do("sell CAFE-500 2 LECHE-1L 1")
        s2 = caja2.do("sell CAFE-500 1 LECHE-1L 1")
        print(f"   caja-1 sold {s1['id']}, caja-2 sold {s2['id']} (both took the last leche)")
        for store in stores:
            status = store.do("status")
            check(
                status["state"] == "offline" and status["pending"] >= 1,
                f"{store.name} is offline with {status['pending']} pending write(s)",
            )

        say("The connection comes back: the sales sync by themselves")
        for store in stores:
            store.do("online")
        for store in stores:
            store.do("wait-synced 20")
        wait_for(
            lambda: all(s.do("snapshot")["sales"] == 2 for s in stores),
            "both tills hold both sales",
        )
        wait_for(lambda: caja1.do("stock CAFE-500") == 7, "cafe stock merged: 10 - 2 - 1 = 7")
        check(caja2.do("stock LECHE-1L") == -1, "leche stock merged to -1 (oversold)")

        say("The relay opened one conflict for leche, linking both sales")
        found: list[Any] = []

        def conflict_opened() -> bool:
            found[:] = admin(
                admin_port, admin_token, "GET", "/api/sync/queue/?conflict=true&status=open"
            )["results"]
            return len(found) >= 1

        wait_for(conflict_opened, "an open conflict is in the relay queue")
        check(len(found) == 1, "exactly one conflict")
        conflict = found[0]
        print(f"   {conflict['id']}: {conflict['message']} (priority {conflict['priority']})")
        check(
            sorted(conflict["sales"]) == sorted([s1["id"], s2["id"]]), "both sales are linked to it"
        )
        wait_for(
            lambda: caja2.do("status")["open_conflicts"] == 1, "the tills see the open conflict too"
        )

        say("The administrator resolves it over HTTP: one more unit found in the back room")
        resolved = admin(
            admin_port,
            admin_token,
            "POST",
            f"/api/sync/queue/{conflict['id']}/resolve/",
            {
                "action": "adjust",
                "quantity": 1,
                "by": "ana (admin)",
                "note": "found one carton in the back room",
            },
        )
        check(resolved["status"] == "resolved", "the relay marks it resolved")

        say("Everything converges")
        wait_for(
            lambda: all(s.do("stock LECHE-1L") == 0 for s in stores),
            "leche stock is 0 on both tills",
        )
        wait_for(
            lambda: all(
                s.do("snapshot")["conflicts"].get(conflict["id"]) == "resolved" for s in stores
            ),
            "the conflict reads resolved on both tills",
        )
        snaps = [s.do("snapshot") for s in stores]
        check(snaps[0] == snaps[1], "caja-1 and caja-2 hold identical data")
        log = admin(admin_port, admin_token, "GET", "/api/sync/log/")["results"]
        check(len(log) >= 2, f"the relay's sync log shows {len(log)} sessions")
        summaries = [sessions_sentence(store.name, store.do("log")) for store in stores]
        passed = True
        print()
        for line in summaries:
            print(line)
        print(
            f"The demo passed in {time.monotonic() - started:.1f} s: two tills sold offline, "
            "the relay opened one conflict for the last unit of milk, an administrator "
            "resolved it, and both tills now hold the same data."
        )
        return 0
    finally:
        for store in stores:
            store.close()
        if relay is not None:
            relay.terminate()
            try:
                relay.wait(10)
            except subprocess.TimeoutExpired:
                relay.kill()
        if not passed:
            print(f"The demo failed; its databases and relay.log are kept in {workdir}.")
        elif keep:
            print(f"Its databases and relay.log are kept in {workdir} (--keep).")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
            print("Its temporary files have been removed.")


if __name__ == "__main__":
    raise SystemExit(main())
