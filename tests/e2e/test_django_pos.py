"""The example Django POS with real processes: ``examples/django_pos/demo.py`` passes.

The demo (``make demo-django``) runs a relay and two Django tills of one
store, each with its own store file and its ``manage.py sincronizar
--continuo`` daemon: offline sales from the selling page, the relay's stock
conflict, its resolution from the Django admin (a request that travels
through the till's daemon), convergence, and the API's "sincronizar ahora"
answered by the daemon.  Every step is a check in the demo; this test reads
them all.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "examples" / "django_pos" / "demo.py"
pytestmark = pytest.mark.slow

#: The checks that prove the flow, in the order the demo makes them.
EXPECTED = [
    "ok: caja-2 synced the catalog and 3 units of coffee",
    "ok: each till sees 1 unit left",
    "ok: caja-1's page says: SIN CONEXIÓN",
    "ok: the relay opened a stock conflict",
    "ok: caja-1's page says: EN LÍNEA · pendientes 0 · conflictos 1",
    "ok: both tills: stock 0, the conflict resolved, nothing pending",
    "ok: the relay says resolved too",
    "ok: the API answers 202: requested",
    "ok: caja-2's daemon did a full session",
    "ok: caja-1's daemon exited 0",
    "ok: caja-2's daemon exited 0",
    "The Django demo passed",
]


def test_two_django_tills_offline_sales_conflict_resolved_in_admin_converge() -> None:
    done = subprocess.run([sys.executable, str(DEMO)], capture_output=True, text=True, timeout=240)
    shown = f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == 0, shown
    lines = [line.strip() for line in done.stdout.splitlines()]
    found = [next((i for i, line in enumerate(lines) if line.startswith(e)), -1) for e in EXPECTED]
    assert -1 not in found and found == sorted(found), shown
    assert "FAILED" not in done.stdout
