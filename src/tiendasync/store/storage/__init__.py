"""The replica's SQLite file: every SQL statement of the store layer lives here.

:class:`ReplicaStore` owns the connection, transactions, settings and the
documents' snapshots and logs; its ``outbox``, ``sales`` and ``sync_log``
attributes are the queue, the sales index and the sync log tables.
:mod:`~tiendasync.store.storage.schema` holds the schema and its migrations.
"""

from tiendasync.store.storage.database import ReplicaStore
from tiendasync.store.storage.schema import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "ReplicaStore"]
