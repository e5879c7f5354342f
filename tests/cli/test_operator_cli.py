"""The command line as an operator meets it: a sync daemon, refused tokens, one-line errors.

Each test drives a real ``tiendasync relay`` process (the ``relay`` fixture);
the sync daemon and ``status`` run as real processes too, so ``status``
reads the daemon's state through the store file, as it would in production.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiendasync import Replica
from tiendasync.cli import main
from tiendasync.cli import store as store_cli
from tiendasync.errors import ConfigError

from .relay_process import SRC, RunningRelay, tiendasync

#: A line of the log (``2026-01-01 12:00:00,123 WARNING name: ...``), not an error line.
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ")


@pytest.fixture(autouse=True)
def _no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(store_cli.TOKEN_ENV, raising=False)
    monkeypatch.delenv("TIENDASYNC_ADMIN_TOKEN", raising=False)


def one_error_line(err: str) -> str:
    """The only line of ``err`` that is not a log record: the one error line."""
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not LOG_RECORD.match(ln)]
    assert len(lines) == 1 and lines[0].startswith("tiendasync: error: "), err
    return lines[0]


def add_token(relay: RunningRelay, replica: str, *extra: str) -> str:
    args = ["relay", "token", "add", "--db", relay.db, *extra]
    if "--admin" not in extra:
        args += ["--tenant", "acme", "--replica", replica, "--location", replica]
    return tiendasync(*args).stdout.strip()


def token_file(tmp_path: Path, name: str, token: str) -> str:
    path = tmp_path / f"{name}.token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return str(path)


def store_db(tmp_path: Path, relay: RunningRelay, replica: str = "t1") -> str:
    path = str(tmp_path / f"{replica}.db")
    with Replica.open(path, tenant="acme", replica_id=replica, location=replica) as r:
        r.configure(relay_url=relay.url, backoff_min_s=0.05, backoff_max_s=0.2)
        r.catalog.put("CAFE-500", {"name": "Café 500 g", "price_cents": 450})
    return path


@pytest.fixture
def daemon_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def start_daemon(
    db: str, token_path: str, env: dict[str, str], *extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "tiendasync", "sync", "--continuous", "--db", db),
            *("--token-file", token_path, "--poll", "0.1", *extra),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def status_json(db: str) -> dict[str, object]:
    done = tiendasync("status", "--db", db, "--json")
    data: dict[str, object] = json.loads(done.stdout)
    return data


@pytest.fixture
def reap() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- sync --continuous ------------------------------------------------------------------


def test_continuous_daemon_prints_each_event_once_shows_in_status_and_stops_when_revoked(
    tmp_path: Path,
    relay: RunningRelay,
    daemon_env: dict[str, str],
    reap: list[subprocess.Popen[str]],
) -> None:
    db = store_db(tmp_path, relay)
    with Replica.open(db) as r:
        r.record_sale([("CAFE-500", 1)])
    assert status_json(db)["pending"] == 3  # the location, the product, the sale
    token = add_token(relay, "t1")
    daemon = start_daemon(db, token_file(tmp_path, "t1", token), daemon_env)
    reap.append(daemon)

    # status, from other processes, shows the daemon's state and the pending count
    wait_for(lambda: status_json(db)["state"] == "online")
    wait_for(lambda: status_json(db)["pending"] == 0)
    assert status_json(db)["sync_process"] == daemon.pid
    shown = tiendasync("status", "--db", db).stdout
    assert f"online (sync process {daemon.pid}, since " in shown

    # revoking the token is permanent: the daemon stops, exit 3, no retries
    tiendasync("relay", "token", "revoke", "--db", relay.db, token[3:15])
    out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 3, (out, err)
    assert "token revoked" in one_error_line(
        "\n".join(ln for ln in err.splitlines() if not ln.startswith("syncing continuously"))
    )
    lines = out.splitlines()
    assert sum(f"connected to {relay.url}" in ln for ln in lines) == 1, out
    assert sum("disconnected from" in ln and "token revoked" in ln for ln in lines) == 1, out
    sessions = [ln for ln in lines if " #" in ln]
    assert len(sessions) == 1 and "error (continuous)" in sessions[0], out
    assert len(lines) == 3, out
    # times are human-readable, not Unix timestamps
    assert lines[0][:4].isdigit() and lines[0][4] == "-" and lines[0][13] == ":", out
    assert status_json(db)["sync_process"] is None


def test_continuous_refused_token_exits_3_at_once_with_json_events(
    tmp_path: Path,
    relay: RunningRelay,
    daemon_env: dict[str, str],
    reap: list[subprocess.Popen[str]],
) -> None:
    db = store_db(tmp_path, relay)
    other = add_token(relay, "t2")  # another store's token
    started = time.monotonic()
    daemon = start_daemon(db, token_file(tmp_path, "t2", other), daemon_env, "--json")
    reap.append(daemon)
    out, err = daemon.communicate(timeout=30)
    assert daemon.returncode == 3, (out, err)
    assert time.monotonic() - started < 15  # it did not retry with growing backoff
    events = [json.loads(ln) for ln in out.splitlines()]
    assert [e["event"] for e in events] == ["session"], out  # never connected, one try
    assert "belongs to store acme/t2, not acme/t1" in events[0]["error"]
    line = one_error_line(
        "\n".join(ln for ln in err.splitlines() if not ln.startswith("syncing continuously"))
    )
    assert "belongs to store acme/t2, not acme/t1" in line


# -- refused tokens tell what is wrong -------------------------------------------------------


def test_refused_tokens_say_why(
    tmp_path: Path, relay: RunningRelay, capsys: pytest.CaptureFixture[str]
) -> None:
    db = store_db(tmp_path, relay)
    good = add_token(relay, "t1")
    revoked = add_token(relay, "t1")
    tiendasync("relay", "token", "revoke", "--db", relay.db, revoked[3:15])
    cases = {
        "garbage": "malformed token",
        "ts_000000000000_" + "x" * 43: "unknown token 000000000000",
        good[:-3] + "xyz": f"unknown token {good[3:15]}",
        revoked: f"token {revoked[3:15]} was revoked",
        add_token(relay, "t2"): "this token belongs to store acme/t2, not acme/t1",
        add_token(relay, "", "--admin"): "an admin token cannot sync",
    }
    for token, why in cases.items():
        path = token_file(tmp_path, "given", token)
        assert main(["sync", "--db", db, "--token-file", path, "--timeout", "10"]) == 3
        assert why in one_error_line(capsys.readouterr().err), token
    path = token_file(tmp_path, "good", good)
    assert main(["sync", "--db", db, "--token-file", path, "--timeout", "10"]) == 0
    capsys.readouterr()


def test_token_file_mistakes_are_one_line(
    tmp_path: Path, relay: RunningRelay, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "saved.db"
    path = token_file(tmp_path, "t1", add_token(relay, "t1"))
    init = ["init", "--db", str(saved), "--tenant", "acme", "--replica", "t1", "--location", "t1"]
    assert main([*init, "--relay", relay.url, "--token-file", path]) == 0
    assert main(["sync", "--db", str(saved)]) == 0  # the saved token
    capsys.readouterr()
    db = store_db(tmp_path, relay)
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    for path, why in ((str(tmp_path / "missing.token"), "cannot read"), (str(empty), "empty")):
        assert main(["sync", "--db", db, "--token-file", path]) == 2
        assert why in one_error_line(capsys.readouterr().err)


# -- one-line errors for user mistakes --------------------------------------------------------


def test_wss_against_a_plain_relay_says_so(
    tmp_path: Path, relay: RunningRelay, capsys: pytest.CaptureFixture[str]
) -> None:
    db = store_db(tmp_path, relay)
    path = token_file(tmp_path, "t1", add_token(relay, "t1"))
    wss = relay.url.replace("ws://", "wss://")
    assert main(["sync", "--db", db, "--relay", wss, "--token-file", path]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "TLS handshake failed" in line and "ws:// URL" in line


@pytest.mark.parametrize("option", ["--port", "--admin-port"])
def test_relay_port_in_use_is_one_line(tmp_path: Path, option: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        args = ["relay", "--db", str(tmp_path / "relay.db")]
        args += ["--port", port] if option == "--port" else ["--port", "0", "--admin-port", port]
        done = tiendasync(*args, check=False)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert f"cannot listen on 127.0.0.1:{port}: address already in use" in line
    assert f"choose another {option}" in line


def test_recount_without_count_names_the_option(
    tmp_path: Path, relay: RunningRelay, capsys: pytest.CaptureFixture[str]
) -> None:
    db = store_db(tmp_path, relay)
    assert main(["queue", "resolve", "--db", db, "c-1", "--action", "recount"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "--action recount needs --count N" in line


def test_failed_open_leaves_the_file_and_gives_cli_advice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    for argv in (["status", "--db", str(empty)], ["sync", "--db", str(empty)]):
        assert main(argv) == 2
        assert "tiendasync init --db" in one_error_line(capsys.readouterr().err)
    with pytest.raises(ConfigError, match="not a replica yet"):
        Replica.open(empty)
    assert empty.stat().st_size == 0  # left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
    with pytest.raises(ConfigError):
        Replica.open(tmp_path / "new.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
