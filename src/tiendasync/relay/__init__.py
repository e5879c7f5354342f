"""The relay: authenticates replicas, validates, stores and fans out CRDT updates.

Run it with ``tiendasync relay --db relay.db``; embed it with::

    store = SqliteRelayStore("relay.db")
    server = RelayServer(store, host="127.0.0.1", port=8765)
    await server.start()
"""

from tiendasync.relay.auth import authenticate, issue_token, new_token
from tiendasync.relay.broker import Broker, InProcessBroker
from tiendasync.relay.docs import DocCache
from tiendasync.relay.server import Grants, RelayServer
from tiendasync.relay.storage import RelayStore, SessionRecord, SqliteRelayStore, TokenRecord

__all__ = [
    "Broker",
    "DocCache",
    "Grants",
    "InProcessBroker",
    "RelayServer",
    "RelayStore",
    "SessionRecord",
    "SqliteRelayStore",
    "TokenRecord",
    "authenticate",
    "issue_token",
    "new_token",
]
