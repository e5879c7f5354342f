"""From an applied update to storage, acknowledgements and the other sessions (sans I/O).

An update the core accepted is *submitted*: its relay doc is pinned and a
:class:`~tiendasync.relay.state.PendingWrite` goes to ``on_write`` (the pump
stores batches).  Once the pump reports the batch :meth:`Fanout.committed`,
the writer's clocks are acknowledged and the update is published to the
tenant's other sessions through the broker; each subscriber's
:meth:`Fanout.deliver` filters what its session may read.  Nothing is
acknowledged or fanned out before it is durable.

A gapped update (``ApplyResult.pending``) is neither stored nor fanned out:
the doc cache holds it for its writer's session, and submits it here once
what it lacks has arrived (``ApplyResult.released``); what the cache drops
is noted in that session's sync-log row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from tiendasync.model.docnames import before_sales_floor
from tiendasync.protocol import CLOSE_INTERNAL, CLOSE_NORMAL, CLOSE_RATE_LIMIT
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.protocol.yjs_update import parse_update
from tiendasync.protocol.yprotocols import encode_update
from tiendasync.relay.broker import Broker
from tiendasync.relay.central import CENTRAL_REPLICA_ID
from tiendasync.relay.docs import ApplyResult, DocCache, Released, ends_of
from tiendasync.relay.policy import Policy
from tiendasync.relay.state import PendingWrite, RelaySession, fail

__all__ = ["Fanout"]

log = logging.getLogger("tiendasync.relay.fanout")

#: Documents of one tenant whose readers are memoized (past it they are computed
#: each time: a tenant with more documents than this is not one relay's load).
_READERS_MEMO_DOCS = 4096


class Fanout:
    """Submission, acknowledgement and fan-out of updates."""

    def __init__(
        self,
        docs: DocCache,
        broker: Broker,
        *,
        max_outbound_bytes: int,
        on_output: Callable[[RelaySession], None],
        on_write: Callable[[PendingWrite], None],
        policy: Policy | None = None,
    ) -> None:
        self.docs = docs
        self.broker = broker
        self.max_outbound_bytes = max_outbound_bytes
        self.policy = policy if policy is not None else Policy()
        self._on_output = on_output
        self._on_write = on_write
        #: updates committed and published since start
        self.updates_total = 0
        #: the sessions subscribed here, per tenant (one broker subscription each)
        self._sessions: dict[str, dict[str, RelaySession]] = {}
        self._unsubscribe: dict[str, Callable[[], None]] = {}
        #: per tenant, per doc: the sessions that may follow it (see _readers)
        self._reader_memo: dict[str, dict[str, tuple[RelaySession, ...]]] = {}
        docs.on_gap_dropped = self._gap_dropped

    # -- before storage --------------------------------------------------------------------

    def submit(
        self,
        session: RelaySession | None,
        tenant: str,
        doc: str,
        data: bytes,
        result: ApplyResult,
        acks: list[int],
        replica: str,
    ) -> None:
        """Hand an applied update to storage (``on_write``); the doc stays pinned until then.

        A gapped one (``result.pending``) stores nothing: it is held for
        ``session`` (or was dropped: noted), and the held updates it filled
        (``result.released``) are submitted after it, each as its writer's.
        """
        stored = None if result.pending else result.changed
        if session is not None:
            if result.held is not None:
                self.docs.hold_for(result.held, session)
            if result.dropped is not None:
                self._gap_dropped(session, tenant, [doc], result.dropped)
            refusal = self.policy.rebuild_refusal(session) if result.rebuilt else None
            if refusal is not None:
                fail(session, *refusal)
                self._on_output(session)
        rdoc = self.docs.pin(tenant, doc)
        self._on_write(
            PendingWrite(
                session=session,
                tenant=tenant,
                doc=doc,
                data=stored,
                state_vector=result.state_vector,
                fanout=result.changed,
                acks=acks,
                replica=replica,
                rdoc=rdoc,
            )
        )
        for released in result.released:
            self._submit_released(tenant, doc, released)

    def _submit_released(self, tenant: str, doc: str, released: Released) -> None:
        """A held update that applied once it filled: stored and fanned out as its writer's."""
        holder = released.holder
        session = holder if isinstance(holder, RelaySession) else None
        acks = [] if session is None else sorted(c for c in released.writers if c in session.owned)
        self._on_write(
            PendingWrite(
                session=session,
                tenant=tenant,
                doc=doc,
                data=released.changed,
                state_vector=released.state_vector,
                fanout=released.changed,
                acks=acks,
                replica=None if session is None else session.writer_name,
                rdoc=self.docs.pin(tenant, doc),
            )
        )

    def _gap_dropped(
        self, holder: object | None, tenant: str, docs: Sequence[str], reason: str
    ) -> None:
        """Held gapped updates were dropped: note it in their session's sync-log row."""
        if not isinstance(holder, RelaySession):
            return
        names = ", ".join(sorted(set(docs)))[:200]
        note = f"note: dropped {len(docs)} gapped update(s) of {names}: {reason}"
        rec = holder.record
        rec.error = note if not rec.error else f"{rec.error}; {note}"[:1000]

    def ingest_central(self, tenant: str, doc: str, data: bytes) -> None:
        """Store and fan out a write of the central writer, like a replica's."""
        result = self.docs.apply(tenant, doc, data, ends_of(parse_update(data)))
        self.submit(None, tenant, doc, data, result, [], CENTRAL_REPLICA_ID)

    # -- after storage ---------------------------------------------------------------------

    def storable(self, batch: list[PendingWrite]) -> list[PendingWrite]:
        """What of ``batch`` may be stored; the stale writes are failed here.

        A write is stale when the doc it was applied to was dropped (an earlier
        commit of that doc failed): its state vector may count updates that
        never reached storage, so it is neither stored nor acknowledged, and
        its session is closed (the replica sends it again on reconnecting).
        """
        stale = [w for w in batch if w.stale]
        if stale:
            self.commit_failed(stale, RuntimeError("an earlier write of the document failed"))
        return [w for w in batch if not w.stale]

    def committed(self, batch: list[PendingWrite]) -> None:
        """``batch`` is durably stored: acknowledge it and fan it out."""
        for w in batch:
            if w.stale:  # stored all the same (a pump that does not ask storable())
                self.docs.discard(w.tenant, w.doc)  # so memory is reloaded with it
            self.docs.release(w.rdoc, w.data)
            self.policy.stored(w.tenant, w.doc)
            s = w.session
            if s is not None and s.conn is not None and s.conn.state == "open" and w.acks:
                clocks = decode_state_vector(w.state_vector)
                for client in w.acks:
                    s.conn.ack(w.doc, client, clocks.get(client, 0))
                self._on_output(s)
            if w.fanout is not None and self.current(w):
                self.updates_total += 1
                self.broker.publish(w.tenant, w.doc, w.fanout, None if s is None else s.id)

    def current(self, w: PendingWrite) -> bool:
        """Whether ``w`` was made on the newest generation seen of its document (one
        stored just before another node's cut is in the cut: never sent to the next)."""
        return w.rdoc is None or w.rdoc.generation >= self.docs.generation(w.tenant, w.doc)

    def commit_failed(self, batch: list[PendingWrite], exc: BaseException) -> None:
        """Storing ``batch`` failed: memory must not hold what disk lacks.

        Each doc it touched is dropped at once (reloaded from storage at next
        use), and every write still queued on the dropped doc goes stale
        (:meth:`storable` fails it): nothing applied on top of a failed write
        is stored or acknowledged.  No write of ``batch`` is acknowledged.
        """
        for w in batch:
            if w.rdoc is None or self.docs.current(w.tenant, w.doc) is w.rdoc:
                self.docs.discard(w.tenant, w.doc)
            self.docs.release(w.rdoc)
            if w.session is not None:
                w.session.record.error = f"storage failure: {exc}"[:200]
                fail(w.session, CLOSE_INTERNAL, "storage failure")
                self._on_output(w.session)

    # -- what other relay nodes committed ----------------------------------------------------

    def foreign(self, tenant: str, doc: str, data: bytes, generation: int | None = None) -> None:
        """An update another relay node stored (read from storage): into this node's
        loaded doc, then to this node's sessions of ``tenant`` (never acknowledged
        here: its own node did).  Held updates it fills are submitted as their writers'.
        ``generation``: the one it was stored to; older than the newest seen, it is
        dropped (the newest holds it or its carry)."""
        if generation is not None and generation < self.docs.generation(tenant, doc):
            return
        for released in self.docs.apply_committed(tenant, doc, data):
            self._submit_released(tenant, doc, released)
        self.policy.stored(tenant, doc)
        self.broker.publish(tenant, doc, data, None)

    # -- the other sessions ----------------------------------------------------------------

    def subscribe(self, session: RelaySession, tenant: str) -> None:
        """Deliver the tenant's committed updates (but the session's own) to ``session``.

        Its unsubscription (at the session's end) also drops the gapped
        updates held for it and forgets the documents it created of which
        nothing was stored.  The broker is subscribed to once per tenant with
        sessions here; each update goes only to the sessions whose grants read
        its document (:meth:`_readers`), not to every session of the tenant.
        """
        sessions = self._sessions.get(tenant)
        if sessions is None:
            sessions = self._sessions[tenant] = {}
            self._unsubscribe[tenant] = self.broker.subscribe(
                tenant, lambda d, u, o: self._publish_here(tenant, d, u, o)
            )
        sessions[session.id] = session
        self._reader_memo.pop(tenant, None)

        def end() -> None:
            self._unsubscribed(tenant, session)
            self._session_ended(session)

        session.unsubscribe = end

    def _unsubscribed(self, tenant: str, session: RelaySession) -> None:
        sessions = self._sessions.get(tenant)
        if sessions is None or sessions.pop(session.id, None) is None:
            return
        self._reader_memo.pop(tenant, None)
        if not sessions:
            del self._sessions[tenant]
            self._unsubscribe.pop(tenant)()

    def _readers(self, tenant: str, doc: str) -> tuple[RelaySession, ...]:
        """The sessions of ``tenant`` that may follow ``doc`` (its Yjs followers, the
        sessions whose grants read it), in subscription order; memoized per doc
        until the tenant's sessions change."""
        memo = self._reader_memo.setdefault(tenant, {})
        readers = memo.get(doc)
        if readers is None:
            readers = tuple(
                s
                for s in self._sessions.get(tenant, {}).values()
                if (s.yjs_doc == doc if s.kind == "yjs" else s.grants.can_read(doc))
            )
            if len(memo) < _READERS_MEMO_DOCS:
                memo[doc] = readers
        return readers

    def _publish_here(self, tenant: str, doc: str, update: bytes, origin: str | None) -> None:
        for session in self._readers(tenant, doc):
            try:
                self.deliver(session, doc, update, origin)
            except Exception:  # one session's failure must not stop the others' fan-out
                log.exception("fan-out to session %s failed", session.id)

    def _session_ended(self, session: RelaySession) -> None:
        if self.docs.held_bytes(session):
            rec = session.record
            code, reason = (
                (session.conn.close_code, session.conn.close_reason)
                if session.conn is not None
                else (session.close_code, session.close_reason)
            )
            if code not in (None, CLOSE_NORMAL) and not rec.error:
                rec.error = f"{code}: {reason}"  # the close reason comes first
            self.docs.drop_held(session, "its session ended before they could apply")
        self.policy.session_ended(session)

    def deliver(self, session: RelaySession, doc: str, update: bytes, origin: str | None) -> None:
        """A published update, for one subscribed session (if it may and does follow ``doc``)."""
        if origin == session.id or not session.open:
            return
        if session.tenant is not None and session.generations.get(doc, 0) != self.docs.generation(
            session.tenant, doc
        ):
            return  # it holds another generation (it is being sent to a new session)
        if session.kind == "yjs":
            if doc != session.yjs_doc:
                return
            session.outbox.append(encode_update(update))
        else:
            if not session.grants.can_read(doc) or before_sales_floor(doc, session.sales_from):
                return
            assert session.conn is not None
            if doc in session.behind:  # it holds the generation before: builds this one
                session.conn.send_next(doc, session.generations[doc], update)
            else:
                session.conn.send_update(doc, update)
            session.docs.add(doc)
        session.record.updates_sent += 1
        session.queued_bytes += len(update)
        if session.queued_bytes > self.max_outbound_bytes:
            fail(session, CLOSE_RATE_LIMIT, "too slow to follow; reconnect to catch up")
        self._on_output(session)
