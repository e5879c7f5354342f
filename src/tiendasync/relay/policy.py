"""The relay's policy: grants, rate limits and the decisions they make (sans I/O).

Nothing here reads a clock or storage: times are passed in (``now``, seconds
on any monotonic epoch) and so are the token records and configurations
storage returned.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tiendasync.errors import ConfigError
from tiendasync.model.config import StoreConfig
from tiendasync.model.grants import WriteGrants, matches
from tiendasync.protocol.codes import (
    CLOSE_RATE_LIMIT,
    CLOSE_TOO_BIG,
    MAX_DOCS_PER_HELLO,
    MAX_FRAME_BYTES,
    MAX_HELLO_BYTES,
    MAX_WELCOME_SV_BYTES,
)
from tiendasync.protocol.frames import fit_state_vectors, sv_bytes
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.relay.central import CENTRAL_REPLICA_ID
from tiendasync.relay.storage import TokenRecord

if TYPE_CHECKING:
    from tiendasync.relay.state import RelaySession

__all__ = [
    "NO_GRANTS",
    "DocBook",
    "Grants",
    "Policy",
    "RateLimits",
    "SessionMeter",
    "TokenBucket",
    "replica_token_fits",
    "store_config",
]


#: Answers a :class:`Grants` keeps (reads and writes, one per doc name).
_MEMO_DOCS = 4096


@dataclass(frozen=True)
class Grants:
    """Which docs a replica may read and write.

    ``read`` patterns match segment by segment like the write ones (see
    :mod:`tiendasync.model.grants`).  A replica whose token is tied to a
    location always writes that location's stock, sales and resolution
    requests and its own location record, plus what ``write`` adds (default:
    nothing more; grant ``catalog`` to let it edit products).  A token tied to
    no location writes what ``write`` grants (default: everything).  Nobody
    but the relay writes ``conflicts``, whatever the grants.
    """

    read: tuple[str, ...] = ("*",)
    write: tuple[str, ...] = ("*",)
    location: str | None = None

    def can_read(self, doc: str) -> bool:
        # Asked for every subscriber of every update fanned out: memoized per doc.
        memo = self._memo
        key = ("r", doc)
        hit = memo.get(key)
        if hit is None:
            hit = matches(self.read, doc)
            if len(memo) < _MEMO_DOCS:
                memo[key] = hit
        return hit

    def can_write(self, doc: str) -> bool:
        memo = self._memo
        key = ("w", doc)
        hit = memo.get(key)
        if hit is None:
            hit = self.writes.can_write(doc)
            if len(memo) < _MEMO_DOCS:
                memo[key] = hit
        return hit

    @functools.cached_property
    def _memo(self) -> dict[tuple[str, str], bool]:
        return {}

    @functools.cached_property
    def writes(self) -> WriteGrants:
        """The write side, as the WELCOME tells the replica."""
        return WriteGrants(self.write, self.location)

    @classmethod
    def from_config(cls, config: dict[str, Any] | None, location: str | None = None) -> Grants:
        """The grants of a replica with stored ``config`` whose token is for ``location``."""
        config = config or {}

        def patterns(key: str, default: list[str]) -> tuple[str, ...]:
            value = config.get(key, default)
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise ConfigError(f"{key} grants must be a list of patterns")
            return tuple(value)

        write_default = ["*"] if location is None else []
        return cls(patterns("read", ["*"]), patterns("write", write_default), location)


#: Grants of a replica whose stored configuration is unreadable: nothing.
NO_GRANTS = Grants((), ())


def store_config(raw: dict[str, Any] | None) -> StoreConfig | None:
    """The store settings of a replica's stored configuration (its grants aside)."""
    if raw is None:
        return None
    return StoreConfig.from_dict({k: v for k, v in raw.items() if k not in ("read", "write")})


def replica_token_fits(token: TokenRecord | None, tenant: str, replica_id: str) -> bool:
    """Whether ``token`` (as authenticated) may open a sync session as ``tenant/replica_id``.

    Admin tokens never sync, and no replica may pose as the relay's own writer.
    """
    return (
        token is not None
        and not token.admin
        and token.tenant == tenant
        and token.replica_id == replica_id
        and replica_id != CENTRAL_REPLICA_ID
    )


@dataclass(frozen=True)
class RateLimits:
    """Caps the relay enforces on its clients (0 disables a limit).

    Connections and messages:

    * ``max_connections_per_token``: open sessions (sync and y-protocols)
      one token may hold at once; one more is closed with
      ``CLOSE_RATE_LIMIT`` right after authentication.
    * ``max_messages_per_s`` / ``message_burst``: a token bucket per
      connection, one token per websocket message received.
    * ``max_new_connections_per_ip_per_s`` / ``new_connection_burst``: a
      token bucket per peer address, one token per websocket connection.

    Frames and bytes (charged per frame and per byte, whatever the messages
    carry them; over: ``CLOSE_RATE_LIMIT``):

    * ``max_frames_per_s`` / ``frame_burst``: a token bucket per connection,
      one token per protocol frame (a y-protocols message is one frame).
    * ``max_bytes_per_s`` / ``byte_burst``: a token bucket per connection,
      one token per byte received.  The burst must hold the largest message
      an honest replica sends at once (its catch-up).

    Documents (over: ``CLOSE_RATE_LIMIT``; nothing of the refused update is
    stored):

    * ``max_docs_per_tenant``: documents a tenant holds.  At most
      :data:`~tiendasync.protocol.MAX_DOCS_PER_HELLO`, so that every WELCOME
      and HELLO fits the protocol's decoders.
    * ``max_docs_per_replica``: documents holding a replica's writes (every
      document it created is one).
    * ``max_new_docs_per_session``: documents one session may create.

    Handshake sizes:

    * ``max_hello_bytes``: the first message of a sync session (its HELLO);
      over: ``CLOSE_TOO_BIG``.  At least
      :data:`~tiendasync.protocol.MAX_HELLO_BYTES`, the most a replica sends.
    * ``max_welcome_bytes``: the WELCOME's state vectors; past it the relay
      leaves documents out (those the replica named in its HELLO last), and
      the replica re-sends its own writes of those: nothing is refused.

    The outgoing side and gapped updates:

    * ``max_send_stall_s``: a connection whose outgoing data has not moved
      for this many seconds (a client that does not read) is cut at once,
      its buffers dropped (``CLOSE_RATE_LIMIT``, logged).
    * ``max_gap_seconds`` / ``max_gap_bytes`` / ``max_gap_updates``: how long,
      how many bytes and how many updates with missing dependencies (gapped)
      the relay holds per writer (session) while it waits for what they
      depend on.  Held updates are never stored, fanned out or served;
      past a bound the oldest are dropped and the session's sync-log row
      says so (the writer re-sends them on its next catch-up).
    """

    max_connections_per_token: int = 4
    max_messages_per_s: float = 500.0
    message_burst: int = 1000
    max_new_connections_per_ip_per_s: float = 20.0
    new_connection_burst: int = 100
    max_frames_per_s: float = 2000.0
    frame_burst: int = 20_000
    max_bytes_per_s: float = 4.0 * 1024 * 1024
    byte_burst: int = 4 * MAX_FRAME_BYTES
    max_docs_per_tenant: int = 8000
    max_docs_per_replica: int = 1000
    max_new_docs_per_session: int = 200
    max_hello_bytes: int = 2 * MAX_HELLO_BYTES
    max_welcome_bytes: int = 8 * 1024 * 1024
    max_send_stall_s: float = 5.0
    max_gap_seconds: float = 30.0
    max_gap_bytes: int = 1024 * 1024
    max_gap_updates: int = 256

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.max_docs_per_tenant > MAX_DOCS_PER_HELLO:
            raise ConfigError(
                f"max_docs_per_tenant must be at most {MAX_DOCS_PER_HELLO} "
                "(every WELCOME and HELLO must fit the protocol)"
            )
        if 0 < self.max_hello_bytes < MAX_HELLO_BYTES:
            raise ConfigError(
                f"max_hello_bytes must be 0 or at least {MAX_HELLO_BYTES} "
                "(the largest HELLO a replica sends)"
            )
        if self.max_welcome_bytes > MAX_WELCOME_SV_BYTES:
            raise ConfigError(f"max_welcome_bytes must be at most {MAX_WELCOME_SV_BYTES}")


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
MAX_TRACKED_PEERS = 10_000
#: Gapped updates of one session that the relay may have to take back out of a
#: document (each costs a rebuild of it) before the session is closed.
MAX_REBUILDS_PER_SESSION = 16


@dataclass
class SessionMeter:
    """What the policy counts for one session (``RelaySession.meter``)."""

    #: one token per frame received (made full at the first charge)
    frames: TokenBucket | None = None
    #: one token per byte received
    bytes: TokenBucket | None = None
    #: documents this session created (new to its tenant when it first wrote them)
    created: set[str] = field(default_factory=set)
    #: its updates the relay had to take back out of a document (see ``relay.docs``)
    rebuilds: int = 0


@dataclass
class DocBook:
    """One tenant's documents as the policy counts them (in memory).

    Seeded from storage at every HELLO (the tenant's stored state vectors),
    grown when a session creates a document, confirmed when a write of it is
    stored, and rid of creations never stored once their session ends.
    """

    docs: set[str] = field(default_factory=set)
    #: per replica, the documents holding its writes or created by it
    by_replica: dict[str, set[str]] = field(default_factory=dict)
    #: documents created by a session and not stored yet
    unconfirmed: set[str] = field(default_factory=set)


def _fmt_bytes(n: float) -> str:
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n:g} bytes"


class Policy:
    """The rate-limit decisions over :class:`RateLimits`.

    State: the per-address buckets and, per tenant, the :class:`DocBook`;
    per session, its :class:`SessionMeter`.  Every decision returns None or
    the refusal as ``(close code, reason)``.
    """

    def __init__(self, limits: RateLimits | None = None) -> None:
        self.limits = limits if limits is not None else RateLimits()
        self._peers: dict[str, TokenBucket] = {}
        self._books: dict[str, DocBook] = {}

    def admit(self, peer: str, now: float) -> str | None:
        """A new connection from address ``peer`` at ``now``: None, or why to refuse it."""
        rate = self.limits.max_new_connections_per_ip_per_s
        if not rate:
            return None
        bucket = self._peers.get(peer)
        if bucket is None:
            if len(self._peers) >= MAX_TRACKED_PEERS:
                self._peers = {p: b for p, b in self._peers.items() if not b.idle(now)}
            burst = max(1.0, float(self.limits.new_connection_burst or rate))
            bucket = self._peers[peer] = TokenBucket.full(rate, burst, now)
        if bucket.take(now):
            return None
        return "too many new connections from this address; retry later"

    def over_message_rate(self, session: RelaySession, now: float | None) -> bool:
        """One more message of ``session`` at ``now``: over its rate?  (``now`` None: no limit.)

        The session's bucket is made full on its first message.
        """
        rate = self.limits.max_messages_per_s
        if now is None or not rate:
            return False
        if session.bucket is None:
            burst = max(1.0, float(self.limits.message_burst or rate))
            session.bucket = TokenBucket.full(rate, burst, now)
        return not session.bucket.take(now)

    @property
    def message_rate_reason(self) -> str:
        return f"more than {self.limits.max_messages_per_s:g} messages per second"

    def over_token_cap(
        self, session: RelaySession, token_id: str, sessions: Iterable[RelaySession]
    ) -> bool:
        """Whether ``session`` would be one too many open sessions of ``token_id``."""
        cap = self.limits.max_connections_per_token
        if not cap:
            return False
        holding = sum(1 for s in sessions if s is not session and s.token_id == token_id and s.open)
        return holding >= cap

    # -- frames and bytes -----------------------------------------------------------------

    @staticmethod
    def meter(session: RelaySession) -> SessionMeter:
        if session.meter is None:
            session.meter = SessionMeter()
        return session.meter

    def charge(
        self, session: RelaySession, frames: int, nbytes: int, now: float | None
    ) -> tuple[int, str] | None:
        """``frames`` frames in ``nbytes`` bytes received by ``session`` at ``now``.

        Each frame costs one token of the frame bucket and each byte one of the
        byte bucket, however they are grouped in messages.  ``now`` None: no limit.
        """
        if now is None:
            return None
        lim, meter = self.limits, self.meter(session)
        rate = lim.max_frames_per_s
        if rate and frames:
            if meter.frames is None:
                meter.frames = TokenBucket.full(rate, max(1.0, float(lim.frame_burst or rate)), now)
            if not meter.frames.take(now, frames):
                return CLOSE_RATE_LIMIT, f"more than {rate:g} frames per second"
        rate = lim.max_bytes_per_s
        if rate and nbytes:
            if meter.bytes is None:
                meter.bytes = TokenBucket.full(rate, max(1.0, float(lim.byte_burst or rate)), now)
            if not meter.bytes.take(now, nbytes):
                return CLOSE_RATE_LIMIT, f"more than {_fmt_bytes(rate)} per second"
        return None

    def hello_refusal(self, nbytes: int) -> tuple[int, str] | None:
        """A HELLO (the first message of a sync session) of ``nbytes`` bytes."""
        cap = self.limits.max_hello_bytes
        if cap and nbytes > cap:
            return CLOSE_TOO_BIG, f"HELLO of {nbytes} bytes is over the limit of {cap}"
        return None

    def rebuild_refusal(self, session: RelaySession) -> tuple[int, str] | None:
        """One more update of ``session`` had to be taken back out of its document
        (a gap the relay could only see by applying it, which costs a rebuild)."""
        meter = self.meter(session)
        meter.rebuilds += 1
        if meter.rebuilds > MAX_REBUILDS_PER_SESSION:
            return CLOSE_RATE_LIMIT, "too many updates with missing dependencies"
        return None

    # -- documents ---------------------------------------------------------------------------

    def book(self, tenant: str) -> DocBook:
        book = self._books.get(tenant)
        if book is None:
            book = self._books[tenant] = DocBook()
        return book

    def seed(
        self,
        tenant: str,
        replica: str,
        state_vectors: Mapping[str, bytes],
        owned: Iterable[int] = (),
    ) -> None:
        """What storage said at a HELLO: the tenant's documents and their state vectors.

        The replica's documents are those whose state vector has one of its
        ``owned`` client ids.
        """
        book = self.book(tenant)
        book.docs.update(state_vectors)
        mine = book.by_replica.setdefault(replica, set())
        ids = frozenset(owned)
        if not ids:
            return
        for doc, sv in state_vectors.items():
            if doc in mine:
                continue
            try:
                clocks = decode_state_vector(sv)
            except ValueError:
                continue
            if any(clocks.get(c, 0) for c in ids):
                mine.add(doc)

    def doc_refusal(self, session: RelaySession, doc: str) -> tuple[int, str] | None:
        """An UPDATE of ``doc`` from ``session``: None, or why it is refused.

        Writing a document the tenant holds is never refused here.  Creating
        one counts against the session, the replica and the tenant; it is
        counted at once (so one message of many frames cannot overshoot) and
        forgotten again if no write of it is stored before the session ends.
        """
        tenant = session.tenant
        if tenant is None:
            return None
        book = self.book(tenant)
        if doc in book.docs:
            return None
        lim, meter = self.limits, self.meter(session)
        replica = session.writer_name
        mine = book.by_replica.setdefault(replica, set())
        cap = lim.max_new_docs_per_session
        if cap and len(meter.created) >= cap:
            return CLOSE_RATE_LIMIT, (
                f"more than {cap} new documents in one session; reconnect to go on"
            )
        cap = lim.max_docs_per_replica
        if cap and len(mine) >= cap:
            return CLOSE_RATE_LIMIT, (
                f"this replica already writes {len(mine)} documents, its limit; "
                f"{doc[:100]!r} refused"
            )
        cap = lim.max_docs_per_tenant
        if cap and len(book.docs) >= cap:
            return CLOSE_RATE_LIMIT, (
                f"the tenant already holds {len(book.docs)} documents, its limit; "
                f"{doc[:100]!r} refused"
            )
        book.docs.add(doc)
        book.unconfirmed.add(doc)
        mine.add(doc)
        meter.created.add(doc)
        return None

    def stored(self, tenant: str, doc: str) -> None:
        """A write of ``doc`` was stored (the document exists now)."""
        book = self.book(tenant)
        book.docs.add(doc)
        book.unconfirmed.discard(doc)

    def session_ended(self, session: RelaySession) -> None:
        """Forget the documents ``session`` created of which nothing was stored."""
        meter, tenant = session.meter, session.tenant
        if meter is None or tenant is None or not meter.created:
            return
        book = self.book(tenant)
        mine = book.by_replica.get(session.writer_name, set())
        for doc in meter.created:
            if doc in book.unconfirmed:
                book.unconfirmed.discard(doc)
                book.docs.discard(doc)
                mine.discard(doc)
        meter.created.clear()

    # -- WELCOME -----------------------------------------------------------------------------

    def welcome_state_vectors(
        self, state_vectors: Mapping[str, bytes], named: Iterable[str] = ()
    ) -> dict[str, bytes]:
        """The state vectors a WELCOME carries: ``state_vectors`` (those the replica may
        read) within the protocol's and :attr:`RateLimits.max_welcome_bytes`' bounds.

        Past a bound, documents the replica did not name in its HELLO are left
        out first (it uses the WELCOME only for those it holds).
        """
        budget = self.limits.max_welcome_bytes or MAX_WELCOME_SV_BYTES
        if len(state_vectors) <= MAX_DOCS_PER_HELLO and sv_bytes(state_vectors) <= budget:
            return dict(state_vectors)
        first = set(named)
        order = sorted(state_vectors, key=lambda d: (d not in first, d))
        return fit_state_vectors({d: state_vectors[d] for d in order}, budget)
