"""tiendasync: offline-first replication for multi-store retail.

A point-of-sale app embeds a :class:`Replica`; it keeps selling with no
network, and exchanges CRDT updates with a central relay when it can.
"""

from tiendasync.errors import (
    AuthError,
    ClockError,
    ConfigError,
    ConflictClosed,
    ConflictNotFound,
    CorruptData,
    InternalError,
    InvalidArgument,
    LocalProtocolError,
    NotFound,
    PeerError,
    ProtocolError,
    RemoteProtocolError,
    ReplicaClosed,
    RetryLater,
    StorageError,
    StoragePermissionError,
    SyncBusy,
    SyncError,
    TiendaSyncError,
    Unauthorized,
    UnknownLocation,
    UnreachableRelay,
    UsageError,
)
from tiendasync.model.config import StoreConfig
from tiendasync.model.hlc import HLC, Timestamp
from tiendasync.store.inventory import StockMovement
from tiendasync.store.queue import QueueEntry
from tiendasync.store.replica import Replica, ReplicaStatus
from tiendasync.store.sales import Sale, SaleLine
from tiendasync.store.synclog import SyncLogEntry

__version__ = "0.1.0"

__all__ = [
    "HLC",
    "AuthError",
    "ClockError",
    "ConfigError",
    "ConflictClosed",
    "ConflictNotFound",
    "CorruptData",
    "InternalError",
    "InvalidArgument",
    "LocalProtocolError",
    "NotFound",
    "PeerError",
    "ProtocolError",
    "QueueEntry",
    "RemoteProtocolError",
    "Replica",
    "ReplicaClosed",
    "ReplicaStatus",
    "RetryLater",
    "Sale",
    "SaleLine",
    "StockMovement",
    "StorageError",
    "StoragePermissionError",
    "StoreConfig",
    "SyncBusy",
    "SyncError",
    "SyncLogEntry",
    "TiendaSyncError",
    "Timestamp",
    "Unauthorized",
    "UnknownLocation",
    "UnreachableRelay",
    "UsageError",
    "__version__",
]
