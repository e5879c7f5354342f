"""The replica's websocket client: one-shot sync and continuous background sync.

The conversation itself is :class:`~tiendasync.protocol.ReplicaConnection`
(sans I/O); this module only moves its bytes over a websocket, applies what
arrives to the :class:`~tiendasync.Replica`, and streams new local writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from .errors import (
    AuthError,
    ConfigError,
    ProtocolError,
    RemoteProtocolError,
    SyncError,
    TiendaSyncError,
    UnreachableRelay,
)
from .protocol import (
    CLOSE_AUTH,
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    MAX_FRAME_BYTES,
    Ack,
    ConnectionClosed,
    ProtocolFailure,
    ReplicaConnection,
    Synced,
    SyncRequested,
    UpdateReceived,
    Welcome,
)
from .statevector import decode_state_vector, encode_state_vector

if TYPE_CHECKING:
    from .replica import Replica

__all__ = ["BackgroundSync", "SyncReport", "sync_once"]

log = logging.getLogger("tiendasync.client")


@dataclass
class SyncReport:
    """What one sync session did."""

    relay: str
    session_id: str = ""
    updates_sent: int = 0
    updates_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    docs: int = 0
    acknowledged: int = 0
    conflicts_seen: int = 0
    duration_s: float = 0.0
    outcome: str = "running"
    error: str | None = None
    received_docs: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["received_docs"] = sorted(self.received_docs)
        return out


class _Resync(Exception):
    """The relay asked for a (full) sync: end this session and start another."""

    def __init__(self, full: bool) -> None:
        super().__init__("resync requested")
        self.full = full


def _credentials(replica: Replica, url: str | None, token: str | None) -> tuple[str, str]:
    url = url or replica.config.relay_url
    token = token or replica.relay_token
    if not url:
        raise ConfigError("no relay URL: pass url= or set it with configure(relay_url=...)")
    if not token:
        raise ConfigError("no relay token: pass token= or save one with set_relay_token()")
    return url, token


class _Session:
    """One websocket session between a replica and the relay."""

    def __init__(self, replica: Replica, url: str, token: str, *, full: bool, live: bool) -> None:
        self.replica = replica
        self.url = url
        self.token = token
        self.full = full
        self.live = live
        self.conn = ReplicaConnection(max_frame_bytes=MAX_FRAME_BYTES)
        self.report = SyncReport(relay=url)
        self.own_ids = replica.own_client_ids()
        self.expected: dict[tuple[str, int], int] = {}
        self.acked: dict[tuple[str, int], int] = {}
        self.synced = False
        self.outbox: asyncio.Queue[list[tuple[str, bytes]]] = asyncio.Queue()
        self.ws: ClientConnection | None = None

    # -- the conversation --------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None) -> SyncReport:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        def enqueue(updates: list[tuple[str, bytes]]) -> None:
            loop.call_soon_threadsafe(self.outbox.put_nowait, list(updates))

        unsubscribe = self.replica.on_local_update(enqueue)
        log_id = self.replica.log._start(self.url, "full" if self.full else
                                         ("continuous" if self.live else "once"))
        self.replica._set_connection_state("connecting")
        try:
            try:
                ws = await connect(self.url, max_size=MAX_FRAME_BYTES + 4096, open_timeout=10,
                                   ping_interval=20, ping_timeout=20, compression=None)
            except (TimeoutError, OSError, websockets.InvalidURI,
                    websockets.InvalidHandshake) as exc:
                raise UnreachableRelay(f"cannot reach relay at {self.url}: {exc}") from exc
            self.ws = ws
            async with ws:
                await self._converse(ws, stop)
            self.report.outcome = "ok"
        except _Resync:
            self.report.outcome = "ok"
            raise
        except TiendaSyncError as exc:
            self.report.outcome, self.report.error = "error", str(exc)
            raise
        except websockets.ConnectionClosed as exc:
            self.report.outcome = "error"
            self.report.error = f"connection lost: {exc}"
            raise UnreachableRelay(f"connection to relay lost: {exc}") from exc
        finally:
            unsubscribe()
            self.report.duration_s = time.monotonic() - started
            self.report.bytes_sent = self.conn.bytes_sent
            self.report.bytes_received = self.conn.bytes_received
            self.replica._set_connection_state("offline", self.report.error)
            try:
                r = self.report
                self.replica.log._finish(
                    log_id, r.outcome, docs=r.docs, updates_sent=r.updates_sent,
                    updates_received=r.updates_received, bytes_sent=r.bytes_sent,
                    bytes_received=r.bytes_received, error=r.error,
                )
            except TiendaSyncError:
                log.exception("could not write the sync log")
        return self.report

    async def _converse(self, ws: ClientConnection, stop: asyncio.Event | None) -> None:
        replica = self.replica
        svs = {} if self.full else {d: replica.state_vector(d) for d in replica.doc_names()}
        self.conn.hello(
            tenant=replica.tenant, replica_id=replica.replica_id, token=self.token,
            client_id=replica.client_id, state_vectors=svs, full=self.full,
            past_client_ids=tuple(sorted(self.own_ids - {replica.client_id})),
        )
        await self._flush(ws)
        sender = asyncio.create_task(self._stream(ws)) if self.live else None
        stopper = asyncio.create_task(stop.wait()) if stop is not None else None
        try:
            while not self.conn.closed:
                if not self.live and self.synced and self._all_acked():
                    self.conn.bye("synced")
                    await self._flush(ws)
                    return
                receiver = asyncio.create_task(ws.recv())
                waiting: set[asyncio.Task[Any]] = {receiver}
                if stopper is not None:
                    waiting.add(stopper)
                if sender is not None:
                    waiting.add(sender)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if receiver not in done:
                    receiver.cancel()
                    if sender is not None and sender in done:
                        sender.result()  # re-raise what killed the sender
                    self.conn.bye("stopping")
                    await self._flush(ws)
                    return
                message = receiver.result()
                if isinstance(message, str):
                    self.conn.fail(1003, "text frames are not part of the protocol",
                                   remote=True)
                else:
                    self.conn.receive_data(message)
                await self._handle_events(ws)
                await self._flush(ws)
        finally:
            for task in (sender, stopper):
                if task is not None:
                    task.cancel()

    async def _handle_events(self, ws: ClientConnection) -> None:
        for event in self.conn.events():
            if isinstance(event, Welcome):
                self.report.session_id = event.session_id
                if event.config:
                    self.replica._apply_central_config(event.config)
                self._send_catch_up(event.state_vectors)
                self.replica._set_connection_state("syncing")
            elif isinstance(event, UpdateReceived):
                try:
                    changed = self.replica.apply_remote(event.doc, event.data)
                except RemoteProtocolError as exc:
                    self.conn.fail(exc.code, exc.reason, remote=False)
                    continue
                self.report.updates_received += 1
                if changed:
                    self.report.received_docs.add(event.doc)
                    if event.doc == "conflicts":
                        self.report.conflicts_seen += 1
            elif isinstance(event, Ack):
                key = (event.doc, event.client_id)
                self.acked[key] = max(self.acked.get(key, 0), event.clock)
                self.report.acknowledged += self.replica.queue._acknowledge(
                    event.doc, event.client_id, event.clock
                )
            elif isinstance(event, Synced):
                self.synced = True
                if self.live:
                    self.replica._set_connection_state("online")
            elif isinstance(event, SyncRequested):
                raise _Resync(event.full)
            elif isinstance(event, ProtocolFailure):
                if event.code == CLOSE_AUTH:
                    raise AuthError(f"relay refused us: {event.reason}")
                if event.code == CLOSE_FORBIDDEN:
                    raise AuthError(f"relay forbids this: {event.reason}")
                if event.code == CLOSE_INTERNAL:
                    raise SyncError(f"relay error: {event.reason}")
                raise ProtocolError(event.reason, event.code)
            elif isinstance(event, ConnectionClosed):
                raise UnreachableRelay(f"relay closed the session: {event.reason}")

    def _send_catch_up(self, relay_svs: dict[str, bytes]) -> None:
        """Send, in priority order, what the relay lacks of our own writes."""
        config = self.replica.config
        docs = sorted(self.replica.doc_names(),
                      key=lambda d: (-config.priority(_data_type(d)), d))
        self.report.docs = len(docs)
        for doc in docs:
            local = decode_state_vector(self.replica.state_vector(doc))
            relay = decode_state_vector(relay_svs[doc]) if doc in relay_svs else {}
            ours = {c: k for c, k in local.items() if c in self.own_ids and k > relay.get(c, 0)}
            if not ours and not self.full:
                continue
            # Claim the relay has every other writer's items: the relay only
            # accepts our own items from us, and the diff still carries deletes.
            target = {c: (relay.get(c, 0) if c in self.own_ids else k) for c, k in local.items()}
            update = self.replica.diff(doc, encode_state_vector(target))
            self.conn.send_update(doc, update)
            self.report.updates_sent += 1
            for client, clock in ours.items():
                self.expected[(doc, client)] = clock
        self.replica.queue._mark_sent()

    def _all_acked(self) -> bool:
        return all(self.acked.get(key, 0) >= clock for key, clock in self.expected.items())

    async def _stream(self, ws: ClientConnection) -> None:
        """Send local writes as they are committed (live mode)."""
        while True:
            batch = await self.outbox.get()
            while not self.outbox.empty():
                batch.extend(self.outbox.get_nowait())
            if self.conn.closed:
                return
            if self.conn.state not in ("catching_up", "live"):
                continue  # before WELCOME: the catch-up diff will carry them
            for doc, data in batch:
                self.conn.send_update(doc, data)
                self.report.updates_sent += 1
            await self._flush(ws)
            self.replica.queue._mark_sent()

    async def _flush(self, ws: ClientConnection) -> None:
        data = self.conn.data_to_send()
        if data:
            await ws.send(data)
        if self.conn.closed and self.conn.close_code not in (None, 1000):
            await ws.close(self.conn.close_code or 1002, self.conn.close_reason[:120])


def _data_type(doc: str) -> str:
    from .docnames import data_type_of

    return data_type_of(doc)


def sync_once(
    replica: Replica, url: str | None = None, *, token: str | None = None,
    full: bool = False, timeout: float = 30.0,
) -> SyncReport:
    """Connect, exchange until both sides hold the same data, disconnect.

    Raises :class:`UnreachableRelay` when the relay cannot be reached,
    :class:`AuthError` when it refuses our token; local data is never lost.
    """
    url, token = _credentials(replica, url, token)

    async def run() -> SyncReport:
        session = _Session(replica, url, token, full=full, live=False)
        try:
            return await asyncio.wait_for(session.run(), timeout)
        except TimeoutError as exc:
            raise SyncError(f"sync with {url} did not finish within {timeout} s") from exc
        except _Resync:
            return session.report

    return asyncio.run(run())


class BackgroundSync:
    """Continuous sync on its own thread and event loop, reconnecting with backoff."""

    def __init__(self, replica: Replica, url: str | None, *, token: str | None) -> None:
        self.replica = replica
        self.url, self.token = _credentials(replica, url, token)
        self._thread = threading.Thread(target=self._run, name="tiendasync-sync", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._ready = threading.Event()
        self.sessions = 0
        self.last_report: SyncReport | None = None
        self._full_next = False

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(5)

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may just have closed
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def kick(self, full: bool = False) -> None:
        """Reconnect now instead of waiting for the backoff (or resync if connected)."""
        self._full_next = self._full_next or full
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._ready.set()
        failures = 0
        while not self._stop.is_set():
            full, self._full_next = self._full_next, False
            session = _Session(self.replica, self.url, self.token, full=full, live=True)
            try:
                self.last_report = await session.run(self._stop)
                failures = 0
            except _Resync as exc:
                self._full_next = exc.full
                failures = 0
                continue
            except AuthError as exc:
                log.error("sync stopped retrying quickly: %s", exc)
                failures = max(failures + 1, 6)
            except TiendaSyncError as exc:
                log.info("sync session ended: %s", exc)
                failures += 1
            except Exception:  # never let the sync thread die silently
                log.exception("unexpected error in sync session")
                failures += 1
            finally:
                self.sessions += 1
            if self._stop.is_set():
                break
            config = self.replica.config
            delay = min(config.backoff_max_s, config.backoff_min_s * 2 ** min(failures, 16))
            delay *= random.uniform(0.5, 1.0)
            self._wake.clear()
            waits = [asyncio.create_task(self._stop.wait()), asyncio.create_task(self._wake.wait())]
            await asyncio.wait(waits, timeout=delay if failures else 0.05,
                               return_when=asyncio.FIRST_COMPLETED)
            for task in waits:
                task.cancel()
