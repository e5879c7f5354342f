"""The real ``yjs`` and ``y-websocket`` npm packages under Node against a live relay.

A relay process and a POS process (``tests.support.processes.Cluster``) sell
coffee for 36 s (CI) or over a minute (``TIENDASYNC_SOAK=1``) while
``tests/e2e/node/follow.mjs`` follows the store's stock and the catalog with
y-websocket, using the module of ``docs/yjs.md``.  Checked: the first sync,
every live change with no dropped connection for longer than y-websocket's
30 s idle timeout (an idle follower too, kept alive by the relay), presence
relayed between two followers and removed when one leaves, a refused token
that y-websocket does not retry (4401), a write on the read-only endpoint
refused for good (4403), a token over its connection cap refused for good
(4429), a crowd of 50 on one token for 30 s refused once each (no retries,
no sync-log flood), a message flood closed within a second (4029), and one
sync-log row per refusal, none anonymous but the bad token's.

Node and the pinned packages are required: the test FAILS (it does not
skip) when ``node`` or ``tests/e2e/node/node_modules`` is missing, and says
the command that installs them (``make test`` runs it first, ``scripts/prereqs.sh``).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import Cluster, demo
from tiendasync.relay import SqliteRelayStore
from tiendasync.relay.storage import SessionRecord

NODE_DIR = Path(__file__).resolve().parent / "node"
INSTALL = "npm ci --prefix tests/e2e/node"
#: How long the POS sells while the followers follow.  The CI form spans
#: y-websocket's 30 s idle timeout (so "no drop" means something); the long form
#: (``TIENDASYNC_SOAK=1``, ``make soak``) sells for more than a minute.
CI_SECONDS = 36.0
SOAK_SECONDS = float(os.environ.get("TIENDASYNC_YJS_SECONDS", "75"))
CAP = 4  # the relay's default --max-conns-per-token
CROWD = 50  # followers on one token at once, far over its cap
CROWD_SECONDS = 30.0


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: apt-get install nodejs npm, then " + INSTALL)
    for package in ("yjs", "y-websocket", "ws"):
        if not (NODE_DIR / "node_modules" / package / "package.json").is_file():
            pytest.fail(f"the npm package {package!r} is missing: run `{INSTALL}`")
    return node


class Follower:
    """``follow.mjs`` running under Node: its JSON lines, as they come."""

    def __init__(self, node: str, config: dict[str, Any], stderr: Path) -> None:
        self._stderr = stderr.open("w")
        self.proc = subprocess.Popen(
            [node, str(NODE_DIR / "follow.mjs")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env={**os.environ, "TIENDASYNC_NODE_CONFIG": json.dumps(config)},
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.events: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def next(self, event: str, timeout: float) -> dict[str, Any]:
        """The next line of kind ``event`` (every line read is kept in :attr:`events`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = {}
            if line is None:
                raise AssertionError(f"node exited (rc={self.proc.wait()}) before {event!r}")
            if line:
                self.events.append(line)
                if line["event"] == event:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no {event!r} from node within {timeout} s")

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._stderr.close()


def _token(cluster: Cluster, replica: str) -> str:
    return demo.tiendasync(
        "relay", "token", "add", "--db", cluster.db, "--tenant", "acme", "--replica", replica
    )


def _log_rows(cluster: Cluster) -> list[SessionRecord]:
    """The relay's whole sync log (read from its file once the relay is stopped)."""
    store = SqliteRelayStore(cluster.db)
    try:
        return store.list_sessions(limit=10_000)
    finally:
        store.close()


@pytest.mark.slow
def test_yjs_and_y_websocket_follow_a_live_relay(tmp_path: Path) -> None:
    _follow_a_live_relay(tmp_path, CI_SECONDS)


@pytest.mark.soak
@pytest.mark.skipif(not os.environ.get("TIENDASYNC_SOAK"), reason="set TIENDASYNC_SOAK=1")
def test_yjs_followers_stay_connected_for_more_than_a_minute(tmp_path: Path) -> None:
    assert SOAK_SECONDS > 60, "the long form must keep the idle follower for over a minute"
    _follow_a_live_relay(tmp_path, SOAK_SECONDS)


def _follow_a_live_relay(tmp_path: Path, seconds: float) -> None:
    """Sell for ``seconds`` while y-websocket followers follow; check what they saw."""
    node = _node()
    cluster = Cluster(tmp_path, {"caja-1": "tienda-1"})
    follower: Follower | None = None
    try:
        pos = cluster.pos["caja-1"]
        pos.do("product CAFE-500 450 Café 500 g")
        pos.do("receive CAFE-500 100")
        pos.do("online")
        pos.do("wait-synced")
        names = ("live", "peer", "idle", "ro", "cap", "flood", "crowd")
        config = {
            "relay": cluster.url,
            "tenant": "acme",
            "location": "tienda-1",
            "tokens": {name: _token(cluster, f"dash-{name}") for name in names},
            "cap": CAP,
            "flood": 3000,
            "crowd": CROWD,
            "crowdSeconds": CROWD_SECONDS,
        }
        follower = Follower(node, config, tmp_path / "node.stderr")
        ready = follower.next("ready", 30)
        # sync: what the POS wrote before the followers came, decoded by docs/yjs.md's module
        assert ready["stock"] == {"CAFE-500": 100}
        assert ready["catalog"]["CAFE-500"]["name"] == "Café 500 g"
        assert ready["catalog"]["CAFE-500"]["price_cents"] == 450

        # live updates: a sale every 3 s, each seen by the follower
        level, deadline = 100, time.monotonic() + seconds
        while time.monotonic() < deadline:
            pos.do("sell CAFE-500 1")
            level -= 1
            pos.do("wait-synced")
            seen = follower.next("stock", 15)
            while seen["stock"] != {"CAFE-500": level}:
                seen = follower.next("stock", 15)
            time.sleep(max(0.0, min(3.0, deadline - time.monotonic())))
        follower.send({"done": True, "expect": {"CAFE-500": level}})
        summary = follower.next("summary", 60)
        # kept beside the run for its figures (flood close delay, crowd attempts, ...)
        (tmp_path / "summary.json").write_text(json.dumps(summary, indent=1))
    finally:
        if follower is not None:
            follower.close()
        cluster.close()

    live, idle = summary["live"], summary["idle"]
    assert live["stock"] == {"CAFE-500": level} and level <= 100 - seconds // 4
    # no drop over the whole run, which is longer than y-websocket's 30 s idle timeout:
    # one connection each, never closed (the idle one too: only keepalives reach it)
    assert summary["t"] - ready["t"] >= seconds > 30
    for who in (live, idle):
        assert (who["attempts"], who["disconnects"], who["closes"]) == (1, 0, []), who
    # presence: relayed between the followers of one document, removed when one leaves
    assert summary["peer"]["sawPeer"] and "dash-live" in live["saw"]
    # a bad token: refused for good, one attempt in the whole minute
    bad = summary["bad"]
    assert bad["closed"]["code"] == 4401 and bad["attempts"] == 1, bad
    # a write on the read-only endpoint: refused for good and never reached the relay
    ro = summary["ro"]
    assert ro["closed"]["code"] == 4403 and "read-only" in ro["closed"]["reason"], ro
    assert ro["attempts"] == 1 and not ro["evilReachedLive"]
    # one connection over the token's cap: refused for good, at once; the others synced
    refused = [c for c in summary["cap"] if c["closed"] is not None]
    assert len(refused) == 1 and refused[0]["closed"]["code"] == 4429
    assert refused[0]["attempts"] == 1 and refused[0]["closed"]["t"] < ready["t"] + 5
    assert sum(c["synced"] for c in summary["cap"]) == CAP
    # a flood: closed for its rate (retryable 4029), promptly
    flood = summary["flood"]
    assert flood["code"] == 4029 and flood["after"] < 1.0, flood
    # a crowd on one token for 30 s: CAP synced, every other one refused once, for good
    crowd = summary["crowd"]
    assert crowd["synced"] == CAP and crowd["attempts"] == CROWD, crowd
    assert sorted(crowd["codes"], key=str) == [4429] * (CROWD - CAP) + [None] * CAP, crowd
    # one sync-log row per refusal, named after the token when it is valid
    rows = _log_rows(cluster)
    assert sum(1 for r in rows if (r.error or "").startswith("4401")) == 1
    ro_rows = [r for r in rows if r.replica_id == "dash-ro"]
    assert len(ro_rows) == 1 and (ro_rows[0].error or "").startswith("4403"), ro_rows
    assert ro_rows[0].tenant == "acme" and ro_rows[0].outcome == "rejected"
    # the crowd: one row per connection, each naming the token's tenant and replica
    crowd_rows = [r for r in rows if r.replica_id == "dash-crowd"]
    assert len(crowd_rows) == CROWD and all(r.tenant == "acme" for r in crowd_rows)
    assert sum(1 for r in crowd_rows if (r.error or "").startswith("4429")) == CROWD - CAP
    # no anonymous rows: only the bad token's refusal names no tenant and no replica
    anonymous = [r for r in rows if r.tenant is None and r.replica_id is None]
    assert len(anonymous) == 1 and (anonymous[0].error or "").startswith("4401"), anonymous
