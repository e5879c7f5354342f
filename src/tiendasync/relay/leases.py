"""Review partitions and their leases: the decisions, without I/O.

The invariant review of a cluster is split per **partition**: one
(tenant, location) pair, whose documents are that location's stock, sales
and resolution requests, plus what the rules read tenant-wide (catalog,
locations, conflicts).  One more partition per tenant, location
:data:`CATALOG_PARTITION` (``"-"``, the location catalog conflicts carry),
reviews the catalog's concurrent edits.

Each partition is owned by at most one worker at a time through a **lease**:
a row with an owner, an epoch and an expiry.  Taking a free or expired lease
bumps the epoch; only the owner renews it, and only while it has not
expired.  A worker's commit (its conflict writes and its cursor, in one
transaction) is *fenced*: the store of record accepts it only while the row
still names that owner and epoch and has not expired (:func:`may_commit`),
and holds the row locked until the commit ends, so a worker that paused
past its expiry (GC, a stopped VM, a lost network) and wakes up after another
took over can never commit over the new owner's work.  Safety rests on the
epoch check inside the database; clocks only decide *when* a dead owner's
partition moves.

The functions here are the rules; the PostgreSQL store applies the same ones
in SQL (``pgstore``), and ``tests/relay/test_leases.py`` checks them as a
state machine.  Times are seconds on one clock, passed in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from tiendasync.errors import RetryLater
from tiendasync.model.docnames import CATALOG, CONFLICTS, LOCATIONS, location_of

__all__ = [
    "CATALOG_PARTITION",
    "Lease",
    "LeaseLost",
    "Step",
    "acquired",
    "decide",
    "may_commit",
    "partition_docs",
    "partitions_of",
    "released",
    "renewed",
]

#: The partition (per tenant) that reviews the catalog's concurrent edits.
CATALOG_PARTITION = "-"

#: What every partition of a tenant reads besides its own location's documents.
_SHARED = (CATALOG, LOCATIONS, CONFLICTS)


class LeaseLost(RetryLater):
    """A review commit was refused: the worker no longer holds the partition's lease
    (or the conflict it opens is open already).  Nothing of it was committed; the
    partition's next owner reviews the same updates from the committed cursor."""


@dataclass(frozen=True)
class Lease:
    """A partition's lease row: ``owner`` None when free; epochs only grow."""

    tenant: str
    location: str
    owner: str | None
    epoch: int
    expires_at: float

    def held_by(self, owner: str, epoch: int, now: float) -> bool:
        """Whether ``owner`` at ``epoch`` holds it at ``now``."""
        return self.owner == owner and self.epoch == epoch and now < self.expires_at

    def free_at(self, now: float) -> bool:
        """Nobody holds it at ``now`` (never taken, released, or expired)."""
        return self.owner is None or now >= self.expires_at


class Step(enum.Enum):
    """What a worker does next with a partition."""

    #: it holds the lease and need not renew yet: review a batch
    REVIEW = "review"
    #: it holds the lease, which ends within the renewal margin: renew first
    RENEW = "renew"
    #: nobody holds it: try to take it
    ACQUIRE = "acquire"
    #: another worker holds it: leave it alone
    WAIT = "wait"
    #: it held the lease and no longer does (expired, or taken over): drop what it
    #: had not committed, and its copy of the partition's state
    LOST = "lost"


def decide(
    lease: Lease | None, me: str, held_epoch: int | None, now: float, *, renew_within: float
) -> Step:
    """The next step of worker ``me`` for one partition.

    ``lease``: the row as last read (``None``: there is none yet);
    ``held_epoch``: the epoch ``me`` believes it holds (``None``: it holds none).
    """
    if held_epoch is not None:
        if lease is None or not lease.held_by(me, held_epoch, now):
            return Step.LOST
        return Step.RENEW if lease.expires_at - now <= renew_within else Step.REVIEW
    if lease is None or lease.free_at(now):
        return Step.ACQUIRE
    return Step.WAIT


def acquired(
    lease: Lease | None, tenant: str, location: str, me: str, now: float, ttl: float
) -> Lease | None:
    """The row after ``me`` tries to take it at ``now``: a new epoch if it was free,
    the same one renewed if ``me`` already held it, ``None`` if another holds it."""
    if lease is None:
        return Lease(tenant, location, me, 1, now + ttl)
    if lease.owner == me and now < lease.expires_at:
        return replace(lease, expires_at=now + ttl)
    if not lease.free_at(now):
        return None
    return replace(lease, owner=me, epoch=lease.epoch + 1, expires_at=now + ttl)


def renewed(lease: Lease | None, me: str, epoch: int, now: float, ttl: float) -> Lease | None:
    """The row after ``me`` renews it (``None``: it no longer holds it; nothing changes)."""
    if lease is None or not lease.held_by(me, epoch, now):
        return None
    return replace(lease, expires_at=now + ttl)


def released(lease: Lease | None, me: str, epoch: int) -> Lease | None:
    """The row after ``me`` lets it go (unchanged if ``me`` does not hold that epoch)."""
    if lease is None or lease.owner != me or lease.epoch != epoch:
        return lease
    return replace(lease, owner=None, expires_at=0.0)


def may_commit(lease: Lease | None, me: str, epoch: int, now: float) -> bool:
    """Whether the store of record accepts a review commit of ``me`` at ``epoch``."""
    return lease is not None and lease.held_by(me, epoch, now)


def partition_docs(location: str, docs: list[str]) -> list[str]:
    """Of a tenant's ``docs``, those the partition at ``location`` reviews from."""
    if location == CATALOG_PARTITION:
        return [d for d in docs if d in (CATALOG, CONFLICTS)]
    return [d for d in docs if d in _SHARED or location_of(d) == location]


def partitions_of(docs: list[str]) -> list[str]:
    """The partitions (locations) of a tenant holding ``docs``, in order."""
    located = {loc for d in docs if (loc := location_of(d)) is not None}
    return [CATALOG_PARTITION, *sorted(located)] if docs else []
