"""The two-command promise on a fresh machine: ``make test`` and ``make demo``.

``make test`` first runs ``scripts/prereqs.sh``: it installs what the browser,
Node and PostgreSQL tests need when it can without a password, and otherwise stops at
once naming the one command to run.  A fresh machine is simulated with a
``PATH`` that holds none of the tools, and with fake ``node``/``npm``.  The
demo runs for real and must leave nothing behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make") or "/usr/bin/make"
SRC = str(ROOT / "src")


def _env(path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIENDASYNC_")}
    return {**env, "PATH": str(path), **extra}


def test_make_test_checks_the_prerequisites_first() -> None:
    out = subprocess.run(
        [MAKE, "--no-print-directory", "-n", "test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "scripts/prereqs.sh" in out.splitlines()[0]
    assert out.index("prereqs.sh") < out.index("pytest")


def test_a_missing_browser_stops_make_at_once_with_the_command(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()  # no chromium, node, npm, apt-get or sudo: nothing can be installed
    started = time.monotonic()
    proc = subprocess.run(
        [MAKE, "-s", "prereqs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_env(
            empty,
            TIENDASYNC_CHROMIUM=str(tmp_path / "no-chromium"),
            TIENDASYNC_PG_BINDIR=str(tmp_path / "no-postgresql"),
        ),
        timeout=30,
    )
    assert proc.returncode != 0
    assert time.monotonic() - started < 10
    assert "missing chromium nodejs npm postgresql" in proc.stderr
    assert "sudo apt-get install -y chromium nodejs npm postgresql" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_present_tools_and_npm_packages_installed_once(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "npm-calls"
    chromium = bin_dir / "chromium"
    node = bin_dir / "node"
    npm = bin_dir / "npm"
    for fake in (chromium, node):
        fake.write_text("#!/bin/sh\nexit 0\n")
    npm.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        '/bin/mkdir -p "$3/node_modules" && /usr/bin/touch "$3/node_modules/.package-lock.json"\n'
    )
    pg_bin = tmp_path / "pg"
    pg_bin.mkdir()
    pg_tools = [pg_bin / tool for tool in ("initdb", "pg_ctl", "postgres")]
    for fake in pg_tools:
        fake.write_text("#!/bin/sh\nexit 0\n")
    for fake in (chromium, node, npm, *pg_tools):
        fake.chmod(0o755)
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    shutil.copy(ROOT / "tests/e2e/node/package-lock.json", node_dir)
    env = _env(
        bin_dir,
        TIENDASYNC_CHROMIUM=str(chromium),
        TIENDASYNC_NODE_DIR=str(node_dir),
        TIENDASYNC_PG_BINDIR=str(pg_bin),
    )
    for _ in range(2):
        proc = subprocess.run(
            ["/bin/sh", "scripts/prereqs.sh"], cwd=ROOT, capture_output=True, text=True, env=env
        )
        assert proc.returncode == 0, proc.stderr
    # npm ci ran on the first call only: the second found the packages up to date.
    assert calls.read_text().splitlines() == [
        f"ci --prefix {node_dir} --no-audit --no-fund --loglevel=error"
    ]


def test_the_demo_ends_with_sentences_and_cleans_up(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "TMPDIR": str(tmp_path),
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples/demo.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-4:]
    assert last[0].startswith("caja-1 synced in ") and last[1].startswith("caja-2 synced in ")
    assert last[2].startswith("The demo passed in ") and last[2].endswith("the same data.")
    assert last[3] == "Its temporary files have been removed."
    assert not any(p.name.startswith("tiendasync-demo-") for p in tmp_path.iterdir())
    assert "{" not in "\n".join(last) and "[" not in "\n".join(last)  # no raw dicts or lists
