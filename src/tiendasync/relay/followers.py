"""y-protocols followers: standard Yjs clients following one document (sans I/O).

``/yjs/<tenant>/<doc>?token=...`` serves the y-websocket sync protocol for
one doc.  A follower is read-only unless the relay runs with
``yjs_writable=True`` and its grants allow writing the doc.  The framing is
:mod:`tiendasync.protocol.yprotocols`; the token and configuration come from
the pump (``lookups.lookup_follower``) as :class:`~tiendasync.relay.state.FollowerFacts`.

What a y-websocket client expects, and gets:

* a refusal it does not retry: a bad token, a document the token may not
  read, a write on a read-only endpoint, a malformed message, one
  connection too many for the token close the websocket with a code in
  4400-4499 (``yprotocols.follower_close_code``; the pump sends it), which
  y-websocket takes as permanent.  Rate limits close with 4029, which it
  retries with its back-off;
* awareness (presence) relayed between the followers of one document on
  this relay process, echoed to its sender too (as y-websocket's own server
  does), bounded (``yprotocols.MAX_AWARENESS_BYTES``, at most
  :data:`MAX_PRESENCE_PER_SESSION` client ids a session), and a client id
  another session announced is never overwritten or removed;
* something received at least every :data:`KEEPALIVE_SECONDS`: y-websocket
  closes a socket that received nothing for 30 s.  :meth:`Followers.tick`
  (called by the pump every few seconds) sends an empty awareness message
  to a follower that was sent nothing for that long.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tiendasync.errors import ConfigError, InvalidArgument, RemoteProtocolError
from tiendasync.model.docnames import data_type_of
from tiendasync.protocol import (
    CLOSE_AUTH,
    CLOSE_FORBIDDEN,
    CLOSE_PROTOCOL,
    CLOSE_RATE_LIMIT,
    CLOSE_TOO_BIG,
    CLOSE_VERSION,
)
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.protocol.yjs_update import MalformedUpdate, ParsedUpdate, parse_update
from tiendasync.protocol.yprotocols import (
    KEEPALIVE,
    AwarenessEntry,
    FollowerClose,
    MessageType,
    SyncMessage,
    SyncType,
    decode_awareness,
    decode_sync,
    encode_awareness,
    encode_sync_step1,
    encode_sync_step2,
    follower_close_code,
)
from tiendasync.relay.docs import EMPTY_UPDATE, DocCache, ends_of
from tiendasync.relay.fanout import Fanout
from tiendasync.relay.ownership import OwnershipGate, writer_of
from tiendasync.relay.policy import NO_GRANTS, Grants, Policy
from tiendasync.relay.state import FollowerFacts, RelaySession, fail
from tiendasync.relay.storage import TokenRecord

__all__ = ["KEEPALIVE_SECONDS", "MAX_PRESENCE_PER_SESSION", "Followers"]

#: A follower sent nothing for this long gets a keepalive (y-websocket gives up at 30 s).
KEEPALIVE_SECONDS = 10.0
#: Awareness client ids one follower session may announce (a provider has one).
MAX_PRESENCE_PER_SESSION = 4


@dataclass
class _Presence:
    """One client id's awareness state, as the session that announced it last set it."""

    session_id: str
    clock: int
    state: str


def _covered(ranges: list[tuple[int, int]], clock: int, end: int) -> bool:
    """Whether ``[clock, end)`` lies inside the union of the sorted ``ranges``."""
    for start, stop in ranges:
        if start > clock:
            return False
        if stop > clock:
            clock = stop
            if clock >= end:
                return True
    return clock >= end


class Followers:
    """The decisions for y-protocols sessions."""

    def __init__(
        self,
        docs: DocCache,
        fanout: Fanout,
        policy: Policy,
        sessions: Mapping[str, RelaySession],
        *,
        writable: bool,
        max_update_bytes: int,
        on_output: Callable[[RelaySession], None],
        gate: OwnershipGate,
        claim: Callable[[str, str, list[int]], list[int]],
    ) -> None:
        self.docs = docs
        self.fanout = fanout
        self.policy = policy
        self.sessions = sessions
        self.writable = writable
        self.max_update_bytes = max_update_bytes
        self._on_output = on_output
        self.gate = gate
        #: Registers client ids to (tenant, replica): returns those owned by another
        #: (``RelayStore.claim_client_ids``; the one storage call a follower's write makes).
        self._claim = claim
        #: (tenant, doc) -> ids of the open follower sessions of it on this process
        self._rooms: dict[tuple[str, str], set[str]] = {}
        #: (tenant, doc) -> awareness client id -> its state
        self._presence: dict[tuple[str, str], dict[int, _Presence]] = {}
        #: session id -> (bytes sent or queued, when that count last changed)
        self._watch: dict[str, tuple[int, float]] = {}

    def _fail(self, session: RelaySession, code: int, reason: str) -> None:
        """Close ``session`` with ``code`` in its y-websocket form (``follower_close_code``)."""
        fail(session, follower_close_code(code), reason)
        self._on_output(session)

    def moved(self, session: RelaySession, reason: str) -> None:
        """Close ``session`` for good (4410): its document moved to a new generation,
        and the copy the follower holds is the old one (merged, it would count twice)."""
        self._fail(session, CLOSE_VERSION, reason)

    def revoke(self, session: RelaySession) -> None:
        """Close ``session``: its token was revoked while it was open."""
        self._fail(session, CLOSE_AUTH, "token revoked")

    @staticmethod
    def authorize(
        tenant: str | None, doc: str | None, facts: FollowerFacts
    ) -> tuple[int, TokenRecord | None, Grants]:
        """HTTP status (200 if fine), the token record and the grants."""
        if tenant is None or doc is None:
            return 404, None, Grants()
        try:
            data_type_of(doc)
        except InvalidArgument:
            return 404, None, Grants()
        record = facts.token
        if record is None or not (record.admin or record.tenant == tenant):
            return 401, None, Grants()
        grants = Grants()
        if not record.admin and record.replica_id is not None:
            try:
                grants = Grants.from_config(facts.config, record.location)
            except ConfigError:
                return 403, record, NO_GRANTS
        if not grants.can_read(doc):
            return 403, record, grants
        return 200, record, grants

    def refuse(
        self,
        session: RelaySession,
        tenant: str | None,
        doc: str | None,
        status: int,
        record: TokenRecord | None,
    ) -> None:
        """Close a follower :meth:`authorize` refused (``status``), once, for good.

        The code is one y-websocket does not retry (4401, 4403, 4404), so a
        refused client makes one connection and one sync-log row.  The row
        names the tenant and replica only when the token is valid for them.
        """
        if record is not None and tenant is not None and (record.admin or record.tenant == tenant):
            session.record.tenant, session.record.replica_id = tenant, record.replica_id
        if status == 401:
            code, reason = FollowerClose.UNAUTHORIZED, "bad or revoked token"
        elif status == 403:
            code, reason = FollowerClose.FORBIDDEN, f"this token may not read {doc}"
        else:
            code, reason = FollowerClose.NOT_FOUND, "not a document: /yjs/<tenant>/<document>"
        self._fail(session, code, reason[:200])

    def open(
        self, session: RelaySession, tenant: str, doc: str, record: TokenRecord, grants: Grants
    ) -> None:
        """Start following ``doc``: our SyncStep1 goes out first, then who is present."""
        session.record.tenant, session.record.replica_id = tenant, record.replica_id
        if self.policy.over_token_cap(session, record.id, self.sessions.values()):
            cap = self.policy.limits.max_connections_per_token
            self._fail(
                session,
                FollowerClose.TOO_MANY,
                f"too many connections with this token (at most {cap} at once)",
            )
            return
        session.token_id = record.id
        session.location = record.location
        session.tenant, session.replica_id, session.grants = tenant, record.replica_id, grants
        session.yjs_doc = doc
        session.yjs_writable = self.writable and grants.can_write(doc)
        session.docs.add(doc)
        self.fanout.subscribe(session, tenant)
        self._rooms.setdefault((tenant, doc), set()).add(session.id)
        rdoc = self.docs.get(tenant, doc)
        session.generations = {doc: rdoc.generation}  # what it is sent (relay.fanout)
        session.outbox.append(encode_sync_step1(rdoc.state_vector()))
        present = self._presence.get((tenant, doc))
        if present:
            session.outbox.append(self._states(present))
        self._on_output(session)

    def closed(self, session: RelaySession) -> None:
        """``session`` ended: its awareness states are removed, for the others too."""
        self._watch.pop(session.id, None)
        tenant, doc = session.tenant, session.yjs_doc
        if tenant is None or doc is None:
            return
        key = (tenant, doc)
        room = self._rooms.get(key)
        if room is not None:
            room.discard(session.id)
            if not room:
                del self._rooms[key]
        present = self._presence.get(key, {})
        gone = [
            AwarenessEntry(client, p.clock + 1, "null")
            for client, p in present.items()
            if p.session_id == session.id
        ]
        for entry in gone:
            del present[entry.client]
        if not present:
            self._presence.pop(key, None)
        if gone:
            self._broadcast(key, encode_awareness(gone))

    def tick(self, now: float) -> None:
        """Keep idle followers connected (``now``: seconds, monotonic; every few seconds).

        A follower that was sent nothing for :data:`KEEPALIVE_SECONDS` gets
        :data:`~tiendasync.protocol.yprotocols.KEEPALIVE`.
        """
        watch: dict[str, tuple[int, float]] = {}
        for room in self._rooms.values():
            for sid in room:
                session = self.sessions.get(sid)
                if session is None or not session.open:
                    continue
                sent = session.record.bytes_sent + sum(len(m) for m in session.outbox)
                last = self._watch.get(sid)
                if last is None or last[0] != sent:
                    watch[sid] = (sent, now)
                elif now - last[1] >= KEEPALIVE_SECONDS:
                    session.outbox.append(KEEPALIVE)
                    self._on_output(session)
                    watch[sid] = (sent + len(KEEPALIVE), now)
                else:
                    watch[sid] = last
        self._watch = watch

    @staticmethod
    def _states(present: Mapping[int, _Presence]) -> bytes:
        return encode_awareness(
            [AwarenessEntry(client, p.clock, p.state) for client, p in present.items()]
        )

    def _broadcast(self, key: tuple[str, str], message: bytes) -> None:
        for sid in self._rooms.get(key, ()):
            other = self.sessions.get(sid)
            if other is not None and other.open:
                other.outbox.append(message)
                other.queued_bytes += len(message)
                self._on_output(other)

    def _awareness(self, session: RelaySession, message: bytes) -> None:
        """Relay a follower's awareness entries to the followers of its document (itself too).

        An entry for a client id another session announced, beyond
        :data:`MAX_PRESENCE_PER_SESSION`, or older than the state held, is
        dropped; a malformed message closes the session (4400).
        """
        assert session.tenant is not None and session.yjs_doc is not None
        entries = decode_awareness(message)  # RemoteProtocolError
        key = (session.tenant, session.yjs_doc)
        present = self._presence.setdefault(key, {})
        mine = sum(1 for p in present.values() if p.session_id == session.id)
        accepted = []
        for e in entries:
            held = present.get(e.client)
            if held is None:
                if e.removed or mine >= MAX_PRESENCE_PER_SESSION:
                    continue
                mine += 1
            elif held.session_id != session.id or e.clock < held.clock:
                continue
            if e.removed:
                del present[e.client]
                mine -= 1
            else:
                present[e.client] = _Presence(session.id, e.clock, e.state)
            accepted.append(e)
        if not present:
            del self._presence[key]
        if accepted:
            self._broadcast(key, encode_awareness(accepted))

    def receive(self, session: RelaySession, message: bytes | str, now: float | None) -> None:
        """One y-protocols message from a follower (``now``: see ``RelayCore.receive``)."""
        session.record.bytes_received += len(message)
        if self.policy.over_message_rate(session, now):
            self._fail(session, CLOSE_RATE_LIMIT, self.policy.message_rate_reason)
            return
        if isinstance(message, str):
            self._fail(session, CLOSE_PROTOCOL, "text frames are not supported")
            return
        try:
            sync = decode_sync(message)
            if sync is None:
                kind = message[:1]
                if kind == bytes([MessageType.AWARENESS]):
                    self._awareness(session, message)
                elif kind == bytes([MessageType.QUERY_AWARENESS]):
                    present = self._presence.get((session.tenant or "", session.yjs_doc or ""))
                    session.outbox.append(self._states(present or {}))
                    self._on_output(session)
                return  # other message types (auth, unknown) are ignored
            if not self._at_generation(session):
                return
            if sync.sync_type == SyncType.STEP1:
                self._step1(session, sync)
            elif sync.carries_update:
                self._update(session, sync.payload)
            else:
                self._fail(session, CLOSE_PROTOCOL, f"unknown sync message type {sync.sync_type}")
        except RemoteProtocolError as exc:
            self._fail(session, exc.code, exc.reason)

    def _at_generation(self, session: RelaySession) -> bool:
        """Whether the relay's doc is still the generation ``session`` follows (else it is
        closed, 4410: another relay node cut the document since it opened)."""
        assert session.tenant is not None and session.yjs_doc is not None
        doc = session.yjs_doc
        rdoc = self.docs.get(session.tenant, doc)
        if session.close_code is None and rdoc.generation == session.generations.get(doc, 0):
            return True
        if session.close_code is None:
            self.moved(session, f"{doc[:100]} moved to a new generation: reload")
        return False

    def _step1(self, session: RelaySession, sync: SyncMessage) -> None:
        """Answer a state vector with what the follower lacks (SyncStep2)."""
        assert session.tenant is not None and session.yjs_doc is not None
        try:
            decode_state_vector(sync.payload)
            diff = self.docs.get(session.tenant, session.yjs_doc).diff(sync.payload)
        except (ValueError, RemoteProtocolError):
            self._fail(session, CLOSE_PROTOCOL, "bad state vector")
            return
        session.outbox.append(encode_sync_step2(diff))
        session.record.updates_sent += 1
        self._on_output(session)

    def _claimed(self, session: RelaySession, tenant: str, doc: str, parsed: ParsedUpdate) -> bool:
        """Register the new client ids a follower writes with (False: refused, session failed).

        A client id belongs to one writer for ever: a follower may not write
        as a store (or as another follower), and needs a store token to write.
        """
        known = self.docs.get(tenant, doc).clocks()
        new = sorted(
            r.client
            for r in parsed.structs
            if r.client not in session.owned and r.end > known.get(r.client, 0)
        )
        if not new:
            return True
        if session.replica_id is None:
            self._fail(session, CLOSE_FORBIDDEN, "an admin token cannot write: use a store token")
            return False
        if self._claim(tenant, session.replica_id, new):
            self._fail(
                session, CLOSE_FORBIDDEN, "the update writes as a client id of another writer"
            )
            return False
        session.owned.update(new)
        return True

    def _read_only(self, session: RelaySession, tenant: str, doc: str, payload: bytes) -> None:
        """An update on a read-only endpoint: closed 4403 if it carries anything new.

        A y-websocket client answers our SyncStep1 with what the relay lacks,
        and that answer always carries the client's whole delete set: it is
        ignored while every struct and delete in it is one the relay has.
        """
        try:
            parsed = parse_update(payload)
        except MalformedUpdate as exc:
            self._fail(session, CLOSE_PROTOCOL, str(exc)[:300])
            return
        rdoc = self.docs.get(tenant, doc)
        known = rdoc.clocks()
        new = any(r.length and r.end > known.get(r.client, 0) for r in parsed.structs)
        if not new and parsed.deletes:
            held = parse_update(rdoc.diff(rdoc.state_vector())).deletes
            ranges: dict[int, list[tuple[int, int]]] = {}
            for r in held:
                ranges.setdefault(r.client, []).append((r.clock, r.end))
            for spans in ranges.values():
                spans.sort()
            new = any(
                r.length and not _covered(ranges.get(r.client, []), r.clock, r.end)
                for r in parsed.deletes
            )
        if new:
            why = "the relay serves /yjs/ read-only" if not self.writable else "no write grant"
            self._fail(
                session, CLOSE_FORBIDDEN, f"read-only: this token may not write {doc} ({why})"
            )

    def _update(self, session: RelaySession, payload: bytes) -> None:
        """A follower's write: refused on a read-only endpoint, else applied and submitted."""
        tenant, doc = session.tenant, session.yjs_doc
        assert tenant is not None and doc is not None
        if payload == EMPTY_UPDATE:
            return
        if not session.yjs_writable:
            self._read_only(session, tenant, doc, payload)
            return
        session.record.updates_received += 1
        if len(payload) > self.max_update_bytes:
            self._fail(session, CLOSE_TOO_BIG, "update too big")
            return
        try:
            parsed = parse_update(payload, items=True)
        except MalformedUpdate as exc:
            self._fail(session, CLOSE_PROTOCOL, str(exc)[:300])
            return
        if not self._claimed(session, tenant, doc, parsed):
            return
        refused = self.gate.refusal(tenant, doc, parsed, writer_of(session))
        if refused is not None:
            session.record.error = refused.reason
            self._fail(session, refused.code, refused.reason)
            return
        result = self.docs.apply(tenant, doc, payload, ends_of(parsed))  # RemoteProtocolError
        self.fanout.submit(session, tenant, doc, payload, result, [], session.writer_name)
