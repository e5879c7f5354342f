"""What the relay's core keeps per session and hands to its pump (plain records).

* :class:`RelaySession`: one connection (sync protocol or y-protocols);
* :class:`PendingWrite`: an applied update on its way to durable storage;
* :class:`HelloFacts` / :class:`FollowerFacts`: what storage said, looked up by
  the pump (``relay.lookups``) and passed to the core's decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tiendasync.protocol import RelayConnection
from tiendasync.relay.broker import Unsubscribe
from tiendasync.relay.docs import RelayDoc
from tiendasync.relay.policy import Grants, SessionMeter, TokenBucket
from tiendasync.relay.storage import AppendEntry, SessionRecord, TokenRecord

__all__ = ["FollowerFacts", "HelloFacts", "PendingWrite", "RelaySession", "fail"]


@dataclass
class RelaySession:
    """One connection (sync protocol or y-protocols), as the core sees it."""

    id: str
    kind: str
    record: SessionRecord
    conn: RelayConnection | None = None
    tenant: str | None = None
    replica_id: str | None = None
    #: The location the session's token is for (None: not tied to one).
    location: str | None = None
    grants: Grants = field(default_factory=Grants)
    #: Sales documents of periods before this one left the replica: none is sent.
    sales_from: str | None = None
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
    #: frame and byte buckets, documents created (``Policy``), created on first use
    meter: SessionMeter | None = None
    #: the relay's generation of each document past 0, as announced at the HELLO
    generations: dict[str, int] = field(default_factory=dict)
    #: the documents this replica holds at an older generation, and that generation
    #: (its updates to them are late updates: carried, never applied)
    behind: dict[str, int] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        if self.conn is not None:
            return self.conn.state == "open"
        return self.close_code is None

    @property
    def writer_name(self) -> str:
        """How the update log names this session's writes."""
        return self.replica_id or f"yjs:{self.id}"


def fail(session: RelaySession, code: int, reason: str) -> None:
    """Close ``session`` with ``code`` (the caller then reports its output)."""
    if session.conn is not None:
        session.conn.fail(code, reason, remote=True)
    elif session.close_code is None:
        session.close_code, session.close_reason = code, reason


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
    #: the in-memory doc it was applied to (pinned until the write's end)
    rdoc: RelayDoc | None = None

    @property
    def stale(self) -> bool:
        """The doc it was applied to was dropped: storing it could record a lie."""
        return self.rdoc is not None and self.rdoc.stale

    def entry(self) -> AppendEntry:
        """The row to log (stamped by storage when the pump stores it)."""
        return AppendEntry(
            self.tenant,
            self.doc,
            self.data,
            self.replica,
            self.state_vector,
            generation=None if self.rdoc is None else self.rdoc.generation,
        )


@dataclass(frozen=True)
class HelloFacts:
    """What storage says about an authenticated HELLO (see ``lookups.lookup_hello``).

    ``foreign``: the client ids that belong to another replica (if any, nothing
    was claimed and the rest is empty); otherwise the replica's stored
    configuration, the client ids it owns and the tenant's state vectors.
    """

    foreign: tuple[int, ...] = ()
    config: dict[str, Any] | None = None
    owned: frozenset[int] = frozenset()
    state_vectors: Mapping[str, bytes] = field(default_factory=dict)
    #: the generation of each of the tenant's documents past generation 0
    generations: Mapping[str, int] = field(default_factory=dict)
    #: for each document the HELLO holds at a past generation: that generation's
    #: state vector (what the WELCOME announces for it)
    past_state_vectors: Mapping[str, bytes] = field(default_factory=dict)
    #: documents the HELLO holds at a past generation the relay no longer keeps
    #: (archived): the store is refused until the operator restores it
    archived: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FollowerFacts:
    """What storage says about a y-protocols follower's token (see ``lookups.lookup_follower``).

    ``config`` is the stored configuration of the token's replica, read only
    for a live replica token of the tenant.
    """

    token: TokenRecord | None = None
    config: dict[str, Any] | None = None
