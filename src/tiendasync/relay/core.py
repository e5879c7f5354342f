"""The relay's decisions, sans I/O: :class:`RelayCore` and the parts it wires together.

:class:`RelayCore` holds everything the relay decides: who may connect,
which updates are valid, what is stored, what is acknowledged and fanned
out, and what the central writer reviews.  It never touches sockets,
threads, the event loop, the clock or randomness: the wall clock
(``clock``) and session ids (``random_id``) are passed to the constructor,
rate-limit times per call, and what storage says about a HELLO or a
y-protocols token is looked up by the pump (``relay.lookups``) and passed
in.  The websocket server (``relay.server``) is a pump around it; the
simulated-network tests drive it directly.

The parts, one concern each: ``policy`` (grants, rate limits), ``sessions``
(the sync protocol), ``followers`` (y-protocols), ``fanout`` (submission,
acks, publication), ``reviews`` (the central writers; pump side, opened on
first use).  Relay docs are loaded from storage by the :class:`DocCache`
when first used.

The contract with the I/O layer:

* bytes from a sync session's websocket go to :meth:`RelayCore.receive`; a
  HELLO it returns is answered with :meth:`authenticated` and
  :meth:`welcome` (``lookups.answer_hello`` shows the steps);
* ``on_output(session)`` is called when a session has bytes to send
  (``session.conn.data_to_send()`` or, for y-protocols, ``session.outbox``);
* ``on_write(write)`` hands over an applied update that must be stored; the
  I/O layer asks :meth:`storable` which writes of a batch may still be stored,
  stores those (``store.append_many``) and then reports them with
  :meth:`committed` -- only then are ACKs sent and the update fanned out --
  or, if storing failed, with :meth:`commit_failed`;
* :meth:`retry_reviews` is called now and then: central reviews that failed
  (their directory's storage) are retried;
* :meth:`end_session` returns the sync-log row for the pump to store.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tiendasync.errors import ConfigError
from tiendasync.protocol import (
    CLOSE_AUTH,
    CLOSE_FORBIDDEN,
    CLOSE_NORMAL,
    MAX_FRAME_BYTES,
    Hello,
    RelayConnection,
)
from tiendasync.protocol.yprotocols import REFUSALS as FOLLOWER_REFUSALS
from tiendasync.relay.broker import Broker, InProcessBroker
from tiendasync.relay.central import CentralWriter
from tiendasync.relay.docs import DocCache
from tiendasync.relay.fanout import Fanout
from tiendasync.relay.followers import Followers
from tiendasync.relay.generations import Carried, Generations, carry_outcome, ownership_check
from tiendasync.relay.ownership import OwnershipGate, writer_of
from tiendasync.relay.policy import Grants, Policy, RateLimits, TokenBucket
from tiendasync.relay.reviews import CentralReviews, ReviewWork
from tiendasync.relay.sessions import LateHandler, SyncSessions, send_away
from tiendasync.relay.state import FollowerFacts, HelloFacts, PendingWrite, RelaySession, fail
from tiendasync.relay.storage import AppendResult, RelayStore, SessionRecord, TokenRecord

__all__ = [
    "Grants",
    "PendingWrite",
    "RateLimits",
    "RelayCore",
    "RelaySession",
    "ReviewWork",
    "TokenBucket",
]

log = logging.getLogger("tiendasync.relay")


class RelayCore:
    """The relay's decisions, driven by the I/O layer (see the module docstring).

    ``clock()`` is the wall clock (seconds since the epoch) stamped on the
    sync log; ``random_id()`` draws a session id (unique among live
    sessions).  ``store`` only backs the doc cache and the central writers.
    ``client_id_source`` and ``central_wall_clock`` (milliseconds since the epoch)
    are passed to the central writers' replicas (default: the system's).
    """

    def __init__(
        self,
        store: RelayStore,
        *,
        clock: Callable[[], float],
        random_id: Callable[[], str],
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
        client_id_source: Callable[[int], int] | None = None,
        on_late: LateHandler | None = None,
        central_wall_clock: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.random_id = random_id
        self.policy = Policy(limits)
        self.broker: Broker = broker if broker is not None else InProcessBroker()
        lim = self.policy.limits
        self.docs = DocCache(
            store,
            max_docs=max_docs,
            idle_seconds=idle_seconds,
            gap_seconds=lim.max_gap_seconds,
            gap_bytes=lim.max_gap_bytes,
            gap_updates=lim.max_gap_updates,
        )
        self.on_output: Callable[[RelaySession], None] = on_output or (lambda s: None)
        self.on_write: Callable[[PendingWrite], None] = on_write or (lambda w: None)
        self.sessions: dict[str, RelaySession] = {}
        #: documents being rolled over while the relay runs (see :meth:`begin_rollover`)
        self._rolling: set[tuple[str, str]] = set()
        #: tenants whose rows read from other relay nodes during a cut were not reviewed
        self._review_missed: set[str] = set()
        self._rollover_epochs: dict[str, int] = {}
        self.fanout = Fanout(
            self.docs,
            self.broker,
            max_outbound_bytes=max_outbound_bytes,
            on_output=lambda s: self.on_output(s),
            on_write=lambda w: self.on_write(w),
            policy=self.policy,
        )
        self.gate = OwnershipGate(self.docs, clock=clock)
        self.sync = SyncSessions(
            self.docs,
            self.fanout,
            self.policy,
            self.sessions,
            max_update_bytes=max_update_bytes,
            on_output=lambda s: self.on_output(s),
            gate=self.gate,
            on_late=on_late,
        )
        self.followers = Followers(
            self.docs,
            self.fanout,
            self.policy,
            self.sessions,
            writable=yjs_writable,
            max_update_bytes=max_update_bytes,
            on_output=lambda s: self.on_output(s),
            gate=self.gate,
            claim=store.claim_client_ids,
        )
        #: Told ``(tenant, doc, generation)`` when storage shows ``doc`` at a newer
        #: generation than this relay served (another relay node cut it): the pump
        #: moves the central writer over (:meth:`generation_seen` did the rest).
        self.on_moved: Callable[[str, str, int], None] = lambda tenant, doc, gen: None
        self.docs.on_generation = self.generation_seen
        #: The tenants' central writers (None: no invariants, no conflicts).
        self.reviews = (
            None
            if central_dir is None
            else CentralReviews(
                central_dir,
                store,
                self.docs,
                self._ingest_central,
                invariants=invariants,
                client_id_source=client_id_source,
                wall_clock=central_wall_clock,
            )
        )

    @property
    def limits(self) -> RateLimits:
        return self.policy.limits

    @property
    def central_dir(self) -> Path | None:
        """Where the per-tenant writer replicas live (None: no invariants, no conflicts)."""
        return None if self.reviews is None else self.reviews.directory

    @property
    def updates_total(self) -> int:
        return self.fanout.updates_total

    # -- sessions ---------------------------------------------------------------------------

    def new_session(self, kind: str = "sync") -> RelaySession:
        session_id = self.random_id()
        while session_id in self.sessions:
            session_id = self.random_id()
        record = SessionRecord(session_id, None, None, started_at=self.clock(), kind=kind or "sync")
        session = RelaySession(id=session_id, kind=kind, record=record)
        if kind == "sync":
            session.conn = RelayConnection()
        self.sessions[session.id] = session
        return session

    def end_session(
        self, session: RelaySession, *, internal_error: str | None = None
    ) -> SessionRecord:
        """Forget a session; returns its sync-log row (the pump stores it)."""
        self.sessions.pop(session.id, None)
        if session.unsubscribe is not None:
            session.unsubscribe()
            session.unsubscribe = None
        if session.kind == "yjs":
            self.followers.closed(session)
        rec = session.record
        if internal_error is not None:
            rec.outcome, rec.error = "error", internal_error
        rec.ended_at = self.clock()
        rec.docs = len(session.docs)
        if session.conn is not None:
            rec.bytes_received = session.conn.bytes_received
            rec.bytes_sent = session.conn.bytes_sent
            code, reason = session.conn.close_code, session.conn.close_reason
        else:
            code, reason = session.close_code, session.close_reason
        if rec.outcome == "ok" and code not in (None, CLOSE_NORMAL):
            rejected = code in (CLOSE_AUTH, CLOSE_FORBIDDEN) and session.replica_id is None
            if session.kind == "yjs":
                rejected = code in FOLLOWER_REFUSALS
            rec.outcome = "rejected" if rejected else "error"
            rec.error = rec.error or f"{code}: {reason}"
        log.info(
            "session %s %s/%s ended: %s "
            "(received %d updates / %d bytes, sent %d updates / %d bytes)%s",
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
        return rec

    def fail(self, session: RelaySession, code: int, reason: str) -> None:
        fail(session, code, reason)
        self.on_output(session)

    def open_token_ids(self) -> set[str]:
        """The tokens that open sessions were authenticated with."""
        return {s.token_id for s in self.sessions.values() if s.open and s.token_id is not None}

    def close_revoked(self, revoked: set[str]) -> int:
        """Close every open session whose token is in ``revoked`` (``4001``); returns how many."""
        closing = [s for s in self.sessions.values() if s.open and s.token_id in revoked]
        for session in closing:
            log.warning(
                "closing session %s: its token %s was revoked", session.id, session.token_id
            )
            if session.kind == "yjs":
                self.followers.revoke(session)
            else:
                self.fail(session, CLOSE_AUTH, "token revoked")
        return len(closing)

    def connected_replicas(self, tenant: str) -> list[str]:
        """Replica ids with an open sync session for ``tenant``."""
        return sorted(
            {
                s.replica_id
                for s in self.sessions.values()
                if s.kind == "sync" and s.tenant == tenant and s.replica_id is not None and s.open
            }
        )

    def connected_pairs(self) -> list[tuple[str, str]]:
        """(tenant, replica id) of every open sync session, sorted, each pair once."""
        return sorted(
            {
                (s.tenant, s.replica_id)
                for s in self.sessions.values()
                if s.kind == "sync" and s.tenant is not None and s.replica_id is not None and s.open
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

    def connection_count(self) -> int:
        return sum(1 for s in self.sessions.values() if s.open)

    # -- a rollover while the relay runs (relay.generations, docs/generations.md) -------------

    def begin_rollover(self, tenant: str, doc: str) -> int:
        """Stop every use of ``doc`` that its cut would break; returns how many
        sessions were closed.  The steps, which the pump drives::

            core.begin_rollover(tenant, doc)
            ...                                 # every queued write committed, late
                                                # updates of ``doc`` carried
            core.hold_central(tenant)
            ...                                 # the reviews handed over so far run
            generations.roll_over(tenant, doc)  # the cut, in storage
            core.end_rollover(tenant, doc)

        Every sync session of ``tenant`` that may read or write ``doc`` is asked
        for a new session (SYNC_NOW, then BYE): what it sends after this is not
        read, and it comes back at once with a HELLO that tells ``doc``'s old
        generation, so it moves over like a store that was offline.  Followers of
        ``doc`` are closed for good (4410: their copy is the old generation; they
        reload).  Until :meth:`end_rollover` the central writer's writes to ``doc``
        are not taken (it carries them over when it follows the cut), and the pump must
        not welcome a HELLO of ``tenant`` looked up before (:meth:`rollover_epoch`)
        or during (:meth:`rolling`) the rollover.
        """
        self._rolling.add((tenant, doc))
        self._rollover_epochs[tenant] = self._rollover_epochs.get(tenant, 0) + 1
        return self._send_users_away(tenant, doc)

    def _send_users_away(self, tenant: str, doc: str, below: int | None = None) -> int:
        """Send every open session of ``tenant`` that may use ``doc`` (at a generation
        under ``below``; None: any) to a new session, a follower of it closed (4410):
        how many."""
        reason = f"{doc[:100]} moved to a new generation: reconnect"
        closed = 0
        for session in list(self.sessions.values()):
            if session.tenant != tenant or not session.open:
                continue
            if below is not None and session.generations.get(doc, 0) >= below:
                continue
            if session.kind == "yjs":
                if session.yjs_doc == doc:
                    self.followers.moved(session, f"{doc[:100]} moved to a new generation: reload")
                    closed += 1
            elif session.conn is not None and (
                session.grants.can_read(doc) or session.grants.can_write(doc)
            ):
                send_away(session, reason)
                self.on_output(session)
                closed += 1
        return closed

    def generation_seen(self, tenant: str, doc: str, generation: int) -> None:
        """Storage holds ``doc`` at ``generation``, newer than this relay knew (the
        doc cache dropped its older copy): every session of ``tenant`` that may use an
        older one is sent to a new session, as :meth:`begin_rollover` does (a follower:
        closed, 4410), and :attr:`on_moved` is told.

        On a cluster another node's cut reaches this one so (its notice, a read of
        the others' rows, a refused commit, a load, a HELLO's facts); a lone relay
        sees here the cuts it made itself, whose sessions it sent away before.
        """
        closed = self._send_users_away(tenant, doc, below=generation)
        if closed:
            log.info(
                "%s/%s is at generation %d: %d session(s) sent to a new one",
                tenant,
                doc,
                generation,
                closed,
            )
        if (tenant, doc) not in self._rolling:
            self.on_moved(tenant, doc, generation)

    def hold_central(self, tenant: str) -> bool:
        """Hand what was committed so far to ``tenant``'s central writer, then hold its
        reviews until :meth:`end_rollover`; whether there is a writer to wait for (the
        pump lets the reviews handed over run before the cut)."""
        if self.reviews is None:
            return False
        self.reviews.flush()
        self.reviews.hold(tenant)
        return True

    def end_rollover(self, tenant: str, doc: str) -> None:
        """The cut of ``doc`` is stored (or failed): serve it again, from storage; once
        no document of ``tenant`` is being cut, its central writer moves over in place."""
        self._rolling.discard((tenant, doc))
        self.docs.evict(tenant, doc)
        if self.reviews is not None and not self.rolling(tenant):
            self.reviews.follow(tenant)
            if tenant in self._review_missed:
                self._review_missed.discard(tenant)
                self.reviews.catch_up(tenant)

    def reviewable(self, tenant: str, doc: str) -> bool:
        """Whether rows of ``doc`` another relay node stored may be handed to the review
        now.  Not during this relay's cut of ``doc``: those of the old generation are in
        the cut's seed, which the central writer adopts (merged too, they would count
        twice); once the cut is stored (or failed) the writer catches up from storage."""
        if (tenant, doc) not in self._rolling:
            return True
        self._review_missed.add(tenant)
        return False

    def rolling(self, tenant: str) -> bool:
        """Whether a document of ``tenant`` is being rolled over now."""
        return any(t == tenant for t, _ in self._rolling)

    def rollover_epoch(self, tenant: str) -> int:
        """How many rollovers of ``tenant`` began here: a HELLO looked up before a
        change of it is looked up again (its facts may tell the old generation)."""
        return self._rollover_epochs.get(tenant, 0)

    def _ingest_central(self, tenant: str, doc: str, data: bytes) -> None:
        if (tenant, doc) in self._rolling:
            # Made on the generation being cut: the writer carries it when it follows.
            log.info("%s/%s: a central write during its rollover is carried later", tenant, doc)
            return
        self.fanout.ingest_central(tenant, doc, data)

    def admit(self, peer: str, now: float) -> str | None:
        """A new connection from address ``peer`` at ``now`` (seconds, any epoch).

        None if it may proceed, else the reason to close it with
        ``CLOSE_RATE_LIMIT`` (before any session exists or is logged).
        """
        return self.policy.admit(peer, now)

    # -- the sync protocol (see relay.sessions) -----------------------------------------------

    def receive(
        self, session: RelaySession, message: bytes | str, now: float | None = None
    ) -> Hello | None:
        """Bytes of one websocket message of a sync session.

        ``now`` (seconds, monotonic) enables the messages-per-second limit.
        Returns the HELLO to answer (:meth:`authenticated`, :meth:`welcome`), if any.
        """
        return self.sync.receive(session, message, now)

    def authenticated(
        self,
        session: RelaySession,
        hello: Hello,
        token: TokenRecord | None,
        refused: str | None = None,
    ) -> bool:
        """The token storage returned for ``hello`` (``refused``: why none): False if refused."""
        return self.sync.authenticated(session, hello, token, refused)

    def welcome(
        self, session: RelaySession, hello: Hello, token: TokenRecord, facts: HelloFacts
    ) -> None:
        """What storage says about ``hello`` (``lookups.lookup_hello``): welcome or refuse."""
        self.sync.welcome(session, hello, token, facts)

    def lookup_failed(self, session: RelaySession, exc: BaseException) -> None:
        self.sync.lookup_failed(session, exc)

    # -- y-protocols (see relay.followers) ------------------------------------------------------

    def yjs_auth(
        self, tenant: str | None, doc: str | None, facts: FollowerFacts
    ) -> tuple[int, TokenRecord | None, Grants]:
        """HTTP status (200 if fine), the token record and the grants."""
        return self.followers.authorize(tenant, doc, facts)

    def yjs_open(
        self, session: RelaySession, tenant: str, doc: str, record: TokenRecord, grants: Grants
    ) -> None:
        """Start following ``doc``: our SyncStep1 goes out first."""
        self.followers.open(session, tenant, doc, record, grants)

    def yjs_receive(
        self, session: RelaySession, message: bytes | str, now: float | None = None
    ) -> None:
        """One y-protocols message from a follower (``now``: see :meth:`receive`)."""
        self.followers.receive(session, message, now)

    def yjs_refuse(
        self,
        session: RelaySession,
        tenant: str | None,
        doc: str | None,
        status: int,
        record: TokenRecord | None,
    ) -> None:
        """Close a follower :meth:`yjs_auth` refused, with a code y-websocket does not retry."""
        self.followers.refuse(session, tenant, doc, status, record)

    def yjs_tick(self, now: float) -> None:
        """Every few seconds (``now``: monotonic): keepalives for idle followers."""
        self.followers.tick(now)

    # -- after storage (see relay.fanout, relay.reviews) ----------------------------------------

    def storable(self, batch: list[PendingWrite]) -> list[PendingWrite]:
        """The writes of ``batch`` that may be stored; the stale ones are failed here
        (applied on top of a write whose commit failed: see ``Fanout.storable``)."""
        live = self.fanout.storable(batch)
        if self.reviews is not None and len(live) != len(batch):
            self.reviews.relay_write_failed([w for w in batch if w.stale])
        return live

    def committed(
        self, batch: list[PendingWrite], result: AppendResult | None = None, *, review: bool = True
    ) -> None:
        """``batch`` is durably stored: acknowledge, fan out, review invariants."""
        self.fanout.committed(batch)
        if review and self.reviews is not None:
            # A write stored just before another node's cut is in the next generation's
            # seed, which the central writer adopts: merged there too, it would count twice.
            self.reviews.review([w for w in batch if self.fanout.current(w)])

    def flush_reviews(self) -> None:
        """Hand the committed updates gathered for review to the central writers now
        (``CentralReviews.flush``; the pump calls it before it stops)."""
        if self.reviews is not None:
            self.reviews.flush()

    def commit_failed(self, batch: list[PendingWrite], exc: BaseException) -> None:
        """Storing ``batch`` failed: memory must not hold what disk lacks.

        Its docs are reloaded from storage, nothing of it is acknowledged, its
        sessions are closed (their replicas send it again), and a central
        writer whose write was in it re-offers it at :meth:`retry_reviews`.
        """
        self.fanout.commit_failed(batch, exc)
        if self.reviews is not None:
            self.reviews.relay_write_failed(batch)

    def late_stored(
        self,
        session: RelaySession,
        doc: str,
        acks: list[int],
        clocks: dict[int, int],
        carry: bytes | None,
    ) -> None:
        """A late update of ``session`` (see ``on_late``) and its carry are stored:
        acknowledge it (``clocks``: the past generation's) and fan the carry out."""
        tenant = session.tenant
        assert tenant is not None
        if carry is not None:
            # Stored already: into the loaded doc and out to the others, like another
            # node's update (evicting the doc instead would fail the writes of the
            # stores already at this generation that wait for storage meanwhile).
            self.fanout.updates_total += 1
            self.fanout.foreign(tenant, doc, carry)
            if self.reviews is not None:
                self.reviews.review_carry(tenant, doc, carry)
        conn = session.conn
        if conn is not None and conn.state == "open":
            for client in acks:
                conn.ack(doc, client, clocks.get(client, 0))
            self.on_output(session)

    def late_carry(
        self,
        generations: Generations,
        session: RelaySession,
        doc: str,
        generation: int,
        data: bytes,
        *,
        now: float,
    ) -> Callable[[], Carried | tuple[int, str]]:
        """The storage work for a late update ``on_late`` handed over (``now``: when it
        arrived, wall-clock seconds).  Built here, on the pump's thread: the ownership
        check takes the session's writer as it is now.  The pump calls the result (in a
        worker thread if it likes: it touches storage only), one at a time per document
        and in order, and hands what it returns to :meth:`late_done`; the server's pump
        and the simulated relay both do."""
        tenant = session.tenant
        assert tenant is not None  # on_late hands over authenticated sessions only
        return functools.partial(
            carry_outcome,
            generations,
            tenant,
            doc,
            generation,
            data,
            replica=session.writer_name,
            received_at=now,
            check=ownership_check(doc, data, writer_of(session), int(now * 1000)),
        )

    def late_done(
        self, session: RelaySession, doc: str, acks: list[int], outcome: Carried | tuple[int, str]
    ) -> None:
        """What :meth:`late_carry`'s work said of a late update of ``session``: stored
        (acknowledge it, fan its carry out), or not (close the session)."""
        if isinstance(outcome, tuple):
            self.late_failed(session, *outcome)
        else:
            self.late_stored(session, doc, acks, outcome.clocks, outcome.carry)

    def late_failed(self, session: RelaySession, code: int, reason: str) -> None:
        """A late update could not be carried: nothing of it was stored; close."""
        session.record.error = reason[:200]
        fail(session, code, reason)
        self.on_output(session)

    def retry_reviews(self) -> None:
        """Retry what the central writers could not do (see ``CentralReviews.retry``)."""
        if self.reviews is not None:
            self.reviews.retry()

    def central(self, tenant: str) -> CentralWriter:
        """The tenant's writer replica, opened and caught up on first use."""
        if self.reviews is None:
            raise ConfigError("this relay runs without a central writer (no central_dir)")
        return self.reviews.writer(tenant)

    def open_conflicts(self) -> int:
        return 0 if self.reviews is None else self.reviews.open_conflicts()

    def close(self) -> None:
        if self.reviews is not None:
            self.reviews.close()
        self.docs.clear()
