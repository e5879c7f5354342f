"""A sync session's report counts the conflicts its own updates opened (real relay process).

The relay reviews what a store sends after acknowledging it; a one-shot sync
waits briefly for that review, so the conflict a sale opens is in the
report (and the store's sync log) of the session that sent the sale, and
the relay's sync log counts the same updates in the other direction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from tiendasync import Replica
from tiendasync.cli import main
from tiendasync.cli import store as store_cli

from .relay_process import RunningRelay, tiendasync


@pytest.fixture(autouse=True)
def _no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(store_cli.TOKEN_ENV, raising=False)


def relay_sessions(relay: RunningRelay, replica: str) -> list[dict[str, object]]:
    with sqlite3.connect(relay.db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT * FROM sync_log WHERE replica_id = ? AND kind = 'sync' ORDER BY started_at",
            (replica,),
        ).fetchall()
    return [dict(r) for r in rows]


def test_oversold_sale_opens_its_conflict_in_the_same_session(
    tmp_path: Path, relay: RunningRelay, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tiendasync(
        *("relay", "token", "add", "--db", relay.db, "--tenant", "acme", "--replica", "t1"),
        *("--location", "t1"),  # (a store requests resolutions of its own location only)
    ).stdout.strip()
    (tmp_path / "t1.token").write_text(token)
    db = str(tmp_path / "t1.db")
    with Replica.open(db, tenant="acme", replica_id="t1", location="t1") as r:
        r.configure(relay_url=relay.url)
        r.catalog.put("CAFE-500", {"name": "Café 500 g", "price_cents": 450})
        r.inventory.receive("CAFE-500", 1)
        r.record_sale([("CAFE-500", 3)])  # two more than there are: the relay's review objects

    started = time.monotonic()
    code = main(["sync", "--db", db, "--token-file", str(tmp_path / "t1.token"), "--json"])
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    # negative stock, and an unknown product (a location's token may not write the catalog)
    assert report["conflicts_opened"] == 2, report
    assert report["conflicts_seen"] == report["conflicts_opened"]
    with Replica.open(db, read_only=True) as r:
        assert r.status.open_conflicts == 2
        [row] = r.log.list(limit=5)
        assert row.conflicts_opened == 2  # the store's log says what its report said

    # the relay's log and the store's report count the same updates
    [theirs] = relay_sessions(relay, "t1")
    assert theirs["session_id"] == report["session_id"]
    assert theirs["updates_received"] == report["updates_sent"]
    assert theirs["updates_sent"] == report["updates_received"]

    # the conflict it opened is resolved from the command line, shown for people
    with Replica.open(db, read_only=True) as r:
        [conflict] = r.conflicts.list(status="open", invariant="non_negative_stock")
    resolve = ["queue", "resolve", "--db", db, conflict.id, "--action", "recount", "--count", "0"]
    assert main(resolve) == 0, capsys.readouterr().err
    shown = capsys.readouterr().out
    assert "{'" not in shown and "recount" in shown, shown
    assert all(
        not ln.split(":", 1)[1].strip().replace(".", "").isdigit()
        for ln in shown.splitlines()
        if ln.split(":", 1)[0].endswith("_at")
    ), shown

    # a sync with nothing new to review does not wait for a review
    started_again = time.monotonic()
    assert main(["sync", "--db", db, "--token-file", str(tmp_path / "t1.token")]) == 0
    shown = capsys.readouterr().out
    assert "conflicts opened: 0" in shown
    assert time.monotonic() - started_again < took
