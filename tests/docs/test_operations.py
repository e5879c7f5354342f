"""docs/operations.md is tested: its shell commands run, its unit files parse.

* Every ```bash block of the page runs, in order, in **one** ``bash -euo
  pipefail`` shell, in a fresh directory, with ``tiendasync`` on ``PATH``
  (this checkout's code) and a real relay process listening where the page
  says (``127.0.0.1:8765`` in the text is replaced by the relay's free port).
  A command that fails fails the test with the shell's output.
* Every ```ini block is a systemd unit: it must parse, and its
  ``ExecStart`` must be a ``tiendasync`` command line that the real argument
  parser accepts (``%i`` read as a store name).
* The ```console blocks (cron, systemctl, a recorded benchmark run) are not
  run; the benchmark's command is checked to exist.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiendasync.cli import build_parser

from .test_docs import ROOT, blocks

PAGE = ROOT / "docs" / "operations.md"
SRC = str(ROOT / "src")


@pytest.fixture
def relay_port(tmp_path: Path) -> Iterator[int]:
    """A real ``tiendasync relay`` on ``relay.db`` in ``tmp_path``, on a free port."""
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log_path = tmp_path / "relay.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tiendasync", "relay", "--db", "relay.db", "--host",
             "127.0.0.1", "--port", "0", "--admin-port", "0"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None:
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            found = re.search(r"listening on ws://127\.0\.0\.1:(\d+)/sync", log_path.read_text())
            port = int(found.group(1)) if found else None
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_shell_commands_run(tmp_path: Path, relay_port: int) -> None:
    if shutil.which("sqlite3") is None:
        pytest.fail("the operations guide's backups use the sqlite3 shell: apt-get install sqlite3")
    script = "\n".join(b.code for b in blocks(PAGE) if b.label == "bash")
    assert "tiendasync relay token revoke" in script and ".backup" in script
    script = script.replace("127.0.0.1:8765", f"127.0.0.1:{relay_port}")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "tiendasync"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m tiendasync "$@"\n')
    shim.chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TIENDASYNC_")},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert (tmp_path / "tienda-1-backup.db").is_file() and (tmp_path / "relay-backup.db").is_file()
    assert oct((tmp_path / "tienda-1.token").stat().st_mode & 0o777) == "0o600"
    tokens = json.loads(
        subprocess.run(
            [str(shim), "relay", "token", "list", "--db", "relay.db", "--json"],
            cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    revoked = {t["replica_id"]: t["revoked_at"] is not None for t in tokens}
    assert revoked == {"tienda-1": False, "tienda-1-caja-2": True}


def test_the_systemd_units_parse_and_run_real_commands() -> None:
    units = [b for b in blocks(PAGE) if b.label == "ini"]
    assert len(units) == 2
    for unit in units:
        parser = configparser.ConfigParser(interpolation=None, strict=True)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
        parser.read_string(unit.code)
        assert set(parser.sections()) == {"Unit", "Service", "Install"}
        argv = shlex.split(parser["Service"]["ExecStart"].replace("%i", "tienda-1"))
        assert argv[0].endswith("/tiendasync")
        assert "--token" not in argv  # token hygiene: never on a command line
        build_parser().parse_args(argv[1:])  # SystemExit (a failed test) if an option is wrong


def test_the_disk_use_command_exists() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert "$ python -m benchmarks.disk_use --sales 3000" in text
    assert (ROOT / "benchmarks" / "disk_use.py").is_file()
    assert "--token" not in "\n".join(
        b.code for b in blocks(PAGE) if b.label in ("bash", "console", "ini")
    )
