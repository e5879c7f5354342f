"""docs/django.md is tested by following it on a fresh Django project.

* ``django-admin startproject`` and every other ```bash block run, in order,
  in a fresh directory, with ``tiendasync`` and this environment's
  ``python``/``django-admin`` on ``PATH`` and a real relay process listening
  where the page says (``127.0.0.1:8765`` is replaced by its free port).
* Every ```python block is a file of the project, named by its first line
  (``# tienda_pos/settings.py (al final / at the end)`` appends, any other
  name writes the file), written when the page reaches it.
* The ```console blocks: the ``pip install`` extra must exist in
  pyproject.toml; ``sincronizar --continuo`` runs until it connects, then
  stops on SIGTERM with exit code 0.
* Every ```http block is sent, after the steps, by Django's test client as a
  logged-in superuser, and must get the status code the page shows; the
  page's own selling view records a sale and its signal fires; the API
  refuses an anonymous caller with 401.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from .test_docs import ROOT, Block, blocks
from .test_operations import relay_port as relay_port  # a real relay process on relay.db

PAGE = ROOT / "docs" / "django.md"
SRC = str(ROOT / "src")
_FILE = re.compile(r"^# (\S+\.py)(.*)$")

#: Sends the page's HTTP requests from inside the project (``manage.py shell``).
_CHECKS = """
import json, sys
from django.contrib.auth.models import User
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()  # the test client's host, as under Django's test runner
requests = json.loads(sys.stdin.read())
anonymous = Client().get("/api/sincronizacion/cola/")
results = {"anonymous": anonymous.status_code}
client = Client()
client.force_login(User.objects.create_superuser("encargada", password="x"))
from tiendasync.contrib.django.conf import get_replica
get_replica().catalog.put("CAFE-500", {"name": "Cafe", "price_cents": 450})
sale = client.post("/", {"sku": "CAFE-500", "cantidad": "2"})
results["sale"] = [sale.status_code, sale.json().get("total")]
results["sold"] = client.get("/").json()["ventas"]
results["http"] = []
for method, path, content_type, body in requests:
    answer = client.generic(method, path, body.encode(), content_type or "application/octet-stream")
    results["http"].append(answer.status_code)
print(json.dumps(results))
"""


def _http_request(block: Block) -> tuple[tuple[str, str, str, str], int]:
    """``(method, path, content type, body)`` and the status a ```http block shows."""
    request, _, response = block.code.partition("\nHTTP/1.1 ")
    head, _, body = request.strip().partition("\n\n")
    first, *headers = head.splitlines()
    method, path = first.split()
    content_type = next(
        (h.split(":", 1)[1].strip() for h in headers if h.lower().startswith("content-type:")), ""
    )
    return (method, path, content_type, body.strip()), int(response.split()[0])


def _env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "tiendasync"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m tiendasync "$@"\n')
    shim.chmod(0o755)
    python = bin_dir / "python"  # this environment's, with Django installed
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    django_admin = bin_dir / "django-admin"
    django_admin.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m django "$@"\n')
    django_admin.chmod(0o755)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TIENDASYNC_", "DJANGO_"))},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }


def _run_daemon(command: str, cwd: Path, env: dict[str, str]) -> None:
    daemon = subprocess.Popen(
        shlex.split(command), cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert daemon.stderr is not None
        first = daemon.stderr.readline()  # "syncing continuously with ...", once it has started
        assert "syncing continuously" in first, first
        deadline = time.monotonic() + 20
        while "online" not in _store_state(cwd, env):
            assert daemon.poll() is None and time.monotonic() < deadline, "never connected"
            time.sleep(0.2)
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=20)
        assert daemon.returncode == 0, err
        assert re.search(r"#\d+ ok \(continuous\)", out), out
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()


def _store_state(cwd: Path, env: dict[str, str]) -> str:
    shown = subprocess.run(
        ["tiendasync", "status", "--db", "tienda.db"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    return shown.stdout


def test_a_fresh_django_project_follows_the_page(tmp_path: Path, relay_port: int) -> None:
    env = _env(tmp_path)
    port = f"127.0.0.1:{relay_port}"
    requests, expected = [], []
    for block in blocks(PAGE):
        code = block.code.replace("127.0.0.1:8765", port)
        if block.label == "bash":
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", code],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            shown = f"bash block at line {block.line}:\n{done.stdout}\n{done.stderr}"
            assert done.returncode == 0, shown
        elif block.label == "python":
            named = _FILE.match(code.splitlines()[0])
            assert named, f"{block.where}: the first line must name the project file"
            target = tmp_path / named.group(1)
            mode = "a" if "al final" in named.group(2) else "w"
            with target.open(mode, encoding="utf-8") as out:
                out.write("\n" + code + "\n")
        elif block.label == "console":
            command = code.removeprefix("$ ").strip()
            if command.startswith("pip install"):
                extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                assert "django" in extras["optional-dependencies"], command
            else:
                assert command == "python manage.py sincronizar --continuo", command
                _run_daemon(command, tmp_path, env)
        elif block.label == "http":
            request, status = _http_request(block)
            requests.append(request)
            expected.append(status)
    assert len(requests) >= 6 and (tmp_path / "tienda.db").is_file()
    checked = subprocess.run(
        ["python", "manage.py", "shell", "-c", _CHECKS],
        cwd=tmp_path, env=env, input=json.dumps(requests), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    results = json.loads(checked.stdout.strip().splitlines()[-1])
    assert results["anonymous"] == 401
    assert results["sale"] == [200, 900] and results["sold"] == 1
    sent = [f"{method} {path}" for method, path, _, _ in requests]
    assert list(zip(sent, results["http"], strict=True)) == list(zip(sent, expected, strict=True))
