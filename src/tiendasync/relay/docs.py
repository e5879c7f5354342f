"""The relay's in-memory pycrdt documents, loaded on demand, memory bounded.

A relay doc is derived state: its snapshot plus the updates logged after it.
:class:`DocCache` loads one on first use, keeps it while it is used (or
pinned by an update that is applied but not yet committed), and unloads the
idle ones beyond ``max_docs`` or after ``idle_seconds``.  :func:`compact`
folds a long log into a new snapshot by *replaying* it into a fresh doc and
taking ``get_update()``; ``merge_updates`` over thousands of updates is
super-linear and is never used.

Gapped updates (their dependencies are missing: an earlier clock of their
writer, an item they refer to, the range they delete) are never applied to
a relay doc, since the engine would keep them and serve them in every diff.
:meth:`DocCache.apply` holds them aside instead, bounded in time, bytes and
count per writer, and applies them once what they lack has arrived; past a
bound they are dropped (``on_gap_dropped``) and their writer re-sends them on
its next catch-up.  Nothing held is stored, fanned out or served.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pycrdt

from tiendasync.errors import CorruptData, RemoteProtocolError
from tiendasync.protocol import CLOSE_PROTOCOL
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.protocol.yjs_update import MalformedUpdate, ParsedUpdate, parse_update
from tiendasync.relay.storage import DocHistory, RelayStore

__all__ = [
    "EMPTY_UPDATE",
    "ApplyResult",
    "DocCache",
    "HeldUpdate",
    "Reach",
    "RelayDoc",
    "Released",
    "compact",
    "ends_of",
    "is_panic",
    "replay",
]

log = logging.getLogger("tiendasync.relay.docs")

EMPTY_UPDATE = b"\x00\x00"


def is_panic(exc: BaseException) -> bool:
    """pycrdt's Rust panics surface as ``PanicException`` (a BaseException)."""
    return type(exc).__name__ == "PanicException"


class Reach(dict[int, int]):
    """Per client, the highest clock an update's structs or deletes reach (the dict),
    and what a document must hold before the update applies without a gap.

    ``needs[client] = clock``: the document must hold ``client``'s items below
    ``clock`` (an earlier clock of the writer, an item referred to, a range
    deleted).  With ``parse_update(items=True)`` the items' neighbours and
    parents count too (``precise``); without, only clocks and deletes do and
    :meth:`DocCache.apply` finds the rest after applying.
    """

    needs: dict[int, int]
    writers: frozenset[int]
    precise: bool


def _missing(needs: dict[int, int], clocks: dict[int, int]) -> bool:
    return any(clocks.get(client, 0) < clock for client, clock in needs.items())


def _unreached(ends: dict[int, int] | None, clocks: dict[int, int]) -> bool:
    """Whether the engine kept part of an update that reaches ``ends`` pending."""
    return any(end > clocks.get(client, 0) for client, end in (ends or {}).items())


def _precise_reach(data: bytes) -> Reach | None:
    """The :class:`Reach` of ``data`` with its items' neighbours and parents."""
    try:
        return ends_of(parse_update(data, items=True))
    except MalformedUpdate:
        return None


def ends_of(parsed: ParsedUpdate) -> Reach:
    """What :meth:`DocCache.apply` needs to tell a gapped update (see :class:`Reach`)."""
    reach = Reach()
    own: dict[int, tuple[int, int]] = {}
    needs: dict[int, int] = {}

    def need(client: int, clock: int) -> None:
        if clock > needs.get(client, 0):
            needs[client] = clock

    for r in parsed.structs:
        if r.length:
            reach[r.client] = max(reach.get(r.client, 0), r.end)
            own[r.client] = (r.clock, r.end)
            need(r.client, r.clock)
    for r in parsed.deletes:
        if not r.length:
            continue
        reach[r.client] = max(reach.get(r.client, 0), r.end)
        start, end = own.get(r.client, (r.end, r.end))
        need(r.client, r.end if r.end > end else min(r.end, start))
    for item in parsed.items:
        for dep in (item.origin, item.right_origin, item.parent_id):
            if dep is None:
                continue
            client, clock = dep
            start, end = own.get(client, (0, 0))
            if not start <= clock < end:
                need(client, clock + 1)
    reach.needs = needs
    reach.writers = parsed.item_clients
    reach.precise = bool(parsed.items) or not parsed.item_clients
    return reach


def _apply(doc: pycrdt.Doc[Any], data: bytes) -> None:
    """Apply ``data``; any failure (panics included) becomes RemoteProtocolError."""
    try:
        doc.apply_update(data)
    except Exception as exc:
        raise RemoteProtocolError(
            f"update rejected by the CRDT engine: {exc}"[:200], CLOSE_PROTOCOL
        ) from exc
    except BaseException as exc:
        if is_panic(exc):
            raise RemoteProtocolError("update made the CRDT engine panic", CLOSE_PROTOCOL) from exc
        raise


def _apply_stored(doc: pycrdt.Doc[Any], seq: int, data: bytes) -> ParsedUpdate:
    """Apply one stored update; a garbage one raises CorruptData (``doc`` unchanged)."""
    try:
        parsed = parse_update(data)  # the validating parser first: garbage never reaches the engine
        _apply(doc, data)
    except (MalformedUpdate, RemoteProtocolError) as exc:
        raise CorruptData(f"stored update {seq} cannot be applied: {exc}"[:300]) from exc
    return parsed


#: Rebuilds a replay makes at most to leave out stored updates that never filled.
_MAX_UNFILLED_PASSES = 4


def replay(
    history: DocHistory, tenant: str, name: str, *, origin: str = "load"
) -> tuple[pycrdt.Doc[Any], list[tuple[int, CorruptData]]]:
    """A fresh doc rebuilt from ``history`` (snapshot, then the log in order).

    Every stored update the parser or the engine refuses is skipped and
    logged loudly; returns the doc and those ``(seq, CorruptData)`` (seq 0:
    the snapshot).  Every logged update whose dependencies never arrived
    (earlier relays stored them; or they followed a garbage row) is left
    out too and logged, but kept in storage: the engine would hold it and
    serve it in every diff.  The doc holds exactly what storage can serve.
    """
    items = ([(0, history.snapshot)] if history.snapshot else []) + history.updates
    bad: dict[int, CorruptData] = {}
    for seq, reason in history.damaged:
        log.error("CORRUPT relay data %s/%s: %s", tenant, name, reason)
        bad[seq] = CorruptData(reason)
    skip: set[int] = set()
    for _ in range(_MAX_UNFILLED_PASSES):
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        reached: list[tuple[int, dict[int, int]]] = []
        with doc.transaction(origin=origin):
            for seq, data in items:
                if seq in skip or seq in bad:
                    continue
                try:
                    parsed = _apply_stored(doc, seq, data)
                except CorruptData as exc:
                    log.error("CORRUPT relay data %s/%s: %s", tenant, name, exc)
                    bad[seq] = exc
                    continue
                if seq:
                    reached.append((seq, ends_of(parsed)))
        clocks = decode_state_vector(bytes(doc.get_state()))
        unfilled = {
            seq
            for seq, ends in reached
            if any(end > clocks.get(client, 0) for client, end in ends.items())
        }
        if not unfilled:
            break
        skip |= unfilled
    if skip:
        log.error(
            "relay data %s/%s: %d stored update(s) (seq %s) wait for updates that never "
            "arrived; left out of what is served",
            tenant,
            name,
            len(skip),
            ", ".join(str(seq) for seq in sorted(skip)[:10]),
        )
    return doc, sorted(bad.items())


@dataclass
class RelayDoc:
    """One in-memory relay doc.

    ``pins`` counts its writes still on their way to storage.  ``stale``: the
    cache dropped it (a failed commit, a refused update) while writes were
    pinned on it; those writes must not be stored or acknowledged, since the
    doc they were applied to no longer matches what storage holds.
    """

    tenant: str
    name: str
    doc: pycrdt.Doc[Any]
    last_used: float
    pins: int = 0
    broken: bool = False
    stale: bool = False
    captured: list[bytes] = field(default_factory=list)
    subscription: Any = None
    #: what was applied to it and is not stored yet (replayed over storage by a rebuild)
    unstored: list[bytes] = field(default_factory=list)
    #: the document's generation it holds (read with it from storage)
    generation: int = 0
    #: what the last rollover check counted of it (``relay.rollover``): the sum of its
    #: clocks then, and the slots a cut would have folded
    fold_tally: tuple[int, int] | None = None

    def state_vector(self) -> bytes:
        return bytes(self.doc.get_state())

    def clocks(self) -> dict[int, int]:
        return decode_state_vector(self.state_vector())

    def diff(self, state_vector: bytes | None = None) -> bytes:
        """What a peer at ``state_vector`` lacks (everything if None)."""
        if state_vector is None:
            return bytes(self.doc.get_update())
        try:
            return bytes(self.doc.get_update(state_vector))
        except BaseException as exc:
            if isinstance(exc, Exception) or is_panic(exc):
                raise RemoteProtocolError("bad state vector", CLOSE_PROTOCOL) from exc
            raise


@dataclass
class HeldUpdate:
    """A gapped update held aside (never applied, stored or served) until it fills.

    ``holder`` is its writer's session (opaque here; None until
    :meth:`DocCache.hold_for` names it).
    """

    tenant: str
    doc: str
    data: bytes
    reach: Reach
    since: float
    holder: object | None = None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class Released:
    """A held update that applied once its dependencies arrived."""

    holder: object | None
    #: what it changed in the doc (to store and fan out)
    changed: bytes
    #: the doc's state vector right after it
    state_vector: bytes
    #: the client ids it writes items as
    writers: frozenset[int]


@dataclass(frozen=True)
class ApplyResult:
    """What applying one update did to a relay doc."""

    #: the update that actually changed the doc (captured from ``observe``), or None
    changed: bytes | None
    #: the update waits for missing dependencies: it was not applied (see ``held``)
    pending: bool
    #: the doc's state vector right after this update
    state_vector: bytes
    #: where the relay holds it while it waits (None: dropped at once, see ``dropped``)
    held: HeldUpdate | None = None
    #: held updates this one filled, applied after it, in order
    released: tuple[Released, ...] = ()
    #: why a pending update was dropped at once, if it was
    dropped: str | None = None
    #: the update had to be taken back out of the doc (the doc was rebuilt)
    rebuilt: bool = False

    @property
    def duplicate(self) -> bool:
        return self.changed is None and not self.pending


#: The callback told of dropped gapped updates: ``(holder, tenant, docs, reason)``,
#: one entry of ``docs`` per update dropped.
GapDropped = Callable[[object | None, str, Sequence[str], str], None]


class DocCache:
    """Relay docs per (tenant, doc name)."""

    def __init__(
        self,
        store: RelayStore,
        *,
        max_docs: int = 1000,
        idle_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        gap_seconds: float = 30.0,
        gap_bytes: int = 1024 * 1024,
        gap_updates: int = 256,
    ) -> None:
        self.store = store
        self.max_docs = max_docs
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._docs: OrderedDict[tuple[str, str], RelayDoc] = OrderedDict()
        #: bounds of the updates held per writer (0: no bound)
        self.gap_seconds = gap_seconds
        self.gap_bytes = gap_bytes
        self.gap_updates = gap_updates
        #: told of every held update dropped (the fan-out notes it in the sync log)
        self.on_gap_dropped: GapDropped = lambda holder, tenant, docs, reason: None
        #: told when a document is found at a newer generation than this cache knew
        #: (:meth:`saw_generation`): the core sends away what serves an older one
        self.on_generation: Callable[[str, str, int], None] = lambda tenant, doc, gen: None
        #: per document past generation 0, the newest generation seen in storage
        self._generations: dict[tuple[str, str], int] = {}
        self._held: dict[tuple[str, str], list[HeldUpdate]] = {}
        self._by_holder: dict[int, list[HeldUpdate]] = {}

    def __len__(self) -> int:
        return len(self._docs)

    def current(self, tenant: str, name: str) -> RelayDoc | None:
        """The loaded doc, if any (never loads)."""
        return self._docs.get((tenant, name))

    def loaded(self) -> list[tuple[str, str]]:
        return list(self._docs)

    def get(self, tenant: str, name: str) -> RelayDoc:
        """The doc, loaded from storage (or empty) if not in memory."""
        key = (tenant, name)
        rdoc = self._docs.get(key)
        if rdoc is not None and not rdoc.broken:
            rdoc.last_used = self._clock()
            self._docs.move_to_end(key)
            return rdoc
        if rdoc is not None:  # broken docs are reloaded (their pinned writes go stale)
            self._drop(key)
        rdoc = self._load(tenant, name)
        self._docs[key] = rdoc
        self.sweep(keep=key)  # never the doc the caller is about to use
        return rdoc

    def _load(self, tenant: str, name: str) -> RelayDoc:
        history = self.store.load_doc(tenant, name)
        doc, _ = replay(history, tenant, name)
        rdoc = RelayDoc(tenant, name, doc, self._clock(), generation=history.generation)
        self._observe(rdoc)
        self.saw_generation(tenant, name, history.generation)
        return rdoc

    # -- generations (relay.generations: another relay node may cut a document) --------------

    def generation(self, tenant: str, name: str) -> int:
        """The newest generation of ``name`` seen in storage (0: never rolled over)."""
        return self._generations.get((tenant, name), 0)

    def saw_generation(self, tenant: str, name: str, generation: int) -> bool:
        """Storage holds ``name`` at ``generation`` (a load, a pull, a notice, a refused
        commit, a HELLO's facts).  Newer than seen before: the loaded doc, if older, is
        dropped (reloaded at next use) and :attr:`on_generation` is told; returns
        whether it was newer.  Nothing of an older generation is served after this."""
        key = (tenant, name)
        if generation <= self._generations.get(key, 0):
            return False
        self._generations[key] = generation
        rdoc = self._docs.get(key)
        if rdoc is not None and rdoc.generation < generation:
            self.discard(tenant, name)  # its pinned writes go stale: never stored
        self.on_generation(tenant, name, generation)
        return True

    @staticmethod
    def _observe(rdoc: RelayDoc) -> None:
        def capture(event: Any) -> None:
            rdoc.captured.append(bytes(event.update))

        rdoc.subscription = rdoc.doc.observe(capture)

    def apply(
        self,
        tenant: str,
        name: str,
        data: bytes,
        ends: dict[int, int] | None = None,
        *,
        before: bytes | None = None,
    ) -> ApplyResult:
        """Apply an untrusted (already parsed) update to the relay doc.

        ``ends`` maps each client id with structs or deletes in the update to the
        end clock they reach (:func:`ends_of`, a :class:`Reach`), so a gapped
        update is told: it is then not applied but held (``result.held``; see
        the module docstring), or dropped at once if what it lacks cannot be
        told.  An update that fills held ones applies them after it
        (``result.released``).  Raises RemoteProtocolError if the engine
        refuses the update (the doc is then reloaded from storage at next use).
        ``before``: the doc's state vector (:meth:`RelayDoc.state_vector`) if the
        caller took it since the doc last changed (one encode less).
        """
        rdoc = self.get(tenant, name)
        now = self._clock()
        self._expire((tenant, name), now)
        if before is None:
            before = rdoc.state_vector()
        if isinstance(ends, Reach) and _missing(ends.needs, decode_state_vector(before)):
            held = self._hold(rdoc, data, ends, now)
            return ApplyResult(None, True, before, held=held)
        changed = self._apply_one(rdoc, data)
        sv = rdoc.state_vector()
        if _unreached(ends, decode_state_vector(sv)):
            # The engine keeps what it cannot integrate yet and would serve it in
            # every diff: take it back out, then hold it if what it lacks is known.
            self._rebuild(rdoc)
            sv = rdoc.state_vector()
            reach = _precise_reach(data)
            if reach is not None and _missing(reach.needs, decode_state_vector(sv)):
                held = self._hold(rdoc, data, reach, now)
                return ApplyResult(None, True, sv, held=held, rebuilt=True)
            return ApplyResult(
                None, True, sv, dropped="its missing dependencies cannot be told", rebuilt=True
            )
        if changed is not None:
            rdoc.unstored.append(changed)
            return ApplyResult(changed, False, sv, released=self._release_held(rdoc, now))
        return ApplyResult(None, False, sv)

    def _apply_one(self, rdoc: RelayDoc, data: bytes) -> bytes | None:
        """Apply ``data`` to ``rdoc``; what it changed (None: nothing)."""
        rdoc.captured.clear()
        try:
            _apply(rdoc.doc, data)
        except RemoteProtocolError:
            rdoc.broken = True
            if rdoc.pins == 0:
                self._drop((rdoc.tenant, rdoc.name))
            raise
        captured = [u for u in rdoc.captured if u and u != EMPTY_UPDATE]
        rdoc.captured.clear()
        if not captured:
            return None
        if len(captured) == 1:
            return captured[0]
        return bytes(pycrdt.merge_updates(*captured))

    def _rebuild(self, rdoc: RelayDoc) -> None:
        """Replace ``rdoc``'s engine doc by storage's replayed, plus what is not stored yet.

        Its pinned writes stay valid: the new doc holds everything they were
        applied on (updates both stored and unstored apply twice, harmlessly).
        """
        history = self.store.load_doc(rdoc.tenant, rdoc.name)
        if history.generation != rdoc.generation:
            # Cut meanwhile (another relay node): the next use loads the new generation;
            # the writes pinned on this one go stale (never stored, never acknowledged).
            rdoc.broken = True
            self.saw_generation(rdoc.tenant, rdoc.name, history.generation)
            return
        doc, _ = replay(history, rdoc.tenant, rdoc.name)
        try:
            with doc.transaction(origin="rebuild"):
                for update in rdoc.unstored:
                    _apply(doc, update)
        except RemoteProtocolError:  # cannot happen: each applied before
            rdoc.broken = True
            log.exception("rebuilding %s/%s failed", rdoc.tenant, rdoc.name)
        with contextlib.suppress(Exception):
            rdoc.doc.unobserve(rdoc.subscription)
        rdoc.doc = doc
        rdoc.captured.clear()
        self._observe(rdoc)

    # -- what other relay nodes committed -----------------------------------------------------

    def apply_committed(self, tenant: str, name: str, data: bytes) -> tuple[Released, ...]:
        """Bring the loaded doc (if any) up to an update another relay node stored.

        Nothing of it is "unstored"; a garbage row is logged and skipped.  Held
        updates it fills are applied after it and returned (to store and fan out,
        as their writers').  Not loaded: nothing to do (a load reads storage).
        """
        rdoc = self._docs.get((tenant, name))
        if rdoc is None or rdoc.broken:
            return ()
        try:
            reach = ends_of(parse_update(data))
            self._apply_one(rdoc, data)
        except (MalformedUpdate, RemoteProtocolError) as exc:
            log.error("CORRUPT relay data %s/%s: a stored update: %s", tenant, name, exc)
            return ()
        if _unreached(reach, rdoc.clocks()):
            self._rebuild(rdoc)  # what the engine could not integrate is not served
        return self._release_held(rdoc, self._clock())

    def reload_stored(self, tenant: str, name: str) -> bytes | None:
        """Rebuild the loaded doc from storage (plus what it applied and is not stored
        yet); what that added to it.  None if it is not loaded."""
        rdoc = self._docs.get((tenant, name))
        if rdoc is None:
            return None
        before = rdoc.state_vector()
        self._rebuild(rdoc)
        return rdoc.diff(before)

    # -- gapped updates held aside ------------------------------------------------------------

    def held(self, tenant: str, name: str) -> list[HeldUpdate]:
        """The updates held for ``name`` (oldest first)."""
        return list(self._held.get((tenant, name), ()))

    def held_bytes(self, holder: object | None = None) -> int:
        """Bytes held for ``holder`` (None: for everyone)."""
        if holder is None:
            return sum(h.size for hs in self._held.values() for h in hs)
        return sum(h.size for h in self._by_holder.get(id(holder), ()))

    def _hold(self, rdoc: RelayDoc, data: bytes, reach: Reach, now: float) -> HeldUpdate:
        held = HeldUpdate(rdoc.tenant, rdoc.name, data, reach, now)
        self._held.setdefault((rdoc.tenant, rdoc.name), []).append(held)
        self._account(held)
        return held

    def _account(self, held: HeldUpdate) -> None:
        mine = self._by_holder.setdefault(id(held.holder), [])
        mine.append(held)
        over: list[HeldUpdate] = []
        size = sum(h.size for h in mine)
        while mine and (
            (self.gap_updates and len(mine) > self.gap_updates)
            or (self.gap_bytes and size > self.gap_bytes)
        ):
            oldest = mine[0]
            size -= oldest.size
            self._forget(oldest)
            over.append(oldest)
        if over:
            self._dropped(over, "more updates with missing dependencies than the relay holds")

    def hold_for(self, held: HeldUpdate, holder: object) -> None:
        """``held`` is ``holder``'s: count it against that writer's bounds."""
        if held.holder is holder:
            return
        in_doc = held in self._held.get((held.tenant, held.doc), ())
        if in_doc:
            self._unaccount(held)
        held.holder = holder
        if in_doc:
            self._account(held)

    def drop_held(self, holder: object, reason: str) -> int:
        """Drop every update held for ``holder`` (its session ended); returns how many."""
        mine = list(self._by_holder.get(id(holder), ()))
        for held in mine:
            self._forget(held)
        if mine:
            self._dropped(mine, reason)
        return len(mine)

    def expire_gaps(self) -> int:
        """Drop the held updates older than ``gap_seconds``; returns how many."""
        now = self._clock()
        return sum(self._expire(key, now) for key in list(self._held))

    def _expire(self, key: tuple[str, str], now: float) -> int:
        if not self.gap_seconds or key not in self._held:
            return 0
        old = [h for h in self._held[key] if now - h.since > self.gap_seconds]
        for held in old:
            self._forget(held)
        if old:
            self._dropped(
                old, f"its missing dependencies did not arrive within {self.gap_seconds:g} s"
            )
        return len(old)

    def _unaccount(self, held: HeldUpdate) -> None:
        mine = self._by_holder.get(id(held.holder))
        if mine is not None:
            with contextlib.suppress(ValueError):
                mine.remove(held)
            if not mine:
                del self._by_holder[id(held.holder)]

    def _forget(self, held: HeldUpdate) -> None:
        key = (held.tenant, held.doc)
        queue = self._held.get(key)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(held)
            if not queue:
                del self._held[key]
        self._unaccount(held)

    def _dropped(self, dropped: list[HeldUpdate], reason: str) -> None:
        by_holder: dict[int, list[HeldUpdate]] = {}
        for held in dropped:
            by_holder.setdefault(id(held.holder), []).append(held)
        for group in by_holder.values():
            log.info(
                "dropped %d gapped update(s) of %s/%s: %s",
                len(group),
                group[0].tenant,
                ", ".join(sorted({h.doc for h in group}))[:200],
                reason,
            )
            self.on_gap_dropped(group[0].holder, group[0].tenant, [h.doc for h in group], reason)

    def _release_held(self, rdoc: RelayDoc, now: float) -> tuple[Released, ...]:
        """Apply, in order, the held updates of ``rdoc`` that nothing is missing for now."""
        key = (rdoc.tenant, rdoc.name)
        out: list[Released] = []
        while self._held.get(key):
            clocks = rdoc.clocks()
            ready = next((h for h in self._held[key] if not _missing(h.reach.needs, clocks)), None)
            if ready is None:
                break
            self._forget(ready)
            try:
                changed = self._apply_one(rdoc, ready.data)
            except RemoteProtocolError as exc:
                self._dropped([ready], f"refused by the CRDT engine: {exc.reason}")
                break
            if _unreached(ready.reach, rdoc.clocks()):
                self._rebuild(rdoc)
                self._dropped([ready], "its missing dependencies cannot be told")
                continue
            if changed is not None:
                rdoc.unstored.append(changed)
                out.append(
                    Released(ready.holder, changed, rdoc.state_vector(), ready.reach.writers)
                )
        return tuple(out)

    def pin(self, tenant: str, name: str) -> RelayDoc | None:
        """Pin the loaded doc (a write on its way to storage); returns it, to unpin."""
        rdoc = self._docs.get((tenant, name))
        if rdoc is not None:
            rdoc.pins += 1
        return rdoc

    def unpin(self, tenant: str, name: str) -> None:
        """Unpin the loaded doc (see :meth:`release` for a write's own doc)."""
        self.release(self._docs.get((tenant, name)))

    def release(self, rdoc: RelayDoc | None, data: bytes | None = None) -> None:
        """One write pinned on ``rdoc`` reached its end (stored or failed); ``data``:
        what it stored (no longer "unstored")."""
        if rdoc is None:
            return
        if data is not None:
            for i, update in enumerate(rdoc.unstored):
                if update is data:
                    del rdoc.unstored[i]
                    break
        rdoc.pins = max(0, rdoc.pins - 1)
        if rdoc.pins == 0:
            rdoc.unstored.clear()
        key = (rdoc.tenant, rdoc.name)
        if rdoc.pins == 0 and rdoc.broken and self._docs.get(key) is rdoc:
            self._drop(key)

    def discard(self, tenant: str, name: str) -> None:
        """Drop the in-memory doc at once, pinned or not: the next use reloads it from
        storage, and writes pinned on the dropped one go stale (see :class:`RelayDoc`)."""
        self._drop((tenant, name))

    def evict(self, tenant: str, name: str) -> None:
        """Forget the in-memory doc (reloaded from storage at next use)."""
        key = (tenant, name)
        rdoc = self._docs.get(key)
        if rdoc is None:
            return
        if rdoc.pins:
            rdoc.broken = True
        else:
            self._drop(key)

    def sweep(self, keep: tuple[str, str] | None = None) -> int:
        """Unload idle docs and the least recently used beyond ``max_docs``.

        Pinned docs (writes waiting for storage) and ``keep`` stay.
        """
        now = self._clock()
        dropped = 0
        for key, rdoc in list(self._docs.items()):
            if rdoc.pins or key == keep:
                continue
            over = len(self._docs) > self.max_docs
            if over or now - rdoc.last_used > self.idle_seconds:
                self._drop(key)
                dropped += 1
        return dropped

    def clear(self) -> None:
        for key in list(self._docs):
            self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        rdoc = self._docs.pop(key, None)
        if rdoc is not None and rdoc.pins:
            rdoc.stale = True
        if rdoc is not None and rdoc.subscription is not None:
            with contextlib.suppress(Exception):
                rdoc.doc.unobserve(rdoc.subscription)


def compact(store: RelayStore, tenant: str, name: str) -> int:
    """Fold the log of ``name`` into a new snapshot.  Returns updates folded.

    Replays snapshot + log into a fresh doc and stores ``doc.get_update()``
    (which keeps updates still waiting for dependencies).  Safe to run in a
    worker thread: the doc it builds is its own.  Updates logged meanwhile
    have higher sequence numbers and stay in the log.
    """
    history = store.load_doc(tenant, name)
    if not history.updates:
        return 0
    doc, bad = replay(history, tenant, name, origin="compact")
    for seq, _ in bad:
        log.error("%s/%s: dropping stored update %s at compaction", tenant, name, seq)
    store.put_snapshot(tenant, name, bytes(doc.get_update()), history.last_seq)
    return len(history.updates)
