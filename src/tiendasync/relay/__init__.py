"""The relay: authenticates replicas, validates, stores and fans out CRDT updates.

Run it with ``tiendasync relay --db relay.db``; embed it with::

    store = SqliteRelayStore("relay.db")
    server = RelayServer(store, host="127.0.0.1", port=8765)
    await server.start()
"""

from . import cli
from .auth import authenticate, issue_token, new_token
from .broker import Broker, InProcessBroker
from .docs import DocCache
from .server import Grants, RelayServer
from .store import RelayStore, SessionRecord, SqliteRelayStore, TokenRecord

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
    "cli",
    "issue_token",
    "new_token",
]
