"""The ``Replica``: a store's full local copy, usable with no network.

Threading model: a ``Replica`` may be shared by the threads of a POS app and
by its own background sync thread.  Every public call takes the replica's
re-entrant lock for its whole duration, so calls are serialised and each sees
a consistent state; a write holds the lock until its SQLite transaction has
committed.  Callbacks (status changes, new updates) run on the thread that
caused them, mostly while that thread holds the lock: they must be quick, may
call the replica from the same thread, and must not wait for another thread
that uses the replica.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiendasync.errors import (
    ConfigError,
    CorruptData,
    InvalidArgument,
    StoragePermissionError,
    TiendaSyncError,
)
from tiendasync.model.config import StoreConfig
from tiendasync.model.docnames import data_type_of
from tiendasync.model.hlc import DEFAULT_MAX_DRIFT_MS, HLC, Timestamp
from tiendasync.model.names import check_name
from tiendasync.store.boundary import public_api
from tiendasync.store.catalog import Catalog
from tiendasync.store.compensation import Compensator
from tiendasync.store.conflicts import ConflictBook, Rules, count_open_for, mirror_to_queue
from tiendasync.store.core import COMPACT_EVERY, ReplicaCore, UpdateListener
from tiendasync.store.inventory import Inventory
from tiendasync.store.locations import Locations
from tiendasync.store.queue import SyncQueue
from tiendasync.store.retention import sales_floor_of
from tiendasync.store.sales import Sale, Sales
from tiendasync.store.storage import ReplicaStore
from tiendasync.store.storage.access import access_problem
from tiendasync.store.synclog import SyncLog, prune_retained

__all__ = ["COMPACT_EVERY", "Replica", "ReplicaStatus"]

log = logging.getLogger("tiendasync.replica")


@dataclass(frozen=True)
class ReplicaStatus:
    """What the seed's "offline indicator" shows."""

    state: str  # "offline" | "connecting" | "syncing" | "online"
    pending: int
    last_sync_at: float | None
    open_conflicts: int
    last_error: str | None
    #: Values in the merged documents that this process skipped because they are
    #: not valid for their type (a foreign or corrupt write); they never fail a
    #: sale or a sync.  Not 0: look for a misbehaving replica in the relay's log.
    skipped_values: int = 0

    @property
    def online(self) -> bool:
        return self.state in ("online", "syncing")


@public_api
class Replica:
    """A store's replica.  Use :meth:`Replica.open`.

    ``core`` is the store's internal API (:class:`~tiendasync.store.core.ReplicaCore`):
    what the sync session, the relay's central writer and tools build on.
    Applications use the facade's methods and facets.
    """

    def __init__(self, core: ReplicaCore) -> None:
        self.core = core
        self.path = core.path
        self.tenant = core.tenant
        self.replica_id = core.replica_id
        self.location = core.location
        self.client_id = core.client_id
        self._sync: Any = None
        self._status_callbacks: list[Callable[[ReplicaStatus], None]] = []
        rules = Rules(core)
        self.catalog = Catalog(core)
        self.inventory = Inventory(core)
        self.locations = Locations(core)
        self.sales = Sales(core, rules)
        compensator = Compensator(core, self.inventory, self.catalog, self.sales)
        self.conflicts = ConflictBook(core, rules, compensator)
        self.queue = SyncQueue(core, process_now=self._process_now, resolve=self.conflicts.resolve)
        self.log = SyncLog(core)
        core.on_conflicts_changed = functools.partial(mirror_to_queue, core, self.conflicts)
        core.on_status_change(self._notify_status)

    # -- opening and closing ------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        tenant: str | None = None,
        replica_id: str | None = None,
        location: str | None = None,
        durability: str | None = None,
        max_clock_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
        wall_clock: Callable[[], int] | None = None,
        client_id_source: Callable[[int], int] | None = None,
        read_only: bool = False,
    ) -> Replica:
        """Open (or create) the replica stored at ``path``.

        Creating needs ``tenant``, ``replica_id`` and ``location``; reopening
        reads them from the file (if given they must match).  Every open
        draws a fresh Yjs client id (one no earlier incarnation recorded), so
        a database restored from a backup can never reuse ids its lost future
        used; the id is recorded in the file by the transaction of the first
        write, so an open that never writes starts no incarnation at all.
        ``wall_clock`` (milliseconds) replaces the system clock and
        ``client_id_source(n)`` (a number in ``range(n)``) the system's
        randomness for new client ids: both for deterministic tests.
        ``read_only`` opens an existing replica to read it (``status``,
        listings) without starting an incarnation: no new client id, nothing
        written; a write raises :class:`UsageError`.
        """
        _refuse_unusable(path, read_only=read_only)
        # An empty file is no database yet: a failed open leaves it as it was.
        was_empty = Path(path).is_file() and Path(path).stat().st_size == 0
        existed = Path(path).exists() and not was_empty
        try:
            store = ReplicaStore(str(path), read_only=read_only)
        except BaseException:
            if not existed:
                _remove_database(Path(path), was_empty=was_empty)
            raise
        try:
            identity = _identity(
                store, path, tenant=tenant, replica_id=replica_id, location=location
            )
            config = StoreConfig.from_dict(store.get_config())
            if durability is not None and not read_only:
                config = config.updated(durability=durability)
            store.set_durability(config.durability)
            used = store.used_client_ids()
            if read_only:
                client_id = max(used, default=1)  # never writes: any id reads alike
            else:
                client_id = _new_client_id(used, client_id_source)
            saved_hlc = store.get_meta("hlc")
            now_ms = wall_clock() if wall_clock is not None else time.time_ns() // 1_000_000
            last_clock, _ = _sane_clock(_saved_clock(store, saved_hlc), now_ms)
            hlc = HLC(
                identity["replica_id"],
                last=last_clock,
                max_drift_ms=max_clock_drift_ms,
                **({"wall": wall_clock} if wall_clock else {}),
            )
            wall: Callable[[], float] = (
                (lambda: wall_clock() / 1000) if wall_clock is not None else time.time
            )
            if not read_only:
                with store.write():
                    for key, value in identity.items():
                        store.set_meta(key, value)
                    store.set_json("config", config.to_dict())
            core = ReplicaCore(
                store,
                tenant=identity["tenant"],
                replica_id=identity["replica_id"],
                location=identity["location"],
                client_id=client_id,
                hlc=hlc,
                wall=wall,
                read_only=read_only,
            )
        except BaseException:
            store.close()
            if not existed:
                _remove_database(Path(path), was_empty=was_empty)
            raise
        replica = cls(core)
        if read_only:
            return replica
        with core.locked():
            missing = core.locations().get(replica.location) is None
        if missing:
            replica.locations.put(replica.location, {"name": replica.location})
        return replica

    def close(self) -> None:
        """Stop background sync and close the database.  Idempotent."""
        if self.core.closed:
            return
        self.stop_sync()
        self.core.close()

    def __enter__(self) -> Replica:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Replica {self.tenant}/{self.replica_id} at {self.location} ({self.path})>"

    # -- configuration ------------------------------------------------------------

    @property
    def config(self) -> StoreConfig:
        """The store's sync config, read from the database (another process may change it)."""
        return self.core.read_config()

    def configure(self, **changes: Any) -> StoreConfig:
        """Change this store's sync config (validated; ConfigError if wrong).

        A key the relay sets for this store (:attr:`central_config_keys`) wins
        over a local value at every sync, so changing it here is refused with
        :class:`ConfigError` (unless the value is the same): change it on the
        relay, or have the admin clear it there.
        """
        with self.core.locked():
            current = self.core.read_config()
            central = set(self.core.central_keys())
            shown = current.to_dict()
            owned = sorted(k for k, v in changes.items() if k in central and shown.get(k) != v)
            if owned:
                raise ConfigError(
                    f"{', '.join(owned)} {'is' if len(owned) == 1 else 'are'} set centrally "
                    "for this store on the relay and would be reverted at the next sync; "
                    "change it in the relay's console or admin API (or have it cleared there)"
                )
            config = current.updated(**changes)
            self.core.write_config(config)
            return config

    @property
    def central_config_keys(self) -> list[str]:
        """The config keys the relay set centrally for this store (as of the last sync)."""
        return self.core.central_keys()

    @property
    def relay_token(self) -> str | None:
        """The saved relay token (see :meth:`set_relay_token`), if any."""
        with self.core.locked():
            return self.core.storage.get_meta("relay_token")

    def set_relay_token(self, token: str | None) -> None:
        """Save (or with ``None`` forget) the token this store uses with its relay."""
        with self.core.transaction():
            if token is None:
                self.core.storage.delete_meta("relay_token")
            else:
                self.core.storage.set_meta("relay_token", token)

    def own_client_ids(self) -> set[int]:
        """Yjs client ids of every incarnation of this replica that wrote, and this
        one's (it may write; a read-only open has none of its own)."""
        with self.core.locked():
            used = self.core.storage.used_client_ids()
        return used if self.core.read_only else used | {self.client_id}

    def prune(self, *, now: float | None = None) -> dict[str, int]:
        """Delete now what ``retention_days`` and ``sales_months`` no longer keep
        (each sync does it when it ends): acknowledged queue entries and sync-log
        rows older than the window, and sales documents of older months whose
        writes the relay acknowledged.  Returns ``{"queue": n, "sync_log": m,
        "sales_docs": k}``, what went."""
        with self.core.transaction():
            return prune_retained(self.core, now)

    def sales_floor(self) -> str | None:
        """The oldest sales month (``YYYY-MM``) this replica keeps now, or ``None`` when
        it keeps every month (config ``sales_months`` 0); see ``store.retention``."""
        with self.core.locked():
            return sales_floor_of(self.core)

    def wrote_client_ids(self) -> set[int]:
        """Yjs client ids recorded in the file: the incarnations that wrote."""
        with self.core.locked():
            return self.core.storage.used_client_ids()

    # -- sales ----------------------------------------------------------------------

    def record_sale(self, lines: Iterable[Any], *, location: str | None = None) -> Sale:
        """Record a sale and take its units out of stock, in one durable write.

        ``lines``: ``[(sku, quantity)]`` or ``[(sku, quantity, unit_price_cents)]``
        (price defaults to the catalog's ``price_cents``).  Never refused for
        lack of stock or an unknown SKU: the returned sale's ``warnings`` say
        what will be reviewed.
        """
        return self.sales.record(lines, location=location)

    # -- what sync needs -------------------------------------------------------------

    def doc_names(self) -> list[str]:
        with self.core.locked():
            return self.core.docs.names()

    def state_vector(self, doc: str) -> bytes:
        data_type_of(doc)
        with self.core.locked():
            return self.core.docs.state_vector(doc)

    def diff(self, doc: str, state_vector: bytes | None = None) -> bytes:
        """What a peer at ``state_vector`` lacks of ``doc``."""
        data_type_of(doc)
        if state_vector is not None and not isinstance(state_vector, bytes):
            raise InvalidArgument(f"a state vector is bytes, not {type(state_vector).__name__}")
        with self.core.locked():
            return self.core.docs.diff(doc, state_vector)

    def apply_remote(self, doc: str, update: bytes) -> bool:
        """Merge an update received from a peer; durable before returning.

        Returns ``True`` if it changed anything (redelivery returns ``False``).
        Raises :class:`RemoteProtocolError` for malformed updates, with the
        replica unchanged.
        """
        return self.apply_remote_many([(doc, update)]) > 0

    def apply_remote_many(self, updates: list[tuple[str, bytes]]) -> int:
        """Merge several received updates in one durable transaction.

        Returns how many of them changed anything.  If one is malformed
        (:class:`RemoteProtocolError`) none of them is kept.
        """
        return self.core.apply_remote_many(updates)

    def compact(self, doc: str | None = None) -> None:
        """Fold update logs into snapshots (one doc, or all loaded docs)."""
        self.core.compact(doc)

    def on_local_update(self, listener: UpdateListener) -> Callable[[], None]:
        """Call ``listener(updates)`` after each committed local write."""
        return self.core.on_local_update(listener)

    def drain_touched(self) -> set[tuple[str, str]]:
        """(location, SKU) keys changed by writes or merges since the last drain."""
        with self.core.lock:
            return self.core.changes.drain_touched()

    def drain_changed_products(self) -> set[str]:
        """SKUs whose catalog record changed since the last drain."""
        with self.core.lock:
            return self.core.changes.drain_changed_products()

    # -- status ------------------------------------------------------------------------

    @property
    def status(self) -> ReplicaStatus:
        core = self.core
        with core.locked():
            other = core.shared_sync_state() if self._sync is None else None
            return ReplicaStatus(
                state=other["state"] if other else core.connection_state,
                pending=core.storage.outbox.pending_count(),
                last_sync_at=core.storage.sync_log.last_success(),
                open_conflicts=count_open_for(self.conflicts, self.location, self.replica_id),
                last_error=(other or {}).get("error") or core.last_error,
                skipped_values=core.docs.skipped_values(),
            )

    def on_status_change(self, callback: Callable[[ReplicaStatus], None]) -> Callable[[], None]:
        """Call ``callback(status)`` when the connection state or queue changes."""
        self._status_callbacks.append(callback)
        return lambda: self._status_callbacks.remove(callback)

    def _notify_status(self) -> None:
        if not self._status_callbacks:
            return
        status = self.status
        for callback in list(self._status_callbacks):
            try:
                callback(status)
            except Exception:  # a broken indicator must not break a sale
                log.exception("status callback failed")

    # -- sync (implemented in tiendasync.store.client) ------------------------------------

    def sync_now(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        full: bool = False,
        timeout: float = 30.0,
    ) -> Any:
        """Connect to the relay, exchange until both sides agree, disconnect."""
        from tiendasync.store.client import sync_once

        self.core.check_writable()
        return sync_once(self, url, token=token, full=full, timeout=timeout)

    def request_sync(self, *, full: bool = False) -> bool:
        """Ask the process that syncs this file (the sync daemon) for a new session now.

        For a process that shares the file with a running daemon, where
        :meth:`sync_now` raises :class:`SyncBusy`: the daemon ends its session
        and starts another (``full``: a full state exchange) within about half
        a second; :attr:`status` then shows how it goes.  Returns False, asking
        nothing, when no other process syncs the file (call :meth:`sync_now`).
        """
        self.core.check_writable()
        return self.core.request_sync(full)

    def start_sync(self, url: str | None = None, *, token: str | None = None) -> None:
        """Sync continuously in a background thread (reconnects with backoff)."""
        from tiendasync.store.client import BackgroundSync

        self.core.check_writable()
        with self.core.locked():
            if self._sync is not None:
                raise InvalidArgument("background sync is already running; call stop_sync first")
            sync = BackgroundSync(self, url, token=token)
            sync.start()  # SyncBusy if another process syncs this file
            self._sync = sync

    @property
    def sync_failure(self) -> TiendaSyncError | None:
        """The permanent error (a refused token, a forbidden write) that ended background sync.

        None while it runs, when it was never started, and after :meth:`stop_sync`.
        """
        sync = self._sync
        return None if sync is None else sync.failure

    def stop_sync(self) -> None:
        """Stop background sync (waits for the thread).  Idempotent."""
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.stop()

    def _process_now(self, **sync_args: Any) -> None:
        if self._sync is not None:
            self._sync.kick()
        elif sync_args or self.config.relay_url:
            self.sync_now(**sync_args)


def _identity(store: ReplicaStore, path: str | Path, **given: str | None) -> dict[str, str]:
    """The file's tenant, replica id and location, checked against those ``given``."""
    identity: dict[str, str] = {}
    for key, value in given.items():
        saved = store.get_meta(key)
        if saved is None:
            if value is None:
                raise ConfigError(
                    f"{path} is not a replica yet: create it with tenant=, replica_id= "
                    "and location= (on the command line: tiendasync init)"
                )
            check_name(value, key)
        elif value is not None and value != saved:
            raise ConfigError(f"{path} belongs to {key} {saved!r}, not {value!r}")
        identity[key] = saved if saved is not None else str(value)
    return identity


#: A saved clock further ahead of the wall clock than this was set by a wrong clock.
FUTURE_CLOCK_MS = 5 * 60 * 1000


def _sane_clock(saved: Timestamp | None, now_ms: int) -> tuple[Timestamp | None, str | None]:
    """The saved clock, or None (and why) if it is in the future of the wall clock.

    A clock that once ran ahead (a till set ten years forward) must not keep
    this replica in the future after the clock is fixed: the relay refuses
    writes dated ahead of its own clock.  Starting again from the wall clock
    is safe because every open is a new writer (a new client id), whose
    slots nothing else has written.
    """
    if saved is None or saved.wall_ms <= now_ms + FUTURE_CLOCK_MS:
        return saved, None
    note = (
        f"the saved clock ({saved.wall_ms - now_ms} ms ahead of this machine's) was "
        "set by a wrong clock: starting again from the machine's clock"
    )
    log.warning("%s", note)
    return None, note


def _saved_clock(store: ReplicaStore, saved: str | None) -> Timestamp | None:
    """The clock the file saved, or None; CorruptData if it is garbage."""
    try:
        return Timestamp.decode(saved) if saved else None
    except (InvalidArgument, ValueError) as exc:
        raise CorruptData(
            f"{store.path} holds a garbage clock {saved!r}; restore it from a backup"
        ) from exc


def _refuse_unusable(path: str | Path, *, read_only: bool) -> None:
    """Refuse, before anything is created, an open that cannot work: a read-only
    open of no file (ConfigError), a writer this user may not be (StoragePermissionError)."""
    if read_only and not Path(path).is_file():
        raise ConfigError(f"no replica database at {path}")
    if not read_only and (problem := access_problem(path, write=True)) is not None:
        raise StoragePermissionError(f"cannot open replica database {path}: {problem}")


def _remove_database(path: Path, *, was_empty: bool) -> None:
    """Undo what a failed open wrote: remove the database it created (and its WAL
    companions), or, if it was given an empty file, empty that file again."""
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if was_empty:
        with contextlib.suppress(OSError):
            os.truncate(path, 0)
    else:
        path.unlink(missing_ok=True)


def _new_client_id(used: set[int], source: Callable[[int], int] | None) -> int:
    """A fresh Yjs client id in ``1..2**32-1``, never one of ``used``."""
    draw = source if source is not None else secrets.randbelow
    client_id = 0
    while client_id == 0 or client_id in used:
        client_id = draw(2**32 - 1) + 1
    return client_id
