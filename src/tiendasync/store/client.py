"""The replica's websocket client: one-shot sync and continuous background sync.

The conversation is :class:`~tiendasync.store.sync_session.ReplicaSync` (sans I/O);
this module only carries its bytes over a websocket, feeds it the local
writes committed meanwhile, and reconnects with exponential backoff and
jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any

import websockets
from websockets.asyncio.client import ClientConnection, connect

from tiendasync.errors import (
    AuthError,
    ConfigError,
    InvalidArgument,
    SyncError,
    TiendaSyncError,
    UnreachableRelay,
)
from tiendasync.protocol import MAX_FRAME_BYTES, CloseCode
from tiendasync.store.sync_session import ReplicaSync, SyncReport
from tiendasync.store.synclog import finish_session, start_session

if TYPE_CHECKING:
    from tiendasync.store.replica import Replica

__all__ = [
    "WIRE_COMPRESSION_ENV",
    "BackgroundSync",
    "SyncReport",
    "sync_once",
    "wire_compression",
]

log = logging.getLogger("tiendasync.store.client")

#: How long a keepalive ping may go unanswered before the connection counts as
#: dead.  Generous: a relay digesting a reconnect storm can be busy for a while,
#: and dropping the connection then only makes the storm longer.
KEEPALIVE_TIMEOUT_S = 60.0

#: How long a one-shot sync waits at most, once everything is acknowledged, for
#: the relay's review of the stock and sales it sent, when this replica sees them
#: break an invariant with no open conflict yet: the conflicts they open then
#: arrive in this session (and its report) rather than the next.
REVIEW_WAIT_S = 2.0

#: How often a live session looks for writes that other processes sharing the
#: store file committed (a POS worker selling while this process syncs).
OTHER_PROCESSES_POLL_S = 0.5


#: How many new sessions in a row a one-shot sync starts when the relay asks for one.
MAX_RESYNCS = 5


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


#: The environment variable that turns websocket compression off (``0``, ``off``,
#: ``false``, ``no``); on by default (``1``, ``on``, ``true``, ``yes``, or unset).
WIRE_COMPRESSION_ENV = "TIENDASYNC_WIRE_COMPRESSION"

_ON = frozenset({"", "1", "on", "true", "yes"})
_OFF = frozenset({"0", "off", "false", "no"})


def wire_compression() -> bool:
    """Whether this process offers the relay permessage-deflate (RFC 7692).

    Negotiated in the websocket handshake: a relay that does not accept the
    extension talks uncompressed, and the relay (which accepts it) talks
    uncompressed to replicas that do not offer it, so old and new peers mix.
    With the window kept across messages, a streamed 1-line sale costs about
    a fifth of its uncompressed bytes (docs/protocol.md#compression).
    Raises :class:`ConfigError` for a value of :data:`WIRE_COMPRESSION_ENV`
    that is neither on nor off.
    """
    value = os.environ.get(WIRE_COMPRESSION_ENV, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ConfigError(f"{WIRE_COMPRESSION_ENV}={value[:20]!r}: use 1/on/true/yes or 0/off/false/no")


def _ssl_for(url: str) -> ssl.SSLContext | None:
    """``wss://`` uses the system trust store, plus TIENDASYNC_CA_FILE if set."""
    if not url.startswith("wss://"):
        return None
    context = ssl.create_default_context()
    ca = os.environ.get("TIENDASYNC_CA_FILE")
    if ca:
        context.load_verify_locations(ca)
    return context


async def _run_session(
    replica: Replica,
    url: str,
    token: str,
    *,
    full: bool,
    live: bool,
    stop: asyncio.Event | None = None,
) -> SyncReport:
    """Connect and converse until done (once), stopped, or broken."""
    sync = ReplicaSync(
        replica,
        token,
        relay=url,
        full=full,
        live=live,
        review_wait=not live,
        clock=replica.core.now,
    )
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    outbox: asyncio.Queue[list[tuple[str, bytes]]] = asyncio.Queue()

    def enqueue(updates: list[tuple[str, bytes]]) -> None:
        loop.call_soon_threadsafe(outbox.put_nowait, list(updates))

    unsubscribe = replica.on_local_update(enqueue) if live else (lambda: None)
    log_id = start_session(
        replica.core, url, "full" if full else ("continuous" if live else "once")
    )
    conflicts_before = _conflict_statuses(replica)
    replica.core.set_connection_state("connecting")
    report = sync.report
    try:
        compress = wire_compression()
        try:
            ws = await connect(
                url,
                max_size=4 * MAX_FRAME_BYTES,
                open_timeout=10,
                ping_interval=replica.config.interval_s,  # (what interval_s means)
                ping_timeout=KEEPALIVE_TIMEOUT_S,
                compression="deflate" if compress else None,
                ssl=_ssl_for(url),
            )
        except (TimeoutError, OSError, websockets.InvalidURI, websockets.InvalidHandshake) as exc:
            raise UnreachableRelay(f"cannot reach relay at {url}: {_why(url, exc)}") from exc
        async with ws:
            await _converse(ws, sync, outbox, stop)
        report.outcome = "ok"
    except _Resync:
        report.outcome = "ok"
        raise
    except TiendaSyncError as exc:
        report.outcome, report.error = "error", str(exc)
        raise
    except websockets.ConnectionClosed as exc:
        report.outcome, report.error = "error", f"connection lost: {exc}"
        raise UnreachableRelay(f"connection to relay lost: {exc}") from exc
    finally:
        unsubscribe()
        report.duration_s = time.monotonic() - started
        replica.core.set_connection_state("offline", report.error)
        with contextlib.suppress(TiendaSyncError):
            opened, healed = _conflict_changes(conflicts_before, _conflict_statuses(replica))
            report.conflicts_opened = report.conflicts_seen = opened
            report.conflicts_healed = healed
            finish_session(
                replica.core,
                log_id,
                report.outcome,
                docs=report.docs,
                updates_sent=report.updates_sent,
                updates_received=report.updates_received,
                bytes_sent=report.bytes_sent,
                bytes_received=report.bytes_received,
                error=report.error,
                conflicts_opened=opened,
                conflicts_healed=healed,
            )
    return report


def _why(url: str, exc: BaseException) -> str:
    """Why a connection failed, never empty, with a hint for a TLS mismatch."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ssl.SSLError) or (
        url.startswith("wss://") and isinstance(exc, ConnectionResetError | EOFError)
    ):
        text += " (the TLS handshake failed: if the relay runs without --tls-cert, use a ws:// URL)"
    elif isinstance(exc, TimeoutError):
        text = "timed out"
    return text


def _conflict_statuses(replica: Replica) -> dict[str, str]:
    return {c.id: c.status for c in replica.conflicts.list(limit=10**9)}


def _conflict_changes(before: dict[str, str], after: dict[str, str]) -> tuple[int, int]:
    """(conflicts that opened, conflicts that closed) between two snapshots."""
    opened = sum(1 for cid, st in after.items() if st == "open" and before.get(cid) != "open")
    healed = sum(1 for cid, st in after.items() if st != "open" and before.get(cid) == "open")
    return opened, healed


async def _send(ws: ClientConnection, sync: ReplicaSync) -> None:
    data = sync.data_to_send()
    if data:
        await ws.send(data)


async def _converse(
    ws: ClientConnection,
    sync: ReplicaSync,
    outbox: asyncio.Queue[list[tuple[str, bytes]]],
    stop: asyncio.Event | None,
) -> None:
    sync.start()
    await _send(ws, sync)
    receiver: asyncio.Task[Any] = asyncio.create_task(ws.recv())
    local: asyncio.Task[Any] | None = asyncio.create_task(outbox.get()) if sync.live else None
    poller: asyncio.Task[Any] | None = (
        asyncio.create_task(asyncio.sleep(OTHER_PROCESSES_POLL_S)) if sync.live else None
    )
    stopper = asyncio.create_task(stop.wait()) if stop is not None else None
    review_until: float | None = None
    try:
        while True:
            waiting = {t for t in (receiver, local, stopper, poller) if t is not None}
            timeout = None
            if sync.awaiting_review:
                review_until = review_until or time.monotonic() + REVIEW_WAIT_S
                timeout = max(review_until - time.monotonic(), 0.0)
            done, _ = await asyncio.wait(
                waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # the review opened nothing (or is slow): end the session
                sync.end_review()
                await _send(ws, sync)
                return
            if stopper is not None and stopper in done:
                sync.stop()
                await _send(ws, sync)
                return
            if local is not None and local in done:
                batch = local.result()
                while not outbox.empty():
                    batch.extend(outbox.get_nowait())
                await _send_local(ws, sync, batch)
                local = asyncio.create_task(outbox.get())
            if poller is not None and poller in done:
                await _poll_other_processes(ws, sync)
                poller = asyncio.create_task(asyncio.sleep(OTHER_PROCESSES_POLL_S))
            if receiver in done:
                if await _on_message(ws, sync, receiver.result()):
                    return
                receiver = asyncio.create_task(ws.recv())
    finally:
        for task in (receiver, local, stopper, poller):
            if task is not None:
                task.cancel()


async def _send_local(
    ws: ClientConnection, sync: ReplicaSync, batch: list[tuple[str, bytes]]
) -> None:
    """Stream local writes, at most ``batch_size`` (the store config) per message."""
    size = sync.replica.config.batch_size
    for start in range(0, len(batch), size):
        sync.send_local(batch[start : start + size])
        await _send(ws, sync)


async def _poll_other_processes(ws: ClientConnection, sync: ReplicaSync) -> None:
    """Stream what the file's other processes wrote; start the session one of them asked for."""
    sync.send_others(sync.core.refresh())
    await _send(ws, sync)
    if sync.resync is not None:
        raise _Resync(sync.resync)
    asked = sync.core.take_sync_request()
    if asked is not None:
        sync.stop("another process of this store asked for a new session")
        await _send(ws, sync)
        raise _Resync(asked)


async def _on_message(ws: ClientConnection, sync: ReplicaSync, data: bytes | str) -> bool:
    """Feed one relay message to the session; True once a one-shot session is done."""
    sync.receive_data(data)
    await _send(ws, sync)
    if sync.error is not None:
        if sync.conn.close_code not in (None, CloseCode.NORMAL):
            code = sync.conn.close_code or CloseCode.PROTOCOL
            await ws.close(code, sync.conn.close_reason[:120])
        raise sync.error
    if sync.resync is not None:
        raise _Resync(sync.resync)
    return sync.done


def sync_once(
    replica: Replica,
    url: str | None = None,
    *,
    token: str | None = None,
    full: bool = False,
    timeout: float = 30.0,
) -> SyncReport:
    """Connect, exchange until both sides hold the same data, disconnect.

    Raises :class:`UnreachableRelay` when the relay cannot be reached,
    :class:`AuthError` when it refuses our token; local data is never lost.
    """
    url, token = _credentials(replica, url, token)
    lock = replica.core.sync_lock
    if lock.held:  # our own background sync: let it do this session
        raise InvalidArgument("background sync is running; use queue.process or stop_sync first")
    lock.acquire()
    try:
        return asyncio.run(_run_once(replica, url, token, full=full, timeout=timeout))
    finally:
        lock.release()


async def _run_once(
    replica: Replica, url: str, token: str, *, full: bool, timeout: float
) -> SyncReport:
    for _ in range(MAX_RESYNCS):
        try:
            return await asyncio.wait_for(
                _run_session(replica, url, token, full=full, live=False), timeout
            )
        except TimeoutError as exc:
            raise SyncError(f"sync with {url} did not finish within {timeout} s") from exc
        except _Resync as again:  # the relay asked for a new session: at once
            full = full or again.full
    raise SyncError(f"the relay at {url} asked for a new session {MAX_RESYNCS} times in a row")


class BackgroundSync:
    """Continuous sync on its own thread and event loop, reconnecting with backoff.

    A refused token or a forbidden write (:class:`AuthError`) is permanent:
    retrying cannot fix it, so the thread ends and :attr:`failure` holds the
    error (the connection state is ``offline`` with it as ``last_error``).
    Everything else (unreachable relay, broken connection) is retried.
    """

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
        #: The permanent error that ended the thread (None while it runs or after stop()).
        self.failure: AuthError | None = None
        self._full_next = False

    def start(self) -> None:
        """Start syncing; :class:`SyncBusy` if another process already syncs this file."""
        self.replica.core.sync_lock.acquire()
        self._thread.start()
        self._ready.wait(5)

    def stop(self, timeout: float = 10.0) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may just have closed
                loop.call_soon_threadsafe(stop.set)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self.replica.core.sync_lock.release()

    def kick(self, full: bool = False) -> None:
        """Reconnect now instead of waiting for the backoff."""
        self._full_next = self._full_next or full
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
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
            try:
                self.last_report = await _run_session(
                    self.replica, self.url, self.token, full=full, live=True, stop=self._stop
                )
                failures = 0
            except _Resync as exc:
                self._full_next = exc.full
                failures = 0
                continue
            except AuthError as exc:
                log.warning("relay refused this store; background sync stops: %s", exc)
                self.failure = exc
                return
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
            await asyncio.wait(
                waits, timeout=delay if failures else 0.05, return_when=asyncio.FIRST_COMPLETED
            )
            for task in waits:
                task.cancel()
