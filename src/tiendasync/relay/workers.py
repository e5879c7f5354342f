"""Invariant review as partitioned workers, on a PostgreSQL store of record.

A :class:`ReviewWorker` reviews the partitions (:mod:`tiendasync.relay.leases`)
whose lease it holds.  For each it keeps a private embedded replica (a
:class:`~tiendasync.relay.central.CentralWriter` in a scratch directory: a
cache, never the record), fed from the store of record in commit order per
document from the partition's **cursor** (the last seq reviewed, per
document).  A batch is: merge the updates after the cursor, review the keys
they touched (and apply the stores' resolution requests of that location),
then one fenced transaction (``commit_review``) that logs the review's writes
(the conflicts document's update, compensating writes) like a replica's,
records the conflicts' rows and moves the cursor.  Hence:

- an update is reviewed exactly once: a batch that did not commit moved no
  cursor and wrote nothing, and the partition's next owner (this worker
  again, or another after the lease expired) reviews the same updates from
  the committed cursor;
- a worker that lost its lease (paused past its expiry) cannot commit: the
  database checks owner and epoch under the lease row's lock;
- a conflict is opened once: its id comes from its key and how many
  conflicts that key had (:func:`conflict_id`), so two writers opening the
  same one name it alike, and the store refuses to record an opening twice.

After a failed batch or a lost lease the worker drops its replica and builds
it again from the store of record (everything up to the cursor merged
without review, what follows it reviewed), so nothing uncommitted survives.

Workers run inside relay processes (``tiendasync relay --store
postgresql://...``, one worker thread) or alone (``tiendasync relay worker``).
Synchronous: one thread per worker, blocking store calls.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from tiendasync.errors import ConfigError, TiendaSyncError
from tiendasync.relay.central import CENTRAL_REPLICA_ID, CentralWriter
from tiendasync.relay.leases import (
    CATALOG_PARTITION,
    Lease,
    LeaseLost,
    Step,
    decide,
    partition_docs,
)
from tiendasync.relay.records import AppendEntry, ConflictRecord, DocHistory
from tiendasync.store.conflicts import Conflict

__all__ = ["ReviewStore", "ReviewWorker", "conflict_id", "default_owner"]

log = logging.getLogger("tiendasync.relay.workers")

#: ``on_committed(tenant, [(doc, update), ...])``: a batch's writes, once committed.
Committed = Callable[[str, list[tuple[str, bytes]]], None]


class ReviewStore(Protocol):
    """What a review worker needs from the store of record (``PostgresRelayStore``)."""

    def review_partitions(self) -> list[tuple[str, str]]: ...
    def acquire_lease(
        self, tenant: str, location: str, owner: str, ttl: float
    ) -> tuple[Lease | None, float]: ...
    def renew_lease(self, lease: Lease, ttl: float) -> tuple[Lease | None, float]: ...
    def release_lease(self, lease: Lease) -> None: ...
    def review_cursor(self, tenant: str, location: str) -> dict[str, int]: ...
    def updates_after(
        self, tenant: str, cursor: dict[str, int], limit: int
    ) -> tuple[list[tuple[int, str, bytes]], set[str]]: ...
    def commit_review(
        self,
        lease: Lease,
        reviewed_from: dict[str, int],
        cursor: dict[str, int],
        entries: Sequence[AppendEntry],
        conflicts: Sequence[tuple[ConflictRecord, bool]],
    ) -> list[int]: ...
    def state_vectors(self, tenant: str) -> dict[str, bytes]: ...
    def load_doc(self, tenant: str, doc: str) -> DocHistory: ...
    def generations(self, tenant: str) -> dict[str, int]: ...
    def claim_client_ids(self, tenant: str, replica_id: str, ids: Sequence[int]) -> list[int]: ...


def default_owner() -> str:
    """A worker name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def conflict_id(tenant: str, key: str, earlier: int) -> str:
    """The id of the conflict on ``key`` opened after ``earlier`` others on that key."""
    return "C-" + hashlib.sha1(f"{tenant}|{key}|{earlier}".encode()).hexdigest()[:12]


@dataclass
class _Held:
    """A partition this worker holds: its lease (``expires_at`` on this worker's
    clock), committed cursor, and private replica (``None``: to be built)."""

    lease: Lease
    cursor: dict[str, int]
    writer: CentralWriter | None = None
    directory: Path | None = None
    pending: list[tuple[str, bytes]] = field(default_factory=list)
    #: the generation of each document (past 0) the replica was built from
    generations: dict[str, int] = field(default_factory=dict)


class ReviewWorker:
    """Reviews the partitions whose leases it holds (see the module's docstring).

    ``lease_seconds``: how long a lease lasts unless renewed (a dead worker's
    partitions move after at most that); renewed when less than a third is left,
    between batches and before a commit.  A batch (merge and review) must take
    less than that, or it is never committed: size ``batch`` accordingly.
    ``batch``: most updates merged per partition per commit.  ``max_partitions``:
    most partitions held at once (``None``: as many as it finds free).
    ``clock``: this worker's monotonic clock (the leases' own expiry is the
    database's; a lease is taken to end early by the time a call took).
    """

    def __init__(
        self,
        store: ReviewStore,
        cache_dir: str | Path,
        *,
        owner: str | None = None,
        invariants: Iterable[Any] = (),
        lease_seconds: float = 10.0,
        batch: int = 500,
        max_partitions: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_committed: Committed | None = None,
    ) -> None:
        if lease_seconds <= 0 or batch <= 0:
            raise ConfigError("lease_seconds and batch must be positive")
        self.store = store
        self.cache_dir = Path(cache_dir)
        self.owner = owner or default_owner()
        self.invariants = list(invariants)
        self.lease_seconds = lease_seconds
        self.batch = batch
        self.max_partitions = max_partitions
        self.clock = clock
        self.on_committed = on_committed
        self._held: dict[tuple[str, str], _Held] = {}
        #: updates reviewed and batches committed since start
        self.reviewed = 0
        self.commits = 0

    @property
    def held(self) -> list[tuple[str, str]]:
        """The partitions held now."""
        return sorted(self._held)

    # -- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, idle: float = 0.2) -> None:
        """Tick until ``stop`` is set, then release every lease (:meth:`close`)."""
        try:
            while not stop.is_set():
                try:
                    busy = self.tick()
                except TiendaSyncError as exc:  # the store of record is unreachable
                    log.error("review worker %s: %s (retrying)", self.owner, exc)
                    busy = 0
                if not busy:
                    stop.wait(idle)
        finally:
            self.close()

    def tick(self) -> int:
        """One round over the partitions: take the free ones, renew, review a batch of
        each held one.  Returns how many updates it reviewed."""
        done = 0
        for key in self.store.review_partitions():
            held = self._held.get(key)
            now = self.clock()
            step = decide(
                None if held is None else held.lease,
                self.owner,
                None if held is None else held.lease.epoch,
                now,
                renew_within=self.lease_seconds / 3,
            )
            try:
                if step is Step.ACQUIRE:
                    if self.max_partitions is not None and len(self._held) >= self.max_partitions:
                        continue
                    held = self._acquire(*key)
                    if held is None:
                        continue
                elif step is Step.RENEW and held is not None:
                    if not self._renew(held):
                        continue
                elif step is Step.LOST:
                    log.warning("review of %s/%s: lease expired before renewal", *key)
                    self._drop(key)
                    continue
                if held is not None:
                    done += self._review(held)
            except LeaseLost as exc:
                log.warning("review worker %s: %s; dropping the partition", self.owner, exc)
                self._drop(key)
            except TiendaSyncError as exc:
                log.error("review of %s/%s failed (rebuilt and retried): %s", *key, exc)
                self._forget_replica(self._held.get(key))
            except Exception:
                log.exception("review of %s/%s failed (rebuilt and retried)", *key)
                self._forget_replica(self._held.get(key))
        return done

    def close(self) -> None:
        """Release every lease (the partitions move at once) and remove the replicas."""
        for key in list(self._held):
            held = self._held[key]
            try:
                self.store.release_lease(self._db_lease(held))
            except TiendaSyncError as exc:  # it expires on its own
                log.error("releasing %s/%s failed: %s", *key, exc)
            self._drop(key)

    # -- leases -----------------------------------------------------------------------------

    def _local(self, lease: Lease, sent_at: float, db_now: float) -> Lease:
        """``lease`` with its expiry on this worker's clock, counted from before the call."""
        return replace(lease, expires_at=sent_at + (lease.expires_at - db_now))

    def _db_lease(self, held: _Held) -> Lease:
        return replace(held.lease, owner=self.owner)

    def _acquire(self, tenant: str, location: str) -> _Held | None:
        sent = self.clock()
        lease, db_now = self.store.acquire_lease(tenant, location, self.owner, self.lease_seconds)
        if lease is None:
            return None
        cursor = self.store.review_cursor(tenant, location)
        held = _Held(self._local(lease, sent, db_now), cursor)
        self._held[(tenant, location)] = held
        log.info(
            "review worker %s took %s/%s (epoch %d)", self.owner, tenant, location, lease.epoch
        )
        return held

    def _renew(self, held: _Held) -> bool:
        sent = self.clock()
        lease, db_now = self.store.renew_lease(self._db_lease(held), self.lease_seconds)
        key = (held.lease.tenant, held.lease.location)
        if lease is None:
            log.warning("review of %s/%s: lease lost (taken over)", *key)
            self._drop(key)
            return False
        held.lease = self._local(lease, sent, db_now)
        return True

    def _drop(self, key: tuple[str, str]) -> None:
        held = self._held.pop(key, None)
        self._forget_replica(held)

    def _forget_replica(self, held: _Held | None) -> None:
        if held is None:
            return
        if held.writer is not None:
            try:
                held.writer.close()
            except Exception:
                log.exception("closing the review replica failed")
        if held.directory is not None:
            shutil.rmtree(held.directory, ignore_errors=True)
        held.writer, held.directory = None, None
        held.pending.clear()

    # -- a batch ----------------------------------------------------------------------------

    def _docs(self, held: _Held) -> list[str]:
        lease = held.lease
        return partition_docs(lease.location, list(self.store.state_vectors(lease.tenant)))

    def _open_replica(self, held: _Held) -> CentralWriter:
        tenant = held.lease.tenant
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        held.directory = Path(tempfile.mkdtemp(prefix="review-", dir=self.cache_dir))
        writer = CentralWriter.open(
            held.directory,
            tenant,
            lambda doc, data: held.pending.append((doc, data)),
            self.invariants,
        )
        held.writer = writer
        book = writer.replica.conflicts

        def new_id(key: str) -> str:
            earlier = sum(1 for c in book.list(limit=10**9) if c.key == key)
            return conflict_id(tenant, key, earlier)

        book.new_id = new_id
        foreign = self.store.claim_client_ids(tenant, CENTRAL_REPLICA_ID, sorted(writer.client_ids))
        if foreign:
            raise ConfigError(f"client id {foreign[0]} of a review replica is taken")
        return writer

    def _build(self, held: _Held) -> tuple[dict[str, int], int]:
        """A fresh replica of the partition: what the cursor covers merged and not
        reviewed, what follows it merged to be reviewed.  Returns the cursor after
        it and how many updates are to be reviewed."""
        self._forget_replica(held)
        writer = self._open_replica(held)
        before: list[tuple[str, bytes]] = []
        after: list[tuple[str, bytes]] = []
        upto: dict[str, int] = {}
        held.generations = {}
        for doc in self._docs(held):
            history = self.store.load_doc(held.lease.tenant, doc)
            if history.generation:
                held.generations[doc] = history.generation
            seen = held.cursor.get(doc, 0)
            if history.snapshot is not None:
                # a snapshot that folded unreviewed updates is reviewed whole (idempotent)
                (before if history.upto_seq <= seen else after).append((doc, history.snapshot))
            for seq, data in history.updates:
                (before if seq <= seen else after).append((doc, data))
            upto[doc] = max(seen, history.last_seq)
        replica = writer.replica
        if before:
            replica.apply_remote_many(before)
        with replica.core.lock:  # reviewed by an earlier owner
            replica.core.changes.drain_touched()
            replica.core.changes.drain_changed_products()
            replica.core.changes.drain_changed_requests()
        if after:
            replica.apply_remote_many(after)
        return upto, len(after)

    def _review(self, held: _Held) -> int:
        """Merge, review and commit one batch of the partition; how many updates."""
        if held.writer is None:
            upto, count = self._build(held)
        else:
            cursor = {d: held.cursor.get(d, 0) for d in self._docs(held)}
            rows, folded = self.store.updates_after(held.lease.tenant, cursor, self.batch)
            if folded or self._moved(held, cursor):
                # compacted past the cursor (the log no longer has them), or a document
                # was cut (its next generation's rows do not apply to the replica's)
                upto, count = self._build(held)
            else:
                if not rows:
                    return 0
                held.writer.replica.apply_remote_many([(doc, data) for _, doc, data in rows])
                upto = dict(cursor)
                for seq, doc, _ in rows:
                    upto[doc] = max(upto[doc], seq)
                count = len(rows)
        writer = held.writer
        assert writer is not None
        reviewed_from = {d: held.cursor.get(d, 0) for d in upto}
        records = self._review_keys(held, writer, max(upto.values(), default=0))
        if not held.pending and not records and upto == reviewed_from:
            return 0
        lease = held.lease
        entries = [
            AppendEntry(
                lease.tenant,
                doc,
                data,
                CENTRAL_REPLICA_ID,
                writer.replica.state_vector(doc),
                generation=held.generations.get(doc, 0),
            )
            for doc, data in held.pending
        ]
        if lease.expires_at - self.clock() <= self.lease_seconds / 3:
            # a long batch (a first build of a big partition): renew before committing,
            # while it is still ours; a lease that ran out meanwhile is lost
            if not self._renew(held):
                raise LeaseLost(f"review of {lease.tenant}/{lease.location}: the lease ran out")
            lease = held.lease
        self.store.commit_review(self._db_lease(held), reviewed_from, upto, entries, records)
        written, held.pending = held.pending, []
        held.cursor.update(upto)
        self.reviewed += count
        self.commits += 1
        if written and self.on_committed is not None:
            self.on_committed(lease.tenant, written)
        return count

    def _moved(self, held: _Held, docs: Iterable[str]) -> bool:
        """Whether a document of the partition is at another generation than its replica."""
        stored = self.store.generations(held.lease.tenant)
        return any(stored.get(d, 0) != held.generations.get(d, 0) for d in docs)

    def _review_keys(
        self, held: _Held, writer: CentralWriter, source_seq: int
    ) -> list[tuple[ConflictRecord, bool]]:
        """Review what the merged updates touched in this partition; the conflicts it
        opened or changed, as rows (with whether the row opens it)."""
        location, tenant = held.lease.location, held.lease.tenant
        replica = writer.replica
        book = replica.conflicts
        changes = replica.core.changes
        with replica.core.lock:
            touched = changes.drain_touched()
            products = changes.drain_changed_products()
            requests = changes.drain_changed_requests()
        before = {c.id: c for c in book.list(limit=10**9)}
        if location == CATALOG_PARTITION:
            book.review(keys=(), products=products)
        else:
            book.review(keys={k for k in touched if k[0] == location}, products=())
            for at, cid in sorted(r for r in requests if r[0] == location):
                reason = book.apply_request(at, cid)
                if reason is not None:
                    log.warning("request of %s to resolve %s refused: %s", at, cid, reason)
        records: list[tuple[ConflictRecord, bool]] = []
        for c in book.list(limit=10**9):
            old = before.get(c.id)
            if old is None or _row_of(old) != _row_of(c):
                records.append((_record(tenant, c, source_seq), old is None))
        return records


def _row_of(c: Conflict) -> tuple[str, float]:
    return c.status, c.updated_at


def _record(tenant: str, c: Conflict, source_seq: int) -> ConflictRecord:
    return ConflictRecord(
        tenant,
        c.id,
        c.invariant,
        c.location,
        c.sku,
        c.status,
        c.opened_at,
        c.updated_at,
        source_seq or None,
    )
