"""The exception hierarchy of tiendasync.

Every error tiendasync raises on purpose derives from :class:`TiendaSyncError`,
so a POS app can catch one class.  The families below it tell *whose* fault an
error is: the caller's arguments, this machine's storage, the remote peer, the
configuration, or a business invariant.
"""

from __future__ import annotations

__all__ = [
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
    "RemoteProtocolError",
    "ReplicaClosed",
    "StorageError",
    "SyncError",
    "TiendaSyncError",
    "UnknownLocation",
    "UnreachableRelay",
]


class TiendaSyncError(Exception):
    """Root of every error tiendasync raises on purpose."""


class InvalidArgument(TiendaSyncError, ValueError):
    """An API call got an argument it cannot accept; nothing was changed."""


class UnknownLocation(InvalidArgument):
    """A location name that this replica does not know was given."""


class NotFound(TiendaSyncError, LookupError):
    """A record (sale, queue entry, conflict, token) does not exist."""


class ConflictNotFound(NotFound):
    """No conflict has the given id."""


class ConflictClosed(TiendaSyncError):
    """The conflict was already resolved or healed; nothing was changed."""


class ClockError(TiendaSyncError):
    """A remote timestamp is too far in the future to be trusted."""


class StorageError(TiendaSyncError):
    """The local database could not be read or written."""


class ReplicaClosed(StorageError):
    """The replica was used after :meth:`Replica.close`."""


class ConfigError(TiendaSyncError):
    """Configuration is missing or inconsistent."""


class InvariantViolation(TiendaSyncError):
    """A business invariant does not hold (raised only where an API refuses)."""


class SyncError(TiendaSyncError):
    """Synchronisation with the relay failed; local data is intact."""


class UnreachableRelay(SyncError, ConnectionError):
    """The relay could not be reached (network down, wrong URL, relay stopped)."""


class AuthError(SyncError):
    """The relay refused our credentials (bad, revoked or wrong-tenant token)."""


class ProtocolError(SyncError):
    """The sync protocol was violated.

    ``code`` is the websocket close code that goes with it and ``reason`` the
    short text sent to the peer.
    """

    def __init__(self, reason: str, code: int = 1002) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class LocalProtocolError(ProtocolError):
    """We were asked to send something the protocol does not allow (a bug here)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed or unexpected."""
