"""y-protocols followers: standard Yjs clients following one document (sans I/O).

``/yjs/<tenant>/<doc>?token=...`` serves the y-websocket sync protocol for
one doc.  A follower is read-only unless the relay runs with
``yjs_writable=True`` and its grants allow writing the doc; awareness and
unknown message types are ignored.  The framing is
:mod:`tiendasync.protocol.yprotocols`; the token and configuration come from
the pump (``lookups.lookup_follower``) as :class:`~tiendasync.relay.state.FollowerFacts`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tiendasync.errors import ConfigError, InvalidArgument, RemoteProtocolError
from tiendasync.model.docnames import data_type_of
from tiendasync.protocol import CLOSE_PROTOCOL, CLOSE_RATE_LIMIT, CLOSE_TOO_BIG
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.protocol.yjs_update import MalformedUpdate, parse_update
from tiendasync.protocol.yprotocols import (
    SyncMessage,
    SyncType,
    decode_sync,
    encode_sync_step1,
    encode_sync_step2,
)
from tiendasync.relay.docs import EMPTY_UPDATE, DocCache, ends_of
from tiendasync.relay.fanout import Fanout
from tiendasync.relay.policy import NO_GRANTS, Grants, Policy
from tiendasync.relay.state import FollowerFacts, RelaySession, fail
from tiendasync.relay.storage import TokenRecord

__all__ = ["Followers"]


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
    ) -> None:
        self.docs = docs
        self.fanout = fanout
        self.policy = policy
        self.sessions = sessions
        self.writable = writable
        self.max_update_bytes = max_update_bytes
        self._on_output = on_output

    def _fail(self, session: RelaySession, code: int, reason: str) -> None:
        fail(session, code, reason)
        self._on_output(session)

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
                grants = Grants.from_config(facts.config)
            except ConfigError:
                return 403, record, NO_GRANTS
        if not grants.can_read(doc):
            return 403, record, grants
        return 200, record, grants

    def open(
        self, session: RelaySession, tenant: str, doc: str, record: TokenRecord, grants: Grants
    ) -> None:
        """Start following ``doc``: our SyncStep1 goes out first."""
        if self.policy.over_token_cap(session, record.id, self.sessions.values()):
            self._fail(session, CLOSE_RATE_LIMIT, "too many connections with this token")
            return
        session.token_id = record.id
        session.tenant, session.replica_id, session.grants = tenant, record.replica_id, grants
        session.record.tenant, session.record.replica_id = tenant, record.replica_id
        session.yjs_doc = doc
        session.yjs_writable = self.writable and grants.can_write(doc)
        session.docs.add(doc)
        self.fanout.subscribe(session, tenant)
        session.outbox.append(encode_sync_step1(self.docs.get(tenant, doc).state_vector()))
        self._on_output(session)

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
                return  # awareness and unknown message types are ignored
            if sync.sync_type == SyncType.STEP1:
                self._step1(session, sync)
            elif sync.carries_update:
                self._update(session, sync.payload)
            else:
                self._fail(session, CLOSE_PROTOCOL, f"unknown sync message type {sync.sync_type}")
        except RemoteProtocolError as exc:
            self._fail(session, exc.code, exc.reason)

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

    def _update(self, session: RelaySession, payload: bytes) -> None:
        """A follower's write: dropped on a read-only endpoint, else applied and submitted."""
        tenant, doc = session.tenant, session.yjs_doc
        assert tenant is not None and doc is not None
        if not session.yjs_writable or payload == EMPTY_UPDATE:
            return
        session.record.updates_received += 1
        if len(payload) > self.max_update_bytes:
            self._fail(session, CLOSE_TOO_BIG, "update too big")
            return
        try:
            parsed = parse_update(payload)
        except MalformedUpdate as exc:
            self._fail(session, CLOSE_PROTOCOL, str(exc)[:300])
            return
        result = self.docs.apply(tenant, doc, payload, ends_of(parsed))  # RemoteProtocolError
        self.fanout.submit(session, tenant, doc, payload, result, [], session.writer_name)
