"""The relay's side of a sync session: HELLO, catch-up and incoming updates (sans I/O).

A HELLO needs storage (the token, the client-id registry, the replica's
configuration, the tenant's state vectors), so it is answered in steps the
pump drives (``relay.lookups``)::

    hello = sessions.receive(session, message, now)   # None: nothing to look up
    token = authenticate(store, hello.token)          # pump, off the event loop
    if sessions.authenticated(session, hello, token):
        facts = lookup_hello(store, hello)            # pump: claims the client ids
        sessions.welcome(session, hello, token, facts)

Updates are checked here (document name, grants, size, the Yjs parser, the
ownership rule: a replica writes only its own client ids), applied to the
relay doc and submitted to :class:`~tiendasync.relay.fanout.Fanout`.

Document generations (docs/generations.md): a replica whose HELLO holds a
document at an older generation than the relay's is told that generation's
state vector in the WELCOME, gets the current generation as NEXT frames
(catch-up and live, never UPDATE), and its updates to it are *late* updates,
handed to ``on_late`` (the pump carries them into the current generation,
:mod:`tiendasync.relay.generations`) instead of being applied.  A replica
that does not tell its generations is refused once any document it may
read has rolled over: it would merge the new generation into the old one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from tiendasync.errors import ConfigError, InvalidArgument, RemoteProtocolError
from tiendasync.model.config import DEFAULT_PRIORITIES, StoreConfig
from tiendasync.model.docnames import before_sales_floor, data_type_of
from tiendasync.model.grants import GRANTS_KEY
from tiendasync.protocol import (
    CLOSE_AUTH,
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    CLOSE_PROTOCOL,
    CLOSE_RATE_LIMIT,
    CLOSE_TOO_BIG,
    CLOSE_VERSION,
    Hello,
    ProtocolFailure,
    RelayConnection,
    UpdateReceived,
)
from tiendasync.protocol.frames import count_frames
from tiendasync.protocol.statevector import decode_state_vector, missing_from
from tiendasync.protocol.yjs_update import MalformedUpdate, parse_update
from tiendasync.relay.docs import DocCache, RelayDoc, ends_of
from tiendasync.relay.fanout import Fanout
from tiendasync.relay.ownership import OwnershipGate, writer_of
from tiendasync.relay.policy import NO_GRANTS, Grants, Policy, replica_token_fits, store_config
from tiendasync.relay.state import HelloFacts, RelaySession
from tiendasync.relay.storage import TokenRecord, archived_reason

__all__ = ["LateHandler", "SyncSessions", "send_away"]

#: ``on_late(session, doc, generation, data, acks)``: a late update to hand to storage.
LateHandler = Callable[[RelaySession, str, int, bytes, list[int]], None]

log = logging.getLogger("tiendasync.relay")


class SyncSessions:
    """The decisions for sync-protocol sessions."""

    def __init__(
        self,
        docs: DocCache,
        fanout: Fanout,
        policy: Policy,
        sessions: Mapping[str, RelaySession],
        *,
        max_update_bytes: int,
        on_output: Callable[[RelaySession], None],
        gate: OwnershipGate,
        on_late: LateHandler | None = None,
    ) -> None:
        self.docs = docs
        self.fanout = fanout
        self.policy = policy
        self.sessions = sessions
        self.max_update_bytes = max_update_bytes
        self._on_output = on_output
        self.gate = gate
        self.on_late = on_late

    # -- incoming bytes --------------------------------------------------------------------

    def receive(
        self, session: RelaySession, message: bytes | str, now: float | None
    ) -> Hello | None:
        """Bytes of one websocket message: returns the HELLO the pump must look up, if any."""
        conn = session.conn
        assert conn is not None
        self._take(session, conn, message, now)
        hello: Hello | None = None
        for event in conn.events():
            if conn.closed and not isinstance(event, ProtocolFailure):
                break
            if isinstance(event, Hello):
                hello = event
            elif isinstance(event, UpdateReceived):
                # Documents per session, replica and tenant: counted per frame.
                refusal = self.policy.doc_refusal(session, event.doc)
                if refusal is not None:
                    conn.fail(*refusal)
                    continue
                self._guarded(session, "UpdateReceived", self._on_update, session, event)
            elif isinstance(event, ProtocolFailure):
                log.info("session %s: protocol failure %s %s", session.id, event.code, event.reason)
        self._on_output(session)
        return hello

    def _take(
        self, session: RelaySession, conn: RelayConnection, message: bytes | str, now: float | None
    ) -> None:
        """Feed one message to ``conn`` unless a limit refuses it (then ``conn`` fails)."""
        if self.policy.over_message_rate(session, now):
            conn.fail(CLOSE_RATE_LIMIT, self.policy.message_rate_reason)
            return
        if isinstance(message, str):
            conn.fail(CLOSE_PROTOCOL, "text frames are not part of the protocol")
            return
        # Charged per frame and per byte before anything is decoded.
        frames, whole = count_frames(message)
        refusal = self.policy.charge(session, frames, len(message), now)
        if refusal is None and conn.state == "new":
            refusal = self.policy.hello_refusal(len(message))
        if refusal is not None:
            conn.fail(*refusal)
            return
        conn.receive_data(message)  # counts the bytes; reports malformed input
        if not whole:
            conn.fail(
                CLOSE_PROTOCOL, "truncated frame: a websocket message must carry whole frames"
            )

    def _guarded(
        self, session: RelaySession, what: str, fn: Callable[..., None], *args: Any
    ) -> None:
        """Run one decision; a peer's error closes the session, a bug closes it as internal."""
        conn = session.conn
        assert conn is not None
        try:
            fn(*args)
        except RemoteProtocolError as exc:
            conn.fail(exc.code, exc.reason)
        except Exception as exc:  # a bug must not take the relay down
            log.exception("session %s: error handling %s", session.id, what)
            session.record.error = f"internal error: {type(exc).__name__}"
            conn.fail(CLOSE_INTERNAL, "internal error", remote=False)

    # -- HELLO, in the pump's steps ------------------------------------------------------------

    @staticmethod
    def _waiting(session: RelaySession) -> RelayConnection | None:
        """The connection if it still waits for the answer to its HELLO."""
        conn = session.conn
        return conn if conn is not None and conn.state == "authenticating" else None

    def authenticated(
        self,
        session: RelaySession,
        hello: Hello,
        token: TokenRecord | None,
        refused: str | None = None,
    ) -> bool:
        """Step 2: ``token`` is what storage returned for ``hello.token``.

        Rejects a bad token (``refused``: why storage found none, see
        :func:`~tiendasync.relay.auth.check_token`), a token that is not this
        replica's, or one over its connection cap; True if the pump should go
        on with :func:`~tiendasync.relay.lookups.lookup_hello`.
        """
        conn = self._waiting(session)
        if conn is None:
            return False
        rec = session.record
        rec.tenant, rec.replica_id = hello.tenant, hello.replica_id
        if token is None or not replica_token_fits(token, hello.tenant, hello.replica_id):
            rec.outcome = "rejected"
            rec.error = _refusal(hello, token, refused)
            conn.reject(CLOSE_AUTH, rec.error)
        elif self.policy.over_token_cap(session, token.id, self.sessions.values()):
            rec.error = "too many connections with this token"
            conn.reject(CLOSE_RATE_LIMIT, rec.error)
        self._on_output(session)
        return not conn.closed

    def welcome(
        self, session: RelaySession, hello: Hello, token: TokenRecord, facts: HelloFacts
    ) -> None:
        """Step 4: accept (or refuse) the replica with what storage said, then catch it up."""
        if self._waiting(session) is not None:
            self._guarded(session, "Hello", self._welcome, session, hello, token, facts)
        self._on_output(session)

    def lookup_failed(self, session: RelaySession, exc: BaseException) -> None:
        """Storage failed while the pump looked up a HELLO: close as an internal error."""
        conn = session.conn
        assert conn is not None
        log.error("session %s: HELLO lookup failed: %s", session.id, exc)
        session.record.error = f"internal error: {type(exc).__name__}"
        conn.fail(CLOSE_INTERNAL, "internal error", remote=False)
        self._on_output(session)

    def _welcome(
        self, session: RelaySession, hello: Hello, token: TokenRecord, facts: HelloFacts
    ) -> None:
        conn = session.conn
        assert conn is not None
        rec = session.record
        if facts.foreign:
            rec.outcome = "rejected"
            rec.error = f"client id {facts.foreign[0]} belongs to another replica"
            conn.reject(CLOSE_FORBIDDEN, rec.error)
            return
        if self.policy.over_token_cap(session, token.id, self.sessions.values()):
            rec.error = "too many connections with this token"  # (raced another HELLO)
            conn.reject(CLOSE_RATE_LIMIT, rec.error)
            return
        grants, config = self._grants(hello, facts.config, token.location)
        relay_gens = {
            d: g for d, g in facts.generations.items() if grants.can_read(d) or grants.can_write(d)
        }
        refused = _generation_refusal(hello, relay_gens, facts.generations)
        archived = sorted(d for d in facts.archived if d in relay_gens)
        if refused is None and archived:
            refused = (CLOSE_VERSION, archived_reason(archived[0], facts.archived[archived[0]]))
        if refused is not None:
            rec.outcome = "rejected"
            rec.error = refused[1]
            conn.reject(*refused)
            return
        replica_svs: dict[str, dict[int, int]] = {}
        for doc, sv in hello.state_vectors.items():
            try:
                replica_svs[doc] = decode_state_vector(sv)
            except ValueError:
                conn.fail(CLOSE_PROTOCOL, f"bad state vector for document {doc[:100]!r}")
                return
        session.tenant, session.replica_id = hello.tenant, hello.replica_id
        session.token_id = token.id
        session.location = token.location
        session.client_id = hello.client_id
        session.grants = grants
        session.sales_from = hello.sales_from
        session.owned = set(facts.owned)
        session.generations = relay_gens
        # Another relay node may have cut a document since this node loaded it (then
        # what it holds is dropped, and older sessions sent away), or since the facts
        # were read (then this store comes back: its facts would be the old generation).
        for doc, gen in facts.generations.items():
            self.docs.saw_generation(hello.tenant, doc, gen)
        stale = sorted(
            doc
            for doc in {*facts.state_vectors, *hello.state_vectors}
            if self.docs.generation(hello.tenant, doc) > facts.generations.get(doc, 0)
        )
        told_gens = hello.generations or {}
        session.behind = {
            d: mine
            for d, g in relay_gens.items()
            if (mine := told_gens.get(d)) is not None and mine < g
        }
        self.policy.seed(hello.tenant, session.writer_name, facts.state_vectors, facts.owned)
        # Sales months before the replica's floor left it: none is sent, unless it
        # named the document (it still holds it, e.g. with writes to send first).
        relay_svs = {
            doc: sv
            for doc, sv in facts.state_vectors.items()
            if grants.can_read(doc)
            and (doc in hello.state_vectors or not before_sales_floor(doc, hello.sales_from))
        }
        # A document the replica holds a generation behind: it re-sends what the past
        # generation lacks of its writes (carried over), so it is told that one's.
        past_svs = {d: sv for d, sv in facts.past_state_vectors.items() if d in session.behind}
        # Only what the replica may read, within the WELCOME's bounds (the
        # catch-up below still covers every readable document).
        announced = self.policy.welcome_state_vectors(
            {**relay_svs, **past_svs}, hello.state_vectors
        )
        # The write grants ride along, so the replica sends only what it may write.
        # Only the keys set centrally: the store keeps its own value of the others.
        told = {} if config is None else _central_keys(facts.config)
        conn.accept(session.id, announced, {**told, GRANTS_KEY: grants.writes.to_wire()})
        if hello.generations is not None and relay_gens:  # none: every one is at 0
            conn.announce_generations(relay_gens)
        if stale:
            send_away(session, f"{stale[0][:100]} moved to a new generation: reconnect")
            return
        self.fanout.subscribe(session, hello.tenant)
        log.info(
            "session %s: %s/%s connected (client id %s)",
            session.id,
            hello.tenant,
            hello.replica_id,
            hello.client_id,
        )
        self._catch_up(session, hello, relay_svs, replica_svs, config)

    @staticmethod
    def _grants(
        hello: Hello, raw: dict[str, Any] | None, location: str | None
    ) -> tuple[Grants, StoreConfig | None]:
        try:
            return Grants.from_config(raw, location), store_config(raw)
        except ConfigError as exc:
            log.error("replica %s/%s has a bad config: %s", hello.tenant, hello.replica_id, exc)
            return NO_GRANTS, None

    def _catch_up(
        self,
        session: RelaySession,
        hello: Hello,
        relay_svs: dict[str, bytes],
        replica_svs: dict[str, dict[int, int]],
        config: StoreConfig | None,
    ) -> None:
        """Send what the replica lacks, most urgent data types first, then SYNCED."""
        conn = session.conn
        assert conn is not None
        prio = config.priority if config is not None else (lambda t: DEFAULT_PRIORITIES.get(t, 0))

        def order(doc: str) -> tuple[int, str]:
            try:
                return -prio(data_type_of(doc)), doc
            except InvalidArgument:
                return 0, doc

        for doc in sorted(relay_svs, key=order):
            if doc in session.behind:
                # It holds the generation before: it builds the current one beside it
                # and moves over once its writes to the old one are acknowledged.
                rdoc = self._doc_at(session, doc)
                if rdoc is None or conn.state != "open":
                    return
                conn.send_next(doc, session.generations[doc], rdoc.diff(None))
                session.record.updates_sent += 1
                session.docs.add(doc)
                continue
            have = replica_svs.get(doc)
            if not (
                hello.full
                or have is None
                or missing_from(decode_state_vector(relay_svs[doc]), have)
            ):
                continue
            rdoc = self._doc_at(session, doc)
            if rdoc is None:
                return
            diff = rdoc.diff(None if hello.full or have is None else hello.state_vectors[doc])
            if conn.state != "open":
                return
            conn.send_update(doc, diff)
            session.record.updates_sent += 1
            session.docs.add(doc)
        if conn.state == "open":
            conn.synced()

    # -- updates ---------------------------------------------------------------------------

    def _refusal(self, session: RelaySession, doc: str, data: bytes) -> tuple[int, str] | None:
        """Why an update is refused before parsing it (None: go on)."""
        try:
            data_type_of(doc)
        except InvalidArgument:
            return CLOSE_PROTOCOL, f"bad document name {doc[:100]!r}"
        if not session.grants.can_write(doc):
            return CLOSE_FORBIDDEN, f"no write access to {doc[:100]!r}"
        if len(data) > self.max_update_bytes:
            return CLOSE_TOO_BIG, f"update of {len(data)} bytes is over the limit"
        return None

    def _on_update(self, session: RelaySession, event: UpdateReceived) -> None:
        conn = session.conn
        assert conn is not None and session.tenant is not None
        doc, data = event.doc, event.data
        session.record.updates_received += 1
        session.docs.add(doc)
        refusal = self._refusal(session, doc, data)
        if refusal is not None:
            conn.fail(*refusal)
            return
        try:
            parsed = parse_update(data, items=True)
        except MalformedUpdate as exc:
            conn.fail(CLOSE_PROTOCOL, str(exc)[:300])
            return
        behind = session.behind.get(doc)
        if behind is not None:
            self._late(session, doc, behind, data, parsed.writer_clients)
            return
        rdoc = self._doc_at(session, doc)
        if rdoc is None:
            return  # not read: it sends it again, to the generation it comes back to
        # One state vector for the checks and the apply: nothing changes the doc between.
        before = rdoc.state_vector()
        refused = self.gate.refusal(
            session.tenant, doc, parsed, writer_of(session), state_vector=before
        )
        if refused is not None:
            session.record.error = refused.reason
            conn.fail(refused.code, refused.reason)
            return
        result = self.docs.apply(session.tenant, doc, data, ends_of(parsed), before=before)
        acks = sorted(c for c in parsed.writer_clients if c in session.owned)
        if not acks and session.client_id is not None:
            # delete-only (or redundant) update: confirm the current incarnation's clock
            acks = [session.client_id]
        self.fanout.submit(session, session.tenant, doc, data, result, acks, session.writer_name)

    def _doc_at(self, session: RelaySession, doc: str) -> RelayDoc | None:
        """The relay's ``doc`` at the generation ``session`` was welcomed to, or None (the
        session is sent to a new one: another relay node cut ``doc`` since)."""
        assert session.tenant is not None
        want = session.generations.get(doc, 0)
        rdoc = self.docs.get(session.tenant, doc)
        if rdoc.generation < want:  # this node's copy is older than storage's
            self.docs.saw_generation(session.tenant, doc, want)
            rdoc = self.docs.get(session.tenant, doc)
        if rdoc.generation == want and session.open:
            return rdoc
        send_away(session, f"{doc[:100]} moved to a new generation: reconnect")
        self._on_output(session)
        return None

    def _late(
        self, session: RelaySession, doc: str, generation: int, data: bytes, writers: Any
    ) -> None:
        """An update to a past generation: to the pump, or refused if it cannot be carried."""
        conn = session.conn
        assert conn is not None
        current = session.generations[doc]
        if not 0 <= generation < current or self.on_late is None:
            reason = (
                f"this store holds generation {generation} of {doc[:100]!r} and the relay "
                f"is at {current}: its updates cannot be carried over here"
            )
            session.record.error = reason
            conn.fail(CLOSE_VERSION, reason)
            return
        acks = sorted(c for c in writers if c in session.owned)
        if not acks and session.client_id is not None:
            acks = [session.client_id]
        self.on_late(session, doc, generation, data, acks)


def send_away(session: RelaySession, reason: str) -> None:
    """Ask ``session``'s replica for a new session at once (SYNC_NOW, then BYE): what it
    sends after this is not read; its next HELLO tells the generations it holds."""
    conn = session.conn
    if conn is None or conn.closed:
        return
    conn.request_sync(False)
    conn.bye(reason)


def _generation_refusal(
    hello: Hello, relay_gens: dict[str, int], stored: Mapping[str, int]
) -> tuple[int, str] | None:
    """Why a replica may not sync with documents at ``relay_gens`` (the generations of
    the documents it may read or write; ``stored``: of all of them) (None: it may)."""
    if hello.generations is None:
        if not relay_gens:
            return None
        names = ", ".join(sorted(relay_gens)[:3])
        return (
            CLOSE_VERSION,
            f"the relay has moved documents to a new generation ({names}); this store's "
            "tiendasync does not know generations: upgrade it",
        )
    for doc, mine in hello.generations.items():
        # (against every document: one the store may no longer read is still no newer)
        if mine > stored.get(doc, 0):
            return (
                CLOSE_PROTOCOL,
                f"this store holds generation {mine} of {doc[:100]!r}, newer than the "
                f"relay's {stored.get(doc, 0)} (was the relay restored from an old backup?)",
            )
    return None


def _refusal(hello: Hello, token: TokenRecord | None, refused: str | None) -> str:
    """Why ``hello``'s token does not open a session, in words its holder can act on."""
    if token is None:
        return refused or "bad or revoked token"
    if token.admin:
        return "an admin token cannot sync; use the token issued for this store"
    if token.tenant != hello.tenant or token.replica_id != hello.replica_id:
        return (
            f"this token belongs to store {token.tenant}/{token.replica_id}, "
            f"not {hello.tenant}/{hello.replica_id}"
        )
    return f"replica id {hello.replica_id!r} is reserved for the relay itself"


def _central_keys(raw: dict[str, Any] | None) -> dict[str, Any]:
    """The store settings an admin set centrally for a replica (its grants aside)."""
    return {k: v for k, v in (raw or {}).items() if k not in ("read", "write")}
