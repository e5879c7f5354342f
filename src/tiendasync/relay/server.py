"""The relay server: websockets in, validated CRDT updates stored and fanned out.

One asyncio process.  Per websocket connection on ``/sync`` (or ``/``) a
sans-I/O :class:`~tiendasync.protocol.RelayConnection` drives the
conversation; this module turns its events into authentication, validation,
storage, acknowledgements and fan-out:

* HELLO: the token must be live and bound to exactly (tenant, replica); the
  replica's Yjs client ids are registered to it (globally unique).  WELCOME
  carries the relay's state vector of every doc the replica may read, then
  catch-up diffs follow, highest data-type priority first, then SYNCED.
* UPDATE: doc name, write grant, size, Yjs structure (``parse_update``) and
  ownership (every struct the relay lacks must be written by one of the
  sender's client ids) are checked; the update is applied to the relay doc,
  committed by the single writer task (group commit: everything that arrived
  meanwhile goes in one transaction), and only then ACKed and published to
  the tenant's other sessions that may read the doc.

Any validation failure closes that connection only, with a close code and a
reason.  ``/yjs/<tenant>/<doc>?token=...`` speaks the standard y-protocols
sync protocol for one doc (read-only unless ``yjs_writable=True``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import http
import logging
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import msgpack
import pycrdt
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.http11 import Request, Response

from ..central import CENTRAL_REPLICA_ID, CentralWriter
from ..config import DEFAULT_PRIORITIES, StoreConfig
from ..docnames import data_type_of
from ..errors import ConfigError, InvalidArgument, RemoteProtocolError
from ..protocol import (
    CLOSE_AUTH,
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_RATE_LIMIT,
    CLOSE_TOO_BIG,
    MAX_FRAME_BYTES,
    Event,
    Hello,
    ProtocolFailure,
    RelayConnection,
    UpdateReceived,
)
from ..statevector import decode_state_vector, missing_from
from ..yjs_update import MalformedUpdate, ParsedUpdate, parse_update
from .auth import authenticate
from .broker import Broker, InProcessBroker, Unsubscribe
from .docs import EMPTY_UPDATE, ApplyResult, DocCache, compact, is_panic
from .store import AppendEntry, RelayStore, SessionRecord, TokenRecord

__all__ = ["Grants", "RelayServer"]

log = logging.getLogger("tiendasync.relay")

_VALID_CLOSE = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}


def _close_code(code: int | None) -> int:
    if code is None:
        return CLOSE_NORMAL
    return code if code in _VALID_CLOSE or 3000 <= code <= 4999 else CLOSE_PROTOCOL


def _close_reason(reason: str) -> str:
    """A websocket close reason must fit in 123 UTF-8 bytes."""
    return reason.encode("utf-8")[:123].decode("utf-8", "ignore")


@dataclass(frozen=True)
class Grants:
    """Which docs a replica may read and write (fnmatch patterns)."""

    read: tuple[str, ...] = ("*",)
    write: tuple[str, ...] = ("*",)

    def can_read(self, doc: str) -> bool:
        return any(fnmatch.fnmatchcase(doc, p) for p in self.read)

    def can_write(self, doc: str) -> bool:
        return any(fnmatch.fnmatchcase(doc, p) for p in self.write)

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> Grants:
        config = config or {}

        def patterns(key: str) -> tuple[str, ...]:
            value = config.get(key, ["*"])
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise ConfigError(f"{key} grants must be a list of patterns")
            return tuple(value)

        return cls(patterns("read"), patterns("write"))


def _store_config(raw: dict[str, Any] | None) -> StoreConfig | None:
    if raw is None:
        return None
    return StoreConfig.from_dict({k: v for k, v in raw.items() if k not in ("read", "write")})


@dataclass
class _Session:
    """One websocket session (sync protocol or y-protocols)."""

    id: str
    kind: str
    ws: ServerConnection
    record: SessionRecord
    conn: RelayConnection | None = None
    tenant: str | None = None
    replica_id: str | None = None
    grants: Grants = field(default_factory=Grants)
    owned: set[int] = field(default_factory=set)
    client_id: int | None = None
    docs: set[str] = field(default_factory=set)
    unsubscribe: Unsubscribe | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    flush_scheduled: bool = False
    queued_bytes: int = 0
    close_sent: bool = False
    # y-protocols sessions: whole messages to send, in order
    outbox: list[bytes] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    @property
    def open(self) -> bool:
        if self.conn is not None:
            return self.conn.state == "open"
        return self.close_code is None


@dataclass
class _Write:
    """An applied update on its way to durable storage."""

    session: _Session | None
    tenant: str
    doc: str
    data: bytes | None
    state_vector: bytes
    fanout: bytes | None
    acks: list[int]
    replica: str | None


class RelayServer:
    """The relay.  ``await start()``, serve, ``await stop()``.

    ``store`` is owned by the caller (the server never closes it).  Pass
    ``port=0`` to bind a free port; :attr:`port` is the real one after start.
    """

    def __init__(
        self,
        store: RelayStore,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        broker: Broker | None = None,
        max_update_bytes: int = MAX_FRAME_BYTES,
        max_message_bytes: int = 4 * MAX_FRAME_BYTES,
        max_outbound_bytes: int = 64 * 1024 * 1024,
        max_batch: int = 1000,
        compact_threshold: int = 1000,
        max_docs: int = 1000,
        idle_seconds: float = 600.0,
        yjs_writable: bool = False,
        central_dir: str | Path | None = None,
        invariants: Iterable[Any] = (),
    ) -> None:
        self.store = store
        #: Where the per-tenant writer replicas live (None: no invariants, no conflicts).
        self.central_dir = None if central_dir is None else Path(central_dir)
        self.invariants = list(invariants)
        self._central: dict[str, CentralWriter] = {}
        self.updates_total = 0
        self.host = host
        self._requested_port = port
        self.broker: Broker = broker if broker is not None else InProcessBroker()
        self.max_update_bytes = max_update_bytes
        self.max_message_bytes = max_message_bytes
        self.max_outbound_bytes = max_outbound_bytes
        self.max_batch = max_batch
        self.compact_threshold = compact_threshold
        self.yjs_writable = yjs_writable
        self.docs = DocCache(store, max_docs=max_docs, idle_seconds=idle_seconds)
        self._server: Server | None = None
        self._queue: asyncio.Queue[_Write | None] | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._sweeper_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._compacting: set[tuple[str, str]] = set()
        self._sessions: dict[str, _Session] = {}
        self.port: int = port

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("relay already started")
        self._queue = asyncio.Queue()
        self._writer_task = asyncio.create_task(self._writer(), name="relay-writer")
        self._sweeper_task = asyncio.create_task(self._sweeper(), name="relay-sweeper")
        self._server = await serve(
            self._handler, self.host, self._requested_port,
            process_request=self._process_request,
            max_size=self.max_message_bytes,
        )
        sockets = list(self._server.sockets)
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("relay listening on ws://%s:%s/sync", self.host, self.port)

    async def stop(self) -> None:
        """Close every connection, commit what is queued, stop.  Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        await server.wait_closed()
        if self._queue is not None and self._writer_task is not None:
            await self._queue.put(None)
            await self._writer_task
        if self._sweeper_task is not None:
            self._sweeper_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper_task
        for task in list(self._tasks):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
        if self._queue is not None and not self._queue.empty():
            batch = []
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not None:
                    batch.append(item)
            if batch:
                await self._commit(batch, review=False)
        for writer in self._central.values():
            writer.close()
        self._central.clear()
        self.docs.clear()

    async def __aenter__(self) -> RelayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self, stop: asyncio.Event) -> None:
        """Start, wait until ``stop`` is set, stop."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    # -- administration -----------------------------------------------------------------------

    def connected_replicas(self, tenant: str) -> list[str]:
        """Replica ids with an open sync session for ``tenant``."""
        return sorted({
            s.replica_id for s in self._sessions.values()
            if s.kind == "sync" and s.tenant == tenant and s.replica_id is not None and s.open
        })

    def request_sync(self, tenant: str, replica_id: str, full: bool = False) -> bool:
        """Send SYNC_NOW to every open session of the replica.  False if none."""
        sent = False
        for s in list(self._sessions.values()):
            if (s.kind == "sync" and s.conn is not None and s.open and s.tenant == tenant
                    and s.replica_id == replica_id):
                s.conn.request_sync(full)
                self._schedule_flush(s)
                sent = True
        return sent

    # -- the central writer (invariants, conflicts, resolutions) -----------------------------

    def central(self, tenant: str) -> CentralWriter:
        """The tenant's writer replica, opened and caught up on first use."""
        writer = self._central.get(tenant)
        if writer is not None:
            return writer
        if self.central_dir is None:
            raise ConfigError("this relay runs without a central writer (no central_dir)")
        writer = CentralWriter.open(self.central_dir, tenant,
                                    lambda doc, data: self._ingest_central(tenant, doc, data),
                                    self.invariants)
        foreign = self.store.claim_client_ids(tenant, CENTRAL_REPLICA_ID,
                                              sorted(writer.client_ids))
        if foreign:
            writer.close()
            raise ConfigError(f"client id {foreign[0]} of the central writer is taken")
        self._central[tenant] = writer
        for doc in self.store.state_vectors(tenant):
            diff = self.docs.get(tenant, doc).diff(writer.state_vector(doc))
            writer.merge(doc, diff, review=False)
        own = writer.client_ids
        for doc in writer.replica.doc_names():  # what the writer made that we lack
            relay_sv = self.docs.get(tenant, doc).state_vector()
            relay = decode_state_vector(relay_sv)
            mine = decode_state_vector(writer.replica.state_vector(doc))
            if any(c in own and k > relay.get(c, 0) for c, k in mine.items()):
                self._ingest_central(tenant, doc, writer.replica.diff(doc, relay_sv))
        writer.review()
        return writer

    def _ingest_central(self, tenant: str, doc: str, data: bytes) -> None:
        """Store and fan out a write of the central writer, like a replica's."""
        assert self._queue is not None
        parsed = parse_update(data)
        result = self.docs.apply(tenant, doc, data, _ends(parsed))
        stored = None if result.duplicate else (data if result.pending else result.changed)
        self.docs.pin(tenant, doc)
        self._queue.put_nowait(_Write(
            session=None, tenant=tenant, doc=doc, data=stored,
            state_vector=result.state_vector, fanout=result.changed, acks=[],
            replica=CENTRAL_REPLICA_ID,
        ))

    def tenants(self) -> list[str]:
        """Tenants known to this relay (from its tokens)."""
        return sorted({t.tenant for t in self.store.list_tokens() if t.tenant})

    def queue_depth(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    def connection_count(self) -> int:
        return sum(1 for s in self._sessions.values() if s.open)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- HTTP routing ---------------------------------------------------------------------------

    @staticmethod
    def _route(raw_path: str) -> tuple[str, str | None, str | None, str | None]:
        """``("sync"|"yjs"|"", tenant, doc, token)``."""
        parts = urlsplit(raw_path)
        if parts.path in ("/", "/sync"):
            return "sync", None, None, None
        if parts.path.startswith("/yjs/"):
            segments = [unquote(s) for s in parts.path[len("/yjs/"):].split("/")]
            token = parse_qs(parts.query).get("token", [None])[0]
            if len(segments) >= 2 and all(segments):
                return "yjs", segments[0], "/".join(segments[1:]), token
        return "", None, None, None

    def _yjs_auth(
        self, tenant: str | None, doc: str | None, token: str | None
    ) -> tuple[int, TokenRecord | None, Grants]:
        """HTTP status (200 if fine), the token record and the grants."""
        if tenant is None or doc is None:
            return 404, None, Grants()
        try:
            data_type_of(doc)
        except InvalidArgument:
            return 404, None, Grants()
        record = authenticate(self.store, token) if token else None
        if record is None or not (record.admin or record.tenant == tenant):
            return 401, None, Grants()
        grants = Grants()
        if not record.admin and record.replica_id is not None:
            try:
                grants = Grants.from_config(
                    self.store.get_replica_config(tenant, record.replica_id))
            except ConfigError:
                return 403, record, Grants((), ())
        if not grants.can_read(doc):
            return 403, record, grants
        return 200, record, grants

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        kind, tenant, doc, token = self._route(request.path)
        if kind == "sync":
            return None
        if kind == "yjs":
            status, _, _ = self._yjs_auth(tenant, doc, token)
            if status == 200:
                return None
            code = http.HTTPStatus(status)
            return connection.respond(code, code.phrase + "\n")
        return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")

    async def _handler(self, ws: ServerConnection) -> None:
        kind, tenant, doc, token = self._route(ws.request.path if ws.request else "/")
        session = _Session(
            id=secrets.token_hex(8), kind=kind, ws=ws,
            record=SessionRecord(session_id="", tenant=None, replica_id=None,
                                 started_at=time.time(), kind=kind or "sync"),
        )
        session.record.session_id = session.id
        self._sessions[session.id] = session
        try:
            if kind == "yjs" and tenant is not None and doc is not None:
                await self._serve_yjs(session, tenant, doc, token)
            else:
                await self._serve_sync(session)
        except Exception as exc:  # a bug must not take the relay down
            log.exception("session %s failed", session.id)
            session.record.outcome = "error"
            session.record.error = f"internal error: {type(exc).__name__}"
            with contextlib.suppress(Exception):
                await ws.close(CLOSE_INTERNAL, "internal error")
        finally:
            self._end_session(session)

    def _end_session(self, session: _Session) -> None:
        self._sessions.pop(session.id, None)
        if session.unsubscribe is not None:
            session.unsubscribe()
            session.unsubscribe = None
        rec = session.record
        rec.ended_at = time.time()
        rec.docs = len(session.docs)
        if session.conn is not None:
            rec.bytes_received = session.conn.bytes_received
            rec.bytes_sent = session.conn.bytes_sent
            code, reason = session.conn.close_code, session.conn.close_reason
        else:
            code, reason = session.close_code, session.close_reason
        if rec.outcome == "ok" and code not in (None, CLOSE_NORMAL):
            rec.outcome = "rejected" if code in (CLOSE_AUTH, CLOSE_FORBIDDEN) and \
                session.replica_id is None else "error"
            rec.error = rec.error or f"{code}: {reason}"
        try:
            self.store.log_session(rec)
        except Exception:
            log.exception("cannot write the sync log of session %s", session.id)
        log.info("session %s %s/%s ended: %s (in %d updates / %d bytes, out %d / %d)%s",
                 session.id, rec.tenant, rec.replica_id, rec.outcome, rec.updates_received,
                 rec.bytes_received, rec.updates_sent, rec.bytes_sent,
                 f" [{rec.error}]" if rec.error else "")

    # -- sending --------------------------------------------------------------------------------

    async def _flush(self, session: _Session) -> None:
        """Send what the session has queued; close the socket once it failed."""
        async with session.lock:
            ws = session.ws
            try:
                if session.conn is not None:
                    data = session.conn.data_to_send()
                    session.queued_bytes = 0
                    if data and not session.close_sent:
                        await ws.send(data)
                    closed = session.conn.closed
                    code, reason = session.conn.close_code, session.conn.close_reason
                else:
                    while session.outbox and not session.close_sent:
                        message = session.outbox.pop(0)
                        session.record.bytes_sent += len(message)
                        await ws.send(message)
                    session.queued_bytes = 0
                    closed = session.close_code is not None
                    code, reason = session.close_code, session.close_reason
                if closed and not session.close_sent:
                    session.close_sent = True
                    await ws.close(_close_code(code), _close_reason(reason))
            except (ConnectionClosed, WebSocketException, OSError):
                session.close_sent = True

    def _schedule_flush(self, session: _Session) -> None:
        if session.flush_scheduled:
            return
        session.flush_scheduled = True

        async def run() -> None:
            session.flush_scheduled = False
            await self._flush(session)

        self._spawn(run())

    def _fail(self, session: _Session, code: int, reason: str) -> None:
        if session.conn is not None:
            session.conn.fail(code, reason, remote=True)
        elif session.close_code is None:
            session.close_code, session.close_reason = code, reason
        self._schedule_flush(session)

    # -- the sync protocol ------------------------------------------------------------------------

    async def _serve_sync(self, session: _Session) -> None:
        conn = session.conn = RelayConnection()
        ws = session.ws
        try:
            async for message in ws:
                if isinstance(message, str):
                    conn.fail(CLOSE_PROTOCOL, "text frames are not part of the protocol")
                elif _truncated(message):
                    conn.receive_data(message)  # counts the bytes; reports malformed input
                    conn.fail(CLOSE_PROTOCOL, "truncated frame: a websocket message must "
                              "carry whole frames")
                else:
                    conn.receive_data(message)
                for event in conn.events():
                    if conn.closed and not isinstance(event, ProtocolFailure):
                        break
                    await self._on_event(session, event)
                await self._flush(session)
                if conn.closed:
                    break
        except ConnectionClosed:
            pass
        await self._flush(session)

    async def _on_event(self, session: _Session, event: Event) -> None:
        conn = session.conn
        assert conn is not None
        try:
            if isinstance(event, Hello):
                await self._on_hello(session, event)
            elif isinstance(event, UpdateReceived):
                self._on_update(session, event.doc, event.data)
            elif isinstance(event, ProtocolFailure):
                log.info("session %s: protocol failure %s %s", session.id,
                         event.code, event.reason)
        except RemoteProtocolError as exc:
            conn.fail(exc.code, exc.reason)
        except Exception as exc:
            log.exception("session %s: error handling %s", session.id, type(event).__name__)
            session.record.error = f"internal error: {type(exc).__name__}"
            conn.fail(CLOSE_INTERNAL, "internal error", remote=False)

    async def _on_hello(self, session: _Session, hello: Hello) -> None:
        conn = session.conn
        assert conn is not None
        rec = session.record
        rec.tenant, rec.replica_id = hello.tenant, hello.replica_id
        token = authenticate(self.store, hello.token)
        if (token is None or token.admin or token.tenant != hello.tenant
                or token.replica_id != hello.replica_id):
            rec.outcome = "rejected"
            rec.error = "bad or revoked token"
            conn.reject(CLOSE_AUTH, "bad or revoked token")
            return
        foreign = self.store.claim_client_ids(
            hello.tenant, hello.replica_id, [hello.client_id, *hello.past_client_ids])
        if foreign:
            rec.outcome = "rejected"
            rec.error = f"client id {foreign[0]} belongs to another replica"
            conn.reject(CLOSE_FORBIDDEN, rec.error)
            return
        raw_config = self.store.get_replica_config(hello.tenant, hello.replica_id)
        try:
            grants = Grants.from_config(raw_config)
            config = _store_config(raw_config)
        except ConfigError as exc:
            log.error("replica %s/%s has a bad config: %s", hello.tenant, hello.replica_id, exc)
            grants, config = Grants((), ()), None
        replica_svs: dict[str, dict[int, int]] = {}
        for doc, sv in hello.state_vectors.items():
            try:
                replica_svs[doc] = decode_state_vector(sv)
            except ValueError:
                conn.fail(CLOSE_PROTOCOL, f"bad state vector for document {doc[:100]!r}")
                return
        session.tenant, session.replica_id = hello.tenant, hello.replica_id
        session.client_id = hello.client_id
        session.grants = grants
        session.owned = self.store.client_ids_of(hello.tenant, hello.replica_id)
        relay_svs = {doc: sv for doc, sv in self.store.state_vectors(hello.tenant).items()
                     if grants.can_read(doc)}
        conn.accept(session.id, relay_svs, None if config is None else config.to_dict())
        session.unsubscribe = self.broker.subscribe(
            hello.tenant, lambda d, u, o: self._on_publish(session, d, u, o),
            session_id=session.id)
        log.info("session %s: %s/%s connected (client id %s)", session.id, hello.tenant,
                 hello.replica_id, hello.client_id)
        await self._flush(session)

        prio = config.priority if config is not None else (
            lambda t: DEFAULT_PRIORITIES.get(t, 0))

        def order(doc: str) -> tuple[int, str]:
            try:
                return -prio(data_type_of(doc)), doc
            except InvalidArgument:
                return 0, doc

        for doc in sorted(relay_svs, key=order):
            have = replica_svs.get(doc)
            if not (hello.full or have is None
                    or missing_from(decode_state_vector(relay_svs[doc]), have)):
                continue
            rdoc = self.docs.get(hello.tenant, doc)
            diff = rdoc.diff(None if hello.full or have is None else hello.state_vectors[doc])
            if conn.state != "open":
                return
            conn.send_update(doc, diff)
            rec.updates_sent += 1
            session.docs.add(doc)
            await self._flush(session)
        if conn.state == "open":
            conn.synced()
            await self._flush(session)

    def _on_update(self, session: _Session, doc: str, data: bytes) -> None:
        conn = session.conn
        assert conn is not None and session.tenant is not None
        session.record.updates_received += 1
        session.docs.add(doc)
        try:
            data_type_of(doc)
        except InvalidArgument:
            conn.fail(CLOSE_PROTOCOL, f"bad document name {doc[:100]!r}")
            return
        if not session.grants.can_write(doc):
            conn.fail(CLOSE_FORBIDDEN, f"no write access to {doc[:100]!r}")
            return
        if len(data) > self.max_update_bytes:
            conn.fail(CLOSE_TOO_BIG, f"update of {len(data)} bytes is over the limit")
            return
        try:
            parsed = parse_update(data)
        except MalformedUpdate as exc:
            conn.fail(CLOSE_PROTOCOL, str(exc)[:300])
            return
        rdoc = self.docs.get(session.tenant, doc)
        clocks = rdoc.clocks()
        for r in parsed.structs:
            if r.client not in session.owned and r.end > clocks.get(r.client, 0):
                conn.fail(CLOSE_FORBIDDEN, "update contains items of another writer")
                return
        try:
            result = self.docs.apply(session.tenant, doc, data, _ends(parsed))
        except RemoteProtocolError as exc:
            conn.fail(exc.code, exc.reason)
            return
        acks = sorted(c for c in parsed.writer_clients if c in session.owned)
        if not acks and session.client_id is not None:
            # delete-only (or redundant) update: confirm the current incarnation's clock
            acks = [session.client_id]
        self._enqueue(session, doc, data, result, acks)

    def _enqueue(self, session: _Session, doc: str, data: bytes, result: ApplyResult,
                 acks: list[int]) -> None:
        assert self._queue is not None and session.tenant is not None
        stored = None if result.duplicate else (data if result.pending else result.changed)
        self.docs.pin(session.tenant, doc)
        self._queue.put_nowait(_Write(
            session=session, tenant=session.tenant, doc=doc, data=stored,
            state_vector=result.state_vector, fanout=result.changed, acks=acks,
            replica=session.replica_id or f"yjs:{session.id}",
        ))

    def _on_publish(self, session: _Session, doc: str, update: bytes, origin: str | None) -> None:
        if origin == session.id or not session.open:
            return
        if session.kind == "yjs":
            session.outbox.append(pycrdt.create_update_message(update))
        else:
            if not session.grants.can_read(doc):
                return
            assert session.conn is not None
            session.conn.send_update(doc, update)
            session.docs.add(doc)
        session.record.updates_sent += 1
        session.queued_bytes += len(update)
        if session.queued_bytes > self.max_outbound_bytes:
            self._fail(session, CLOSE_RATE_LIMIT, "too slow to follow; reconnect to catch up")
            return
        self._schedule_flush(session)

    # -- group commit ------------------------------------------------------------------------------

    async def _writer(self) -> None:
        assert self._queue is not None
        queue = self._queue
        stopping = False
        while not stopping:
            item = await queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    nxt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            await self._commit(batch)

    async def _commit(self, batch: list[_Write], *, review: bool = True) -> None:
        entries = [AppendEntry(w.tenant, w.doc, w.data, w.replica, w.state_vector)
                   for w in batch]
        try:
            result = await asyncio.to_thread(self.store.append_many, entries)
        except Exception as exc:
            log.exception("commit of %d updates failed", len(batch))
            for w in batch:
                self.docs.unpin(w.tenant, w.doc)
                self.docs.evict(w.tenant, w.doc)  # memory must not hold what disk lacks
                if w.session is not None:
                    w.session.record.error = f"storage failure: {exc}"[:200]
                    self._fail(w.session, CLOSE_INTERNAL, "storage failure")
            return
        for w in batch:
            self.docs.unpin(w.tenant, w.doc)
            s = w.session
            if s is not None and s.conn is not None and s.conn.state == "open" and w.acks:
                clocks = decode_state_vector(w.state_vector)
                for client in w.acks:
                    s.conn.ack(w.doc, client, clocks.get(client, 0))
                self._schedule_flush(s)
            if w.fanout is not None:
                self.updates_total += 1
                self.broker.publish(w.tenant, w.doc, w.fanout,
                                    None if s is None else s.id)
        if review and self.central_dir is not None:
            for w in batch:
                if w.fanout is not None and w.replica != CENTRAL_REPLICA_ID:
                    try:
                        self.central(w.tenant).merge(w.doc, w.fanout)
                    except Exception:
                        log.exception("central review of %s/%s failed", w.tenant, w.doc)
        for key, count in result.log_counts.items():
            if count >= self.compact_threshold and key not in self._compacting:
                self._compacting.add(key)
                self._spawn(self._compact(*key))

    async def _compact(self, tenant: str, doc: str) -> None:
        try:
            folded = await asyncio.to_thread(compact, self.store, tenant, doc)
            log.info("compacted %s/%s: %d updates folded into a snapshot", tenant, doc, folded)
        except Exception:
            log.exception("compaction of %s/%s failed", tenant, doc)
        finally:
            self._compacting.discard((tenant, doc))

    async def _sweeper(self) -> None:
        interval = max(0.5, min(60.0, self.docs.idle_seconds / 2))
        while True:
            await asyncio.sleep(interval)
            self.docs.sweep()

    # -- y-protocols ---------------------------------------------------------------------------

    async def _serve_yjs(self, session: _Session, tenant: str, doc: str,
                         token: str | None) -> None:
        ws = session.ws
        status, record, grants = self._yjs_auth(tenant, doc, token)
        if status != 200 or record is None:
            await ws.close(CLOSE_AUTH if status == 401 else CLOSE_FORBIDDEN,
                           "bad or revoked token" if status == 401 else "forbidden")
            return
        session.tenant, session.replica_id, session.grants = tenant, record.replica_id, grants
        session.record.tenant, session.record.replica_id = tenant, record.replica_id
        session.docs.add(doc)
        session.unsubscribe = self.broker.subscribe(
            tenant, lambda d, u, o: self._on_publish(session, d, u, o) if d == doc else None,
            session_id=session.id)
        rdoc = self.docs.get(tenant, doc)
        session.outbox.append(pycrdt.create_sync_message(rdoc.doc))
        await self._flush(session)
        writable = self.yjs_writable and grants.can_write(doc)
        try:
            async for message in ws:
                session.record.bytes_received += len(message)
                if isinstance(message, str):
                    self._fail(session, CLOSE_PROTOCOL, "text frames are not supported")
                elif message[:1] == bytes([pycrdt.YMessageType.SYNC]):
                    self._on_yjs_sync(session, tenant, doc, message, writable)
                # awareness and unknown message types are ignored
                await self._flush(session)
                if session.close_code is not None:
                    break
        except ConnectionClosed:
            pass
        if session.close_code is None:
            session.close_code, session.close_reason = CLOSE_NORMAL, ""
            session.close_sent = True

    def _on_yjs_sync(self, session: _Session, tenant: str, doc: str, message: bytes,
                     writable: bool) -> None:
        if len(message) < 2:
            self._fail(session, CLOSE_PROTOCOL, "truncated sync message")
            return
        kind = message[1]
        try:
            payload = _read_var_bytes(message, 2)
        except ValueError as exc:
            self._fail(session, CLOSE_PROTOCOL, str(exc))
            return
        if kind == pycrdt.YSyncMessageType.SYNC_STEP1:
            try:
                decode_state_vector(payload)
            except ValueError:
                self._fail(session, CLOSE_PROTOCOL, "bad state vector")
                return
            rdoc = self.docs.get(tenant, doc)
            try:
                reply = pycrdt.handle_sync_message(message[1:], rdoc.doc)
            except BaseException as exc:
                if not (isinstance(exc, Exception) or is_panic(exc)):
                    raise
                self._fail(session, CLOSE_PROTOCOL, "bad state vector")
                return
            if reply is not None:
                session.outbox.append(reply)
                session.record.updates_sent += 1
        elif kind in (pycrdt.YSyncMessageType.SYNC_STEP2, pycrdt.YSyncMessageType.SYNC_UPDATE):
            if not writable or payload == EMPTY_UPDATE:
                return  # read-only endpoint: client writes are dropped
            session.record.updates_received += 1
            if len(payload) > self.max_update_bytes:
                self._fail(session, CLOSE_TOO_BIG, "update too big")
                return
            try:
                parsed = parse_update(payload)
                result = self.docs.apply(tenant, doc, payload, _ends(parsed))
            except MalformedUpdate as exc:
                self._fail(session, CLOSE_PROTOCOL, str(exc)[:300])
                return
            except RemoteProtocolError as exc:
                self._fail(session, exc.code, exc.reason)
                return
            self._enqueue(session, doc, payload, result, [])
        else:
            self._fail(session, CLOSE_PROTOCOL, f"unknown sync message type {kind}")


def _truncated(message: bytes) -> bool:
    """True if ``message`` ends inside a msgpack object.

    Over websockets every message carries whole frames (see
    ``protocol.frames``), so a partial frame at the end of a message is an
    error now rather than a stall.  Malformed bytes are left to the decoder.
    """
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(message), 1))
    unpacker.feed(message)
    whole = 0
    try:
        while True:
            unpacker.skip()
            whole = unpacker.tell()
    except msgpack.OutOfData:
        return whole != len(message)
    except Exception:
        return False


def _ends(parsed: ParsedUpdate) -> dict[int, int]:
    """Per client, the highest clock an update's structs or deletes reach."""
    ends: dict[int, int] = {}
    for r in (*parsed.structs, *parsed.deletes):
        if r.length:
            ends[r.client] = max(ends.get(r.client, 0), r.end)
    return ends


def _read_var_bytes(data: bytes, pos: int) -> bytes:
    """A lib0 ``varUint8Array`` at ``pos`` that must end the message."""
    length = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated sync message")
        byte = data[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 63:
            raise ValueError("bad length in sync message")
    if pos + length != len(data):
        raise ValueError("sync message length does not match its payload")
    return data[pos:pos + length]
