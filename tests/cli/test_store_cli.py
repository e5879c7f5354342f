"""The store-side command line: init, sync, queue, log, status, config, import.

Most tests call ``tiendasync.cli.main([...])`` in-process (fast); two run the
real ``python -m tiendasync``.  No relay is needed: sync tests use a port
nothing listens on.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tiendasync import Replica
from tiendasync.cli import build_parser, main
from tiendasync.cli import store as store_cli
from tiendasync.store.queue import SyncQueue

UNREACHABLE = "ws://127.0.0.1:1"


@pytest.fixture(autouse=True)
def _no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(store_cli.TOKEN_ENV, raising=False)


def _python_m(*args: str) -> list[str]:
    return [sys.executable, "-m", "tiendasync", *args]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def assert_one_error_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("tiendasync: error: "), err
    for needle in needles:
        assert needle in lines[0], err


@pytest.fixture
def db(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """An initialised replica database (acme / tienda-1 at tienda-1)."""
    path = str(tmp_path / "tienda-1.db")
    code, out, err = run(
        capsys,
        "init",
        "--db",
        path,
        "--tenant",
        "acme",
        "--replica",
        "tienda-1",
        "--location",
        "tienda-1",
    )
    assert code == 0, err
    assert "created replica acme/tienda-1" in out
    return path


@pytest.fixture
def stocked(db: str) -> Iterator[str]:
    """``db`` with a product, a receipt and a sale in its queue."""
    with Replica.open(db) as r:
        r.catalog.put("CAFE-500", {"name": "Café 500 g", "price_cents": 450})
        r.inventory.receive("CAFE-500", 10)
        r.record_sale([("CAFE-500", 2)])
    yield db


def queue_rows(path: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, kind, summary, status FROM queue ORDER BY id").fetchall()


# -- help and the real command ------------------------------------------------------


def _store_subparsers() -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
    parser = build_parser()
    names = {"init", "sync", "queue", "log", "status", "config", "import"}

    def walk(
        p: argparse.ArgumentParser, path: list[str]
    ) -> Iterator[tuple[list[str], argparse.ArgumentParser]]:
        yield path, p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if path or name in names:
                        yield from walk(sub, [*path, name])

    yield from walk(parser, [])


def test_help_of_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    done = subprocess.run(_python_m("--help"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: tiendasync")
    for name in ("init", "sync", "queue", "log", "status", "config", "import"):
        assert name in done.stdout

    seen = []
    for path, parser in _store_subparsers():
        if not path:
            continue
        seen.append(" ".join(path))
        with pytest.raises(SystemExit) as exit_info:
            main([*path, "--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: tiendasync {' '.join(path)}"), out
        for action in parser._actions:  # every option and argument explains itself
            assert action.help, f"{' '.join(path)}: {action.dest} has no help"
    assert {
        "init",
        "sync",
        "queue list",
        "queue process",
        "queue resolve",
        "log",
        "status",
        "config show",
        "config set",
        "config set-token",
        "import",
    } <= set(seen)


def test_status_subprocess(db: str) -> None:
    done = subprocess.run(
        _python_m("status", "--db", db, "--json"), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert (status["tenant"], status["replica_id"], status["location"]) == (
        "acme",
        "tienda-1",
        "tienda-1",
    )
    assert status["state"] == "offline"

    human = subprocess.run(
        _python_m("status", "--db", db), capture_output=True, text=True, timeout=60
    )
    assert human.returncode == 0
    assert "tenant:" in human.stdout and "acme" in human.stdout


# -- init, status, config -----------------------------------------------------------


def test_init_status_and_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "s.db")
    code, out, err = run(
        capsys,
        "init",
        "--db",
        path,
        "--tenant",
        "acme",
        "--replica",
        "t1",
        "--location",
        "t1",
        "--relay",
        "ws://127.0.0.1:8765",
        "--token",
        "sekret",
    )
    assert code == 0, err
    status = run_json(capsys, "status", "--db", path)
    assert status["tenant"] == "acme" and status["replica_id"] == "t1"
    assert status["location"] == "t1" and isinstance(status["client_id"], int)
    assert status["relay_url"] == "ws://127.0.0.1:8765" and status["relay_token_saved"]
    assert set(status["queue"]) == {"pending", "sent", "acknowledged", "conflict", "error"}
    assert status["pending"] == status["queue"]["pending"]
    assert "sekret" not in json.dumps(status)

    code, out, _ = run(capsys, "status", "--db", path)
    assert code == 0 and "relay:" in out and "ws://127.0.0.1:8765" in out

    shown = run_json(capsys, "config", "show", "--db", path)
    assert shown["config"]["relay_url"] == "ws://127.0.0.1:8765"
    assert shown["relay_token_saved"] is True

    code, out, err = run(
        capsys,
        "config",
        "set",
        "--db",
        path,
        "interval_s=10",
        'priorities={"sales":9}',
        "relay_url=ws://10.0.0.1:9000",
        "enabled=false",
    )
    assert code == 0, err
    config = run_json(capsys, "config", "show", "--db", path)["config"]
    assert config["interval_s"] == 10
    assert config["priorities"]["sales"] == 9 and config["priorities"]["stock"] == 8
    assert config["relay_url"] == "ws://10.0.0.1:9000" and config["enabled"] is False

    # Bad input: one line, exit 2, nothing changed (not even the valid part).
    for bad, needle in (
        (["interval_s=5", "colour=blue"], "colour"),
        (["interval_s=-1"], "interval_s"),
        (["enabled=yes"], "enabled"),
        (["relay_url=http://x"], "relay_url"),
        (['priorities={"shoes":1}'], "shoes"),
        (["interval_s"], "KEY=VALUE"),
    ):
        code, _, err = run(capsys, "config", "set", "--db", path, *bad)
        assert code == 2, bad
        assert_one_error_line(err, needle)
        assert run_json(capsys, "config", "show", "--db", path)["config"] == config

    code, out, _ = run(capsys, "config", "show", "--db", path)
    assert code == 0 and "interval_s:" in out and "relay token:" in out

    # init again with the same identity is harmless, with another one refused.
    code, out, _ = run(
        capsys, "init", "--db", path, "--tenant", "acme", "--replica", "t1", "--location", "t1"
    )
    assert code == 0 and "opened existing" in out
    code, _, err = run(
        capsys, "init", "--db", path, "--tenant", "other", "--replica", "t1", "--location", "t1"
    )
    assert code == 2
    assert_one_error_line(err, "tenant")


def test_set_token_and_missing_database(
    tmp_path: Path, db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_json(capsys, "config", "show", "--db", db)["relay_token_saved"] is False
    monkeypatch.setattr(sys, "stdin", types.SimpleNamespace(readline=lambda: "tok-1\n"))
    code, _, err = run(capsys, "config", "set-token", "--db", db, "-")
    assert code == 0, err
    with Replica.open(db) as r:
        assert r.relay_token == "tok-1"

    missing = tmp_path / "typo.db"
    code, _, err = run(capsys, "status", "--db", str(missing))
    assert code == 2
    assert_one_error_line(err, "no replica database", "init")
    assert not missing.exists()  # a typo does not create an empty database

    code, _, err = run(
        capsys,
        "init",
        "--db",
        str(missing),
        "--tenant",
        "acme",
        "--replica",
        "bad\nname",
        "--location",
        "x",
    )
    assert code == 2
    assert_one_error_line(err)
    assert not missing.exists()


# -- queue and log ------------------------------------------------------------------


def test_queue_list_filters_and_json(stocked: str, capsys: pytest.CaptureFixture[str]) -> None:
    entries = run_json(capsys, "queue", "list", "--db", stocked)
    kinds = [e["kind"] for e in entries]
    assert {"location_put", "product_put", "receive", "sale"} <= set(kinds)
    assert entries[0]["kind"] == "sale"  # highest priority first
    assert all(e["status"] == "pending" for e in entries)

    assert run_json(capsys, "queue", "list", "--db", stocked, "--conflicts") == []
    assert len(run_json(capsys, "queue", "list", "--db", stocked, "--limit", "2")) == 2
    assert run_json(capsys, "queue", "list", "--db", stocked, "--status", "acknowledged") == []
    only = run_json(capsys, "queue", "list", "--db", stocked, "--kind", "receive")
    assert [e["kind"] for e in only] == ["receive"]

    sale_id = next(e["id"] for e in entries if e["kind"] == "sale")
    with sqlite3.connect(stocked) as conn:
        conn.execute(
            "UPDATE queue SET has_conflict = 1, status = 'conflict', "
            "conflict_ids = '[\"c-1\"]' WHERE id = ?",
            (sale_id,),
        )
    flagged = run_json(capsys, "queue", "list", "--db", stocked, "--conflicts")
    assert [(e["id"], e["conflict_ids"]) for e in flagged] == [(sale_id, ["c-1"])]
    assert [
        e["id"] for e in run_json(capsys, "queue", "list", "--db", stocked, "--status", "conflict")
    ] == [sale_id]

    code, out, _ = run(capsys, "queue", "list", "--db", stocked)
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "PRIO"]
    assert set(lines[1]) <= {"-", " "}
    assert len(lines) == 2 + len(entries)
    assert "c-1" in out

    code, out, _ = run(capsys, "queue", "list", "--db", stocked, "--status", "error")
    assert code == 0 and out.strip() == "(none)"
    with pytest.raises(SystemExit) as bad:
        main(["queue", "list", "--db", stocked, "--status", "lost"])
    assert bad.value.code == 2
    capsys.readouterr()


def test_queue_process(stocked: str, capsys: pytest.CaptureFixture[str]) -> None:
    entry_id = queue_rows(stocked)[0][0]
    code, out, err = run(
        capsys,
        "queue",
        "process",
        "--db",
        stocked,
        str(entry_id),
        "--relay",
        UNREACHABLE,
        "--token",
        "t",
        "--json",
    )
    assert code == 1
    assert_one_error_line(err, "127.0.0.1:1")
    entry = json.loads(out)
    assert entry["id"] == entry_id and entry["attempts"] == 1 and entry["status"] == "pending"

    code, _, err = run(capsys, "queue", "process", "--db", stocked, "9999")
    assert code == 2
    assert_one_error_line(err, "9999")


def test_queue_resolve(
    stocked: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(
        capsys, "queue", "resolve", "--db", stocked, "no-such-conflict", "--action", "accept"
    )
    assert code != 0
    assert_one_error_line(err)

    calls: list[tuple[str, str, dict[str, Any]]] = []

    def fake_resolve(self: SyncQueue, conflict_id: str, action: str, **params: Any) -> Any:
        calls.append((conflict_id, action, params))
        return {"id": conflict_id, "status": "resolved"}

    monkeypatch.setattr(SyncQueue, "resolve", fake_resolve)
    assert run_json(
        capsys,
        "queue",
        "resolve",
        "--db",
        stocked,
        "c-9",
        "--action",
        "void",
        "--sale-ids",
        "s1, s2",
        "--note",
        "double scan",
    ) == {"id": "c-9", "status": "resolved"}
    code, out, _ = run(
        capsys,
        "queue",
        "resolve",
        "--db",
        stocked,
        "c-8",
        "--action",
        "transfer",
        "--quantity",
        "3",
        "--from-location",
        "almacen",
    )
    assert code == 0 and "resolved" in out
    run(capsys, "queue", "resolve", "--db", stocked, "c-7", "--action", "remap", "--sku", "B")
    assert calls == [
        ("c-9", "void", {"sale_ids": ["s1", "s2"], "note": "double scan"}),
        ("c-8", "transfer", {"quantity": 3, "from_location": "almacen"}),
        ("c-7", "remap", {"sku": "B"}),
    ]
    for bad in (["--action", "explode"], ["--action", "adjust", "--quantity", "many"], []):
        with pytest.raises(SystemExit) as exit_info:
            main(["queue", "resolve", "--db", stocked, "c-1", *bad])
        assert exit_info.value.code == 2
    capsys.readouterr()


# -- sync ---------------------------------------------------------------------------


def test_sync_unreachable_relay_loses_nothing(
    stocked: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = queue_rows(stocked)
    assert run_json(capsys, "log", "--db", stocked) == []

    code, out, err = run(capsys, "sync", "--db", stocked, "--relay", UNREACHABLE, "--token", "t")
    assert code == 1
    assert_one_error_line(err, "cannot reach relay", UNREACHABLE)
    assert out == ""
    assert queue_rows(stocked) == before  # same entries, still pending

    code, out, err = run(
        capsys, "sync", "--db", stocked, "--relay", UNREACHABLE, "--token", "t", "--full", "--json"
    )
    assert code == 1
    assert json.loads(out)["outcome"] == "error"
    assert_one_error_line(err)

    log = run_json(capsys, "log", "--db", stocked)
    assert [(e["outcome"], e["mode"], e["relay"]) for e in log] == [
        ("error", "full", UNREACHABLE),
        ("error", "once", UNREACHABLE),
    ]
    assert all("cannot reach relay" in e["error"] for e in log)
    assert len(run_json(capsys, "log", "--db", stocked, "--limit", "1")) == 1
    code, out, _ = run(capsys, "log", "--db", stocked)
    assert code == 0 and out.splitlines()[0].split()[:2] == ["ID", "STARTED"]
    assert "error" in out

    # Relay and token from the saved config and the environment.
    code, _, err = run(capsys, "sync", "--db", stocked)
    assert code == 2
    assert_one_error_line(err, "relay URL")
    run(capsys, "config", "set", "--db", stocked, f"relay_url={UNREACHABLE}")
    code, _, err = run(capsys, "sync", "--db", stocked)
    assert code == 2
    assert_one_error_line(err, "token")
    monkeypatch.setenv(store_cli.TOKEN_ENV, "from-env")
    code, _, err = run(capsys, "sync", "--db", stocked)
    assert code == 1
    assert_one_error_line(err, "cannot reach relay")

    code, _, err = run(capsys, "sync", "--db", stocked, "--store", "tienda-2")
    assert code == 2
    assert_one_error_line(err, "tienda-2")
    assert queue_rows(stocked) == before
    status = run_json(capsys, "status", "--db", stocked)
    assert status["last_session"]["outcome"] == "error" and status["last_sync_at"] is None


def test_sync_continuous_stops_cleanly_on_sigterm(
    stocked: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "config", "set", "--db", stocked, "backoff_min_s=0.05", "backoff_max_s=0.1")
    before = queue_rows(stocked)

    def stop_after_two_sessions() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with sqlite3.connect(stocked) as conn:
                done = conn.execute(
                    "SELECT COUNT(*) FROM sync_log WHERE ended_at IS NOT NULL"
                ).fetchone()[0]
            if done >= 2:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # let the CLI print them
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=stop_after_two_sessions)
    killer.start()
    code, out, err = run(
        capsys,
        "sync",
        "--db",
        stocked,
        "--relay",
        UNREACHABLE,
        "--token",
        "t",
        "--continuous",
        "--json",
        "--poll",
        "0.1",
    )
    killer.join()
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    sessions = [e for e in events if e["event"] == "session"]
    assert {e["event"] for e in events} == {"session"}  # it never connected
    assert len(sessions) >= 2
    assert all(s["outcome"] == "error" and s["mode"] == "continuous" for s in sessions)
    assert len({s["id"] for s in sessions}) == len(sessions)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    assert queue_rows(stocked) == before
