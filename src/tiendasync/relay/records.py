"""The relay's stored records: the plain values :mod:`tiendasync.relay.storage` handles."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from tiendasync.errors import StorageError

__all__ = [
    "AdminRequest",
    "AppendEntry",
    "AppendResult",
    "ConflictRecord",
    "DocHistory",
    "GenerationMoved",
    "NodeRecord",
    "PastGeneration",
    "RolloverCut",
    "SessionRecord",
    "SyncRequest",
    "TokenRecord",
]


@dataclass(frozen=True)
class TokenRecord:
    """A stored token: never the secret, only its SHA-256 (hex)."""

    id: str
    token_hash: str
    tenant: str | None
    replica_id: str | None
    admin: bool
    created_at: float
    revoked_at: float | None = None
    #: The location a replica token's store sells at (``None``: not tied to one).
    #: It decides the token's default write grants and which location's
    #: records and resolution requests it may write.
    location: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def public(self) -> dict[str, Any]:
        """What may be shown to an administrator (no hash)."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "replica_id": self.replica_id,
            "location": self.location,
            "admin": self.admin,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True)
class AppendEntry:
    """One update to log (``data`` None: nothing to store, only the state vector)."""

    tenant: str
    doc: str
    data: bytes | None
    replica: str | None
    state_vector: bytes
    received_at: float = field(default_factory=time.time)
    #: the generation of ``doc`` the update was applied to (None: not checked).  A
    #: store that several relays share (PostgreSQL) refuses the batch with
    #: :class:`GenerationMoved` when another relay cut the document meanwhile.
    generation: int | None = None


class GenerationMoved(StorageError):
    """:meth:`RelayStore.append_many` stored nothing: documents of the batch are at
    another generation than their entries were applied to (another relay node cut
    them).  ``moved``: ``{(tenant, doc): generation stored}``."""

    def __init__(self, moved: dict[tuple[str, str], int]) -> None:
        names = ", ".join(f"{t}/{d} (now {g})" for (t, d), g in sorted(moved.items()))
        super().__init__(f"documents moved to a new generation meanwhile: {names[:300]}")
        self.moved = moved


@dataclass(frozen=True)
class AppendResult:
    """What :meth:`RelayStore.append_many` did."""

    seqs: list[int | None]
    #: updates logged since the last snapshot, per (tenant, doc) touched
    log_counts: dict[tuple[str, str], int]


@dataclass(frozen=True)
class DocHistory:
    """A document as stored: the snapshot and every update logged after it."""

    snapshot: bytes | None
    upto_seq: int
    updates: list[tuple[int, bytes]]
    #: ``(seq, reason)`` of stored rows left out because their bytes no longer
    #: match their checksum (seq 0: the snapshot); verification quarantines them
    damaged: list[tuple[int, str]] = field(default_factory=list)
    #: the document's current generation, read with the rest (0 until its first rollover)
    generation: int = 0

    @property
    def last_seq(self) -> int:
        return self.updates[-1][0] if self.updates else self.upto_seq


@dataclass(frozen=True)
class RolloverCut:
    """What a rollover stores: ``cut``, the whole state of the generation it ends (its
    record); ``seed``, the next generation's snapshot, and ``state_vector``, the seed's."""

    cut: bytes
    seed: bytes
    state_vector: bytes


@dataclass(frozen=True)
class PastGeneration:
    """What the store of record keeps of one past generation of a document: its cut
    (when it was taken, its bytes) and the late updates logged to it since."""

    doc: str
    generation: int
    cut_at: float
    late_updates: int
    stored_bytes: int

    def public(self) -> dict[str, Any]:
        """As the admin API and ``tiendasync relay generations --json`` show it."""
        return {
            "doc": self.doc,
            "generation": self.generation,
            "cut_at": self.cut_at,
            "late_updates": self.late_updates,
            "stored_bytes": self.stored_bytes,
        }


@dataclass
class SessionRecord:
    """One row of the relay's sync log (one websocket session)."""

    session_id: str
    tenant: str | None
    replica_id: str | None
    started_at: float
    ended_at: float | None = None
    outcome: str = "ok"
    kind: str = "sync"
    docs: int = 0
    updates_received: int = 0
    updates_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    error: str | None = None


@dataclass(frozen=True)
class ConflictRecord:
    """What the store of record keeps about one conflict, beside the conflict itself.

    The conflict (its history, resolution, details) lives in the tenant's
    central writer's CRDT documents; this row is the part several relay
    processes must agree on: that the conflict was opened, once, and where
    it stands.  ``id`` is unique per tenant: opening it again is not a new
    conflict (:meth:`RelayStore.record_conflict` says which happened).
    """

    tenant: str
    id: str
    invariant: str
    location: str
    sku: str
    status: str  # open | resolved | self_healed
    opened_at: float
    updated_at: float
    #: the seq of the stored update whose review opened it (``None``: not known)
    source_seq: int | None = None


@dataclass(frozen=True)
class NodeRecord:
    """A relay process's last heartbeat in the store of record.

    Several relay processes on one PostgreSQL database are a cluster; each
    one beats every second or so with the stores connected to it and its
    metrics, so any node's admin API can say which stores are online, ask
    the right node to sync one now, and show every node's figures.  A node
    whose ``seen_at`` is older than a few beats is gone (a SIGKILL leaves its
    row behind; the readers' age cut ignores it).
    """

    node_id: str
    started_at: float
    seen_at: float
    #: (tenant, replica id) of each sync session open on the node
    replicas: tuple[tuple[str, str], ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class SyncRequest:
    """An administrator's "sync now" for a store connected to another node."""

    tenant: str
    replica_id: str
    full: bool = False


@dataclass(frozen=True)
class AdminRequest:
    """An admin operation one relay node asked the reviewing node to run
    (``relay.forward``), by its idempotency key ``id``.

    ``state``: ``asked`` (waiting for the reviewer), ``running`` (``node`` runs
    it), ``done`` (``result``: the answer's JSON), ``failed`` (``error_class`` and
    ``error``: the typed error it answers with) or ``cancelled`` (nobody took it
    before the asking node gave up: nothing was done; asking again re-asks it).
    """

    id: str
    tenant: str
    op: str
    #: the operation's arguments, canonical JSON (a reused key must carry the same)
    args: str
    state: str
    asked_by: str
    asked_at: float
    node: str | None = None
    started_at: float | None = None
    done_at: float | None = None
    result: str | None = None
    error_class: str | None = None
    error: str | None = None
