"""Run ``tiendasync`` as a real process; what the ``relay`` fixture yields."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")


def tiendasync(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tiendasync ARGS`` (this checkout's source first on the path)."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-m", "tiendasync", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=check,
    )


@dataclass(frozen=True)
class RunningRelay:
    """A relay process started by the ``relay`` fixture (tests/cli/conftest.py)."""

    db: str
    #: The websocket URL stores sync with.
    url: str
    #: The admin API's base URL.
    admin_url: str
