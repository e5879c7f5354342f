"""The store's internal API: one replica's lock, documents, clock and storage.

:class:`ReplicaCore` is what the facets (catalog, inventory, sales, queue,
sync log, conflicts), the sync session and the relay's central writer build
on; :class:`~tiendasync.store.replica.Replica` is the public facade over it.

Contracts every caller relies on:

- ``with core.locked():`` takes the replica's re-entrant lock and raises
  :class:`ReplicaClosed` if the replica was closed.  Every read and write
  of documents or storage happens inside it.
- :meth:`local_write` runs a mutation of the documents and commits what it
  changed, the queue entry, index rows and the clock in ONE SQLite
  transaction; if anything fails the in-memory documents are dropped and
  rebuilt from disk, so memory never holds a write the disk does not.
- :meth:`apply_remote_many` merges received updates the same way.
- The incarnation's client id is recorded in the file (``client_ids``) by
  the transaction of its first local write, not at open: an open that never
  writes (a shell, a web worker that only reads) leaves no writer behind.
- Callbacks (local-update and status listeners) run on the thread that
  caused them, with the lock held.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from tiendasync.crdt import Ledger, LWWMap, PNCounter
from tiendasync.errors import (
    ClockError,
    ConfigError,
    InvalidArgument,
    ReplicaClosed,
    StorageError,
    TiendaSyncError,
    UnknownLocation,
    UsageError,
)
from tiendasync.model.config import StoreConfig
from tiendasync.model.docnames import (
    CATALOG,
    CONFLICTS,
    DATA_TYPES,
    LOCATIONS,
    data_type_of,
    parse_doc,
    resolutions_doc,
    stock_doc,
)
from tiendasync.model.hlc import HLC, Timestamp
from tiendasync.model.names import check_name
from tiendasync.store.docset import DocSet
from tiendasync.store.indexing import ChangeIndex
from tiendasync.store.storage import ReplicaStore
from tiendasync.store.synclock import SyncLock, decode_state, encode_state

__all__ = ["COMPACT_EVERY", "ConnectionState", "ReplicaCore", "UpdateListener", "WriteSpec"]

log = logging.getLogger("tiendasync.store")

#: A document's update log is folded into a snapshot after this many updates.
COMPACT_EVERY = 2000

#: The ``meta`` key under which a process asks the syncing one for a session now.
SYNC_REQUEST_KEY = "sync_request"

T = TypeVar("T")

#: How often a local write is redone because another process moved a document it
#: wrote to to a new generation meanwhile (each move happens once per rollover).
_MOVE_RETRIES = 4


class _MovedMeanwhile(Exception):
    """A document a write changed moved to its next generation before the commit."""


UpdateListener = Callable[[list[tuple[str, bytes]]], None]

#: What a replica reports as ``ReplicaStatus.state``: "offline", "connecting",
#: "syncing" or "online".
ConnectionState = str


@dataclass(frozen=True)
class WriteSpec:
    """What a local write records in the queue."""

    kind: str
    data_type: str
    summary: str
    ref: str | None = None


class ReplicaCore:
    """One open replica incarnation (one Yjs client id).  See the module docstring."""

    def __init__(
        self,
        storage: ReplicaStore,
        *,
        tenant: str,
        replica_id: str,
        location: str,
        client_id: int,
        hlc: HLC,
        wall: Callable[[], float],
        read_only: bool = False,
        writer_recorded: bool = False,
    ) -> None:
        self.storage = storage
        self.path = storage.path
        self.tenant = tenant
        self.replica_id = replica_id
        self.location = location
        self.client_id = client_id
        #: The replica's hybrid logical clock (LWW timestamps, sale ids).
        self.hlc = hlc
        self.lock = threading.RLock()
        self.docs = DocSet(storage, client_id, read_only=read_only)
        self.changes = ChangeIndex(storage, self.docs)
        self._wall = wall
        #: Opened to read only: no incarnation of its own, every write refused.
        self.read_only = read_only
        #: ``client_id`` is in the file's ``client_ids``: some commit wrote under it.
        self.writer_recorded = writer_recorded
        self._closed = False
        self._depth = 0
        self._data_version = storage.data_version()
        #: Other processes' local writes folded in while we sync, not streamed yet.
        self._others_to_stream: list[tuple[str, bytes]] = []
        self._log_counts: dict[str, int] = {}
        self._update_listeners: list[UpdateListener] = []
        self._status_listeners: list[Callable[[], None]] = []
        #: Called with the ids of conflicts that changed, after their commit.
        self.on_conflicts_changed: Callable[[set[str]], None] | None = None
        #: Held while this process syncs the file (one syncing process per file).
        self.sync_lock = SyncLock(storage.path)
        self.connection_state: ConnectionState = "offline"
        self.last_error: str | None = None
        #: Last config read (the write path uses it for queue priorities).
        self.cached_config = StoreConfig.from_dict(storage.get_config())

    # -- guard, clock, close -------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        if self._closed:
            raise ReplicaClosed(f"replica {self.replica_id} is closed")

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the replica's lock, with what other processes committed folded in.

        :class:`ReplicaClosed` if the replica is closed.
        """
        with self.lock:
            self.check_open()
            if self._depth == 0:
                self._fold_in_others()
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and run one durable SQLite transaction (StorageError if it fails)."""
        with self.locked(), self._durable() as conn:
            yield conn

    def check_writable(self) -> None:
        if self.read_only:
            raise UsageError(
                f"replica {self.replica_id} was opened read-only; open it without read_only "
                "to write or sync"
            )

    @contextmanager
    def _durable(self) -> Iterator[sqlite3.Connection]:
        """One write transaction that first folds in other processes' commits.

        Holding SQLite's write lock, nobody else can append meanwhile: when it
        commits, memory holds every update of the log (a compaction may then
        snapshot memory safely).
        """
        self.check_writable()
        with self.storage.write() as conn:
            self._fold_in_others()
            yield conn
            self.docs.caught_up()

    # -- several processes, one file -----------------------------------------------

    def refresh(self) -> list[tuple[str, bytes]]:
        """Fold in other processes' commits now; returns their local writes ``(doc, update)``
        folded in since the last call (by this call or any other), while this process
        holds the sync lock.

        The sync daemon calls this periodically to stream what POS processes
        sharing the file wrote.
        """
        with self.lock:
            self.check_open()
            self._fold_in_others()
            others, self._others_to_stream = self._others_to_stream, []
            return others

    def _fold_in_others(self) -> None:
        version = self.storage.data_version()
        if version == self._data_version:
            return
        self._data_version = version
        with self.storage.read():
            applied = self.docs.catch_up()
            self.cached_config = StoreConfig.from_dict(self.storage.get_config())
            saved = self.storage.get_meta("hlc")
        if saved is not None:
            self._observe_saved_clock(saved)
        if self.sync_lock.held:
            self._others_to_stream += [
                (d, data) for d, data, origin in applied if origin == "local"
            ]

    def _observe_saved_clock(self, saved: str) -> None:
        """Another process of this replica wrote with this clock: never go back before it."""
        try:
            self.hlc.observe(Timestamp.decode(saved))
        except (ClockError, InvalidArgument, ValueError) as exc:
            log.warning("ignoring the saved clock %r: %s", saved, exc)

    def now(self) -> float:
        """Wall-clock seconds (the replica's injected clock), for record timestamps."""
        return self._wall()

    def close(self) -> None:
        """Drop the documents and close the database.  Idempotent."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self.docs.unload()
            self.storage.close()

    # -- views over the documents --------------------------------------------------

    def catalog(self) -> LWWMap:
        return self.docs.view(CATALOG, LWWMap)

    def locations(self) -> LWWMap:
        return self.docs.view(LOCATIONS, LWWMap)

    def conflicts(self) -> LWWMap:
        return self.docs.view(CONFLICTS, LWWMap)

    def resolutions(self, location: str) -> LWWMap:
        """The requests to resolve conflicts that stores at ``location`` made."""
        return self.docs.view(resolutions_doc(location), LWWMap)

    def counter(self, location: str) -> PNCounter:
        """The stock counters of ``location``."""
        return self.docs.view(stock_doc(location), PNCounter)

    def ledger(self, doc: str) -> Ledger:
        """The sales ledger document ``doc``."""
        return self.docs.view(doc, Ledger)

    def known_locations(self) -> set[str]:
        """This replica's location, every declared one and every one with stock."""
        known = {self.location, *self.locations().records()}
        for doc in self.docs.names():
            name = parse_doc(doc)
            if name.data_type == "stock" and name.location is not None:
                known.add(name.location)
        return known

    def resolve_location(self, location: str | None) -> str:
        """``location``, or this replica's when ``None``; UnknownLocation if not known."""
        if location is None:
            return self.location
        check_name(location, "location")
        known = self.known_locations()
        if location not in known:
            raise UnknownLocation(
                f"unknown location {location!r}; known: {', '.join(sorted(known))} "
                "(add it with replica.locations.put)"
            )
        return location

    # -- configuration -----------------------------------------------------------------

    def read_config(self) -> StoreConfig:
        """The config stored in the file (another process may have changed it)."""
        with self.locked():
            self.cached_config = StoreConfig.from_dict(self.storage.get_config())
            return self.cached_config

    def write_config(self, config: StoreConfig) -> None:
        self.check_writable()
        with self.locked():
            with self.storage.write():
                self.storage.set_json("config", config.to_dict())
            self.storage.set_durability(config.durability)
            self.cached_config = config

    def adopt_central_config(self, central: dict[str, Any]) -> None:
        """Adopt the keys the relay holds for us (an admin set them centrally).

        Precedence: a key set centrally > the store's own value (``config set``)
        > the default.  Only the keys the relay sends change; they are
        remembered (:meth:`central_keys`) so a local change of one of them is
        refused rather than silently reverted at the next sync.  An invalid
        central config is logged and ignored.
        """
        known = {k: v for k, v in central.items() if k in StoreConfig.__dataclass_fields__}
        if known.get("relay_url", "") is None:  # null: the store's own URL
            del known["relay_url"]
        current = self.read_config()
        try:
            merged = current.updated(**known)
        except ConfigError as exc:
            log.warning("ignoring invalid central config: %s", exc)
            return
        keys = sorted(known)
        with self.locked():
            if keys != self.central_keys():
                with self.transaction():
                    self.storage.set_json("central_config_keys", keys)
        if merged != current:
            self.write_config(merged)

    def central_keys(self) -> list[str]:
        """The config keys the relay set for this store at the last sync (see above)."""
        with self.locked():
            keys = self.storage.get_json("central_config_keys")
        return [str(k) for k in keys] if isinstance(keys, list) else []

    # -- the write path ------------------------------------------------------------------

    def local_write(
        self,
        spec: WriteSpec,
        mutate: Callable[[], T],
        *,
        index: Callable[[Any, int], None] | None = None,
    ) -> T:
        """Run ``mutate`` on the docs and commit what it changed, durably (see module doc).

        If another process moved a document ``mutate`` wrote to to its next
        generation between the mutation and the commit, nothing is committed and
        ``mutate`` runs again on the new generation.
        """
        self.check_writable()
        for _ in range(_MOVE_RETRIES):
            try:
                return self._local_write_once(spec, mutate, index)
            except _MovedMeanwhile:
                continue
        raise StorageError(
            f"replica {self.replica_id}: documents kept moving to new generations during a write"
        )

    def _local_write_once(
        self, spec: WriteSpec, mutate: Callable[[], T], index: Callable[[Any, int], None] | None
    ) -> T:
        with self.locked():
            self.docs.drain()
            self.docs.moved.clear()
            try:
                result = mutate()
                captured = self.docs.drain()
                if not captured:
                    return result
                with self._durable() as conn:
                    if self.docs.moved & {d for d, _ in captured}:
                        raise _MovedMeanwhile  # a write to the generation before: redo it
                    recorded = self._record_writer()
                    for doc, data in captured:
                        self.storage.log_update(doc, data, "local")
                    clocks = {
                        doc: self.docs.clock_of(doc, self.client_id)
                        for doc in dict.fromkeys(d for d, _ in captured)
                    }
                    entry_id = self.storage.outbox.insert(
                        kind=spec.kind,
                        data_type=spec.data_type,
                        priority=self.cached_config.priority(spec.data_type),
                        summary=spec.summary,
                        client_id=self.client_id,
                        clocks=clocks,
                        ref=spec.ref,
                        now=self.now(),
                    )
                    if index is not None:
                        index(conn, entry_id)
                    self.changes.index(d for d, _ in captured)
                    self.storage.set_meta("hlc", self.hlc.last.encode())
                # Only once committed: a rolled-back insert must be redone.
                self.writer_recorded = self.writer_recorded or recorded
            except BaseException:
                self.reload()
                raise
            self._after_commit(captured, local=True)
            return result

    def _record_writer(self) -> bool:
        """Record ``client_id`` as this replica's, in the transaction of its first write.

        Called holding SQLite's write lock, so the check and the insert are one
        step against every other process.  The id was drawn at open among the
        ids not recorded then; another process can only have recorded it since
        if it drew the same 32-bit number (or a test's fixed source did): then
        both would write under one id, so this write is refused instead.
        True if this call inserted it (the caller marks it recorded after commit).
        """
        if self.writer_recorded:
            return False
        if self.client_id in self.storage.used_client_ids():
            raise UsageError(
                f"replica {self.replica_id}: another process took writer id "
                f"{self.client_id} since this one opened; reopen the replica to write"
            )
        self.storage.add_client_id(self.client_id, self.now())
        return True

    def apply_remote_many(self, updates: list[tuple[str, bytes]]) -> int:
        """Merge received updates in one durable transaction; how many changed anything.

        If one is malformed (:class:`RemoteProtocolError`) none of them is kept.
        """
        for doc, update in updates:  # bad arguments change nothing
            data_type_of(doc)
            if not isinstance(update, bytes):
                raise InvalidArgument(f"an update is bytes, not {type(update).__name__}")
        with self.locked():
            self.docs.drain()
            changed = 0
            try:
                captured: list[tuple[str, bytes]] = []
                for doc, update in updates:
                    self.docs.track(doc)
                    self.docs.apply(doc, update)
                    new = self.docs.drain()
                    changed += bool(new)
                    captured += new
                if not captured and not self.docs.held_changes():
                    return 0
                for doc in dict.fromkeys(doc for doc, _ in updates):
                    self._observe_remote_clock(doc)
                with self._durable():
                    for name, data in captured:
                        self.storage.log_update(name, data, "remote")
                    self.docs.persist_held()
                    self.changes.index(d for d, _ in captured)
                    self.storage.set_meta("hlc", self.hlc.last.encode())
                if not captured:
                    return 0
            except BaseException:
                self.reload()
                raise
            self._after_commit(captured, local=False)
            return changed

    def _observe_remote_clock(self, doc: str) -> None:
        if DATA_TYPES[data_type_of(doc)].crdt != "lww":
            return
        view = self.docs.view(doc, LWWMap)
        newest, view.newest = view.newest, None
        if newest is None:
            return
        try:
            self.hlc.observe(newest)
        except ClockError as exc:
            self.last_error = str(exc)
            log.warning("%s", exc)

    def _after_commit(self, captured: list[tuple[str, bytes]], *, local: bool) -> None:
        """What follows a committed write.  Never raises: the write is durable, and a
        caller who saw an error would retry it (a sale recorded twice)."""
        conflicts = self.changes.drain_changed_conflicts()
        if conflicts and self.on_conflicts_changed is not None:
            try:
                self.on_conflicts_changed(conflicts)
            except Exception:  # retried with the next change
                self.changes.changed_conflicts |= conflicts
                log.exception("could not mirror conflicts onto the queue; will retry")
        self._compact_if_due(doc for doc, _ in captured)
        if local:
            for listener in list(self._update_listeners):
                try:
                    listener(captured)
                except Exception:
                    log.exception("a local-update listener failed")
        try:
            self.notify_status()
        except Exception:
            log.exception("a status listener failed")

    def _compact_if_due(self, docs: Iterable[str]) -> None:
        for doc in docs:
            count = self._log_counts.get(doc)
            try:
                count = self.storage.updates_since_snapshot(doc) if count is None else count + 1
                self._log_counts[doc] = count
                if count >= COMPACT_EVERY:
                    self.compact(doc)
            except TiendaSyncError as exc:  # e.g. a full disk: the log stays, retried later
                log.warning("could not compact %s (will retry): %s", doc, exc)

    def compact(self, doc: str | None = None) -> None:
        """Fold update logs into snapshots (one doc, or all loaded docs)."""
        with self.locked():
            names = [doc] if doc is not None else self.docs.loaded()
            for name in names:
                with self._durable():
                    self.storage.compact_doc(name, self.docs.diff(name))
                self._log_counts[name] = 0

    def move_generation(self, doc: str, generation: int, state: bytes) -> bool:
        """Replace ``doc`` by its ``generation``, whose whole state is ``state``, in one
        transaction (docs/generations.md); other processes on the file drop the old
        one when they next look.  Refused (False) while a local write to ``doc`` is
        not acknowledged: it belongs to the old generation and must reach the relay
        there first.  Only the sync session calls this, with what the relay sent.
        """
        self.check_writable()
        with self.locked():
            with self._durable():
                if self.storage.outbox.has_unacknowledged(doc):
                    return False
                self.storage.replace_generation(doc, state, generation)
            self._moved(doc)
        log.info("%s: %s moved to generation %d", self.replica_id, doc, generation)
        return True

    def _moved(self, doc: str) -> None:
        """After ``doc``'s move is committed: read it anew and report every entity in it
        as changed (what the new generation brought came with no CRDT event)."""
        self.unload_docs([doc])
        self.changes.moved(doc)
        self._after_commit([], local=False)

    def adopt_generation(self, doc: str, generation: int, state: bytes) -> None:
        """Replace ``doc`` by ``generation`` (whole state ``state``) whatever its queue
        says: for the relay's own writer replica, whose writes the relay stores
        directly (it carried what its store of record lacked before calling this)."""
        with self.locked():
            with self._durable():
                self.storage.replace_generation(doc, state, generation)
                self.storage.outbox.acknowledge_all(doc, self.now())
            self._moved(doc)

    def adopt_generations(self, generations: dict[str, int]) -> None:
        """Record the relay's generation of documents this session's HELLO did not tell
        (not held then: created since by a local write, or not held at all), before
        their catch-up arrives, so later HELLOs tell it."""
        with self.transaction():
            self.storage.record_generations(generations)

    def generations(self) -> dict[str, int]:
        """``{doc: generation}`` of every document held past generation 0."""
        with self.locked(), self.storage.read():
            return self.storage.doc_generations()

    def loaded_docs(self) -> list[str]:
        """The documents held in memory now (the others are read from the file on use)."""
        with self.lock:
            return self.docs.loaded()

    def unload_docs(self, names: Iterable[str]) -> None:
        """Drop these documents from memory; each is read from the file on next use.

        Nothing is lost: every write and merge is in the file when it returns.
        Their compaction counters go too (re-read from the file on next use), so
        what is kept per document is bounded by the loaded documents.
        """
        with self.locked():
            for name in names:
                self.docs.drop_loaded(name)
                self._log_counts.pop(name, None)

    def reload(self) -> None:
        """Forget in-memory state; it is rebuilt from disk on next use."""
        self.docs.unload()
        self._log_counts.clear()
        self.changes.forget_pending()

    # -- listeners and connection state ----------------------------------------------------

    def on_local_update(self, listener: UpdateListener) -> Callable[[], None]:
        """Call ``listener(updates)`` after each committed local write."""
        self._update_listeners.append(listener)
        return lambda: self._update_listeners.remove(listener)

    def on_status_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` when the connection state or the data changes."""
        self._status_listeners.append(callback)
        return lambda: self._status_listeners.remove(callback)

    def set_connection_state(self, state: ConnectionState, error: str | None = None) -> None:
        """What the sync client reports; listeners hear of a change."""
        with self.lock:
            changed = state != self.connection_state or error is not None
            self.connection_state = state
            if error is not None:
                self.last_error = error
        if changed and self.sync_lock.held:
            self._publish_sync_state(state, error)
        if changed:
            self.notify_status()

    def _publish_sync_state(self, state: ConnectionState, error: str | None) -> None:
        """Let the other processes of this file show how our sync goes."""
        try:
            with self.transaction():
                self.storage.set_meta("sync_state", encode_state(state, error, self.now()))
        except TiendaSyncError as exc:  # a status line must not break a sync
            log.warning("could not publish the sync state: %s", exc)

    def request_sync(self, full: bool) -> bool:
        """Ask the process syncing this file for a new session now (``full``: a full one).

        False (and nothing asked) when no other process syncs the file.  The
        request is a row in the file; the syncing process takes it at its next
        look at the others' commits (within ``OTHER_PROCESSES_POLL_S``).
        """
        if self.sync_lock.held or not SyncLock.held_by_other(self.path):
            return False
        with self.transaction():
            asked = self.storage.get_meta(SYNC_REQUEST_KEY)
            self.storage.set_meta(SYNC_REQUEST_KEY, "full" if full or asked == "full" else "now")
        return True

    def take_sync_request(self) -> bool | None:
        """The session another process asked for (True: full), cleared; None if none.

        Only the process holding the sync lock takes requests.
        """
        if not self.sync_lock.held:
            return None
        with self.locked(), self.storage.read():  # the common case: a read, no write
            asked = self.storage.get_meta(SYNC_REQUEST_KEY)
        if asked is None:
            return None
        with self.transaction():
            asked = self.storage.get_meta(SYNC_REQUEST_KEY)
            self.storage.delete_meta(SYNC_REQUEST_KEY)
        return None if asked is None else asked == "full"

    def shared_sync_state(self) -> dict[str, Any] | None:
        """The state another process syncing this file published, if one is syncing now."""
        if self.sync_lock.held or not SyncLock.held_by_other(self.path):
            return None
        return decode_state(self.storage.get_meta("sync_state"))

    def notify_status(self) -> None:
        if self._closed:
            return
        for callback in list(self._status_listeners):
            callback()
