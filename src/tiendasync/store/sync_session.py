"""One sync session of a replica, sans I/O.

:class:`ReplicaSync` joins the replica-side protocol state machine
(:class:`~tiendasync.protocol.ReplicaConnection`) to a
:class:`~tiendasync.Replica`: it builds the HELLO from the replica's state
vectors, sends what the relay lacks of our own writes once per connection,
applies what arrives, marks queue entries acknowledged, and streams new local
writes in live mode, and moves documents the relay rolled over to their new
generation (docs/generations.md).  It never touches sockets, threads or clocks: the
websocket client (``tiendasync.store.client``) and the simulated-network tests feed
it bytes, carry its bytes and pass in the clock its queue timestamps come from.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import pycrdt

from tiendasync.crdt.generations import crdt_of
from tiendasync.errors import (
    AuthError,
    ClockAhead,
    ProtocolError,
    RemoteProtocolError,
    SyncError,
    TiendaSyncError,
    UnreachableRelay,
)
from tiendasync.model.docnames import data_type_of, location_of
from tiendasync.model.grants import GRANTS_KEY, WriteGrants
from tiendasync.protocol import (
    CLOSE_AUTH,
    CLOSE_CLOCK_AHEAD,
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    MAX_FRAME_BYTES,
    Ack,
    CloseCode,
    ConnectionClosed,
    GenerationsAnnounced,
    NextGenerationUpdate,
    ProtocolFailure,
    ReplicaConnection,
    Synced,
    SyncRequested,
    UpdateReceived,
    Welcome,
)
from tiendasync.protocol.statevector import decode_state_vector, encode_state_vector
from tiendasync.protocol.yjs_update import MalformedUpdate, parse_update, restrict_deletes

if TYPE_CHECKING:
    from tiendasync.store.replica import Replica

__all__ = ["ReplicaSync", "SyncReport"]

log = logging.getLogger("tiendasync.sync")


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
    #: Conflicts that opened here during the session (the relay's review of what it sent included).
    conflicts_opened: int = 0
    #: Conflicts that closed here during the session.
    conflicts_healed: int = 0
    #: The same as ``conflicts_opened`` (its former name).
    conflicts_seen: int = 0
    duration_s: float = 0.0
    outcome: str = "running"
    error: str | None = None
    received_docs: set[str] = field(default_factory=set)
    #: Documents with local writes the relay does not let this replica write (not sent).
    not_granted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["received_docs"] = sorted(self.received_docs)
        return out


def writers_of(update: bytes) -> set[int]:
    """The client ids whose items ``update`` carries (none for a malformed one)."""
    try:
        return {s.client for s in parse_update(update).structs if s.length}
    except MalformedUpdate:
        return set()


class ReplicaSync:
    """The replica's side of one connection to the relay.

    After every :meth:`receive_data` check :attr:`error` (the session must
    end with it), :attr:`resync` (the relay asked for a new, possibly full,
    session) and :attr:`done` (one-shot mode: everything exchanged and
    acknowledged; a BYE is queued).
    """

    def __init__(
        self,
        replica: Replica,
        token: str,
        *,
        relay: str = "",
        full: bool = False,
        live: bool = False,
        review_wait: bool = False,
        clock: Callable[[], float],
    ) -> None:
        self.replica = replica
        self.core = replica.core
        self.clock = clock
        self.token = token
        self.full = full
        self.live = live
        self.conn = ReplicaConnection(max_frame_bytes=MAX_FRAME_BYTES)
        self.report = SyncReport(relay=relay)
        self.own_ids = replica.own_client_ids()
        self.expected: dict[tuple[str, int], int] = {}
        self.acked: dict[tuple[str, int], int] = {}
        self.synced = False
        self.done = False
        self.error: TiendaSyncError | None = None
        self.resync: bool | None = None
        #: What the relay said we may write (``None``: it did not say; send everything).
        self.grants: WriteGrants | None = None
        #: One-shot: after everything is acknowledged, wait for the relay's review of
        #: the stock and sales this session sent, if this replica sees them break an
        #: invariant with no open conflict yet (:attr:`awaiting_review`).
        self.review_wait = review_wait
        self.sent_reviewable = False
        self.sent_locations: set[str] = set()
        #: Everything is exchanged; the relay's review may still open conflicts.  The
        #: session ends when an update of the conflicts document arrives, or when
        #: the pump gives up waiting (:meth:`end_review`).
        self.awaiting_review = False
        self.review_over = False
        #: The generation the HELLO told of each rollable document we hold.
        self.told_generations: dict[str, int] = {}
        #: Documents the relay holds at the next generation: doc -> that generation.
        self.behind: dict[str, int] = {}
        #: The next generation of each of them, built from the relay's NEXT frames.
        self.next_docs: dict[str, pycrdt.Doc[Any]] = {}
        #: Documents this session moved to their next generation: their new writes wait
        #: for the next session (this one's relay still takes them as the old one's).
        self.moved: set[str] = set()

    @property
    def closed(self) -> bool:
        return self.conn.closed

    def start(self) -> None:
        """Queue the HELLO."""
        replica = self.replica
        names = replica.doc_names()
        svs = {} if self.full else {d: replica.state_vector(d) for d in names}
        held = self.core.generations()
        self.told_generations = {d: held.get(d, 0) for d in names if _rollable(d)}
        self.conn.hello(
            tenant=replica.tenant,
            replica_id=replica.replica_id,
            token=self.token,
            client_id=replica.client_id,
            state_vectors=svs,
            full=self.full,
            past_client_ids=tuple(sorted(self.own_ids - {replica.client_id})),
            config=replica.config.to_dict(),
            # older sales months left (or leave, at the end of this sync) the file
            sales_from=replica.sales_floor(),
            generations=self.told_generations,
        )

    def data_to_send(self) -> bytes:
        data = self.conn.data_to_send()
        self.report.bytes_sent = self.conn.bytes_sent
        return data

    def receive_data(self, data: bytes | str) -> None:
        """Bytes of one message from the relay."""
        if isinstance(data, str):
            self.conn.fail(
                CloseCode.UNSUPPORTED_DATA, "text frames are not part of the protocol", remote=True
            )
        else:
            self.conn.receive_data(data)
        self.report.bytes_received = self.conn.bytes_received
        events = self.conn.events()
        i = 0
        while i < len(events):
            if self.error is not None or self.resync is not None:
                return
            if isinstance(events[i], UpdateReceived):  # a run of updates: one transaction
                j = i
                while j < len(events) and isinstance(events[j], UpdateReceived):
                    j += 1
                self._apply_updates(events[i:j])
                i = j
            else:
                self._handle(events[i])
                i += 1
        if self.error is None and self.resync is None:
            self._check_done()

    def _apply_updates(self, events: list[Any]) -> None:
        try:
            changed = self.replica.apply_remote_many([(e.doc, e.data) for e in events])
        except RemoteProtocolError as exc:
            self.conn.fail(exc.code, exc.reason, remote=False)
            self.error = exc
            return
        self.report.updates_received += len(events)
        if changed:
            self.report.received_docs.update(e.doc for e in events)
        if self.sent_reviewable and any(_is_conflicts(e.doc) for e in events):
            self.review_over = True

    def send_local(self, updates: list[tuple[str, bytes]]) -> None:
        """Stream committed local writes (live mode; before WELCOME the catch-up carries them)."""
        if self.conn.state not in ("catching_up", "live"):
            return
        grants = self.grants
        withheld: set[str] = set()
        for doc, data in updates:
            if doc in self.moved:
                continue  # a write to its new generation: the next session sends it
            if grants is None or grants.can_write(doc):
                self.conn.send_update(doc, data)
                self.report.updates_sent += 1
                self._note_sent(doc)
            else:
                withheld.add(doc)
        self._withhold(sorted(withheld))
        self._mark_sent()

    def send_others(self, updates: list[tuple[str, bytes]]) -> None:
        """Stream local writes that other processes sharing the file committed.

        Their writer ids must have been announced in this session's HELLO; a
        process opened since then has a new id, so the session asks for a new
        one (:attr:`resync`), whose catch-up carries those writes.
        """
        if not updates:
            return
        writers = {w for _, data in updates for w in writers_of(data)}
        if not writers <= self.own_ids:
            self.resync = False
            return
        self.send_local(updates)

    def stop(self, reason: str = "stopping") -> None:
        self.conn.bye(reason)

    # -- events ------------------------------------------------------------------------------

    def _handle(self, event: Any) -> None:
        handler = self._HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def _on_welcome(self, event: Welcome) -> None:
        self.report.session_id = event.session_id
        central = dict(event.config or {})
        self.grants = WriteGrants.from_wire(central.pop(GRANTS_KEY, None))
        if event.config is not None:  # what is not there is no longer set centrally
            self.core.adopt_central_config(central)
        self._send_catch_up(event.state_vectors)
        self.core.set_connection_state("syncing")

    def _on_ack(self, event: Ack) -> None:
        key = (event.doc, event.client_id)
        self.acked[key] = max(self.acked.get(key, 0), event.clock)
        self.report.acknowledged += self._acknowledge(event.doc, event.client_id, event.clock)
        if event.doc in self.behind:
            self._move_generations()

    def _on_synced(self, event: Synced) -> None:
        self.synced = True
        if self.live:
            self.core.set_connection_state("online")
        self._move_generations()

    def _on_sync_requested(self, event: SyncRequested) -> None:
        self.resync = event.full

    def _on_failure(self, event: ProtocolFailure) -> None:
        self.error = _failure_error(event)
        if event.code in (CLOSE_FORBIDDEN, CLOSE_CLOCK_AHEAD):
            self._mark_refused(f"relay refused: {event.reason}")

    def _on_closed(self, event: ConnectionClosed) -> None:
        if self.resync is not None:
            return  # the relay asked for a new session, then ended this one: no error
        self.error = UnreachableRelay(f"relay closed the session: {event.reason}")

    def _on_generations_announced(self, event: GenerationsAnnounced) -> None:
        self._on_generations(event.generations)

    def _refuse(self, reason: str) -> None:
        """The relay sent something we cannot take: close the session with ``reason``."""
        self.conn.fail(CloseCode.PROTOCOL, reason[:300], remote=False)
        self.error = ProtocolError(reason[:300], CloseCode.PROTOCOL)

    def _send_catch_up(self, relay_svs: dict[str, bytes]) -> None:
        """Send, in priority order, what the relay lacks of our own writes."""
        config = self.replica.config
        docs = sorted(
            self.replica.doc_names(), key=lambda d: (-config.priority(data_type_of(d)), d)
        )
        self.report.docs = len(docs)
        withheld: list[str] = []
        for doc in docs:
            if self.conn.closed:
                # The relay ended the session right after its WELCOME (it asked for a
                # new one: another relay node cut a document meanwhile): nothing can be
                # sent, and the next session catches up.
                return
            relay = decode_state_vector(relay_svs[doc]) if doc in relay_svs else {}
            # The relay's state vector is what it holds durably: it acknowledges
            # our writes whose ACK was lost with a previous connection.
            for client in self.own_ids:
                if relay.get(client, 0):
                    self.report.acknowledged += self._acknowledge(doc, client, relay[client])
            # One hold of the lock from the state vector to the diff: another process
            # of the store may commit in between, maybe as a writer this session's
            # HELLO did not announce, whose items the relay would refuse (they wait
            # for the session the poll of other processes asks for).
            with self.core.locked():
                local = decode_state_vector(self.replica.state_vector(doc))
                ours = {c: k for c, k in local.items() if c in self.own_ids and k > relay.get(c, 0)}
                if not ours and not self.full:
                    continue
                if self.grants is not None and not self.grants.can_write(doc):
                    if ours:
                        withheld.append(doc)
                    continue
                # Claim the relay has every other writer's items: the relay only
                # accepts our own items from us, and the diff still carries deletes.
                target = {
                    c: (relay.get(c, 0) if c in self.own_ids else k) for c, k in local.items()
                }
                # ... and only our own deletes: the relay refuses deletes of other
                # writers' items that it has not deleted itself.
                update = restrict_deletes(
                    self.replica.diff(doc, encode_state_vector(target)), self.own_ids.__contains__
                )
            self.conn.send_update(doc, update)
            self.report.updates_sent += 1
            self._note_sent(doc)
            for client, clock in ours.items():
                self.expected[(doc, client)] = clock
        self._withhold(withheld)
        self._mark_sent()

    # -- generations (docs/generations.md) ------------------------------------------------

    def _on_generations(self, relay: dict[str, int]) -> None:
        """The relay's generation of each document past 0: those we hold one behind get
        built beside the old one; those the HELLO did not tell are at the relay's.

        A document left out of the HELLO is one we did not hold then; if a local
        write created it since, that write is streamed in this session and the
        relay takes it as one to its current generation, so the file must say so
        (a later HELLO telling generation 0 would have it carried over again)."""
        unheld: dict[str, int] = {}
        for doc, generation in relay.items():
            mine = self.told_generations.get(doc)
            if mine is None:
                if _rollable(doc):
                    unheld[doc] = generation
            elif generation > mine:
                # Behind (by one generation or several): its writes to the one it
                # holds are carried into the relay's, then it moves there.
                self.behind[doc] = generation
            elif generation < mine:  # the relay refuses that at the HELLO
                self._refuse(f"the relay holds generation {generation} of {doc!r}, we {mine}")
                return
        if unheld:
            self.core.adopt_generations(unheld)

    def _on_next(self, event: NextGenerationUpdate) -> None:
        """An update of the next generation of a document we hold one behind."""
        if self.behind.get(event.doc) != event.generation:
            self._refuse(f"an unexpected update of generation {event.generation} of {event.doc!r}")
            return
        if event.doc in self.moved:  # that generation is ours now: merged like any update
            self._apply_updates([UpdateReceived(event.doc, event.data)])
        else:
            try:
                parse_update(event.data)
            except MalformedUpdate as exc:
                self._refuse(f"a malformed update of {event.doc!r}: {exc}")
                return
            self.next_docs.setdefault(event.doc, pycrdt.Doc()).apply_update(event.data)
            self.report.updates_received += 1
        if self.synced and self.sent_reviewable and _is_conflicts(event.doc):
            # the relay's review answered (in the next generation; the catch-up's whole
            # next generation, before SYNCED, is no answer)
            self.review_over = True

    def _move_generations(self) -> None:
        """Move every document we hold a generation behind whose writes to the old one
        are all acknowledged, once the relay's catch-up (its whole next generation) is in.
        A live session then ends for a new one, held at the new generations."""
        if not self.synced or not self.behind:
            return
        for doc, generation in sorted(self.behind.items()):
            if doc in self.moved or any(
                self.acked.get(key, 0) < clock
                for key, clock in self.expected.items()
                if key[0] == doc
            ):
                continue
            nxt = self.next_docs.get(doc)  # none sent: nothing we may read of it
            state = bytes(nxt.get_update()) if nxt is not None else bytes(pycrdt.Doc().get_update())
            if self.core.move_generation(doc, generation, state):
                self.moved.add(doc)
        if self.moved and self.live:
            self.resync = False

    # -- the outbox ------------------------------------------------------------------------

    def _withhold(self, docs: list[str]) -> None:
        """Writes to ``docs``, which the relay does not let us write, are not sent:
        their queue entries become errors that say so; the rest syncs on."""
        if not docs:
            return
        self.report.not_granted = sorted({*self.report.not_granted, *docs})
        reason = f"not sent: this store may not write {', '.join(docs)[:300]} (relay grants)"
        log.warning("%s", reason)
        with self.core.transaction():
            self.core.storage.outbox.mark_not_granted(docs, reason, self.clock())

    def _mark_sent(self) -> None:
        with self.core.transaction():
            self.core.storage.outbox.mark_sent(self.clock())

    def _mark_refused(self, reason: str) -> None:
        """The relay refused what this session sent: its unacknowledged entries are errors.

        They stay in the queue (and in the data); ``queue.process(id)`` retries one.
        """
        with self.core.transaction():
            self.core.storage.outbox.mark_refused(reason, self.clock())

    def _acknowledge(self, doc: str, client_id: int, clock: int) -> int:
        """The relay durably holds ``doc`` up to ``clock`` of ``client_id``."""
        with self.core.transaction():
            return self.core.storage.outbox.acknowledge(doc, client_id, clock, self.clock())

    def _note_sent(self, doc: str) -> None:
        if _reviewed(doc):
            self.sent_reviewable = True
            location = location_of(doc)
            if location is not None:
                self.sent_locations.add(location)

    def _expects_review(self) -> bool:
        """Whether the relay's review of what we sent will likely open conflicts."""
        if not (self.review_wait and self.sent_reviewable) or self.review_over:
            return False
        locations = self.sent_locations or {self.replica.location}
        return self.replica.conflicts.unrecorded_violations(locations) > 0

    def end_review(self) -> None:
        """Stop waiting for the relay's review (the pump's wait is over)."""
        self.review_over = True
        self._check_done()

    def _check_done(self) -> None:
        if self.live or self.done or not self.synced or self.conn.closed:
            return
        if not all(self.acked.get(k, 0) >= clock for k, clock in self.expected.items()):
            return
        if self.awaiting_review and not self.review_over:
            return
        if not self.awaiting_review and self._expects_review():
            self.awaiting_review = True
            return
        self.done = True
        self.conn.bye("synced")

    _HANDLERS: ClassVar[dict[type[Any], Callable[[ReplicaSync, Any], None]]] = {
        Welcome: _on_welcome,
        Ack: _on_ack,
        Synced: _on_synced,
        GenerationsAnnounced: _on_generations_announced,
        NextGenerationUpdate: _on_next,
        SyncRequested: _on_sync_requested,
        ProtocolFailure: _on_failure,
        ConnectionClosed: _on_closed,
    }


def _rollable(doc: str) -> bool:
    """Whether ``doc``'s data type rolls over to new generations (counters and LWW)."""
    try:
        return crdt_of(doc) is not None
    except TiendaSyncError:
        return False


def _reviewed(doc: str) -> bool:
    """Whether the relay's central review looks at ``doc`` (stock and sales)."""
    try:
        return data_type_of(doc) in ("stock", "sales")
    except TiendaSyncError:
        return False


def _is_conflicts(doc: str) -> bool:
    try:
        return data_type_of(doc) == "conflicts"
    except TiendaSyncError:
        return False


def _failure_error(event: ProtocolFailure) -> TiendaSyncError:
    """The error a session ends with when the relay closes it with ``event``."""
    if event.code == CLOSE_AUTH:
        return AuthError(f"relay refused us: {event.reason}")
    if event.code == CLOSE_FORBIDDEN:
        return AuthError(f"relay forbids this: {event.reason}")
    if event.code == CLOSE_CLOCK_AHEAD:
        return ClockAhead(f"relay refused our writes: {event.reason}")
    if event.code == CLOSE_INTERNAL:
        return SyncError(f"relay error: {event.reason}")
    return ProtocolError(event.reason, event.code)
