"""The one exit-code policy: 1 retry later, 2 fix the call, 3 re-authenticate, 70 a bug.

Store commands run in-process (``tiendasync.cli.main``) against a real relay
process; relay commands run as real processes.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tiendasync import Replica
from tiendasync.cli import build_parser, main
from tiendasync.cli import store as store_cli
from tiendasync.cli.exits import guard
from tiendasync.errors import InternalError
from tiendasync.model.actions import ACTIONS

from .relay_process import RunningRelay, tiendasync


@pytest.fixture(autouse=True)
def _no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(store_cli.TOKEN_ENV, raising=False)
    monkeypatch.delenv("TIENDASYNC_ADMIN_TOKEN", raising=False)


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("tiendasync: error: "), err
    return lines[0]


def store_db(tmp_path: Path, relay: RunningRelay) -> str:
    path = str(tmp_path / "t1.db")
    with Replica.open(path, tenant="acme", replica_id="t1", location="t1") as r:
        r.configure(relay_url=relay.url)
        r.catalog.put("CAFE-500", {"name": "Café 500 g", "price_cents": 450})
    return path


def test_refused_token_exits_3(
    tmp_path: Path, relay: RunningRelay, capsys: pytest.CaptureFixture[str]
) -> None:
    db = store_db(tmp_path, relay)
    good = tiendasync(
        "relay", "token", "add", "--db", relay.db, "--tenant", "acme", "--replica", "t1"
    ).stdout.strip()
    wrong = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")

    for token in (wrong, "ts_000000000000_" + "x" * 43):
        assert main(["sync", "--db", db, "--token", token, "--timeout", "10"]) == 3
        assert "token" in one_error_line(capsys.readouterr().err).lower()

    assert main(["sync", "--db", db, "--token", wrong, "--timeout", "10", "--json"]) == 3
    captured = capsys.readouterr()
    assert json.loads(captured.out)["outcome"] == "error"
    one_error_line(captured.err)

    # The right token syncs (so the 3s above were the token, not the relay) ...
    assert main(["sync", "--db", db, "--token", good, "--timeout", "10"]) == 0, capsys.readouterr()
    capsys.readouterr()
    # ... until it is revoked.
    tiendasync("relay", "token", "revoke", "--db", relay.db, good[3:15])
    assert main(["sync", "--db", db, "--token", good, "--timeout", "10"]) == 3
    one_error_line(capsys.readouterr().err)


def test_sync_now_refused_admin_token_exits_3(relay: RunningRelay) -> None:
    store_token = tiendasync(
        "relay", "token", "add", "--db", relay.db, "--tenant", "acme", "--replica", "t1"
    ).stdout.strip()
    for token in (store_token, "ts_000000000000_" + "x" * 43):  # a store token is not an admin's
        done = tiendasync(
            "relay",
            "sync-now",
            "--replica",
            "t1",
            "--admin-url",
            relay.admin_url,
            "--token",
            token,
            check=False,
        )
        assert done.returncode == 3, done.stderr
        assert "admin token" in one_error_line(done.stderr)


def test_sync_now_unreachable_admin_api_exits_1() -> None:
    done = tiendasync(
        "relay",
        "sync-now",
        "--replica",
        "t1",
        "--admin-url",
        "http://127.0.0.1:1",
        "--token",
        "ts_x",
        check=False,
    )
    assert done.returncode == 1
    assert "cannot reach the admin API" in one_error_line(done.stderr)


def test_every_command_handler_is_guarded(capsys: pytest.CaptureFixture[str]) -> None:
    def walk(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        found = [p]
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found.extend(walk(sub))
        return found

    handlers = [p.get_default("handler") for p in walk(build_parser())]
    handlers = [h for h in handlers if h is not None]
    assert len(handlers) >= 15
    assert all(hasattr(h, "__wrapped__") for h in handlers), handlers

    def buggy(args: argparse.Namespace) -> int:
        raise InternalError("invariant broken")

    assert guard(buggy)(argparse.Namespace()) == 70
    assert one_error_line(capsys.readouterr().err) == "tiendasync: error: invariant broken"


def test_resolve_options_come_from_the_actions_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "t1.db")
    Replica.open(db, tenant="acme", replica_id="t1", location="t1").close()
    parser = build_parser()
    args = parser.parse_args(["queue", "resolve", "--db", db, "c-1", "--action", "accept"])
    names = {p.name for a in ACTIONS.values() for p in a.params}
    assert names <= set(vars(args))
    assert all(getattr(args, n) is None for n in names)

    # A parameter the action does not take, or a bad value: check_params says so (exit 2).
    for bad, needle in (
        (["--action", "accept", "--quantity", "3"], "quantity"),
        (["--action", "adjust", "--count", "3"], "count"),
        (["--action", "adjust"], "needs --quantity N"),
        (["--action", "transfer", "--from-location", "a", "--quantity", "0"], "quantity"),
        (["--action", "void", "--sale-ids", " , "], "sale_ids"),
        (["--action", "restore", "--fields", "[1]"], "fields"),
    ):
        assert main(["queue", "resolve", "--db", db, "c-1", *bad]) == 2, bad
        assert needle in one_error_line(capsys.readouterr().err), bad


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    """``tiendasync ... | head -1``: the closed pipe is not an error, and prints nothing."""
    db = tmp_path / "t.db"
    Replica.open(db, tenant="acme", replica_id="t1", location="s").close()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    cmd = f"{shlex.quote(sys.executable)} -m tiendasync status --db {shlex.quote(str(db))}"
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {cmd} | head -c 1 >/dev/null"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
