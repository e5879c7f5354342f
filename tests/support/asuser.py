"""Run a scenario as a user who may not write some files, whether the tests run as root or not.

CI runs as root, for whom file modes mean nothing.  :func:`run_restricted`
runs a Python snippet in a child process: as root, the child imports
tiendasync and everything it loads lazily, then drops to uid/gid 65534
(``nobody``) before running the snippet, so root-owned files with ordinary
modes are read-only to it; as any other user, it runs as that user and
:func:`make_read_only` takes the write bits away instead.  Either way the
snippet meets the same files it may read but not write.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["make_read_only", "make_writable", "restricted_dir", "run_restricted", "shared_tmp"]

ROOT = os.getuid() == 0
NOBODY = 65534
SRC = str(Path(__file__).resolve().parents[2] / "src")

#: Imported before privileges are dropped: the interpreter's own files may be
#: unreadable by ``nobody`` (a Python installed under /root).
_PRELUDE = """
import importlib, os, pkgutil, sys
import tiendasync
for info in pkgutil.walk_packages(tiendasync.__path__, "tiendasync."):
    if not info.name.endswith("__main__") and not info.name.startswith("tiendasync.contrib"):
        importlib.import_module(info.name)
import encodings.idna, uvicorn, starlette, websockets, websockets.asyncio.server
import websockets.asyncio.client, uvicorn.loops.auto, uvicorn.protocols.http.auto
import uvicorn.protocols.websockets.auto, uvicorn.lifespan.on
if os.getuid() == 0:
    os.setgroups([])
    os.setgid({nobody})
    os.setuid({nobody})
"""


def shared_tmp() -> Path:
    """A fresh directory the restricted child can enter (pytest's tmp is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="tiendasync-perm-"))
    path.chmod(0o755)
    return path


@contextmanager
def restricted_dir() -> Iterator[Path]:
    """A :func:`shared_tmp` directory, removed afterwards whatever its modes became."""
    path = shared_tmp()
    try:
        yield path
    finally:
        make_writable(path, *path.rglob("*"))
        shutil.rmtree(path)


def make_read_only(*paths: Path) -> None:
    """Files and directories the restricted child may read but not write."""
    for path in paths:
        mode = 0o755 if path.is_dir() else 0o644
        if not ROOT:
            mode &= ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        path.chmod(mode)


def make_writable(*paths: Path) -> None:
    """Files and directories the restricted child may write (undoes :func:`make_read_only`)."""
    for path in paths:
        path.chmod(0o777 if path.is_dir() else 0o666)


def run_restricted(snippet: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``snippet`` (Python) as the restricted user; its completed process."""
    code = _PRELUDE.format(nobody=NOBODY) + snippet
    env = {**os.environ, "PYTHONPATH": SRC, "HOME": "/tmp"}
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd="/",
    )
