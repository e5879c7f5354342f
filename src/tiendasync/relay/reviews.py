"""The central writers' lifecycle and the review of what the relay committed.

Per tenant, a :class:`~tiendasync.relay.central.CentralWriter` (an embedded
replica) merges every committed update, reviews invariants and makes the
relay's own writes (conflict records, resolutions).  This module opens those
replicas (file I/O, storage reads: pump side, never inside a decision),
catches them up with the relay, and hands each committed batch over as a
:class:`ReviewWork`, which the server runs on a worker thread.

A failure of a writer's storage (its directory: disk full) never makes it
stop silently: it is logged, the writer keeps what it could not merge or
review (``CentralWriter.needs_retry``), and :meth:`CentralReviews.retry`,
which the pump calls now and then, catches it up with the relay again and
re-runs the review, until it succeeds.

Threads: writers are opened and caught up on the core's thread (relay docs
are pycrdt docs, bound to it); :meth:`ReviewWork.run` touches only the
writers (Replicas: thread-safe).  A writer's own writes come back to the core
through ``call_soon`` (the server passes ``loop.call_soon_threadsafe``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pycrdt

from tiendasync.errors import ConfigError, RetryLater, TiendaSyncError
from tiendasync.protocol.statevector import decode_state_vector, encode_state_vector
from tiendasync.relay.central import CENTRAL_REPLICA_ID, CentralWriter
from tiendasync.relay.docs import DocCache
from tiendasync.relay.generations import Generations, past_state_vector
from tiendasync.relay.state import PendingWrite
from tiendasync.relay.storage import RelayStore

__all__ = ["CentralReviews", "ReviewWork"]

log = logging.getLogger("tiendasync.relay")

#: ``ingest(tenant, doc, update)``: store and fan out a central writer's write.
Ingest = Callable[[str, str, bytes], None]


@dataclass
class ReviewWork:
    """Committed updates to merge into the central writers, then review.

    Touches only the central writers (Replicas: thread-safe), so it may run on
    a worker thread.  Updates of one document are merged into one, and a
    tenant's documents are merged in one local transaction, so a busy relay
    pays one transaction and one review per tenant per work, not per update.
    """

    writers: dict[str, CentralWriter]
    updates: dict[tuple[str, str], list[bytes]]
    #: tenants to review even without updates (a retry)
    retry: frozenset[str] = frozenset()
    #: review invariants after merging (False: only merge; review workers review)
    review: bool = True

    def run(self) -> None:
        reviewed: set[str] = set(t for t in self.retry if t in self.writers)
        for tenant in reviewed:
            self.writers[tenant].retry_queued = False
        per_tenant: dict[str, list[tuple[str, bytes]]] = {}
        for (tenant, doc), updates in self.updates.items():
            if tenant not in self.writers:
                continue
            update = updates[0] if len(updates) == 1 else bytes(pycrdt.merge_updates(*updates))
            per_tenant.setdefault(tenant, []).append((doc, update))
        for tenant, merged in per_tenant.items():
            writer = self.writers[tenant]
            reviewed.add(tenant)
            try:
                writer.merge_many(merged)
            except TiendaSyncError as exc:  # its storage: caught up again at retry
                writer.behind = True
                log.error("central merge of %s failed (retried later): %s", tenant, exc)
            except Exception:  # a bug: logged, and caught up again at retry
                writer.behind = True
                log.exception("central merge of %s failed", tenant)
        for tenant in sorted(reviewed) if self.review else ():
            try:
                self.writers[tenant].review()
            except Exception:
                log.exception("central review of %s failed", tenant)


class CentralReviews:
    """The tenants' central writers under ``directory``, and the reviews they run.

    ``client_id_source`` (a number in ``range(n)``) replaces the system's
    randomness for the writers' Yjs client ids and ``wall_clock`` (milliseconds)
    the system clock of their timestamps (deterministic simulations).
    """

    def __init__(
        self,
        directory: str | Path,
        store: RelayStore,
        docs: DocCache,
        ingest: Ingest,
        *,
        invariants: Iterable[Any] = (),
        client_id_source: Callable[[int], int] | None = None,
        wall_clock: Callable[[], int] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.store = store
        self.docs = docs
        self.invariants = list(invariants)
        self.client_id_source = client_id_source
        self.wall_clock = wall_clock
        self._ingest = ingest
        self._writers: dict[str, CentralWriter] = {}
        #: tenants whose writer could not be opened: opened again at :meth:`retry`
        self._unopened: set[str] = set()
        #: Runs a :class:`ReviewWork`.  Default: at once, here; the server hands it
        #: to a worker thread so a big review never stalls the event loop.
        self.run: Callable[[ReviewWork], None] = lambda work: work.run()
        #: How a writer's writes (possibly made on that worker thread) get back to
        #: the core: default at once; the server uses ``loop.call_soon_threadsafe``.
        self.call_soon: Callable[..., Any] = lambda fn, *args: fn(*args)
        #: ``defer(fn)`` calls ``fn()`` a little later, once (see :meth:`review`).
        #: None (the default): every committed batch is handed over at once.
        self.defer: Callable[[Callable[[], None]], Any] | None = None
        #: Committed updates gathered for the next :meth:`flush`, at most this many.
        self.max_pending = 5000
        self._pending: dict[tuple[str, str], list[bytes]] = {}
        self._pending_count = 0
        self._flush_deferred = False
        #: tenants with a document being rolled over: their reviews wait
        self._held: set[str] = set()
        #: Whether this process reviews (a relay cluster: only the review lock's holder).
        self.enabled = True
        #: False when review workers review (:mod:`tiendasync.relay.workers`, on a
        #: PostgreSQL store): the writers then only merge, so the admin API's
        #: resolutions act on current state, and neither review nor apply requests.
        self.review_invariants = True

    def writer(self, tenant: str) -> CentralWriter:
        """The tenant's writer replica, opened and caught up on first use."""
        writer = self._writers.get(tenant)
        if writer is not None:
            return writer
        if tenant in self._held:  # (opened now, it would not follow the cut under way)
            raise RetryLater(f"a document of {tenant} is rolling over: try again in a moment")
        writer = CentralWriter.open(
            self.directory,
            tenant,
            lambda doc, data: self.call_soon(self._ingest, tenant, doc, data),
            self.invariants,
            client_id_source=self.client_id_source,
            wall_clock=self.wall_clock,
        )
        foreign = self.store.claim_client_ids(tenant, CENTRAL_REPLICA_ID, sorted(writer.client_ids))
        if foreign:
            writer.close()
            raise ConfigError(f"client id {foreign[0]} of the central writer is taken")
        self._writers[tenant] = writer
        self._unopened.discard(tenant)
        try:
            self._follow_generations(tenant, writer)
            for (_, doc), diffs in self._offers(tenant, writer).items():
                writer.merge(doc, diffs[0], review=False)
        except TiendaSyncError as exc:  # its storage: caught up again at retry
            writer.behind = True
            log.error("central writer of %s: catch-up failed (retried later): %s", tenant, exc)
        self._offer_own(tenant, writer)
        if self.review_invariants:
            writer.review()
        return writer

    def _follow_generations(self, tenant: str, writer: CentralWriter) -> None:
        """Move the writer's documents to the relay's current generations (the relay
        rolls documents over at start, before any writer opens; docs/generations.md).

        What the writer made that a past generation lacks (a write the relay did
        not store before it stopped) is carried over first, as a store's late
        update would be; then the writer's copy is replaced by the relay's.  Merging
        the new generation into the old one instead would count everything twice.
        """
        relay = self.store.generations(tenant)
        held = writer.replica.core.generations()
        names = set(writer.replica.doc_names())
        for doc, generation in sorted(relay.items()):
            mine = held.get(doc, 0)
            if doc not in names or mine == generation:
                continue
            if mine < generation:
                self._carry_own(tenant, writer, doc, mine)
            else:
                log.warning(
                    "central writer of %s holds generation %d of %s, the relay %d: "
                    "replaced by the relay's",
                    tenant,
                    mine,
                    doc,
                    generation,
                )
            state = self.docs.get(tenant, doc).diff(None)
            writer.replica.core.adopt_generation(doc, generation, state)

    def _carry_own(self, tenant: str, writer: CentralWriter, doc: str, past: int) -> None:
        """Carry into the current generation what the writer made that ``past`` lacks."""
        stored = decode_state_vector(past_state_vector(self.store, tenant, doc, past))
        own = writer.client_ids
        mine = decode_state_vector(writer.replica.state_vector(doc))
        if not any(c in own and k > stored.get(c, 0) for c, k in mine.items()):
            return
        target = {c: (stored.get(c, 0) if c in own else k) for c, k in mine.items()}
        update = writer.replica.diff(doc, encode_state_vector(target))
        carried = Generations(self.store).carry_late(
            tenant,
            doc,
            past,
            update,
            replica=CENTRAL_REPLICA_ID,
            received_at=writer.replica.core.now(),
        )
        if carried.carry is not None:
            self.docs.evict(tenant, doc)  # reloaded from storage, carry included

    def _offers(self, tenant: str, writer: CentralWriter) -> dict[tuple[str, str], list[bytes]]:
        """What the relay has that the writer lacks, per doc (read on the core's thread)."""
        return {
            (tenant, doc): [self.docs.get(tenant, doc).diff(writer.state_vector(doc))]
            for doc in self.store.state_vectors(tenant)
        }

    def _offer_own(self, tenant: str, writer: CentralWriter) -> None:
        """Ingest what the writer made that the relay lacks."""
        own = writer.client_ids
        for doc in writer.replica.doc_names():  # what the writer made that we lack
            relay_sv = self.docs.get(tenant, doc).state_vector()
            relay = decode_state_vector(relay_sv)
            mine = decode_state_vector(writer.replica.state_vector(doc))
            if any(c in own and k > relay.get(c, 0) for c, k in mine.items()):
                self._ingest(tenant, doc, writer.replica.diff(doc, relay_sv))

    def review(self, batch: list[PendingWrite]) -> None:
        """Gather a committed batch for review by the writers of its tenants.

        With :attr:`defer` set (the server), batches committed within a short
        while are handed over together by :meth:`flush`: one merge transaction
        and one invariant review per tenant for all of them, not one per
        commit.  Nothing durable waits for it: the updates are stored and
        acknowledged already, and a relay stopped before the flush (even
        killed) loses nothing: a writer catches up with the relay's log when
        it is opened (:meth:`writer`) and reviews what it merged, so each
        conflict is still opened once.  Without :attr:`defer`, or past
        :attr:`max_pending` updates, the batch is handed over at once.
        """
        if not self.enabled:
            return
        for w in batch:
            # With review workers, writes of replica "relay" are theirs too (their
            # conflict records): merged, or the admin API would not see them.  Our own
            # writers' writes need no merge back (merging them again changes nothing).
            theirs = w.replica != CENTRAL_REPLICA_ID or not self.review_invariants
            if w.fanout is not None and theirs:
                self._pending.setdefault((w.tenant, w.doc), []).append(w.fanout)
                self._pending_count += 1
        self._hand_over()

    def review_carry(self, tenant: str, doc: str, carry: bytes) -> None:
        """A late update's carry into the current generation is stored (written by the
        relay's generations, not by a session): the writers merge and review it too."""
        if not self.enabled:
            return
        self._pending.setdefault((tenant, doc), []).append(carry)
        self._pending_count += 1
        self._hand_over()

    def _hand_over(self) -> None:
        if not self._pending:
            return
        if self.defer is None or self._pending_count >= self.max_pending:
            self.flush()
        elif not self._flush_deferred:
            self._flush_deferred = True
            self.defer(self.flush)

    def hold(self, tenant: str) -> None:
        """Keep ``tenant``'s reviews gathered (not handed over) until :meth:`follow`: a
        document of it is being cut, and its writer must not merge what comes next
        into the generation it holds."""
        self._held.add(tenant)

    def follow(self, tenant: str) -> None:
        """The cut is stored: move ``tenant``'s writer, if open, to the relay's current
        generations (carrying what it made that the past one lacks, as when it opens),
        then hand over what was gathered meanwhile.  On the core's thread, once the
        reviews handed over before :meth:`hold` ran."""
        self._held.discard(tenant)
        writer = self._writers.get(tenant)
        if writer is not None:
            try:
                self._follow_generations(tenant, writer)
                self._offer_own(tenant, writer)  # (what was not taken, if nothing was cut)
            except TiendaSyncError as exc:  # its storage: reopened (and moved) at retry
                log.error("central writer of %s could not follow a rollover: %s", tenant, exc)
                del self._writers[tenant]
                self._unopened.add(tenant)
                writer.close()
        self._hand_over()

    def flush(self) -> None:
        """Hand what :meth:`review` gathered to the writers (see :class:`ReviewWork`);
        a held tenant's stays gathered."""
        self._flush_deferred = False
        grouped, self._pending = self._pending, {}
        if self._held:
            self._pending = {k: v for k, v in grouped.items() if k[0] in self._held}
            grouped = {k: v for k, v in grouped.items() if k[0] not in self._held}
        self._pending_count = sum(len(v) for v in self._pending.values())
        if not grouped:
            return
        writers: dict[str, CentralWriter] = {}
        for tenant in {t for t, _ in grouped}:
            try:
                writers[tenant] = self.writer(tenant)  # opened here, on the core's thread
            except Exception:
                self._unopened.add(tenant)  # its catch-up at open covers this batch
                log.exception("central writer of %s unavailable (retried later)", tenant)
        self.run(ReviewWork(writers, grouped, review=self.review_invariants))

    def catch_up(self, tenant: str) -> None:
        """``tenant``'s writer, if open, lacks rows the relay stored: it merges what it
        lacks (and reviews it) at the next :meth:`retry`."""
        writer = self._writers.get(tenant)
        if writer is not None:
            writer.behind = True

    def relay_write_failed(self, batch: list[PendingWrite]) -> None:
        """The relay could not store these writes: a writer's own ones are offered again."""
        for w in batch:
            writer = self._writers.get(w.tenant)
            if w.replica == CENTRAL_REPLICA_ID and writer is not None:
                writer.behind = True

    def retry(self) -> None:
        """Open the writers that failed to open; catch up and review again those that
        failed (``CentralWriter.needs_retry``).  On the core's thread; the merges and
        reviews run through :attr:`run`, like a batch's."""
        if not self.enabled:
            return
        for tenant in sorted(self._unopened - self._held):
            try:
                self.writer(tenant)
            except (TiendaSyncError, OSError) as exc:
                log.error("central writer of %s still unavailable: %s", tenant, exc)
        for tenant, writer in sorted(self._writers.items()):
            if not writer.needs_retry or writer.retry_queued or tenant in self._held:
                continue
            updates: dict[tuple[str, str], list[bytes]] = {}
            if writer.behind:
                writer.behind = False
                updates = self._offers(tenant, writer)
                self._offer_own(tenant, writer)
            writer.retry_queued = True
            log.info("central writer of %s: retrying its review", tenant)
            self.run(
                ReviewWork(
                    {tenant: writer}, updates, frozenset({tenant}), review=self.review_invariants
                )
            )

    def open_conflicts(self) -> int:
        return sum(len(w.conflicts(status="open", limit=10**9)) for w in self._writers.values())

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
