"""The relay's in-memory pycrdt documents, loaded on demand, memory bounded.

A relay doc is derived state: its snapshot plus the updates logged after it.
:class:`DocCache` loads one on first use, keeps it while it is used (or
pinned by an update that is applied but not yet committed), and unloads the
idle ones beyond ``max_docs`` or after ``idle_seconds``.  :func:`compact`
folds a long log into a new snapshot by *replaying* it into a fresh doc and
taking ``get_update()``; ``merge_updates`` over thousands of updates is
super-linear and is never used.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
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
    "RelayDoc",
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


def ends_of(parsed: ParsedUpdate) -> dict[int, int]:
    """Per client, the highest clock an update's structs or deletes reach.

    What :meth:`DocCache.apply` needs to tell a partly pending update.
    """
    ends: dict[int, int] = {}
    for r in (*parsed.structs, *parsed.deletes):
        if r.length:
            ends[r.client] = max(ends.get(r.client, 0), r.end)
    return ends


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


def _apply_stored(doc: pycrdt.Doc[Any], seq: int, data: bytes) -> None:
    """Apply one stored update; a garbage one raises CorruptData (``doc`` unchanged)."""
    try:
        parse_update(data)  # the validating parser first: garbage never reaches the engine
        _apply(doc, data)
    except (MalformedUpdate, RemoteProtocolError) as exc:
        raise CorruptData(f"stored update {seq} cannot be applied: {exc}"[:300]) from exc


def replay(
    history: DocHistory, tenant: str, name: str, *, origin: str = "load"
) -> tuple[pycrdt.Doc[Any], list[tuple[int, CorruptData]]]:
    """A fresh doc rebuilt from ``history`` (snapshot, then the log in order).

    Every stored update the parser or the engine refuses is skipped and
    logged loudly; returns the doc and those ``(seq, CorruptData)`` (seq 0:
    the snapshot).  The doc holds exactly what storage can serve.
    """
    doc: pycrdt.Doc[Any] = pycrdt.Doc()
    bad: list[tuple[int, CorruptData]] = []
    items = ([(0, history.snapshot)] if history.snapshot else []) + history.updates
    with doc.transaction(origin=origin):
        for seq, data in items:
            try:
                _apply_stored(doc, seq, data)
            except CorruptData as exc:
                log.error("CORRUPT relay data %s/%s: %s", tenant, name, exc)
                bad.append((seq, exc))
    return doc, bad


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


@dataclass(frozen=True)
class ApplyResult:
    """What applying one update did to a relay doc."""

    #: the update that actually changed the doc (captured from ``observe``), or None
    changed: bytes | None
    #: part of the update waits for missing dependencies (held by the doc)
    pending: bool
    #: the doc's state vector right after this update
    state_vector: bytes

    @property
    def duplicate(self) -> bool:
        return self.changed is None and not self.pending


class DocCache:
    """Relay docs per (tenant, doc name)."""

    def __init__(
        self,
        store: RelayStore,
        *,
        max_docs: int = 1000,
        idle_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.max_docs = max_docs
        self.idle_seconds = idle_seconds
        self._clock = clock
        self._docs: OrderedDict[tuple[str, str], RelayDoc] = OrderedDict()

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
        doc, _ = replay(self.store.load_doc(tenant, name), tenant, name)
        rdoc = RelayDoc(tenant, name, doc, self._clock())

        def capture(event: Any) -> None:
            rdoc.captured.append(bytes(event.update))

        rdoc.subscription = doc.observe(capture)
        return rdoc

    def apply(
        self, tenant: str, name: str, data: bytes, ends: dict[int, int] | None = None
    ) -> ApplyResult:
        """Apply an untrusted (already parsed) update to the relay doc.

        ``ends`` maps each client id with structs or deletes in the update to the
        end clock they reach, so a partly pending update is detected.
        Raises RemoteProtocolError if the engine refuses the update (the doc
        is then reloaded from storage at next use).
        """
        rdoc = self.get(tenant, name)
        rdoc.captured.clear()
        try:
            _apply(rdoc.doc, data)
        except RemoteProtocolError:
            rdoc.broken = True
            if rdoc.pins == 0:
                self._drop((tenant, name))
            raise
        captured = [u for u in rdoc.captured if u and u != EMPTY_UPDATE]
        rdoc.captured.clear()
        sv = rdoc.state_vector()
        clocks = decode_state_vector(sv)
        pending = any(end > clocks.get(client, 0) for client, end in (ends or {}).items())
        changed: bytes | None
        if not captured:
            changed = None
        elif len(captured) == 1:
            changed = captured[0]
        else:
            changed = bytes(pycrdt.merge_updates(*captured))
        return ApplyResult(changed, pending, sv)

    def pin(self, tenant: str, name: str) -> RelayDoc | None:
        """Pin the loaded doc (a write on its way to storage); returns it, to unpin."""
        rdoc = self._docs.get((tenant, name))
        if rdoc is not None:
            rdoc.pins += 1
        return rdoc

    def unpin(self, tenant: str, name: str) -> None:
        """Unpin the loaded doc (see :meth:`release` for a write's own doc)."""
        self.release(self._docs.get((tenant, name)))

    def release(self, rdoc: RelayDoc | None) -> None:
        """One write pinned on ``rdoc`` reached its end (stored or failed)."""
        if rdoc is None:
            return
        rdoc.pins = max(0, rdoc.pins - 1)
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
