"""3b. Relay throughput with light clients: the relay's own capacity.

Benchmark 3 runs K full ``Replica`` objects (SQLite, sync threads) in one
process, so on 2 cores the *clients* are the bottleneck.  Here each store is
what the peer's clients are: an in-memory pycrdt document set driven by the
sans-I/O :class:`~tiendasync.protocol.ReplicaConnection` over a websocket,
writing the same CRDT layout a replica writes (ledger record + stock slot
per sale, two updates).  The relay does all its usual work: validation,
group commit (``synchronous=FULL``), ACKs after storage, fan-out to a
follower, and the central writer's invariant review.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycrdt
from websockets.asyncio.client import ClientConnection, connect

from tiendasync.crdt import Ledger, LWWMap, PNCounter
from tiendasync.model.hlc import Timestamp
from tiendasync.protocol import Ack, ReplicaConnection, Synced, UpdateReceived, Welcome

from .common import TENANT, Relay

SKUS = 20

#: What light stores offer the relay: ``None`` (no compression, the default, as
#: the peers' clients), or ``"deflate"`` (what a real replica offers).
COMPRESSION: str | None = None


class LightStore:
    """A store without storage: pycrdt docs + the protocol state machine."""

    def __init__(self, name: str, token: str) -> None:
        self.name = name
        self.token = token
        self.client_id = secrets.randbelow(2**31) + 1
        self.conn = ReplicaConnection()
        self.docs: dict[str, pycrdt.Doc[Any]] = {}
        self.outgoing: list[tuple[str, bytes]] = []
        self.acked: dict[tuple[str, int], int] = {}
        self.synced = asyncio.Event()
        self.sales_seen = 0
        #: called with the document's name for every update received
        self.on_update: Callable[[str], None] | None = None
        #: called with (document, clock) for every ACK of this store's own writes
        self.on_ack: Callable[[str, int], None] | None = None
        self.ws: ClientConnection | None = None
        #: whether the relay took the websocket compression this store offered
        self.compressed = False

    def doc(self, name: str) -> pycrdt.Doc[Any]:
        doc = self.docs.get(name)
        if doc is None:
            doc = self.docs[name] = pycrdt.Doc(client_id=self.client_id)
            doc.observe(lambda event, n=name: self.outgoing.append((n, bytes(event.update))))
        return doc

    async def connect(self, url: str) -> None:
        self.ws = await connect(url, max_size=None, compression=COMPRESSION)
        self.compressed = any(
            ext.name == "permessage-deflate" for ext in self.ws.protocol.extensions
        )
        self.conn.hello(
            tenant=TENANT,
            replica_id=self.name,
            token=self.token,
            client_id=self.client_id,
            state_vectors={},
        )
        await self.ws.send(self.conn.data_to_send())
        asyncio.get_running_loop().create_task(self._receive())
        await asyncio.wait_for(self.synced.wait(), 60)

    async def _receive(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            assert isinstance(message, bytes)
            self.conn.receive_data(message)
            for event in self.conn.events():
                if isinstance(event, Synced):
                    self.synced.set()
                elif isinstance(event, Ack):
                    key = (event.doc, event.client_id)
                    self.acked[key] = max(self.acked.get(key, 0), event.clock)
                    if self.on_ack is not None and event.client_id == self.client_id:
                        self.on_ack(event.doc, event.clock)
                elif isinstance(event, UpdateReceived):
                    self.sales_seen += event.doc.startswith("sales/")
                    if self.on_update is not None:
                        self.on_update(event.doc)
                elif not isinstance(event, Welcome):
                    raise RuntimeError(f"{self.name}: {event}")

    async def flush(self) -> None:
        assert self.ws is not None
        for doc, data in self.outgoing:
            self.conn.send_update(doc, data)
        self.outgoing.clear()
        data = self.conn.data_to_send()
        if data:
            await self.ws.send(data)

    def clock(self, doc: str) -> int:
        return _clock(self.docs[doc], self.client_id)

    def all_acked(self) -> bool:
        return all(self.acked.get((d, self.client_id), 0) >= self.clock(d) for d in self.docs)


def _clock(doc: pycrdt.Doc[Any], client_id: int) -> int:
    from tiendasync.protocol.statevector import decode_state_vector

    return decode_state_vector(bytes(doc.get_state())).get(client_id, 0)


async def setup(
    url: str, tokens: dict[str, str], k: int
) -> tuple[LightStore, LightStore, list[LightStore]]:
    """HQ (which writes the catalog), the follower and K stores, connected, stock received."""
    hq = LightStore("hq", tokens["hq"])
    await hq.connect(url)
    catalog = LWWMap(hq.doc("catalog"))
    with hq.doc("catalog").transaction():
        for i in range(SKUS):
            catalog.set(
                f"SKU-{i:05d}",
                {"name": f"Producto {i}", "price_cents": 450},
                Timestamp(int(time.time() * 1000), i, "hq"),
            )
    await hq.flush()
    follower = LightStore("follower", tokens["follower"])
    await follower.connect(url)
    stores = [LightStore(f"store-{i:02d}", tokens[f"store-{i:02d}"]) for i in range(k)]
    for s in stores:
        await s.connect(url)
    for s in stores:  # stock first, so that no sale breaks an invariant
        stock = PNCounter(s.doc(f"stock/{s.name}"))
        with s.doc(f"stock/{s.name}").transaction():
            for i in range(SKUS):
                stock.add(f"SKU-{i:05d}", 10**9)
        await s.flush()
    return hq, follower, stores


def period() -> str:
    """The month of the sales documents (``sales/<store>/<period>``)."""
    return time.strftime("%Y-%m", time.gmtime())


async def _stream(
    url: str, tokens: dict[str, str], k: int, per_store: int, timeout: float
) -> dict[str, Any]:
    hq, follower, stores = await setup(url, tokens, k)
    month = period()
    t0 = time.monotonic()
    views = [(s, s.doc(f"sales/{s.name}/{month}"), s.doc(f"stock/{s.name}")) for s in stores]
    ledgers = [Ledger(ledger_doc) for _, ledger_doc, _ in views]
    counters = [PNCounter(stock_doc) for _, _, stock_doc in views]
    for n in range(per_store):
        for i, (s, ledger_doc, stock_doc) in enumerate(views):
            sku = f"SKU-{(n + i) % SKUS:05d}"
            with ledger_doc.transaction():
                ledgers[i].add(
                    f"{int(time.time() * 1000):011x}-{n:x}-{s.client_id:x}",
                    {"by": s.name, "l": [[sku, 1, 450]]},
                )
            with stock_doc.transaction():
                counters[i].add(sku, -1)
            await s.flush()
        await asyncio.sleep(0)
    produced = time.monotonic()
    total = k * per_store
    deadline = t0 + timeout
    while time.monotonic() < deadline:
        if follower.sales_seen >= total and all(s.all_acked() for s in stores):
            break
        await asyncio.sleep(0.005)
    end = time.monotonic()
    done = follower.sales_seen >= total and all(s.all_acked() for s in stores)
    for s in [hq, follower, *stores]:
        if s.ws is not None:
            await s.ws.close()
    return {
        "k": k,
        "sales": total,
        "elapsed_s": end - t0,
        "produce_s": produced - t0,
        "sales_per_s": total / (end - t0),
        "complete": done,
        "follower_sales": follower.sales_seen,
    }


def light_stream(
    workdir: Path, k: int, per_store: int, timeout: float, *, module: str = "tiendasync"
) -> dict[str, Any]:
    """K light stores stream ``per_store`` sales each through a relay subprocess.

    ``module``: what runs the relay (see :class:`~benchmarks.common.Relay`).
    """
    workdir = workdir / f"b3-light-k{k}-{module.replace('.', '-')}"
    workdir.mkdir(parents=True, exist_ok=True)
    # The per-connection message rate limit (a policy against floods, 500/s by
    # default) is lifted: this measures capacity, and one light client can
    # produce thousands of messages per second.
    relay = Relay(workdir, extra_args=("--max-msgs-per-s", "0"), module=module)
    try:
        relay.start()
        names = [f"store-{i:02d}" for i in range(k)]
        tokens = relay.tokens(["hq", "follower", *names])
        relay.read_only_own_docs(names)  # stores do not follow each other: one follower
        result = asyncio.run(_stream(relay.url, tokens, k, per_store, timeout))
        result["relay_rss_kb"] = relay.rss_kb()[0]
        return result
    finally:
        relay.stop()
