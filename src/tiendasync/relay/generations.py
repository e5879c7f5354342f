"""Document generations at the relay: when to roll a document over, the rollover, the carry.

The relay holds every durable update, so it is the one that folds a counter
or LWW document (stock, catalog, locations, conflicts, resolutions) into a
new generation (docs/generations.md):

* :meth:`Generations.due` says whether a cut of a document would fold past the
  :class:`RolloverPolicy` (slots beyond a fresh seed's, or their stored bytes;
  both off by default);
* :meth:`Generations.roll_over` cuts generation ``g``: its whole state is
  kept as ``g``'s record and ``g+1`` starts from
  :func:`~tiendasync.crdt.generations.seed_update` (current values, under a
  fresh writer id registered to the relay), in one transaction of the store
  of record;
* :meth:`Generations.carry_late` takes an update that reached ``g`` after the
  cut, logs it to ``g`` and, in the same transaction, what it adds to ``g+1``
  (:func:`~tiendasync.crdt.generations.carry_update`, under another fresh
  writer id): a duplicate carries nothing, so every late write lands in
  ``g+1`` exactly once.  The store refuses a carry computed on a state that
  another relay process has moved on meanwhile; this retries on the new state.

This module talks to the store of record only (called from worker threads,
like :func:`~tiendasync.relay.docs.compact`); it neither loads nor changes
the server's in-memory documents.  The server rolls documents over at start
(``RelayServer(rollover=...)``, before it serves anyone) and hands it the late
updates of the sessions that are a generation behind (docs/generations.md).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pycrdt

from tiendasync.crdt.generations import (
    carry_update,
    crdt_of,
    seed_slot_count,
    seed_update,
    slot_count,
)
from tiendasync.errors import (
    InvalidArgument,
    NotFound,
    RemoteProtocolError,
    StorageError,
    TiendaSyncError,
)
from tiendasync.model.docnames import parse_doc
from tiendasync.protocol import CLOSE_INTERNAL, CLOSE_PROTOCOL, CLOSE_VERSION
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.protocol.yjs_update import MalformedUpdate, parse_update
from tiendasync.relay.central import CENTRAL_REPLICA_ID
from tiendasync.relay.docs import ends_of, is_panic, replay
from tiendasync.relay.ownership import Writer, check_update, deleted_in
from tiendasync.relay.records import DocHistory, RolloverCut
from tiendasync.relay.storage import RelayStore, archived_reason

__all__ = [
    "Carried",
    "Footprint",
    "Generations",
    "RolloverPolicy",
    "carry_outcome",
    "crdt_of",
    "footprint",
    "ownership_check",
    "past_state_vector",
]

log = logging.getLogger("tiendasync.relay.generations")

#: How often a rollover or a carry is recomputed when another relay process
#: moved the document on between the read and the write.
MAX_ATTEMPTS = 8

#: Rollovers tried without holding up the document's writers before one that does.
OPTIMISTIC_ROLLOVERS = 3


@dataclass(frozen=True)
class Footprint:
    """What a rollover of a document would fold (what :meth:`RolloverPolicy.due` judges).

    ``slots``: its root-map keys (one per writer per entity or field);
    ``seed_slots``: the keys a fresh seed of the same values would hold
    (:func:`~tiendasync.crdt.generations.seed_slot_count`); ``stored_bytes``:
    what the store of record holds of its current generation
    (:meth:`~tiendasync.relay.storage.RelayStore.stored_bytes`).
    """

    slots: int
    seed_slots: int
    stored_bytes: int

    @property
    def foldable_slots(self) -> int:
        """The slots a cut folds away: every slot beyond the seed's one per entity or field."""
        return max(0, self.slots - self.seed_slots)

    @property
    def foldable_bytes(self) -> int:
        """The stored bytes those slots hold, estimated by their share of the slots (the
        log that compaction folds anyway, and the tombstones, are not counted apart)."""
        return self.stored_bytes * self.foldable_slots // self.slots if self.slots else 0


@dataclass(frozen=True)
class RolloverPolicy:
    """When a counter or LWW document rolls over: ``None`` turns a bound off.

    The bounds measure what a cut would fold, not the document's size, so that a
    document whose fresh seed is already past a bound (a catalog of 5,000 products
    under ``max_slots=2200``) does not roll over again and again for nothing:

    * ``max_slots``: due when more than this many slots are beyond those of a
      fresh seed (:attr:`Footprint.foldable_slots`: the slots of other writers,
      older incarnations and carries, beside the one a seed keeps per counter
      entity or LWW field);
    * ``max_bytes``: due when the stored bytes of those slots
      (:attr:`Footprint.foldable_bytes`) pass this many.

    A document just seeded folds nothing, so it is never due.  Both ``None``
    (the default): documents never roll over.  :meth:`due` only ever grows with
    the foldable slots (what the relay's cheap check relies on).
    """

    max_slots: int | None = None
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_slots", "max_bytes"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InvalidArgument(f"{name} must be a positive integer or None")

    @property
    def enabled(self) -> bool:
        return self.max_slots is not None or self.max_bytes is not None

    def due(self, footprint: Footprint) -> bool:
        """Whether a document of this footprint rolls over (see the class docstring)."""
        if self.max_slots is not None and footprint.foldable_slots > self.max_slots:
            return True
        return self.max_bytes is not None and footprint.foldable_bytes > self.max_bytes


def footprint(crdt: str, doc: pycrdt.Doc[Any], stored_bytes: int) -> Footprint:
    """The :class:`Footprint` of ``doc`` (one pass over its keys; nothing encoded)."""
    return Footprint(slot_count(crdt, doc), seed_slot_count(crdt, doc), stored_bytes)


@dataclass(frozen=True)
class Carried:
    """What :meth:`Generations.carry_late` stored: the late update's ``seq``, the past
    generation's clocks after it (what its writers are acknowledged up to) and the
    carry logged to the current generation (``None``: it added nothing)."""

    seq: int
    clocks: dict[int, int]
    carry: bytes | None


def _doc(*updates: bytes) -> pycrdt.Doc[Any]:
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    with doc.transaction(origin="generations"):
        for update in updates:
            doc.apply_update(update)
    return doc


def ownership_check(
    doc: str, data: bytes, writer: Writer, now_ms: int
) -> Callable[[pycrdt.Doc[Any]], None]:
    """The ``check`` of :meth:`Generations.carry_late`: the ownership rule for ``data``
    from ``writer``, against the past generation (raises RemoteProtocolError)."""

    def check(past: pycrdt.Doc[Any]) -> None:
        try:
            parsed = parse_update(data, items=True)
        except MalformedUpdate as exc:
            raise RemoteProtocolError(str(exc)[:300], CLOSE_PROTOCOL) from exc
        refusal = check_update(
            parse_doc(doc),
            parsed,
            writer,
            known=decode_state_vector(bytes(past.get_state())),
            deleted=deleted_in(list(parse_update(bytes(past.get_update())).deletes)),
            now_ms=now_ms,
        )
        if refusal is not None:
            raise RemoteProtocolError(refusal.reason, refusal.code)

    return check


def carry_outcome(
    generations: Generations,
    tenant: str,
    doc: str,
    generation: int,
    data: bytes,
    *,
    replica: str,
    received_at: float,
    check: Callable[[pycrdt.Doc[Any]], None],
) -> Carried | tuple[int, str]:
    """:meth:`Generations.carry_late` for a session's late update: what was stored, or
    the close code and reason the session ends with (nothing of it was stored).  The
    work of :meth:`~tiendasync.relay.core.RelayCore.late_carry` (what the server's pump and
    the simulated relay both run)."""
    try:
        return generations.carry_late(
            tenant, doc, generation, data, replica=replica, received_at=received_at, check=check
        )
    except RemoteProtocolError as exc:
        return exc.code, exc.reason
    except NotFound:  # archived (``relay.generation_archive``): it keeps its queue
        return CLOSE_VERSION, archived_reason(doc, generation)
    except InvalidArgument as exc:
        return CLOSE_PROTOCOL, str(exc)
    except TiendaSyncError as exc:
        log.error("%s/%s: a late update of %s failed: %s", tenant, doc, replica, exc)
        return CLOSE_INTERNAL, "storage failure"


def _cut_of(crdt: str, tenant: str, doc: str, history: DocHistory, writer: int) -> RolloverCut:
    """The rollover of ``doc`` as stored in ``history``: its whole state, and the next
    generation's seed of its current values under ``writer``."""
    current, _ = replay(history, tenant, doc, origin="rollover")
    seed = seed_update(crdt, current, writer)
    return RolloverCut(bytes(current.get_update()), seed, bytes(pycrdt.get_state(seed)))


def past_state_vector(store: RelayStore, tenant: str, doc: str, generation: int) -> bytes:
    """The state vector of past ``generation`` of ``doc`` (its cut and late updates):
    what the relay holds of it, so a replica still there re-sends only what is missing."""
    history = store.load_generation(tenant, doc, generation)
    updates = [u for u in (history.snapshot, *(data for _, data in history.updates)) if u]
    if not history.damaged and updates:
        # Without building the document (once per behind store's HELLO): every update of
        # a past generation was integrated when it was logged (a gapped late update is
        # refused), so the merged updates' clocks are the document's.
        try:
            return bytes(pycrdt.get_state(pycrdt.merge_updates(*updates)))
        except BaseException as exc:
            if not (isinstance(exc, Exception) or is_panic(exc)):
                raise
            log.error("%s/%s: a past generation's row does not merge: %s", tenant, doc, exc)
    past, _ = replay(history, tenant, doc, origin="late")  # skips what is garbage
    return bytes(past.get_state())


def _gapped(data: bytes, doc: pycrdt.Doc[Any]) -> bool:
    """Whether the engine kept part of ``data`` pending in ``doc`` (what it needs is missing)."""
    try:
        reach = ends_of(parse_update(data))
    except MalformedUpdate as exc:
        raise InvalidArgument(f"a late update is not a Yjs update: {exc}") from exc
    clocks = decode_state_vector(bytes(doc.get_state()))
    return any(end > clocks.get(client, 0) for client, end in reach.items())


class Generations:
    """Rollovers and carries of one relay against its store of record.

    ``writer_id()`` draws a candidate Yjs client id (default: the system's
    randomness); each one is registered to the relay (``CENTRAL_REPLICA_ID``)
    before it writes, so it is never a store's.
    """

    def __init__(
        self,
        store: RelayStore,
        policy: RolloverPolicy | None = None,
        *,
        writer_id: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        self.policy = policy or RolloverPolicy()
        rng = random.SystemRandom()
        self._draw = writer_id or (lambda: rng.randrange(1, 2**32))

    def _writer(self, tenant: str) -> int:
        for _ in range(MAX_ATTEMPTS):
            candidate = self._draw()
            if not self.store.claim_client_ids(tenant, CENTRAL_REPLICA_ID, [candidate]):
                return candidate
        raise StorageError("no free writer id for the relay after several draws")

    def generation(self, tenant: str, doc: str) -> int:
        """The current generation of ``doc`` (0 until its first rollover)."""
        return self.store.generations(tenant).get(doc, 0)

    def due(self, tenant: str, doc: str, current: pycrdt.Doc[Any] | None = None) -> bool:
        """Whether a rollover of ``doc`` would fold past the policy's bounds
        (:meth:`RolloverPolicy.due`; ``current``: the doc, if loaded, else it is
        replayed from storage).  Reads the store: not on the relay's event loop."""
        crdt = crdt_of(doc)
        if crdt is None or not self.policy.enabled:
            return False
        if current is None:
            current, _ = replay(self.store.load_doc(tenant, doc), tenant, doc)
        stored = self.stored_bytes(tenant, doc)
        return self.policy.due(footprint(crdt, current, stored))

    def stored_bytes(self, tenant: str, doc: str) -> int:
        """What the byte bound measures of ``doc`` (0 when the policy has none: not read)."""
        if self.policy.max_bytes is None:
            return 0
        return self.store.stored_bytes(tenant, doc)

    def generation_starts(self) -> dict[tuple[str, str], float]:
        """When the current generation of each rolled-over document began (its cut's
        ``cut_at``, seconds since the epoch); documents never cut are left out."""
        starts: dict[tuple[str, str], float] = {}
        for tenant in sorted({t for t, _ in self.store.all_state_vectors()}):
            for past in self.store.past_generations(tenant):  # by doc, then generation
                starts[(tenant, past.doc)] = past.cut_at
        return starts

    def roll_over_due(
        self,
        *,
        min_interval_s: float = 0.0,
        now: float = 0.0,
        starts: dict[tuple[str, str], float] | None = None,
    ) -> list[tuple[str, str, int]]:
        """Roll over every stored document past the policy: ``(tenant, doc, generation)``
        of each new generation.  Only while no relay serves the store of record
        (:class:`~tiendasync.relay.RelayServer` calls it at start).

        A document whose current generation began (``starts``, as
        :meth:`generation_starts` gives them) less than ``min_interval_s`` before
        ``now`` (seconds since the epoch) is left alone: restarts do not make cuts
        more frequent than the relay's ``--rollover-interval``."""
        rolled: list[tuple[str, str, int]] = []
        if not self.policy.enabled:
            return rolled
        starts = starts or {}
        for tenant, doc in sorted(self.store.all_state_vectors()):
            began = starts.get((tenant, doc))
            if began is not None and now - began < min_interval_s:
                continue
            try:
                if crdt_of(doc) is None or not self.due(tenant, doc):
                    continue
            except InvalidArgument:
                continue  # a name no data type has: verification reports it
            rolled.append((tenant, doc, self.roll_over(tenant, doc)))
        return rolled

    def roll_over(self, tenant: str, doc: str) -> int:
        """Cut the current generation of ``doc`` and start the next; returns its number.

        Raises :class:`InvalidArgument` for a document type without generations.
        """
        crdt = crdt_of(doc)
        if crdt is None:
            raise InvalidArgument(f"{doc!r} is not a counter or LWW document")
        for _ in range(OPTIMISTIC_ROLLOVERS):
            history = self.store.load_doc(tenant, doc)
            parts = _cut_of(crdt, tenant, doc, history, self._writer(tenant))
            if self.store.roll_over(
                tenant,
                doc,
                generation=history.generation,
                upto_seq=history.last_seq,
                cut=parts.cut,
                seed=parts.seed,
                state_vector=parts.state_vector,
            ):
                log.info("%s/%s: generation %d starts", tenant, doc, history.generation + 1)
                return history.generation + 1
        # Written to faster than it can be cut: the last attempt makes its writers
        # wait from the read to the cut (a busy or big document on a cluster).
        writer = self._writer(tenant)
        started = time.monotonic()
        generation = self.store.roll_over_locked(
            tenant, doc, lambda history: _cut_of(crdt, tenant, doc, history, writer)
        )
        if generation is None:
            raise NotFound(f"{doc!r} of {tenant!r} is not stored")
        log.warning(
            "%s/%s kept changing during its rollover: cut with its writers held for %.0f ms; "
            "generation %d starts",
            tenant,
            doc,
            (time.monotonic() - started) * 1000,
            generation,
        )
        return generation

    def carry_late(
        self,
        tenant: str,
        doc: str,
        generation: int,
        data: bytes,
        *,
        replica: str | None,
        received_at: float,
        check: Callable[[pycrdt.Doc[Any]], None] | None = None,
    ) -> Carried:
        """Log ``data``, an update to past ``generation`` of ``doc``, with its carry.

        ``check(g)``, if given, is called with the past generation as stored
        before ``data`` and raises to refuse it (the ownership rule, checked
        against that generation, not the current one).  Any past generation takes
        late updates, carried straight into the current one: what a past
        generation's late update adds is measured on that generation alone (its
        cut, its late updates so far), and the generations between kept the
        winners and totals it knew (docs/generations.md).  :class:`InvalidArgument`
        if ``generation`` is not a past one.
        """
        crdt = crdt_of(doc)
        if crdt is None:
            raise InvalidArgument(f"{doc!r} is not a counter or LWW document")
        for _ in range(MAX_ATTEMPTS):
            now_at = self.generation(tenant, doc)
            if not 0 <= generation < now_at:
                raise InvalidArgument(
                    f"{doc!r} is at generation {now_at}: {generation} is not a past one"
                )
            past = self.store.load_generation(tenant, doc, generation)
            if past.snapshot is None:
                raise StorageError(f"{tenant}/{doc}: the cut of generation {generation} is damaged")
            cut = _doc(past.snapshot)
            before, _ = replay(past, tenant, doc, origin="late")
            if check is not None:
                check(before)
            after = _doc(bytes(before.get_update()), data)
            if _gapped(data, after):
                raise InvalidArgument(
                    f"a late update to {doc!r} lacks earlier updates of its writer: "
                    "it is carried once they have arrived"
                )
            history = self.store.load_doc(tenant, doc)
            current, _ = replay(history, tenant, doc, origin="late")
            carry = carry_update(
                crdt,
                cut=cut,
                before=before,
                after=after,
                current=current,
                writer=self._writer(tenant),
            )
            if carry is not None:
                current.apply_update(carry)
            seq = self.store.append_late(
                tenant,
                doc,
                generation=generation,
                data=data,
                replica=replica,
                after_seq=past.last_seq,
                carry=carry,
                into_generation=now_at,
                state_vector=bytes(current.get_state()),
                received_at=received_at,
            )
            if seq is not None:
                return Carried(seq, decode_state_vector(bytes(after.get_state())), carry)
        raise StorageError(f"{tenant}/{doc} kept changing while a late update was carried")
