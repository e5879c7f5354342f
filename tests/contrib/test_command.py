"""``manage.py sincronizar``: the CLI's exit codes, once, --completa --tienda, --continuo."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time

import pytest
from django.core.management import call_command

from tests.cli.relay_process import RunningRelay
from tiendasync.contrib.django import conf


def _run(*args: str) -> int:
    try:
        call_command("sincronizar", *args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_errors_have_the_cli_exit_codes(
    store: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run() == 2  # no relay configured: fix the settings
    err = capsys.readouterr().err
    assert err.startswith("tiendasync: error: ") and len(err.strip().splitlines()) == 1
    assert _run("--relay", "ws://127.0.0.1:9/sync", "--tienda", "otra") == 2
    assert "not 'otra'" in capsys.readouterr().err
    store["TOKEN"] = "not-a-token"
    assert _run("--relay", "ws://127.0.0.1:9/sync", "--timeout", "2") == 1  # unreachable
    assert "tiendasync: error:" in capsys.readouterr().err


def test_once_full_and_refused_token(
    store: dict[str, str], relay: RunningRelay, relay_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store["RELAY_URL"] = relay.url
    store["TOKEN"] = relay_token
    assert _run() == 0 and "outcome" in capsys.readouterr().out
    assert _run("--completa", "--tienda", "tienda-1") == 0
    assert "full" in capsys.readouterr().out
    store["TOKEN"] = "ts_000000000000_wrong"
    assert _run() == 3
    replica = conf.get_replica()
    assert [e.mode for e in replica.log.list()][:3] == ["once", "full", "once"]


def test_continuo_stops_cleanly_on_sigterm(
    store: dict[str, str], relay: RunningRelay, relay_token: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store["RELAY_URL"] = relay.url
    store["TOKEN"] = relay_token
    conf.get_replica()  # created by the site
    conf.close_replica()

    def stop_when_connected() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with sqlite3.connect(store["DB"]) as db:
                query = "SELECT COUNT(*) FROM sync_log WHERE outcome = 'running'"
                if db.execute(query).fetchone()[0]:
                    break
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    killer = threading.Thread(target=stop_when_connected)
    killer.start()
    code = _run("--continuo", "--poll", "0.1")
    killer.join()
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    # one line per session, and the connection's start and end once each
    sessions = [ln for ln in lines if " ok (continuous) " in ln]
    assert len(sessions) == 1, out
    assert sum("  connected to " in ln for ln in lines) == 1, out
    assert sum("  disconnected from " in ln for ln in lines) == 1, out
    assert len(lines) == 3, out
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
