"""The seed's example flow on its own stack: two Django tills, their daemons and a relay.

    make demo-django      (or: python examples/django_pos/demo.py [--keep])

1. Two tills of store tienda-1 (caja-1, caja-2), each a Django site on its
   own store file (examples/django_pos), sync once; caja-1, the back office,
   loads the catalog and receives 3 units of coffee.
2. No network: each till sells 2 units from its selling page.
3. Each till starts ``manage.py sincronizar --continuo``: the sales reach the
   relay, which sees stock at -1 and opens one conflict.
4. The store's manager resolves it from caja-1's Django admin (an adjustment
   of +1); the request travels through caja-1's daemon to the relay, which
   applies it; both tills converge on stock 0, the conflict resolved.
5. "Sincronizar ahora" from caja-2's API while its daemon runs: the daemon
   does a full session.

Every step is checked; the exit code is non-zero if anything is wrong.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SITE = Path(__file__).resolve().parent
sys.path.insert(0, str(SITE.parent))  # examples/: the CLI demo's helpers

from demo import HOST, PY, admin, check, free_port, say, start_relay, tiendasync  # noqa: E402

_LOOK = """
import json
from tiendasync.contrib.django.conf import get_replica
r = get_replica()
print(json.dumps({"stock": r.inventory.stock("CAFE-500"), "pending": r.status.pending,
    "conflicts": {c.id: c.status for c in r.conflicts.list()},
    "modes": [e.mode for e in r.log.list(limit=20)]}))
"""

_BANNER = """
import re
from django.test import Client
page = Client().get("/").content.decode()
print(re.search(r'<p id="estado">([^<]*)</p>', page).group(1))
"""

_SELL = """
from django.test import Client
page = Client().post("/", {"sku": "CAFE-500", "cantidad": "2"})
assert page.status_code == 200 and "venta " in page.content.decode(), page.content
"""

_RESOLVE = """
import json
from django.contrib.auth.models import User
from django.test import Client
from tiendasync.contrib.django.conf import get_replica
client = Client()
client.force_login(User.objects.create_superuser("encargada", password="x"))
[conflict] = get_replica().conflicts.list(status="open")
page = client.post("/admin/tiendasync/colasincronizacion/", {"accion": "ajustar",
    "conflicto": conflict.id, "parametros": json.dumps({"quantity": -conflict.observed})},
    follow=True)
assert page.status_code == 200 and conflict.id in page.content.decode(), page.content
print(conflict.id)
"""

_SYNC_NOW = """
from django.contrib.auth.models import User
from django.test import Client
client = Client()
client.force_login(User.objects.create_superuser("encargado", password="x"))
answer = client.post("/api/sincronizacion/configuracion/caja-2/sincronizar_ahora/",
    '{"completa": true}', "application/json")
assert answer.status_code == 202, answer.content
print(answer.json()["estado"])
"""


class Till:
    """One Django site of the example (its own directory, store file and token)."""

    def __init__(self, workdir: Path, replica: str, relay_db: str, url: str) -> None:
        self.name = replica
        self.dir = workdir / replica
        self.dir.mkdir()
        token = tiendasync(
            "relay", "token", "add", "--db", relay_db, "--tenant", "acme",
            "--replica", replica, "--location", "tienda-1",
        )  # fmt: skip
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(SITE), os.environ.get("PYTHONPATH", "")]),
            "POS_DIR": str(self.dir),
            "POS_REPLICA": replica,
            "POS_LOCATION": "tienda-1",
            "POS_RELAY_URL": url,
            "TIENDASYNC_TOKEN": token,
        }
        self.daemon: subprocess.Popen[str] | None = None

    def manage(self, *args: str) -> str:
        """``manage.py ARGS``'s output; a failure ends the demo with its stderr."""
        done = subprocess.run(
            [PY, str(SITE / "manage.py"), *args],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode != 0:
            raise SystemExit(f"{self.name}: manage.py {args[0]} failed:\n{done.stderr}")
        return done.stdout

    def shell(self, code: str) -> str:
        """The last line ``manage.py shell -c CODE`` printed."""
        lines = self.manage("shell", "-c", code).splitlines()
        return lines[-1] if lines else ""

    def look(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.shell(_LOOK))
        return result

    def start_daemon(self) -> None:
        self.daemon = subprocess.Popen(
            [PY, str(SITE / "manage.py"), "sincronizar", "--continuo", "--poll", "0.2"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def stop_daemon(self) -> tuple[int, str, str]:
        """SIGTERM the daemon: (exit code, stdout, stderr)."""
        if self.daemon is None:
            return 0, "", ""
        if self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
        try:
            out, err = self.daemon.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            out, err = self.daemon.communicate()
        code, self.daemon = self.daemon.returncode, None
        return code, out, err


def wait_until(predicate: Any, what: str, timeout: float = 20.0) -> Any:
    """Poll until ``predicate()`` is truthy (then ``ok: what``) or fail the demo."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            check(bool(value), what)
            return value
        time.sleep(0.3)


def run(workdir: Path) -> None:
    """The flow of the module docstring, in ``workdir``."""
    relay_db = str(workdir / "relay.db")
    port, admin_port = free_port(), free_port()
    url = f"ws://{HOST}:{port}/sync"
    relay = None
    tills: list[Till] = []
    try:
        say("Setting up: a relay and two Django tills (caja-1, caja-2) of store tienda-1")
        admin_token = tiendasync("relay", "token", "add", "--db", relay_db, "--admin")
        relay = start_relay(workdir, relay_db, port, admin_port)
        tills = [Till(workdir, name, relay_db, url) for name in ("caja-1", "caja-2")]
        # Both tills write only tienda-1's data; caja-1 is also the back office (the catalog).
        admin(admin_port, admin_token, "PUT", "/api/sync/config/caja-1", {"write": ["catalog"]})
        one, two = tills
        for till in tills:
            till.manage("migrate", "--verbosity", "0")
        one.shell(
            "from tiendasync.contrib.django.conf import get_replica as g; r = g(); "
            "r.catalog.put('CAFE-500', {'name': 'Café 500 g', 'price_cents': 450}); "
            "r.inventory.receive('CAFE-500', 3)"
        )
        for till in tills:
            till.manage("sincronizar")
        check(two.look()["stock"] == 3, "caja-2 synced the catalog and 3 units of coffee")

        say("No network: each till sells 2 units of coffee from its selling page")
        for till in tills:
            till.shell(_SELL)
        check([t.look()["stock"] for t in tills] == [1, 1], "each till sees 1 unit left")
        banner = one.shell(_BANNER)
        check(banner.startswith("SIN CONEXIÓN"), f"caja-1's page says: {banner}")

        say("The daemons start (manage.py sincronizar --continuo): the relay sees -1")
        for till in tills:
            till.start_daemon()

        def relay_conflicts() -> dict[str, str]:
            rows = admin(admin_port, admin_token, "GET", "/api/sync/queue/")["results"]
            return {c["id"]: c["status"] for c in rows}

        opened = wait_until(relay_conflicts, "the relay opened a stock conflict")
        check(list(opened.values()) == ["open"], f"one open conflict: {list(opened)}")
        [conflict_id] = opened
        wait_until(lambda: one.look()["conflicts"].get(conflict_id) == "open", "caja-1 sees it")
        banner = one.shell(_BANNER)
        check(
            banner.startswith("EN LÍNEA") and banner.endswith("conflictos 1"),
            f"caja-1's page says: {banner}",
        )

        say("The manager resolves it from caja-1's Django admin: adjust by +1")
        check(one.shell(_RESOLVE) == conflict_id, f"resolution of {conflict_id} recorded")

        def converged() -> bool:
            views = [t.look() for t in tills]
            return all(
                v["conflicts"].get(conflict_id) == "resolved" and v["pending"] == 0 for v in views
            ) and [v["stock"] for v in views] == [0, 0]

        wait_until(converged, "both tills: stock 0, the conflict resolved, nothing pending")
        check(relay_conflicts()[conflict_id] == "resolved", "the relay says resolved too")

        say("'Sincronizar ahora' from caja-2's API while its daemon runs")
        fulls = two.look()["modes"].count("full")
        check(two.shell(_SYNC_NOW) == "solicitada", "the API answers 202: requested")
        wait_until(
            lambda: two.look()["modes"].count("full") > fulls, "caja-2's daemon did a full session"
        )

        say("The daemons stop on SIGTERM")
        for till in tills:
            code, out, err = till.stop_daemon()
            check(code == 0, f"{till.name}'s daemon exited 0" if code == 0 else err[-400:])
            sessions = [line for line in out.splitlines() if " ok (" in line]
            print(f"   {till.name}: {len(sessions)} session(s) logged, the last: {sessions[-1]}")
    finally:
        for till in tills:
            till.stop_daemon()
        if relay is not None:
            relay.terminate()
            relay.wait(10)


def main(argv: list[str] | None = None) -> int:
    keep = "--keep" in (sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="tiendasync-django-demo-"))
    run(workdir)
    print(
        f"\nThe Django demo passed in {time.monotonic() - started:.1f} s: two Django tills sold "
        "offline, the relay opened one stock conflict, the manager resolved it from the "
        "Django admin, and both tills hold the same data."
    )
    if keep:
        print(f"Its files are in {workdir}")
    else:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
