"""A replica's end of the sync protocol over real websockets, for relay tests.

:class:`Writer` makes the Yjs updates a replica would send, :class:`Client`
speaks the protocol to a relay (a :class:`~tiendasync.protocol.ReplicaConnection`
over a websockets client) and :func:`with_relay` runs an async scenario against a
fresh :class:`~tiendasync.relay.RelayServer` on 127.0.0.1 (port 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pycrdt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tiendasync.crdt.counter import PNCounter
from tiendasync.crdt.keys import ROOT
from tiendasync.crdt.ledger import Ledger
from tiendasync.crdt.lww import LWWMap
from tiendasync.model.hlc import Timestamp
from tiendasync.model.sales import new_sale_id
from tiendasync.protocol import (
    Ack,
    Event,
    GenerationsAnnounced,
    NextGenerationUpdate,
    ReplicaConnection,
    Synced,
    UpdateReceived,
    Welcome,
)
from tiendasync.relay import RelayServer, RelayStore, SqliteRelayStore
from tiendasync.relay.auth import issue_token

__all__ = [
    "Client",
    "Scenario",
    "Writer",
    "follower_closed",
    "run",
    "synced_pair",
    "values",
    "with_relay",
]

E = TypeVar("E", bound=Event)


def run(coro: Awaitable[Any]) -> Any:
    """Run ``coro`` to completion on a fresh event loop, within 20 s."""
    return asyncio.run(asyncio.wait_for(coro, 20))


class Writer:
    """A replica's documents, whose per-transaction updates are kept as it sends them.

    Every write follows the ownership rule the relay enforces (keys and
    values the writer owns, in the document root ``t``): :meth:`set` writes
    an LWW record field (catalog-like documents), :meth:`count` a stock
    slot, :meth:`sell` a sale.  :func:`values` reads any of them back.
    """

    def __init__(
        self, client_id: int, replica: str = "t1", clock: Callable[[], float] = time.time
    ) -> None:
        self.doc: pycrdt.Doc[Any] = pycrdt.Doc(client_id=client_id)
        self.replica = replica
        self.clock = clock
        self.updates: list[bytes] = []
        self._local = False
        self._counter = 0
        self.doc.observe(self._capture)

    def _capture(self, event: pycrdt.TransactionEvent) -> None:
        if self._local:
            self.updates.append(bytes(event.update))

    def _write(self, change: Callable[[], object]) -> bytes:
        self._local = True
        try:
            with self.doc.transaction():
                change()
        finally:
            self._local = False
        return self.updates[-1]

    def set(self, key: str, value: Any) -> bytes:
        """Write field ``note`` of LWW record ``key`` (the update)."""
        self._counter += 1
        stamp = Timestamp(int(self.clock() * 1000), self._counter, self.replica)
        return self._write(lambda: LWWMap(self.doc).set(key, {NOTE: value}, stamp))

    def count(self, sku: str, delta: int) -> bytes:
        """Add ``delta`` to this writer's stock slot of ``sku`` (the update)."""
        return self._write(lambda: PNCounter(self.doc).add(sku, delta))

    def sell(self, wall_ms: int, sku: str = "CAFE", quantity: int = 1) -> bytes:
        """Record a sale made at ``wall_ms`` (the update); its month names its document."""
        self._counter += 1
        sale_id = new_sale_id(wall_ms, self._counter, self.doc.client_id)
        record = {"by": self.replica, "l": [[sku, quantity, 100]]}
        return self._write(lambda: Ledger(self.doc).add(sale_id, record))

    def root(self) -> dict[str, Any]:
        return values(self.doc)


#: The LWW field :meth:`Writer.set` writes.
NOTE = "note"


def values(doc: pycrdt.Doc[Any]) -> dict[str, Any]:
    """What a document written by :class:`Writer` holds: LWW records' ``note``,
    stock totals or sale records, by record name."""
    root = doc.get(ROOT, type=pycrdt.Map)
    sample = next(iter(root.values()), None)
    if isinstance(sample, list) and len(sample) == 2:
        return dict(PNCounter(doc).items())
    if isinstance(sample, str):
        ledger = Ledger(doc)
        return {sale_id: ledger.get(sale_id) for sale_id in ledger.ids()}
    lww = LWWMap(doc)
    return {record: (lww.get(record) or {}).get(NOTE) for record in lww.records()}


class Client:
    """A replica's end of the sync protocol over a websockets client."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.conn = ReplicaConnection()
        self.events: list[Event] = []
        #: every ACK and UPDATE received, whatever ``wait_for`` consumed
        self.acked: list[tuple[str, int, int]] = []
        self.received: list[UpdateReceived] = []
        #: every update of a next generation received (docs the replica holds a generation behind)
        self.next_updates: list[NextGenerationUpdate] = []
        #: what the relay's GENERATIONS frame said (None: it sent none)
        self.generations: dict[str, int] | None = None

    @classmethod
    async def open(
        cls,
        port: int,
        *,
        tenant: str = "acme",
        replica: str,
        token: str,
        client_id: int,
        svs: dict[str, bytes] | None = None,
        full: bool = False,
        past: tuple[int, ...] = (),
        generations: dict[str, int] | None = None,
    ) -> Client:
        ws = await connect(f"ws://127.0.0.1:{port}/sync", max_size=None)
        client = cls(ws)
        client.conn.hello(
            tenant=tenant,
            replica_id=replica,
            token=token,
            client_id=client_id,
            state_vectors=svs or {},
            full=full,
            past_client_ids=past,
            generations=generations,
        )
        await ws.send(client.conn.data_to_send())
        return client

    async def _pump(self) -> None:
        data = await self.ws.recv()
        assert isinstance(data, bytes)
        self.conn.receive_data(data)
        events = self.conn.events()
        self.events.extend(events)
        self.acked.extend((e.doc, e.client_id, e.clock) for e in events if isinstance(e, Ack))
        self.received.extend(e for e in events if isinstance(e, UpdateReceived))
        self.next_updates.extend(e for e in events if isinstance(e, NextGenerationUpdate))

    async def wait_for(self, kind: type[E], timeout: float = 5.0) -> E:
        async def loop() -> E:
            while True:
                for i, ev in enumerate(self.events):
                    if isinstance(ev, kind):
                        del self.events[: i + 1]
                        return ev
                await self._pump()

        return await asyncio.wait_for(loop(), timeout)

    async def until_synced(self) -> tuple[Welcome, list[UpdateReceived]]:
        welcome = await self.wait_for(Welcome)
        diffs: list[UpdateReceived] = []
        while True:
            while not self.events:
                await asyncio.wait_for(self._pump(), 5)
            ev = self.events.pop(0)
            if isinstance(ev, Synced):
                return welcome, diffs
            if isinstance(ev, GenerationsAnnounced):
                self.generations = ev.generations
                continue
            if isinstance(ev, NextGenerationUpdate):
                continue  # kept in ``next_updates``
            assert isinstance(ev, UpdateReceived), ev
            diffs.append(ev)

    async def quiet(self, seconds: float = 0.2) -> list[Event]:
        """Whatever arrives within ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain_forever(), seconds)
        out, self.events = self.events, []
        return out

    async def _drain_forever(self) -> None:
        while True:
            await self._pump()

    async def send_update(self, doc: str, data: bytes) -> None:
        self.conn.send_update(doc, data)
        await self.ws.send(self.conn.data_to_send())

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        async def loop() -> None:
            try:
                while True:
                    await self._pump()
            except ConnectionClosed:
                return

        await asyncio.wait_for(loop(), timeout)
        return self.ws.close_code, self.ws.close_reason or ""

    async def close(self) -> None:
        await self.ws.close()


async def synced_pair(port: int, tokens: dict[str, str]) -> tuple[Client, Client]:
    """Stores ``t1`` (client id 11) and ``t2`` (22) of tenant ``acme``, both past SYNCED."""
    a = await Client.open(port, replica="t1", token=tokens["t1"], client_id=11)
    b = await Client.open(port, replica="t2", token=tokens["t2"], client_id=22)
    await a.until_synced()
    await b.until_synced()
    return a, b


async def follower_closed(url: str, timeout: float = 5.0) -> tuple[int | None, str]:
    """Open a y-protocols follower at ``url`` and read until the relay closes it:
    ``(close code, reason)`` (refusals come as closes, after the upgrade)."""
    async with connect(url) as ws:

        async def drain() -> None:
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await ws.recv()

        await asyncio.wait_for(drain(), timeout)
        return ws.close_code, ws.close_reason or ""


#: ``scenario(server, store, tokens)``; ``store`` is a :class:`SqliteRelayStore` unless
#: :func:`with_relay` was given another.
Scenario = Callable[[RelayServer, Any, dict[str, str]], Awaitable[Any]]


def with_relay(
    tmp_path: Path, scenario: Scenario, *, store: RelayStore | None = None, **server_args: Any
) -> Any:
    """Run ``scenario(server, store, tokens)`` against a fresh relay on port 0, on
    ``store`` (default: a new SQLite file in ``tmp_path``; closed afterwards either way)."""
    if store is None:
        store = SqliteRelayStore(str(tmp_path / "relay.db"))
    tokens = {
        name: issue_token(store, tenant=tenant, replica_id=name)
        for tenant, name in (("acme", "t1"), ("acme", "t2"), ("acme", "t3"), ("globex", "g1"))
    }

    async def main() -> Any:
        server = RelayServer(store, host="127.0.0.1", port=0, **server_args)
        await server.start()
        try:
            return await scenario(server, store, tokens)
        finally:
            await server.stop()

    try:
        return run(main())
    finally:
        store.close()
