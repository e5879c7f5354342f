"""Events the protocol state machines hand to the I/O layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Ack",
    "ConnectionClosed",
    "Event",
    "GenerationsAnnounced",
    "Hello",
    "NextGenerationUpdate",
    "ProtocolFailure",
    "SyncRequested",
    "Synced",
    "UpdateReceived",
    "Welcome",
]


@dataclass(frozen=True)
class Event:
    """Base class of protocol events."""


@dataclass(frozen=True)
class Hello(Event):
    """(relay side) A replica introduced itself; authenticate, then accept or reject."""

    tenant: str
    replica_id: str
    token: str
    client_id: int
    state_vectors: dict[str, bytes]
    full: bool = False
    past_client_ids: tuple[int, ...] = ()
    #: the store config the replica says it runs with (unvalidated values), or None
    config: dict[str, Any] | None = None
    #: the oldest sales period the replica keeps (None: every one); see HelloFrame
    sales_from: str | None = None
    #: ``{doc: generation}`` of every document the replica holds; None: it knows none
    generations: dict[str, int] | None = None


@dataclass(frozen=True)
class Welcome(Event):
    """(replica side) The relay accepted us and told what it holds."""

    session_id: str
    state_vectors: dict[str, bytes]
    config: dict[str, Any] | None = None


@dataclass(frozen=True)
class UpdateReceived(Event):
    """A CRDT update for ``doc`` arrived (a catch-up diff or a live update)."""

    doc: str
    data: bytes


@dataclass(frozen=True)
class Ack(Event):
    """(replica side) The relay durably holds ``doc`` up to ``clock`` of ``client_id``."""

    doc: str
    client_id: int
    clock: int


@dataclass(frozen=True)
class Synced(Event):
    """(replica side) The relay has sent every catch-up diff for this session."""


@dataclass(frozen=True)
class SyncRequested(Event):
    """(replica side) The relay asks for a sync now (an administrator pressed the button)."""

    full: bool = False


@dataclass(frozen=True)
class ProtocolFailure(Event):
    """The connection must close with ``code`` and ``reason``.

    ``remote`` is True when the peer broke the protocol (or told us it
    failed) and False when we did.
    """

    code: int
    reason: str
    remote: bool = True


@dataclass(frozen=True)
class ConnectionClosed(Event):
    """The peer said goodbye normally."""

    reason: str = field(default="")


@dataclass(frozen=True)
class GenerationsAnnounced(Event):
    """(replica side) The relay's generation of each document past generation 0."""

    generations: dict[str, int]


@dataclass(frozen=True)
class NextGenerationUpdate(Event):
    """(replica side) An update of ``generation`` of ``doc``, the generation after the
    one the replica holds: it builds the new generation beside the old one, and moves
    over once every write to the old one is acknowledged (docs/generations.md)."""

    doc: str
    generation: int
    data: bytes
