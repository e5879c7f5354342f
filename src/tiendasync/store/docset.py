"""The set of pycrdt documents one replica holds, and what changes in them.

``DocSet`` loads documents from a :class:`ReplicaStore` on first use, hands
out CRDT views over them, and *captures* every update the documents emit
(local transactions and applied remote updates alike) so the replica can log
exactly what changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pycrdt

from tiendasync.crdt import VIEW_OF_CRDT, Ledger, LWWMap, PNCounter
from tiendasync.errors import CorruptData, InternalError, RemoteProtocolError
from tiendasync.model.docnames import DATA_TYPES, data_type_of
from tiendasync.protocol.statevector import clock_in_state_vector, decode_state_vector
from tiendasync.protocol.yjs_update import MalformedUpdate, ParsedUpdate, parse_update
from tiendasync.store.storage import ReplicaStore

__all__ = ["DocSet"]

View = TypeVar("View", PNCounter, LWWMap, Ledger)


def _view_class(name: str) -> type[PNCounter | LWWMap | Ledger]:
    """The CRDT view class of document ``name``'s data type (InvalidArgument for bad names)."""
    return VIEW_OF_CRDT[DATA_TYPES[data_type_of(name)].crdt]


class DocSet:
    """Named pycrdt docs of one replica incarnation (one Yjs client id)."""

    def __init__(self, store: ReplicaStore, client_id: int, *, read_only: bool = False) -> None:
        self._store = store
        self._read_only = read_only
        self.client_id = client_id
        self._docs: dict[str, pycrdt.Doc[Any]] = {}
        self._views: dict[str, Any] = {}
        #: Per loaded doc, its observer: a pycrdt observer keeps its document alive,
        #: so unloading one removes it (:meth:`drop_loaded`).
        self._subscriptions: dict[str, Any] = {}
        self._captured: list[tuple[str, bytes]] = []
        #: Per doc: remote updates waiting for an earlier update of the same writer
        #: (id in storage, or None until persisted; the update).
        self._held: dict[str, list[tuple[int | None, bytes]]] = {}
        self._released: list[int] = []
        self._known: dict[str, str] = dict(store.doc_names())
        #: The generation of each loaded doc (docs/generations.md): another process
        #: moving one to its next generation makes this one drop and reload it.
        self._generation: dict[str, int] = {}
        #: Docs dropped because another process moved them (the writer clears it).
        self.moved: set[str] = set()
        #: Every update with a log sequence number up to this one is in every
        #: loaded doc (other processes append to the same log; see :meth:`catch_up`).
        self._seen = store.max_seq()
        self._catching_up = False
        self.on_new_doc: Callable[[str], None] | None = None

    # -- documents -----------------------------------------------------------

    def names(self) -> list[str]:
        """Every document this replica holds (loaded or not)."""
        return sorted(self._known)

    def __contains__(self, name: str) -> bool:
        return name in self._known

    def doc(self, name: str) -> pycrdt.Doc[Any]:
        """The doc called ``name``, loaded from storage or created empty."""
        doc = self._docs.get(name)
        if doc is not None:
            return doc
        data_type = data_type_of(name)
        doc = pycrdt.Doc(client_id=self.client_id)
        with self._store.read():
            snapshot, updates, _ = self._store.doc_history(name)
            generation = self._store.doc_generations().get(name, 0)
        with doc.transaction(origin="load"):
            if snapshot is not None:
                self._apply_stored(name, doc, snapshot, "snapshot")
            for data in updates:
                self._apply_stored(name, doc, data, "logged update")
        held = self._store.held_updates(name)
        for _, data in held:
            self._check_stored(name, data, "held update")
        self._subscriptions[name] = doc.observe(lambda event, n=name: self._capture(n, event))
        self._docs[name] = doc
        self._generation[name] = generation
        self._held[name] = [(i, d) for i, d in held]
        if name not in self._known and not self._read_only:
            self._known[name] = data_type
            self._store.ensure_doc(name, data_type)
            if self.on_new_doc is not None:
                self.on_new_doc(name)
        return doc

    def view(self, name: str, kind: type[View]) -> View:
        """The CRDT view of the right ``kind`` over doc ``name``."""
        view = self._views.get(name)
        if view is None:
            expected = _view_class(name)
            if expected is not kind:
                raise InternalError(f"{name} holds {expected.__name__}, not {kind.__name__}")
            view = kind(self.doc(name))
            self._views[name] = view
        assert isinstance(view, kind)
        return view

    def skipped_values(self) -> int:
        """Values the open views skipped: not valid for their document type (a
        foreign or corrupt value, which never fails a read or a merge)."""
        return sum(int(view.skipped) for view in self._views.values())

    def track(self, name: str) -> None:
        """Open the view over ``name`` (of its data type's kind) so its changes are recorded."""
        if name not in self._views:
            self._views[name] = _view_class(name)(self.doc(name))

    def state_vector(self, name: str) -> bytes:
        return bytes(self.doc(name).get_state())

    def clock_of(self, name: str, client_id: int) -> int:
        """Next clock of ``client_id`` in ``name`` (0 if it never wrote there).

        Every local write asks it of each document it wrote: its cost must not
        grow with the document's writers (``clock_in_state_vector``).
        """
        return clock_in_state_vector(self.state_vector(name), client_id)

    def diff(self, name: str, state_vector: bytes | None = None) -> bytes:
        """What a peer with ``state_vector`` lacks of ``name`` (everything if None)."""
        doc = self.doc(name)
        return bytes(doc.get_update(state_vector) if state_vector else doc.get_update())

    def apply(self, name: str, update: bytes) -> None:
        """Apply a remote update; malformed bytes raise RemoteProtocolError.

        Updates are applied in causal order per writer: one whose items start
        past what we hold of their writer is held (see :meth:`held_changes`)
        until the missing update arrives.  pycrdt 0.14 does not reliably
        buffer out-of-order updates itself.
        """
        doc = self.doc(name)
        try:
            parsed = parse_update(update)
        except MalformedUpdate as exc:
            raise RemoteProtocolError(f"malformed update for {name}: {exc}") from exc
        if not self._ready(doc, parsed):
            self._held[name].append((None, update))
            return
        self._apply_now(name, doc, update)
        progress = True
        while progress and self._held[name]:
            progress = False
            for entry in list(self._held[name]):
                if self._ready(doc, parse_update(entry[1])):
                    self._held[name].remove(entry)
                    if entry[0] is not None:
                        self._released.append(entry[0])
                    self._apply_now(name, doc, entry[1])
                    progress = True

    @staticmethod
    def _ready(doc: pycrdt.Doc[Any], parsed: ParsedUpdate) -> bool:
        have = decode_state_vector(bytes(doc.get_state()))
        return all(have.get(r.client, 0) >= r.clock for r in parsed.structs if r.length)

    @staticmethod
    def _apply_now(name: str, doc: pycrdt.Doc[Any], update: bytes) -> None:
        try:
            with doc.transaction(origin="remote"):
                doc.apply_update(update)
        except Exception as exc:
            raise RemoteProtocolError(f"cannot apply update to {name}: {exc}") from exc
        except BaseException as exc:  # pycrdt's PanicException is a BaseException
            if type(exc).__name__ != "PanicException":
                raise
            raise RemoteProtocolError(f"cannot apply update to {name}: {exc}") from exc

    # -- what the file holds -------------------------------------------------------

    def _damaged(self, name: str, what: str, exc: BaseException) -> CorruptData:
        return CorruptData(
            f"{self._store.path} holds a damaged {what} of {name} ({exc}); restore the file "
            "from a backup, or move it aside and re-create the replica to sync from the relay"
        )

    def _apply_stored(self, name: str, doc: pycrdt.Doc[Any], data: bytes, what: str) -> None:
        """Apply bytes read from the file (caller's transaction); CorruptData if garbage."""
        self._check_stored(name, data, what)
        try:
            doc.apply_update(data)
        except Exception as exc:
            raise self._damaged(name, what, exc) from exc
        except BaseException as exc:  # pycrdt's PanicException is a BaseException
            if type(exc).__name__ != "PanicException":
                raise
            raise self._damaged(name, what, exc) from exc

    def _check_stored(self, name: str, data: bytes, what: str) -> None:
        """CorruptData unless ``data`` parses as a Yjs update (pycrdt may panic otherwise)."""
        try:
            parse_update(data)
        except MalformedUpdate as exc:
            raise self._damaged(name, what, exc) from exc

    def held_changes(self) -> bool:
        """True if updates were held or released since the last :meth:`persist_held`."""
        return bool(self._released) or any(
            i is None for held in self._held.values() for i, _ in held
        )

    def persist_held(self) -> None:
        """Store newly held updates and forget released ones (inside a write)."""
        for name, held in self._held.items():
            for n, (i, data) in enumerate(held):
                if i is None:
                    held[n] = (self._store.hold_update(name, data), data)
        if self._released:
            self._store.release_updates(self._released)
            self._released = []

    def held_count(self) -> int:
        return sum(len(h) for h in self._held.values())

    # -- capture -------------------------------------------------------------

    def _capture(self, name: str, event: Any) -> None:
        if self._catching_up:
            return  # another process's update: already in the log
        update = bytes(event.update)
        if update and update != b"\x00\x00":
            self._captured.append((name, update))

    def drain(self) -> list[tuple[str, bytes]]:
        """Updates emitted since the last drain, in order."""
        captured, self._captured = self._captured, []
        return captured

    def unload(self) -> None:
        """Drop every in-memory doc (they reload from storage on next use)."""
        for name in list(self._docs):
            self._release(name)
        self._captured.clear()
        self._held.clear()
        self._released.clear()
        self._generation.clear()
        self._known = dict(self._store.doc_names())
        self._seen = self._store.max_seq()

    def forget(self, name: str) -> None:
        """Drop ``name`` from memory and from :meth:`names` (its rows just left the file)."""
        self.drop_loaded(name)
        self._known.pop(name, None)

    def drop_loaded(self, name: str) -> None:
        """Drop ``name`` from memory only: it is read again from storage on next use.

        Call outside a write (what it holds is then in storage: its held updates
        are persisted by the write that held them).  Its memory is freed once no
        caller keeps the doc or a view of it.
        """
        self._release(name)
        self._held.pop(name, None)
        self._generation.pop(name, None)

    def _release(self, name: str) -> None:
        """Forget the loaded doc ``name`` and remove its observers (theirs and its views')."""
        doc = self._docs.pop(name, None)
        view = self._views.pop(name, None)
        if view is not None:
            view.detach()
        subscription = self._subscriptions.pop(name, None)
        if doc is not None and subscription is not None:
            doc.unobserve(subscription)

    def _drop_moved(self) -> None:
        """Drop the loaded docs another process moved to a later generation since they
        loaded (merging the new one into the old would count everything twice); they
        are added to :attr:`moved`."""
        if not self._docs:
            return
        stored = self._store.doc_generations()
        moved = {n for n in self._docs if stored.get(n, 0) != self._generation.get(n, 0)}
        for name in moved:
            self.drop_loaded(name)
        self.moved |= moved

    def loaded(self) -> list[str]:
        return list(self._docs)

    # -- several processes, one file ---------------------------------------------

    def caught_up(self) -> None:
        """Every update logged so far is in memory (we just wrote, inside a caught-up write)."""
        self._seen = self._store.max_seq()

    def catch_up(self) -> list[tuple[str, bytes, str]]:
        """Fold in what other processes committed to the log since we last looked.

        Call inside a read or write of the store.  Returns ``(doc, update,
        origin)`` of every update logged since, whether or not its document
        is loaded here: the sync daemon streams other processes' first writes
        to documents it never read (a resolution request, a late sale in a
        past period).  Only loaded documents apply them now (a document
        another process compacted is re-read from its snapshot: merging it
        again is harmless, as is an update merged twice); the others read
        everything when they load.
        """
        self._known.update(self._store.doc_names())
        self._drop_moved()  # (a move logs no update: checked before the early return)
        upto = self._store.max_seq()
        if upto <= self._seen:
            return []
        logged: list[tuple[str, bytes, str]] = []
        self._catching_up = True
        try:
            for name, snapshot, _ in self._store.snapshots_after(self._seen):
                if name in self._docs:
                    with self._docs[name].transaction(origin="remote"):
                        self._apply_stored(name, self._docs[name], snapshot, "snapshot")
            for _, name, data, origin in self._store.updates_after(self._seen):
                if name in self._docs:
                    with self._docs[name].transaction(origin="remote"):
                        self._apply_stored(name, self._docs[name], data, "logged update")
                logged.append((name, data, origin))
        finally:
            self._catching_up = False
        self._seen = upto
        return logged
