"""One source of truth for a store's config: central keys > the store's own > defaults.

A real relay process; the admin edits through the admin API, the store
through ``tiendasync config set`` and ``sync``.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tiendasync import Replica
from tiendasync.cli import main
from tiendasync.cli import store as store_cli
from tiendasync.store import client

from ..support.simnet import frame_types
from .relay_process import RunningRelay, tiendasync


@pytest.fixture(autouse=True)
def _no_token_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(store_cli.TOKEN_ENV, raising=False)


def admin(relay: RunningRelay, token: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{relay.admin_url}/api/sync/{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_central_edit_keeps_local_keys_and_local_edit_of_a_central_key_is_refused(
    tmp_path: Path, relay: RunningRelay, capsys: pytest.CaptureFixture[str]
) -> None:
    admin_token = tiendasync("relay", "token", "add", "--db", relay.db, "--admin").stdout.strip()
    token = tiendasync(
        "relay", "token", "add", "--db", relay.db, "--tenant", "acme", "--replica", "t1"
    ).stdout.strip()
    db = str(tmp_path / "t1.db")
    Replica.open(db, tenant="acme", replica_id="t1", location="t1").close()
    tokfile = tmp_path / "t1.token"
    tokfile.write_text(token)
    sync = ["sync", "--db", db, "--relay", relay.url, "--token-file", str(tokfile)]

    assert main(sync) == 0  # the relay knows the store now
    assert main(["config", "set", "--db", db, 'priorities={"sales": 3}']) == 0
    # the admin changes another key centrally
    answer = admin(relay, admin_token, "PUT", "config/t1", {"interval_s": 60})
    assert answer["config"]["central"] == ["interval_s"]
    assert main(sync) == 0
    capsys.readouterr()
    with Replica.open(db, read_only=True) as r:
        assert r.config.interval_s == 60  # the central key applies ...
        assert r.config.priority("sales") == 3  # ... and the local one is not reverted
        assert r.central_config_keys == ["interval_s"]

    # what the console shows is what the store uses: the central key, and the store's
    # own value of the others (told in its HELLO), not the default
    [shown] = admin(relay, admin_token, "GET", "config/")["results"]
    assert shown["config"]["interval_s"] == 60 and shown["config"]["central"] == ["interval_s"]
    assert shown["config"]["priorities"]["sales"] == 3  # the store's own value
    assert shown["config"]["reported_at"] is not None

    assert main(["config", "show", "--db", db]) == 0
    shown_here = capsys.readouterr().out
    marked = [ln.split(":")[0] for ln in shown_here.splitlines() if "(set centrally" in ln]
    assert marked == ["interval_s"], shown_here

    # a local change of a central key would be reverted: it is refused, saying why
    assert main(["config", "set", "--db", db, "interval_s=10"]) == 2
    err = capsys.readouterr().err
    assert "interval_s is set centrally" in err and len(err.strip().splitlines()) == 1
    assert main(["config", "set", "--db", db, "interval_s=60"]) == 0  # the same value is fine

    # the admin clears the key: the store's own value applies again
    admin(relay, admin_token, "PUT", "config/t1", {"interval_s": None})
    assert main(sync) == 0
    assert main(["config", "set", "--db", db, "interval_s=10"]) == 0
    assert main(sync) == 0
    with Replica.open(db, read_only=True) as r:
        assert r.config.interval_s == 10
        assert r.config.priority("sales") == 3
        assert r.central_config_keys == []


def test_interval_s_and_batch_size_do_what_they_say(
    tmp_path: Path, relay: RunningRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """interval_s is the keepalive ping interval; batch_size caps live writes per message."""
    real_connect = client.connect  # type: ignore[attr-defined]
    seen: list[dict[str, Any]] = []
    messages: list[bytes] = []

    async def spying_connect(url: str, **kwargs: Any) -> Any:
        seen.append(kwargs)
        ws = await real_connect(url, **kwargs)
        real_send = ws.send

        async def send(data: Any) -> None:
            messages.append(bytes(data))
            await real_send(data)

        ws.send = send  # type: ignore[method-assign,assignment]
        return ws

    monkeypatch.setattr(client, "connect", spying_connect)
    token = tiendasync(
        "relay", "token", "add", "--db", relay.db, "--tenant", "acme", "--replica", "t1"
    ).stdout.strip()
    with Replica.open(tmp_path / "t1.db", tenant="acme", replica_id="t1", location="t1") as r:
        r.configure(relay_url=relay.url, interval_s=7.5, batch_size=2)
        r.catalog.put("CAFE-500", {"name": "Café 500 g", "price_cents": 450})
        r.start_sync(token=token)
        try:
            deadline = time.monotonic() + 20
            while r.status.state != "online" or r.status.pending:
                assert time.monotonic() < deadline, r.status
                time.sleep(0.05)
            before = len(messages)
            with r.core.locked():  # the sync thread waits: the six writes queue up
                for i in range(6):
                    r.inventory.receive("CAFE-500", i + 1)
            while r.status.pending:
                assert time.monotonic() < deadline, r.status
                time.sleep(0.05)
        finally:
            r.stop_sync()
    assert seen[0]["ping_interval"] == 7.5
    updates = [frame_types(m).count("UPDATE") for m in messages[before:]]
    assert sum(updates) == 6 and max(updates) == 2, updates


def test_the_console_shows_a_stores_own_values_once_it_connected(
    tmp_path: Path, relay: RunningRelay
) -> None:
    admin_token = tiendasync("relay", "token", "add", "--db", relay.db, "--admin").stdout.strip()
    token = tiendasync(
        "relay", "token", "add", "--db", relay.db, "--tenant", "acme", "--replica", "t2"
    ).stdout.strip()
    db = str(tmp_path / "t2.db")
    Replica.open(db, tenant="acme", replica_id="t2", location="t2").close()
    tokfile = tmp_path / "t2.token"
    tokfile.write_text(token)
    sync = ["sync", "--db", db, "--relay", relay.url, "--token-file", str(tokfile)]
    assert main(["config", "set", "--db", db, "interval_s=45", "batch_size=7"]) == 0
    assert main(sync) == 0

    [shown] = admin(relay, admin_token, "GET", "config/")["results"]
    assert shown["replica"] == "t2"
    config = shown["config"]
    assert (config["interval_s"], config["batch_size"]) == (45, 7)  # not the defaults
    assert config["central"] == [] and config["reported_at"] is not None

    # a later local change shows after the store's next connection
    assert main(["config", "set", "--db", db, "interval_s=20"]) == 0

    def shown_interval() -> Any:
        [shown] = admin(relay, admin_token, "GET", "config/")["results"]
        return shown["config"]["interval_s"]

    assert shown_interval() == 45
    assert main(sync) == 0
    assert shown_interval() == 20
