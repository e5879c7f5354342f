"""tiendasync: offline-first replication for multi-store retail.

A point-of-sale app embeds a :class:`Replica`; it keeps selling with no
network, and exchanges CRDT updates with a central relay when it can.
"""

from .config import StoreConfig
from .errors import (
    AuthError,
    ClockError,
    ConfigError,
    ConflictClosed,
    ConflictNotFound,
    InvalidArgument,
    InvariantViolation,
    LocalProtocolError,
    NotFound,
    ProtocolError,
    RemoteProtocolError,
    ReplicaClosed,
    StorageError,
    SyncError,
    TiendaSyncError,
    UnknownLocation,
    UnreachableRelay,
)
from .hlc import HLC, Timestamp
from .inventory import StockMovement
from .queue import QueueEntry
from .replica import Replica, ReplicaStatus
from .sales import Sale, SaleLine
from .synclog import SyncLogEntry

__version__ = "0.1.0"

__all__ = [
    "HLC",
    "AuthError",
    "ClockError",
    "ConfigError",
    "ConflictClosed",
    "ConflictNotFound",
    "InvalidArgument",
    "InvariantViolation",
    "LocalProtocolError",
    "NotFound",
    "ProtocolError",
    "QueueEntry",
    "RemoteProtocolError",
    "Replica",
    "ReplicaClosed",
    "ReplicaStatus",
    "Sale",
    "SaleLine",
    "StockMovement",
    "StorageError",
    "StoreConfig",
    "SyncError",
    "SyncLogEntry",
    "TiendaSyncError",
    "Timestamp",
    "UnknownLocation",
    "UnreachableRelay",
    "__version__",
]
