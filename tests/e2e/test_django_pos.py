"""The example Django POS with real processes: a relay, two tills each with its daemon.

Two tills of store ``tienda-1`` (replicas ``caja-1`` and ``caja-2``) sell the
last units of a product while neither syncs; their ``sincronizar
--continuo`` daemons then bring the sales to the relay, which opens a stock
conflict; an administrator resolves it from caja-1's Django admin, and both
tills converge on the same stock, the conflict closed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import relay as relay  # the real relay process fixture
from tests.cli.relay_process import SRC, RunningRelay, tiendasync

SITE = Path(__file__).resolve().parents[2] / "examples" / "django_pos"
pytestmark = pytest.mark.slow

_LOOK = """
import json
from tiendasync.contrib.django.conf import get_replica
r = get_replica()
print(json.dumps({"stock": r.inventory.stock("CAFE-500"), "pending": r.status.pending,
    "conflicts": {c.id: c.status for c in r.conflicts.list()},
    "invariants": [c.invariant + " " + c.message for c in r.conflicts.list()],
    "requested": [c.requested for c in r.conflicts.list()],
    "unacked": [(e.kind, e.status) for e in r.queue.list() if e.status != "acknowledged"],
    "sales": r.sales.count(), "modes": [e.mode for e in r.log.list(limit=20)]}))
"""

_BANNER = """
import re
from django.test import Client
page = Client().get("/").content.decode()
print(re.search(r'<p id="estado">([^<]*)</p>', page).group(1))
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

_SELL = """
from django.test import Client
page = Client().post("/", {"sku": "CAFE-500", "cantidad": "2"})
assert page.status_code == 200 and "venta " in page.content.decode(), page.content
"""

_RESOLVE = """
import json, sys
from django.contrib.auth.models import User
from django.test import Client
from tiendasync.contrib.django.conf import get_replica
user = User.objects.create_superuser("central", password="x")
client = Client()
client.force_login(user)
[conflict] = get_replica().conflicts.list(status="open")
page = client.post("/admin/tiendasync/colasincronizacion/", {"accion": "ajustar",
    "conflicto": conflict.id, "parametros": json.dumps({"quantity": -conflict.observed})},
    follow=True)
assert page.status_code == 200 and conflict.id in page.content.decode(), page.content
print(conflict.id)
"""


class Till:
    """One example site (its own directory, store file and token)."""

    def __init__(self, root: Path, replica: str, relay: RunningRelay) -> None:
        self.dir = root / replica
        self.dir.mkdir()
        token = tiendasync(
            "relay",
            "token",
            "add",
            "--db",
            relay.db,
            "--tenant",
            "acme",
            "--replica",
            replica,
            "--location",
            "tienda-1",
        ).stdout.strip()
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([SRC, str(SITE)]),
            "POS_DIR": str(self.dir),
            "POS_REPLICA": replica,
            "POS_LOCATION": "tienda-1",
            "POS_RELAY_URL": relay.url,
            "TIENDASYNC_TOKEN": token,
        }
        self.daemon: subprocess.Popen[str] | None = None

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, str(SITE / "manage.py"), *args],
            env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    def look(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.manage("shell", "-c", _LOOK).splitlines()[-1])
        return result

    def start_daemon(self) -> None:
        self.daemon = subprocess.Popen(
            [sys.executable, str(SITE / "manage.py"), "sincronizar", "--continuo", "--poll", "0.2"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def stop_daemon(self) -> tuple[int, str, str]:
        assert self.daemon is not None
        self.daemon.send_signal(signal.SIGTERM)
        out, err = self.daemon.communicate(timeout=20)
        return self.daemon.returncode, out, err


@pytest.fixture
def tills(tmp_path: Path, relay: RunningRelay) -> Iterator[list[Till]]:
    made = [Till(tmp_path, "caja-1", relay), Till(tmp_path, "caja-2", relay)]
    yield made
    for till in made:
        if till.daemon is not None and till.daemon.poll() is None:
            till.daemon.kill()
            till.daemon.wait()


def _admin(relay: RunningRelay, admin_token: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{relay.admin_url}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "PUT",
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def _relay_conflicts(relay: RunningRelay, admin_token: str) -> dict[str, str]:
    return {c["id"]: c["status"] for c in _admin(relay, admin_token, "/api/sync/queue/")["results"]}


def _wait(check: Any, what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_two_django_tills_offline_sales_conflict_resolved_in_admin_converge(
    tills: list[Till], relay: RunningRelay
) -> None:
    one, two = tills
    admin = tiendasync("relay", "token", "add", "--db", relay.db, "--admin").stdout.strip()
    # Both tills are bound to tienda-1; caja-1 is also the store's back office (the catalog).
    _admin(relay, admin, "/api/sync/config/caja-1", {"write": ["catalog"]})
    for till in tills:
        till.manage("migrate", "--verbosity", "0")
    one.manage(
        "shell", "-c",
        "from tiendasync.contrib.django.conf import get_replica as g; r = g(); "
        "r.catalog.put('CAFE-500', {'name': 'Café', 'price_cents': 450}); "
        "r.inventory.receive('CAFE-500', 3)",
    )  # fmt: skip
    one.manage("sincronizar")
    two.manage("sincronizar")
    assert two.look()["stock"] == 3, two.look()
    for till in tills:  # offline: neither till syncs
        till.manage("shell", "-c", _SELL)
    assert [t.look()["stock"] for t in tills] == [1, 1]
    assert one.manage("shell", "-c", _BANNER).splitlines()[-1].startswith("SIN CONEXIÓN")
    for till in tills:
        till.start_daemon()
    opened = _wait(lambda: _relay_conflicts(relay, admin), "the relay's stock conflict")
    [(conflict_id, status)] = opened.items()
    assert status == "open"
    _wait(lambda: one.look()["conflicts"].get(conflict_id) == "open", "caja-1 to see it")
    banner = one.manage("shell", "-c", _BANNER).splitlines()[-1]  # the daemon's state
    assert banner.startswith("EN LÍNEA") and banner.endswith("conflictos 1"), banner
    assert one.manage("shell", "-c", _RESOLVE).splitlines()[-1] == conflict_id

    last: list[Any] = []

    def converged() -> bool:
        views = [t.look() for t in tills]
        last[:] = views
        return (
            all(v["conflicts"].get(conflict_id) == "resolved" and v["pending"] == 0 for v in views)
            and views[0]["stock"] == views[1]["stock"] == 0
        )

    try:
        _wait(converged, "both tills to converge", timeout=20.0)
    except AssertionError as exc:
        alive = [t.daemon.poll() if t.daemon else "none" for t in tills]
        logs = [t.stop_daemon() for t in tills]
        raise AssertionError(f"{exc}; daemons {alive}; last seen: {last}; logs {logs}") from None
    assert _relay_conflicts(relay, admin)[conflict_id] == "resolved"
    # "Sincronizar ahora" from a web worker while the daemon syncs: the daemon does it.
    fulls = two.look()["modes"].count("full")
    assert two.manage("shell", "-c", _SYNC_NOW).splitlines()[-1] == "solicitada"
    _wait(lambda: two.look()["modes"].count("full") > fulls, "caja-2's daemon's full session")
    for till in tills:
        code, out, err = till.stop_daemon()
        assert code == 0, err
        lines = out.splitlines()
        assert any(" ok (continuous) " in line for line in lines), out
        session = r"  #\d+ ok \((continuous|full)\) ws://|  (dis)?connected (to|from) ws://"
        assert all(re.search(session, line) for line in lines), out
