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

import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from tiendasync.crdt import Ledger, LWWMap, PNCounter, check_name
from tiendasync.errors import (
    ClockError,
    ConfigError,
    InvalidArgument,
    ReplicaClosed,
)
from tiendasync.model.config import StoreConfig
from tiendasync.model.docnames import (
    CATALOG,
    LOCATIONS,
    data_type_of,
    location_of,
    sales_doc,
    stock_doc,
)
from tiendasync.model.hlc import DEFAULT_MAX_DRIFT_MS, HLC, Timestamp
from tiendasync.store.catalog import Catalog
from tiendasync.store.conflicts import ConflictBook, flag_queue_entries
from tiendasync.store.docset import DocSet
from tiendasync.store.invariants import evaluate
from tiendasync.store.inventory import Inventory
from tiendasync.store.locations import Locations
from tiendasync.store.queue import SyncQueue, insert_entry
from tiendasync.store.sales import Sale, Sales, catalog_price, new_sale_id, parse_lines
from tiendasync.store.storage import ReplicaStore
from tiendasync.store.synclog import SyncLog

__all__ = ["COMPACT_EVERY", "Replica", "ReplicaStatus"]

_VIEW_KINDS: dict[str, type[Any]] = {
    "catalog": LWWMap,
    "locations": LWWMap,
    "conflicts": LWWMap,
    "stock": PNCounter,
    "sales": Ledger,
}

log = logging.getLogger("tiendasync.store.replica")

#: A document's update log is folded into a snapshot after this many updates.
COMPACT_EVERY = 2000

T = TypeVar("T")
UpdateListener = Callable[[list[tuple[str, bytes]]], None]


@dataclass(frozen=True)
class ReplicaStatus:
    """What the seed's "offline indicator" shows."""

    state: str  # "offline" | "connecting" | "syncing" | "online"
    pending: int
    last_sync_at: float | None
    open_conflicts: int
    last_error: str | None

    @property
    def online(self) -> bool:
        return self.state in ("online", "syncing")


class Replica:
    """A store's replica.  Use :meth:`Replica.open`."""

    def __init__(
        self,
        store: ReplicaStore,
        *,
        tenant: str,
        replica_id: str,
        location: str,
        client_id: int,
        hlc: HLC,
    ) -> None:
        self._store = store
        self.path = store.path
        self.tenant = tenant
        self.replica_id = replica_id
        self.location = location
        self.client_id = client_id
        self._hlc = hlc
        self._lock = threading.RLock()
        self._closed = False
        self._docs = DocSet(store, client_id)
        self._log_counts: dict[str, int] = {}
        self._touched: set[tuple[str, str]] = set()
        self._changed_conflicts: set[str] = set()
        self._changed_products: set[str] = set()
        self._update_listeners: list[UpdateListener] = []
        self._status_listeners: list[Callable[[ReplicaStatus], None]] = []
        self._connection_state = "offline"
        self._last_error: str | None = None
        self._sync: Any = None
        #: Last config read (the write path uses it for queue priorities).
        self._config = StoreConfig.from_dict(store.get_json("config") or {})
        self.catalog = Catalog(self)
        self.inventory = Inventory(self)
        self.locations = Locations(self)
        self.sales = Sales(self)
        self.queue = SyncQueue(self)
        self.log = SyncLog(self)
        self.conflicts = ConflictBook(self)

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
    ) -> Replica:
        """Open (or create) the replica stored at ``path``.

        Creating needs ``tenant``, ``replica_id`` and ``location``; reopening
        reads them from the file (if given they must match).  Every open
        starts a new incarnation with a fresh Yjs client id, so a database
        restored from a backup can never reuse ids its lost future used.
        """
        store = ReplicaStore(str(path))
        try:
            identity: dict[str, str] = {}
            for key, given in (
                ("tenant", tenant),
                ("replica_id", replica_id),
                ("location", location),
            ):
                saved = store.get_meta(key)
                if saved is None:
                    if given is None:
                        raise ConfigError(
                            f"{path} is a new replica: pass tenant=, replica_id= and location="
                        )
                    check_name(given, key)
                elif given is not None and given != saved:
                    raise ConfigError(f"{path} belongs to {key} {saved!r}, not {given!r}")
                identity[key] = saved if saved is not None else str(given)
            config = StoreConfig.from_dict(store.get_json("config") or {})
            if durability is not None:
                config = config.updated(durability=durability)
            store.set_durability(config.durability)
            used = store.used_client_ids()
            client_id = 0
            while client_id == 0 or client_id in used:
                client_id = secrets.randbelow(2**32 - 1) + 1
            saved_hlc = store.get_meta("hlc")
            hlc = HLC(
                identity["replica_id"],
                last=Timestamp.decode(saved_hlc) if saved_hlc else None,
                max_drift_ms=max_clock_drift_ms,
                **({"wall": wall_clock} if wall_clock else {}),
            )
            with store.write():
                for key, value in identity.items():
                    store.set_meta(key, value)
                store.set_json("config", config.to_dict())
                store.add_client_id(client_id)
        except BaseException:
            store.close()
            raise
        replica = cls(
            store,
            tenant=identity["tenant"],
            replica_id=identity["replica_id"],
            location=identity["location"],
            client_id=client_id,
            hlc=hlc,
        )
        if replica._docs.view(LOCATIONS, LWWMap).get(replica.location) is None:
            replica.locations.put(replica.location, {"name": replica.location})
        return replica

    def close(self) -> None:
        """Stop background sync and close the database.  Idempotent."""
        if self._closed:
            return
        self.stop_sync()
        with self._lock:
            self._closed = True
            self._docs.unload()
            self._store.close()

    def __enter__(self) -> Replica:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Replica {self.tenant}/{self.replica_id} at {self.location} ({self.path})>"

    def _check_open(self) -> None:
        if self._closed:
            raise ReplicaClosed(f"replica {self.replica_id} is closed")

    # -- configuration ------------------------------------------------------------

    @property
    def config(self) -> StoreConfig:
        """The store's sync config, read from the database (another process may change it)."""
        with self._lock:
            self._check_open()
            self._config = StoreConfig.from_dict(self._store.get_json("config") or {})
            return self._config

    def configure(self, **changes: Any) -> StoreConfig:
        """Change this store's sync config (validated; ConfigError if wrong)."""
        with self._lock:
            config = self.config.updated(**changes)
            with self._store.write():
                self._store.set_json("config", config.to_dict())
            self._store.set_durability(config.durability)
            self._config = config
            return config

    @property
    def relay_token(self) -> str | None:
        """The saved relay token (see :meth:`set_relay_token`), if any."""
        with self._lock:
            self._check_open()
            return self._store.get_meta("relay_token")

    def set_relay_token(self, token: str | None) -> None:
        """Save (or with ``None`` forget) the token this store uses with its relay."""
        with self._lock:
            self._check_open()
            with self._store.write() as conn:
                if token is None:
                    conn.execute("DELETE FROM meta WHERE key = 'relay_token'")
                else:
                    self._store.set_meta("relay_token", token)

    def own_client_ids(self) -> set[int]:
        """Yjs client ids of every incarnation of this replica (this one included)."""
        with self._lock:
            self._check_open()
            return self._store.used_client_ids()

    def _apply_central_config(self, central: dict[str, Any]) -> None:
        """Adopt the config the relay holds for us (edited centrally)."""
        try:
            wanted = StoreConfig.from_dict(
                {k: v for k, v in central.items() if k in StoreConfig.__dataclass_fields__}
            )
        except ConfigError as exc:
            log.warning("ignoring invalid central config: %s", exc)
            return
        current = self.config
        merged = wanted.updated(relay_url=wanted.relay_url or current.relay_url)
        if merged != current:
            self.configure(**merged.to_dict())

    # -- sales ----------------------------------------------------------------------

    def record_sale(self, lines: Iterable[Any], *, location: str | None = None) -> Sale:
        """Record a sale and take its units out of stock, in one durable write.

        ``lines``: ``[(sku, quantity)]`` or ``[(sku, quantity, unit_price_cents)]``
        (price defaults to the catalog's ``price_cents``).  Never refused for
        lack of stock or an unknown SKU: the returned sale's ``warnings`` say
        what will be reviewed.
        """
        with self._lock:
            self._check_open()
            loc = self.inventory._location(location)
            parsed = parse_lines(lines, lambda sku: catalog_price(self, sku))
            catalog = self._docs.view(CATALOG, LWWMap)
            unknown = tuple(sorted({ln.sku for ln in parsed if catalog.get(ln.sku) is None}))
            ts = self._hlc.now()
            sale_id = new_sale_id(ts.wall_ms, ts.counter, self.client_id)
            sale = Sale(sale_id, loc, self.replica_id, ts.wall_ms, parsed)
            ledger_name = sales_doc(loc, ts.wall_ms)
            per_sku: dict[str, int] = {}
            for ln in parsed:
                per_sku[ln.sku] = per_sku.get(ln.sku, 0) + ln.quantity

            def mutate() -> None:
                ledger_doc = self._docs.doc(ledger_name)
                with ledger_doc.transaction(origin="local"):
                    self._docs.view(ledger_name, Ledger).add(sale.id, sale.to_record())
                stock = self._docs.doc(stock_doc(loc))
                with stock.transaction(origin="local"):
                    counter = self._docs.view(stock_doc(loc), PNCounter)
                    for sku, qty in per_sku.items():
                        counter.add(sku, -qty)

            self._local_write(
                "sale",
                "sales",
                f"sale {sale.id}: {len(parsed)} line(s), {sale.total_cents} cents at {loc}",
                mutate,
                ref=sale.id,
            )
            counter = self._docs.view(stock_doc(loc), PNCounter)
            backorder = (self.conflicts.state.location(loc) or {}).get("allow_negative") is True
            negative = (
                () if backorder else tuple(sorted(s for s in per_sku if counter.value(s) < 0))
            )
            notes = self._local_invariant_notes((loc, sku) for sku in per_sku)
            return replace(sale, negative_stock=negative, unknown_skus=unknown, notes=notes)

    def _local_invariant_notes(self, keys: Iterable[tuple[str, str]]) -> tuple[str, ...]:
        """Messages of app-defined invariants broken on ``keys`` (warn at once)."""
        custom = [
            i
            for i in self.conflicts.invariants
            if i.name not in ("non_negative_stock", "unknown_product")
        ]
        if not custom:
            return ()
        violations, _ = evaluate(custom, self.conflicts.state, list(keys))
        return tuple(v.message for v in violations.values())

    # -- the write path ----------------------------------------------------------------

    def _local_write(
        self,
        kind: str,
        data_type: str,
        summary: str,
        mutate: Callable[[], T],
        *,
        ref: str | None = None,
        index: Callable[[Any, int], None] | None = None,
    ) -> T:
        """Run ``mutate`` on the docs and commit what it changed, durably.

        One SQLite transaction holds the CRDT updates, the queue entry, index
        rows and the clock.  If anything fails the in-memory docs are rebuilt
        from disk, so memory never holds a write the disk does not.
        """
        with self._lock:
            self._check_open()
            self._docs.drain()
            try:
                result = mutate()
                captured = self._docs.drain()
                if not captured:
                    return result
                with self._store.write() as conn:
                    for doc, data in captured:
                        self._store.log_update(doc, data, "local")
                    clocks = {
                        doc: self._docs.clock_of(doc, self.client_id)
                        for doc in dict.fromkeys(d for d, _ in captured)
                    }
                    entry_id = insert_entry(
                        conn,
                        kind=kind,
                        data_type=data_type,
                        priority=self._config.priority(data_type),
                        summary=summary,
                        client_id=self.client_id,
                        clocks=clocks,
                        ref=ref,
                    )
                    if index is not None:
                        index(conn, entry_id)
                    self._index_changes(conn, captured)
                    self._store.set_meta("hlc", self._hlc.last.encode())
            except BaseException:
                self._reload()
                raise
            self._after_commit(captured)
            return result

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
        kinds = [(doc, _VIEW_KINDS[data_type_of(doc)]) for doc, _ in updates]
        with self._lock:
            self._check_open()
            self._docs.drain()
            changed = 0
            try:
                captured: list[tuple[str, bytes]] = []
                for (doc, kind), (_, update) in zip(kinds, updates, strict=True):
                    self._docs.view(doc, kind)  # so its changes are tracked
                    self._docs.apply(doc, update)
                    new = self._docs.drain()
                    changed += bool(new)
                    captured += new
                if not captured and not self._docs.held_changes():
                    return 0
                for doc in dict.fromkeys(doc for doc, _ in updates):
                    self._observe_remote_clock(doc)
                with self._store.write() as conn:
                    for name, data in captured:
                        self._store.log_update(name, data, "remote")
                    self._docs.persist_held()
                    self._index_changes(conn, captured)
                    self._store.set_meta("hlc", self._hlc.last.encode())
                if not captured:
                    return 0
            except BaseException:
                self._reload()
                raise
            self._after_commit(captured, local=False)
            return changed

    def _index_changes(self, conn: Any, captured: list[tuple[str, bytes]]) -> None:
        """Update index rows and the set of touched (location, SKU) keys."""
        for doc in dict.fromkeys(name for name, _ in captured):
            data_type = data_type_of(doc)
            if data_type == "stock":
                location = doc.partition("/")[2]
                counter = self._docs.view(doc, PNCounter)
                self._touched.update((location, sku) for sku in counter.drain_changed())
            elif data_type == "sales":
                ledger = self._docs.view(doc, Ledger)
                for key in ledger.drain_added():
                    self._touched.update(self._index_ledger_key(conn, doc, ledger, key))
            elif data_type == "catalog":
                for sku in self._docs.view(CATALOG, LWWMap).drain_changed():
                    self._changed_products.add(sku)
                    self._touched.update((loc, sku) for loc in self._locations_of_sku(sku))
            elif data_type in ("locations", "conflicts"):
                changed = self._docs.view(doc, LWWMap).drain_changed()
                if data_type == "conflicts":
                    self._changed_conflicts.update(changed)

    def _index_ledger_key(
        self, conn: Any, doc: str, ledger: Ledger, key: str
    ) -> set[tuple[str, str]]:
        sale_id, _, tag = key.partition("\x1f")
        record = ledger.get(sale_id)
        if record is None:
            return set()
        sale = Sale.from_record(sale_id, record, location=location_of(doc) or "")
        if not tag:
            conn.execute(
                "INSERT OR IGNORE INTO sales (id, doc, location, replica, created_at, "
                "total_cents) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    sale_id,
                    doc,
                    sale.location,
                    sale.replica_id,
                    sale.created_at_ms / 1000,
                    sale.total_cents,
                ),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO sale_lines (sale_id, line, location, sku, quantity, "
                "unit_price_cents, at_ms, replica) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        sale_id,
                        n,
                        sale.location,
                        ln.sku,
                        ln.quantity,
                        ln.unit_price_cents,
                        sale.created_at_ms,
                        sale.replica_id,
                    )
                    for n, ln in enumerate(sale.lines)
                ],
            )
        elif tag == "void":
            conn.execute("UPDATE sale_lines SET voided = 1 WHERE sale_id = ?", (sale_id,))
        elif tag.startswith("remap:"):
            note = ledger.get(key) or {}
            conn.execute(
                "UPDATE sale_lines SET remapped_to = ? WHERE sale_id = ? AND sku = ?",
                (str(note.get("to")), sale_id, tag[len("remap:") :]),
            )
            return {(sale.location, tag[len("remap:") :]), (sale.location, str(note.get("to")))}
        return {(sale.location, ln.sku) for ln in sale.lines}

    def _locations_of_sku(self, sku: str) -> set[str]:
        rows = self._store.conn.execute(
            "SELECT DISTINCT location FROM sale_lines WHERE sku = ?", (sku,)
        ).fetchall()
        found = {str(r[0]) for r in rows}
        for name in self._docs.names():
            if name.startswith("stock/") and sku in dict(self._docs.view(name, PNCounter).items()):
                found.add(name.partition("/")[2])
        return found

    def drain_touched(self) -> set[tuple[str, str]]:
        """(location, SKU) keys changed by writes or merges since the last drain."""
        with self._lock:
            touched, self._touched = self._touched, set()
            return touched

    def drain_changed_products(self) -> set[str]:
        """SKUs whose catalog record changed since the last drain."""
        with self._lock:
            changed, self._changed_products = self._changed_products, set()
            return changed

    def _observe_remote_clock(self, doc: str) -> None:
        if data_type_of(doc) not in ("catalog", "locations", "conflicts"):
            return
        view = self._docs.view(doc, LWWMap)
        newest, view.newest = view.newest, None
        if newest is None:
            return
        try:
            self._hlc.observe(newest)
        except ClockError as exc:
            self._last_error = str(exc)
            log.warning("%s", exc)

    def _after_commit(self, captured: list[tuple[str, bytes]], *, local: bool = True) -> None:
        if self._changed_conflicts:
            changed, self._changed_conflicts = self._changed_conflicts, set()
            flag_queue_entries(self, changed)
        for doc, _ in captured:
            count = self._log_counts.get(doc)
            if count is None:
                count = self._store.updates_since_snapshot(doc)
            else:
                count += 1
            self._log_counts[doc] = count
            if count >= COMPACT_EVERY:
                self.compact(doc)
        if local:
            for listener in list(self._update_listeners):
                listener(captured)
        self._notify_status()

    def compact(self, doc: str | None = None) -> None:
        """Fold update logs into snapshots (one doc, or all loaded docs)."""
        with self._lock:
            self._check_open()
            names = [doc] if doc is not None else self._docs.loaded()
            for name in names:
                snapshot = self._docs.diff(name)
                with self._store.write():
                    self._store.compact_doc(name, snapshot)
                self._log_counts[name] = 0

    def _reload(self) -> None:
        """Forget in-memory state; it is rebuilt from disk on next use."""
        self._docs.unload()
        self._log_counts.clear()

    # -- what sync needs -------------------------------------------------------------

    def doc_names(self) -> list[str]:
        with self._lock:
            self._check_open()
            return self._docs.names()

    def state_vector(self, doc: str) -> bytes:
        with self._lock:
            self._check_open()
            return self._docs.state_vector(doc)

    def diff(self, doc: str, state_vector: bytes | None = None) -> bytes:
        """What a peer at ``state_vector`` lacks of ``doc``."""
        with self._lock:
            self._check_open()
            return self._docs.diff(doc, state_vector)

    def on_local_update(self, listener: UpdateListener) -> Callable[[], None]:
        """Call ``listener(updates)`` after each committed local write."""
        self._update_listeners.append(listener)
        return lambda: self._update_listeners.remove(listener)

    # -- status ------------------------------------------------------------------------

    @property
    def status(self) -> ReplicaStatus:
        with self._lock:
            self._check_open()
            last = self._store.conn.execute(
                "SELECT MAX(ended_at) FROM sync_log WHERE outcome = 'ok'"
            ).fetchone()[0]
            return ReplicaStatus(
                state=self._connection_state,
                pending=self.queue.pending_count(),
                last_sync_at=None if last is None else float(last),
                open_conflicts=self._open_conflict_count(),
                last_error=self._last_error,
            )

    def on_status_change(self, callback: Callable[[ReplicaStatus], None]) -> Callable[[], None]:
        """Call ``callback(status)`` when the connection state or queue changes."""
        self._status_listeners.append(callback)
        return lambda: self._status_listeners.remove(callback)

    def _set_connection_state(self, state: str, error: str | None = None) -> None:
        with self._lock:
            changed = state != self._connection_state or error is not None
            self._connection_state = state
            if error is not None:
                self._last_error = error
        if changed:
            self._notify_status()

    def _notify_status(self) -> None:
        if not self._status_listeners or self._closed:
            return
        status = self.status
        for callback in list(self._status_listeners):
            try:
                callback(status)
            except Exception:  # a broken indicator must not break a sale
                log.exception("status callback failed")

    def _open_conflict_count(self) -> int:
        return len(
            [
                c
                for c in self.conflicts.list(status="open", limit=10**9)
                if c.location in (self.location, "-") or self.replica_id in c.replicas
            ]
        )

    # -- sync (implemented in tiendasync.store.client) ------------------------------------------

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

        return sync_once(self, url, token=token, full=full, timeout=timeout)

    def start_sync(self, url: str | None = None, *, token: str | None = None) -> None:
        """Sync continuously in a background thread (reconnects with backoff)."""
        from tiendasync.store.client import BackgroundSync

        with self._lock:
            self._check_open()
            if self._sync is not None:
                raise InvalidArgument("background sync is already running; call stop_sync first")
            self._sync = BackgroundSync(self, url, token=token)
        self._sync.start()

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

    def _resolve_conflict(self, conflict_id: str, action: str, **params: Any) -> Any:
        return self.conflicts.resolve(conflict_id, action, **params)
