"""The relay's logic, sans I/O.

:class:`RelayCore` holds everything the relay decides: who may connect,
which updates are valid, what is stored, what is acknowledged and fanned out,
and what the central writer reviews.  It never touches sockets, threads or
the event loop.  The websocket server (``relay.server``) is a pump around it,
and the simulated-network tests drive it directly.

The contract with the I/O layer:

* bytes from a session's websocket go to :meth:`RelayCore.receive`;
* ``on_output(session)`` is called when a session has bytes to send
  (``session.conn.data_to_send()`` or, for y-protocols, ``session.outbox``);
* ``on_write(write)`` hands over an applied update that must be stored; the
  I/O layer stores batches (``store.append_many``) and then reports them with
  :meth:`committed` — only then are ACKs sent and the update fanned out.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pycrdt

from tiendasync.errors import ConfigError, InvalidArgument, RemoteProtocolError
from tiendasync.model.config import DEFAULT_PRIORITIES, StoreConfig
from tiendasync.model.docnames import data_type_of
from tiendasync.protocol import (
    CLOSE_AUTH,
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
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
from tiendasync.protocol.statevector import decode_state_vector, missing_from, read_varuint
from tiendasync.protocol.yjs_update import MalformedUpdate, ParsedUpdate, parse_update
from tiendasync.relay.auth import authenticate
from tiendasync.relay.broker import Broker, InProcessBroker, Unsubscribe
from tiendasync.relay.central import CENTRAL_REPLICA_ID, CentralWriter
from tiendasync.relay.docs import EMPTY_UPDATE, ApplyResult, DocCache, is_panic
from tiendasync.relay.storage import (
    AppendEntry,
    AppendResult,
    RelayStore,
    SessionRecord,
    TokenRecord,
)

__all__ = ["Grants", "PendingWrite", "RateLimits", "RelayCore", "RelaySession", "TokenBucket"]

log = logging.getLogger("tiendasync.relay")


@dataclass(frozen=True)
class Grants:
    """Which docs a replica may read and write (fnmatch patterns)."""

    read: tuple[str, ...] = ("*",)
    write: tuple[str, ...] = ("*",)

    def can_read(self, doc: str) -> bool:
        return _matches(self.read, doc)

    def can_write(self, doc: str) -> bool:
        return _matches(self.write, doc)

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> Grants:
        config = config or {}

        def patterns(key: str) -> tuple[str, ...]:
            value = config.get(key, ["*"])
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise ConfigError(f"{key} grants must be a list of patterns")
            return tuple(value)

        return cls(patterns("read"), patterns("write"))


@dataclass(frozen=True)
class RateLimits:
    """Caps the relay enforces on its clients (0 disables a limit).

    * ``max_connections_per_token``: open sessions (sync and y-protocols)
      one token may hold at once; one more is closed with
      ``CLOSE_RATE_LIMIT`` right after authentication.
    * ``max_messages_per_s`` / ``message_burst``: a token bucket per
      connection, one token per websocket message received.
    * ``max_new_connections_per_ip_per_s`` / ``new_connection_burst``: a
      token bucket per peer address, one token per websocket connection.
    """

    max_connections_per_token: int = 4
    max_messages_per_s: float = 500.0
    message_burst: int = 1000
    max_new_connections_per_ip_per_s: float = 20.0
    new_connection_burst: int = 100

    def __post_init__(self) -> None:
        for name in (
            "max_connections_per_token",
            "max_messages_per_s",
            "message_burst",
            "max_new_connections_per_ip_per_s",
            "new_connection_burst",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved.  Time is passed in."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, float(burst), now)

    def take(self, now: float, cost: float = 1.0) -> bool:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def idle(self, now: float) -> bool:
        """Would be full again at ``now`` (so forgetting it changes nothing)."""
        return self.tokens + max(0.0, now - self.stamp) * self.rate >= self.burst


#: Per-address buckets kept before the idle ones are forgotten.
_MAX_TRACKED_PEERS = 10_000


@functools.lru_cache(maxsize=65536)
def _matches(patterns: tuple[str, ...], doc: str) -> bool:
    """Whether ``doc`` matches a grant (cached: fan-out asks for every update)."""
    return patterns == ("*",) or any(fnmatch.fnmatchcase(doc, p) for p in patterns)


def _store_config(raw: dict[str, Any] | None) -> StoreConfig | None:
    if raw is None:
        return None
    return StoreConfig.from_dict({k: v for k, v in raw.items() if k not in ("read", "write")})


@dataclass
class RelaySession:
    """One connection (sync protocol or y-protocols), as the core sees it."""

    id: str
    kind: str
    record: SessionRecord
    conn: RelayConnection | None = None
    tenant: str | None = None
    replica_id: str | None = None
    grants: Grants = field(default_factory=Grants)
    owned: set[int] = field(default_factory=set)
    client_id: int | None = None
    docs: set[str] = field(default_factory=set)
    unsubscribe: Unsubscribe | None = None
    queued_bytes: int = 0
    # y-protocols sessions: whole messages to send, in order
    outbox: list[bytes] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    yjs_doc: str | None = None
    yjs_writable: bool = False
    #: id of the token the session authenticated with (the per-token cap)
    token_id: str | None = None
    #: messages-per-second bucket, created on the first message
    bucket: TokenBucket | None = None

    @property
    def open(self) -> bool:
        if self.conn is not None:
            return self.conn.state == "open"
        return self.close_code is None


@dataclass
class PendingWrite:
    """An applied update on its way to durable storage."""

    session: RelaySession | None
    tenant: str
    doc: str
    data: bytes | None
    state_vector: bytes
    fanout: bytes | None
    acks: list[int]
    replica: str | None

    def entry(self) -> AppendEntry:
        return AppendEntry(self.tenant, self.doc, self.data, self.replica, self.state_vector)


@dataclass
class ReviewWork:
    """Committed updates to merge into the central writers, then review.

    Touches only the central writers (Replicas: thread-safe), so it may run on
    a worker thread.  Updates of one document are merged into one, so a busy
    relay pays one local transaction per document, not per update, and one
    review per tenant.
    """

    writers: dict[str, CentralWriter]
    updates: dict[tuple[str, str], list[bytes]]

    def run(self) -> None:
        reviewed: set[str] = set()
        for (tenant, doc), updates in self.updates.items():
            writer = self.writers.get(tenant)
            if writer is None:
                continue
            try:
                update = updates[0] if len(updates) == 1 else bytes(pycrdt.merge_updates(*updates))
                writer.merge(doc, update, review=False)
                reviewed.add(tenant)
            except Exception:
                log.exception("central merge of %s/%s failed", tenant, doc)
        for tenant in sorted(reviewed):
            try:
                self.writers[tenant].review()
            except Exception:
                log.exception("central review of %s failed", tenant)


class RelayCore:
    """The relay's decisions, driven by the I/O layer (see the module docstring)."""

    def __init__(
        self,
        store: RelayStore,
        *,
        broker: Broker | None = None,
        max_update_bytes: int = MAX_FRAME_BYTES,
        max_outbound_bytes: int = 64 * 1024 * 1024,
        max_docs: int = 1000,
        idle_seconds: float = 600.0,
        yjs_writable: bool = False,
        central_dir: str | Path | None = None,
        invariants: Iterable[Any] = (),
        on_output: Callable[[RelaySession], None] | None = None,
        on_write: Callable[[PendingWrite], None] | None = None,
        limits: RateLimits | None = None,
        on_review: Callable[[ReviewWork], None] | None = None,
        call_soon: Callable[..., Any] | None = None,
    ) -> None:
        self.store = store
        self.limits = limits if limits is not None else RateLimits()
        self._peers: dict[str, TokenBucket] = {}
        self.broker: Broker = broker if broker is not None else InProcessBroker()
        self.max_update_bytes = max_update_bytes
        self.max_outbound_bytes = max_outbound_bytes
        self.yjs_writable = yjs_writable
        self.docs = DocCache(store, max_docs=max_docs, idle_seconds=idle_seconds)
        #: Where the per-tenant writer replicas live (None: no invariants, no conflicts).
        self.central_dir = None if central_dir is None else Path(central_dir)
        self.invariants = list(invariants)
        self.on_output: Callable[[RelaySession], None] = on_output or (lambda s: None)
        self.on_write: Callable[[PendingWrite], None] = on_write or (lambda w: None)
        #: Runs a :class:`ReviewWork` (merging committed updates into the central
        #: writers and reviewing invariants).  Default: at once, here.  The server
        #: hands it to a worker thread so a big review never stalls the event loop;
        #: the central writers are Replicas, safe to use from another thread.
        self.on_review: Callable[[ReviewWork], None] = on_review or (lambda work: work.run())
        #: How a central writer's writes (possibly made on that worker thread) get
        #: back to the core: default at once; the server uses
        #: ``loop.call_soon_threadsafe``.
        self.call_soon: Callable[..., Any] = call_soon or (lambda fn, *args: fn(*args))
        self.sessions: dict[str, RelaySession] = {}
        self.updates_total = 0
        self._central: dict[str, CentralWriter] = {}

    # -- sessions ---------------------------------------------------------------------------------

    def new_session(self, kind: str = "sync") -> RelaySession:
        session = RelaySession(
            id=secrets.token_hex(8),
            kind=kind,
            record=SessionRecord(
                session_id="",
                tenant=None,
                replica_id=None,
                started_at=time.time(),
                kind=kind or "sync",
            ),
        )
        session.record.session_id = session.id
        if kind == "sync":
            session.conn = RelayConnection()
        self.sessions[session.id] = session
        return session

    def end_session(self, session: RelaySession, *, internal_error: str | None = None) -> None:
        """Forget a session and write its sync-log row."""
        self.sessions.pop(session.id, None)
        if session.unsubscribe is not None:
            session.unsubscribe()
            session.unsubscribe = None
        rec = session.record
        if internal_error is not None:
            rec.outcome, rec.error = "error", internal_error
        rec.ended_at = time.time()
        rec.docs = len(session.docs)
        if session.conn is not None:
            rec.bytes_received = session.conn.bytes_received
            rec.bytes_sent = session.conn.bytes_sent
            code, reason = session.conn.close_code, session.conn.close_reason
        else:
            code, reason = session.close_code, session.close_reason
        if rec.outcome == "ok" and code not in (None, 1000):
            rec.outcome = (
                "rejected"
                if code in (CLOSE_AUTH, CLOSE_FORBIDDEN) and session.replica_id is None
                else "error"
            )
            rec.error = rec.error or f"{code}: {reason}"
        try:
            self.store.log_session(rec)
        except Exception:
            log.exception("cannot write the sync log of session %s", session.id)
        log.info(
            "session %s %s/%s ended: %s (in %d updates / %d bytes, out %d / %d)%s",
            session.id,
            rec.tenant,
            rec.replica_id,
            rec.outcome,
            rec.updates_received,
            rec.bytes_received,
            rec.updates_sent,
            rec.bytes_sent,
            f" [{rec.error}]" if rec.error else "",
        )

    def fail(self, session: RelaySession, code: int, reason: str) -> None:
        if session.conn is not None:
            session.conn.fail(code, reason, remote=True)
        elif session.close_code is None:
            session.close_code, session.close_reason = code, reason
        self.on_output(session)

    def connected_replicas(self, tenant: str) -> list[str]:
        """Replica ids with an open sync session for ``tenant``."""
        return sorted(
            {
                s.replica_id
                for s in self.sessions.values()
                if s.kind == "sync" and s.tenant == tenant and s.replica_id is not None and s.open
            }
        )

    def request_sync(self, tenant: str, replica_id: str, full: bool = False) -> bool:
        """Send SYNC_NOW to every open session of the replica.  False if none."""
        sent = False
        for s in list(self.sessions.values()):
            if (
                s.kind == "sync"
                and s.conn is not None
                and s.open
                and s.tenant == tenant
                and s.replica_id == replica_id
            ):
                s.conn.request_sync(full)
                self.on_output(s)
                sent = True
        return sent

    def tenants(self) -> list[str]:
        """Tenants known to this relay (from its tokens)."""
        return sorted({t.tenant for t in self.store.list_tokens() if t.tenant})

    def connection_count(self) -> int:
        return sum(1 for s in self.sessions.values() if s.open)

    # -- rate limits ----------------------------------------------------------------------------

    def admit(self, peer: str, now: float) -> str | None:
        """A new connection from address ``peer`` at ``now`` (seconds, any epoch).

        None if it may proceed, else the reason to close it with
        ``CLOSE_RATE_LIMIT`` (before any session exists or is logged).
        """
        rate = self.limits.max_new_connections_per_ip_per_s
        if not rate:
            return None
        bucket = self._peers.get(peer)
        if bucket is None:
            if len(self._peers) >= _MAX_TRACKED_PEERS:
                self._peers = {p: b for p, b in self._peers.items() if not b.idle(now)}
            burst = max(1.0, float(self.limits.new_connection_burst or rate))
            bucket = self._peers[peer] = TokenBucket.full(rate, burst, now)
        if bucket.take(now):
            return None
        return "too many new connections from this address; retry later"

    def _over_message_rate(self, session: RelaySession, now: float | None) -> bool:
        rate = self.limits.max_messages_per_s
        if now is None or not rate:
            return False
        if session.bucket is None:
            burst = max(1.0, float(self.limits.message_burst or rate))
            session.bucket = TokenBucket.full(rate, burst, now)
        return not session.bucket.take(now)

    def _over_token_cap(self, session: RelaySession, token_id: str) -> bool:
        cap = self.limits.max_connections_per_token
        if not cap:
            return False
        holding = sum(
            1
            for s in self.sessions.values()
            if s is not session and s.token_id == token_id and s.open
        )
        return holding >= cap

    # -- the sync protocol ---------------------------------------------------------------------

    def receive(
        self, session: RelaySession, message: bytes | str, now: float | None = None
    ) -> None:
        """Bytes of one websocket message of a sync session.

        ``now`` (seconds, monotonic) enables the messages-per-second limit.
        """
        conn = session.conn
        assert conn is not None
        if self._over_message_rate(session, now):
            conn.fail(
                CLOSE_RATE_LIMIT,
                f"more than {self.limits.max_messages_per_s:g} messages per second",
            )
        elif isinstance(message, str):
            conn.fail(CLOSE_PROTOCOL, "text frames are not part of the protocol")
        elif _truncated(message):
            conn.receive_data(message)  # counts the bytes; reports malformed input
            conn.fail(
                CLOSE_PROTOCOL, "truncated frame: a websocket message must carry whole frames"
            )
        else:
            conn.receive_data(message)
        for event in conn.events():
            if conn.closed and not isinstance(event, ProtocolFailure):
                break
            self._on_event(session, event)
        self.on_output(session)

    def _on_event(self, session: RelaySession, event: Event) -> None:
        conn = session.conn
        assert conn is not None
        try:
            if isinstance(event, Hello):
                self._on_hello(session, event)
            elif isinstance(event, UpdateReceived):
                self._on_update(session, event.doc, event.data)
            elif isinstance(event, ProtocolFailure):
                log.info("session %s: protocol failure %s %s", session.id, event.code, event.reason)
        except RemoteProtocolError as exc:
            conn.fail(exc.code, exc.reason)
        except Exception as exc:
            log.exception("session %s: error handling %s", session.id, type(event).__name__)
            session.record.error = f"internal error: {type(exc).__name__}"
            conn.fail(CLOSE_INTERNAL, "internal error", remote=False)

    def _on_hello(self, session: RelaySession, hello: Hello) -> None:
        conn = session.conn
        assert conn is not None
        rec = session.record
        rec.tenant, rec.replica_id = hello.tenant, hello.replica_id
        token = authenticate(self.store, hello.token)
        if (
            token is None
            or token.admin
            or token.tenant != hello.tenant
            or token.replica_id != hello.replica_id
            or hello.replica_id == CENTRAL_REPLICA_ID
        ):
            rec.outcome = "rejected"
            rec.error = "bad or revoked token"
            conn.reject(CLOSE_AUTH, "bad or revoked token")
            return
        if self._over_token_cap(session, token.id):
            rec.error = "too many connections with this token"
            conn.reject(CLOSE_RATE_LIMIT, rec.error)
            return
        foreign = self.store.claim_client_ids(
            hello.tenant, hello.replica_id, [hello.client_id, *hello.past_client_ids]
        )
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
        session.token_id = token.id
        session.client_id = hello.client_id
        session.grants = grants
        session.owned = self.store.client_ids_of(hello.tenant, hello.replica_id)
        relay_svs = {
            doc: sv
            for doc, sv in self.store.state_vectors(hello.tenant).items()
            if grants.can_read(doc)
        }
        conn.accept(session.id, relay_svs, None if config is None else config.to_dict())
        session.unsubscribe = self.broker.subscribe(
            hello.tenant, lambda d, u, o: self._on_publish(session, d, u, o), session_id=session.id
        )
        log.info(
            "session %s: %s/%s connected (client id %s)",
            session.id,
            hello.tenant,
            hello.replica_id,
            hello.client_id,
        )

        prio = config.priority if config is not None else (lambda t: DEFAULT_PRIORITIES.get(t, 0))

        def order(doc: str) -> tuple[int, str]:
            try:
                return -prio(data_type_of(doc)), doc
            except InvalidArgument:
                return 0, doc

        for doc in sorted(relay_svs, key=order):
            have = replica_svs.get(doc)
            if not (
                hello.full
                or have is None
                or missing_from(decode_state_vector(relay_svs[doc]), have)
            ):
                continue
            rdoc = self.docs.get(hello.tenant, doc)
            diff = rdoc.diff(None if hello.full or have is None else hello.state_vectors[doc])
            if conn.state != "open":
                return
            conn.send_update(doc, diff)
            rec.updates_sent += 1
            session.docs.add(doc)
        if conn.state == "open":
            conn.synced()

    def _on_update(self, session: RelaySession, doc: str, data: bytes) -> None:
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
        self._submit(
            session,
            session.tenant,
            doc,
            data,
            result,
            acks,
            session.replica_id or f"yjs:{session.id}",
        )

    def _submit(
        self,
        session: RelaySession | None,
        tenant: str,
        doc: str,
        data: bytes,
        result: ApplyResult,
        acks: list[int],
        replica: str,
    ) -> None:
        stored = None if result.duplicate else (data if result.pending else result.changed)
        self.docs.pin(tenant, doc)
        self.on_write(
            PendingWrite(
                session=session,
                tenant=tenant,
                doc=doc,
                data=stored,
                state_vector=result.state_vector,
                fanout=result.changed,
                acks=acks,
                replica=replica,
            )
        )

    def _on_publish(
        self, session: RelaySession, doc: str, update: bytes, origin: str | None
    ) -> None:
        if origin == session.id or not session.open:
            return
        if session.kind == "yjs":
            if doc != session.yjs_doc:
                return
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
            self.fail(session, CLOSE_RATE_LIMIT, "too slow to follow; reconnect to catch up")
            return
        self.on_output(session)

    # -- after storage ------------------------------------------------------------------------

    def committed(
        self, batch: list[PendingWrite], result: AppendResult | None = None, *, review: bool = True
    ) -> None:
        """``batch`` is durably stored: acknowledge, fan out, review invariants."""
        for w in batch:
            self.docs.unpin(w.tenant, w.doc)
            s = w.session
            if s is not None and s.conn is not None and s.conn.state == "open" and w.acks:
                clocks = decode_state_vector(w.state_vector)
                for client in w.acks:
                    s.conn.ack(w.doc, client, clocks.get(client, 0))
                self.on_output(s)
            if w.fanout is not None:
                self.updates_total += 1
                self.broker.publish(w.tenant, w.doc, w.fanout, None if s is None else s.id)
        if review and self.central_dir is not None:
            self._review(batch)

    def _review(self, batch: list[PendingWrite]) -> None:
        """Hand the committed batch to the central writers (see :class:`ReviewWork`)."""
        grouped: dict[tuple[str, str], list[bytes]] = {}
        for w in batch:
            if w.fanout is not None and w.replica != CENTRAL_REPLICA_ID:
                grouped.setdefault((w.tenant, w.doc), []).append(w.fanout)
        if not grouped:
            return
        writers: dict[str, CentralWriter] = {}
        for tenant in {t for t, _ in grouped}:
            try:
                writers[tenant] = self.central(tenant)  # created here, on the core's thread
            except Exception:
                log.exception("central writer of %s unavailable", tenant)
        self.on_review(ReviewWork(writers, grouped))

    def commit_failed(self, batch: list[PendingWrite], exc: BaseException) -> None:
        """Storing ``batch`` failed: memory must not hold what disk lacks."""
        for w in batch:
            self.docs.unpin(w.tenant, w.doc)
            self.docs.evict(w.tenant, w.doc)
            if w.session is not None:
                w.session.record.error = f"storage failure: {exc}"[:200]
                self.fail(w.session, CLOSE_INTERNAL, "storage failure")

    # -- the central writer (invariants, conflicts, resolutions) -----------------------------

    def central(self, tenant: str) -> CentralWriter:
        """The tenant's writer replica, opened and caught up on first use."""
        writer = self._central.get(tenant)
        if writer is not None:
            return writer
        if self.central_dir is None:
            raise ConfigError("this relay runs without a central writer (no central_dir)")
        writer = CentralWriter.open(
            self.central_dir,
            tenant,
            lambda doc, data: self.call_soon(self._ingest_central, tenant, doc, data),
            self.invariants,
        )
        foreign = self.store.claim_client_ids(tenant, CENTRAL_REPLICA_ID, sorted(writer.client_ids))
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
        parsed = parse_update(data)
        result = self.docs.apply(tenant, doc, data, _ends(parsed))
        self._submit(None, tenant, doc, data, result, [], CENTRAL_REPLICA_ID)

    def open_conflicts(self) -> int:
        return sum(len(w.conflicts(status="open", limit=10**9)) for w in self._central.values())

    def close(self) -> None:
        for writer in self._central.values():
            writer.close()
        self._central.clear()
        self.docs.clear()

    # -- y-protocols ---------------------------------------------------------------------------

    def yjs_auth(
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
                    self.store.get_replica_config(tenant, record.replica_id)
                )
            except ConfigError:
                return 403, record, Grants((), ())
        if not grants.can_read(doc):
            return 403, record, grants
        return 200, record, grants

    def yjs_open(
        self, session: RelaySession, tenant: str, doc: str, record: TokenRecord, grants: Grants
    ) -> None:
        """Start following ``doc``: our SyncStep1 goes out first."""
        if self._over_token_cap(session, record.id):
            self.fail(session, CLOSE_RATE_LIMIT, "too many connections with this token")
            return
        session.token_id = record.id
        session.tenant, session.replica_id, session.grants = tenant, record.replica_id, grants
        session.record.tenant, session.record.replica_id = tenant, record.replica_id
        session.yjs_doc = doc
        session.yjs_writable = self.yjs_writable and grants.can_write(doc)
        session.docs.add(doc)
        session.unsubscribe = self.broker.subscribe(
            tenant, lambda d, u, o: self._on_publish(session, d, u, o), session_id=session.id
        )
        session.outbox.append(pycrdt.create_sync_message(self.docs.get(tenant, doc).doc))
        self.on_output(session)

    def yjs_receive(
        self, session: RelaySession, message: bytes | str, now: float | None = None
    ) -> None:
        """One y-protocols message from a follower (``now``: see :meth:`receive`)."""
        tenant, doc = session.tenant, session.yjs_doc
        assert tenant is not None and doc is not None
        session.record.bytes_received += len(message)
        if self._over_message_rate(session, now):
            self.fail(
                session,
                CLOSE_RATE_LIMIT,
                f"more than {self.limits.max_messages_per_s:g} messages per second",
            )
            return
        if isinstance(message, str):
            self.fail(session, CLOSE_PROTOCOL, "text frames are not supported")
            return
        if message[:1] != bytes([pycrdt.YMessageType.SYNC]):
            return  # awareness and unknown message types are ignored
        if len(message) < 2:
            self.fail(session, CLOSE_PROTOCOL, "truncated sync message")
            return
        kind = message[1]
        try:
            payload = _read_var_bytes(message, 2)
        except ValueError as exc:
            self.fail(session, CLOSE_PROTOCOL, str(exc))
            return
        if kind == pycrdt.YSyncMessageType.SYNC_STEP1:
            try:
                decode_state_vector(payload)
            except ValueError:
                self.fail(session, CLOSE_PROTOCOL, "bad state vector")
                return
            rdoc = self.docs.get(tenant, doc)
            try:
                reply = pycrdt.handle_sync_message(message[1:], rdoc.doc)
            except BaseException as exc:
                if not (isinstance(exc, Exception) or is_panic(exc)):
                    raise
                self.fail(session, CLOSE_PROTOCOL, "bad state vector")
                return
            if reply is not None:
                session.outbox.append(reply)
                session.record.updates_sent += 1
                self.on_output(session)
        elif kind in (pycrdt.YSyncMessageType.SYNC_STEP2, pycrdt.YSyncMessageType.SYNC_UPDATE):
            if not session.yjs_writable or payload == EMPTY_UPDATE:
                return  # read-only endpoint: client writes are dropped
            session.record.updates_received += 1
            if len(payload) > self.max_update_bytes:
                self.fail(session, CLOSE_TOO_BIG, "update too big")
                return
            try:
                parsed = parse_update(payload)
                result = self.docs.apply(tenant, doc, payload, _ends(parsed))
            except MalformedUpdate as exc:
                self.fail(session, CLOSE_PROTOCOL, str(exc)[:300])
                return
            except RemoteProtocolError as exc:
                self.fail(session, exc.code, exc.reason)
                return
            self._submit(
                session, tenant, doc, payload, result, [], session.replica_id or f"yjs:{session.id}"
            )
        else:
            self.fail(session, CLOSE_PROTOCOL, f"unknown sync message type {kind}")


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
    length, pos = read_varuint(data, pos, "sync message")
    if pos + length != len(data):
        raise ValueError("sync message length does not match its payload")
    return data[pos : pos + length]
