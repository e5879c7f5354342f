"""The replica's websocket client against a real relay on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.relay_thread import ServedRelay
from tiendasync import AuthError, Replica, ReplicaStatus, UnreachableRelay
from tiendasync.relay import RelayServer, SqliteRelayStore
from tiendasync.relay.auth import issue_token
from tiendasync.relay.generations import RolloverPolicy


class RelayThread(ServedRelay):
    """A RelayServer on a SQLite store of record in ``tmp``, with a central writer,
    running in its own event loop thread."""

    def __init__(
        self,
        tmp: Path,
        *,
        rollover: RolloverPolicy | None = None,
        rollover_interval: float = 86_400.0,
    ) -> None:
        store = SqliteRelayStore(str(tmp / "relay.db"))
        server = RelayServer(
            store,
            host="127.0.0.1",
            port=0,
            central_dir=tmp / "central",
            rollover=rollover,
            rollover_interval=rollover_interval,
        )
        super().__init__(server, store, start_timeout=10)

    def token(self, replica: str) -> str:
        return issue_token(self.store, tenant="acme", replica_id=replica)


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayThread]:
    r = RelayThread(tmp_path)
    yield r
    r.close()


def open_replica(tmp: Path, name: str) -> Replica:
    return Replica.open(tmp / f"{name}.db", tenant="acme", replica_id=name, location="tienda-1")


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_sync_now_reports_and_acknowledges(relay: RelayThread, tmp_path: Path) -> None:
    a, b = open_replica(tmp_path, "a"), open_replica(tmp_path, "b")
    a.catalog.put("PAN", {"name": "Pan", "price_cents": 90})
    a.inventory.receive("PAN", 5)
    sale = a.record_sale([("PAN", 2)])
    report = a.sync_now(relay.url, token=relay.token("a"))
    assert report.outcome == "ok" and report.session_id
    assert report.updates_sent >= 3 and report.bytes_sent > 0 and report.acknowledged >= 4
    assert a.status.pending == 0
    assert {e.status for e in a.queue.list()} == {"acknowledged"}
    report_b = b.sync_now(relay.url, token=relay.token("b"))
    assert report_b.updates_received >= 3
    assert b.inventory.stock("PAN") == 3 and b.sales.get(sale.id) is not None
    assert a.log.list()[0].outcome == "ok" and a.log.list()[0].updates_sent >= 3
    a.close()
    b.close()


def test_unreachable_relay_and_bad_token_lose_nothing(relay: RelayThread, tmp_path: Path) -> None:
    a = open_replica(tmp_path, "a")
    a.record_sale([("X", 1, 100)])
    with pytest.raises(UnreachableRelay):
        a.sync_now("ws://127.0.0.1:1", token="t")
    with pytest.raises(AuthError):
        a.sync_now(relay.url, token="ts_bad_token")
    assert a.status.pending == 2  # the location record and the sale
    assert [e.outcome for e in a.log.list()] == ["error", "error"]
    a.sync_now(relay.url, token=relay.token("a"))
    assert a.status.pending == 0
    a.close()


def test_background_sync_streams_live_and_reports_status(
    relay: RelayThread, tmp_path: Path
) -> None:
    a, b = open_replica(tmp_path, "a"), open_replica(tmp_path, "b")
    states: list[str] = []

    def record(status: ReplicaStatus) -> None:
        if not states or states[-1] != status.state:
            states.append(status.state)

    unsubscribe = b.on_status_change(record)
    a.start_sync(relay.url, token=relay.token("a"))
    b.start_sync(relay.url, token=relay.token("b"))
    wait_until(lambda: a.status.state == "online" and b.status.state == "online")
    sale = a.record_sale([("LECHE", 1, 120)])
    wait_until(lambda: b.sales.get(sale.id) is not None)
    wait_until(lambda: a.status.pending == 0)
    assert b.inventory.stock("LECHE") == -1
    assert relay.call(lambda: relay.server.request_sync("acme", "b", True))
    wait_until(lambda: len([e for e in b.log.list() if e.mode == "full"]) >= 1)
    b.stop_sync()
    assert b.status.state == "offline"
    unsubscribe()
    assert states[:3] == ["connecting", "syncing", "online"] and "offline" in states
    a.stop_sync()
    a.close()
    b.close()


def test_sync_log_counts_conflicts(relay: RelayThread, tmp_path: Path) -> None:
    a, b = open_replica(tmp_path, "a"), open_replica(tmp_path, "b")
    a.catalog.put("LECHE", {"name": "Leche", "price_cents": 120})
    a.inventory.receive("LECHE", 1)
    a.sync_now(relay.url, token=relay.token("a"))
    b.sync_now(relay.url, token=relay.token("b"))
    a.record_sale([("LECHE", 1)])
    b.record_sale([("LECHE", 1)])
    a.sync_now(relay.url, token=relay.token("a"))
    b.sync_now(relay.url, token=relay.token("b"))
    wait_until(
        lambda: len(relay.call(lambda: relay.server.central("acme").conflicts(status="open"))) == 1
    )
    report = a.sync_now(relay.url, token=relay.token("a"))
    assert report.conflicts_seen == 1
    assert a.log.list()[0].conflicts_opened == 1
    assert a.status.open_conflicts == 1
    assert [e.has_conflict for e in a.queue.list(kind="sale")] == [True]
    a.close()
    b.close()


def test_relay_closes_a_connection_that_never_says_hello(tmp_path: Path) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def scenario() -> tuple[int | None, str | None]:
        store = SqliteRelayStore(str(tmp_path / "relay.db"))
        server = RelayServer(store, host="127.0.0.1", port=0, hello_timeout=0.3)
        await server.start()
        try:
            async with connect(f"ws://127.0.0.1:{server.port}/sync") as ws:
                frames = []
                with pytest.raises(ConnectionClosed):
                    while True:  # the ERROR frame, then the close
                        frames.append(await asyncio.wait_for(ws.recv(), 5))
                await ws.wait_closed()
                assert len(frames) == 1 and b"no HELLO" in frames[0]
                return ws.close_code, ws.close_reason
        finally:
            await server.stop()
            store.close()

    code, reason = asyncio.run(scenario())
    assert code == 1002 and reason is not None and "no HELLO" in reason


def test_refused_writes_are_marked_error_and_can_be_retried(
    relay: RelayThread, tmp_path: Path
) -> None:
    relay.store.set_replica_config(
        "acme", "a", {"read": ["*"], "write": ["stock/*", "sales/*", "locations"]}
    )
    a = open_replica(tmp_path, "a")
    token = relay.token("a")
    a.inventory.receive("PAN", 5)  # stock: allowed
    a.catalog.put("PAN", {"name": "Pan", "price_cents": 90})  # catalog: not allowed
    report = a.sync_now(relay.url, token=token)  # the relay told its grants: withheld
    assert report.outcome == "ok" and report.not_granted == ["catalog"]
    [entry] = a.queue.list(status="error")  # only the catalog write; the stock went through
    assert entry.kind == "product_put" and "may not write catalog" in (entry.error or "")
    assert "catalog" not in relay.store.state_vectors("acme")  # nothing of it reached the relay
    relay.store.set_replica_config("acme", "a", {"read": ["*"], "write": ["*"]})
    retried = a.queue.process(entry.id, url=relay.url, token=token)
    assert retried.status == "acknowledged" and retried.attempts >= 2
    assert retried.error is None and a.status.pending == 0
    assert a.queue.list(status="error") == []  # the relay holds them all now
    a.close()
