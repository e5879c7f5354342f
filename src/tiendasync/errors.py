"""The exception hierarchy of tiendasync.

Every error tiendasync raises derives from :class:`TiendaSyncError`, so a POS
app can catch one class.  Below it, five families say **what the caller can
do**, and each maps once to an HTTP status (``http_status``) and a CLI exit
code (``exit_code``):

==========================  ==========================================  ====  ====
family                      what the caller does                        HTTP  exit
==========================  ==========================================  ====  ====
:class:`UsageError`         fix the call (argument, id, config, state)  400   2
:class:`RetryLater`         try again later; nothing was lost           503   1
:class:`Unauthorized`       re-authenticate (new or right token)        401   3
:class:`PeerError`          the other side is broken; report it         502   1
:class:`InternalError`      a bug in tiendasync; report it              500   70
==========================  ==========================================  ====  ====

Some classes refine the status (``NotFound`` is 404, ``ConflictClosed`` 409).
:class:`SyncError` is a *topic*, not a family: every failure of a sync with
the relay is one, whatever the family, so ``except SyncError`` still catches
them all.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ClockAhead",
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
    "RemoteProtocolError",
    "ReplicaClosed",
    "RetryLater",
    "StorageError",
    "StoragePermissionError",
    "SyncBusy",
    "SyncError",
    "TiendaSyncError",
    "Unauthorized",
    "UnknownLocation",
    "UnreachableRelay",
    "UsageError",
    "exit_code_of",
    "http_status_of",
]


class TiendaSyncError(Exception):
    """Root of every error tiendasync raises."""

    #: The HTTP status an API answers with for this error.
    http_status: int = 500
    #: The exit code the command line ends with for this error.
    exit_code: int = 70


# -- the five families: what the caller can do ------------------------------------


class UsageError(TiendaSyncError):
    """Fix the call: an argument, an id, the configuration or the order of calls."""

    http_status = 400
    exit_code = 2


class RetryLater(TiendaSyncError):
    """A passing condition (network, a busy or full disk): retry later; nothing was lost."""

    http_status = 503
    exit_code = 1


class Unauthorized(TiendaSyncError):
    """Credentials were refused: get a valid token for this tenant and replica."""

    http_status = 401
    exit_code = 3


class PeerError(TiendaSyncError):
    """The other side (a relay, a replica, a stored file) sent or holds something broken."""

    http_status = 502
    exit_code = 1


class InternalError(TiendaSyncError):
    """A bug in tiendasync: please report it with the message."""

    http_status = 500
    exit_code = 70


# -- fix the call --------------------------------------------------------------------


class InvalidArgument(UsageError, ValueError):
    """An API call got an argument it cannot accept; nothing was changed."""


class UnknownLocation(InvalidArgument):
    """A location name that this replica does not know was given."""


class NotFound(UsageError, LookupError):
    """A record (sale, queue entry, conflict, token) does not exist."""

    http_status = 404


class ConflictNotFound(NotFound):
    """No conflict has the given id."""


class ConflictClosed(UsageError):
    """The conflict was already resolved or healed; nothing was changed."""

    http_status = 409


class ConfigError(UsageError):
    """Configuration is missing or inconsistent."""


class ReplicaClosed(UsageError):
    """The replica was used after :meth:`Replica.close`."""

    http_status = 409


# -- retry later -------------------------------------------------------------------


class StorageError(RetryLater):
    """The local database could not be read or written (busy, full, unwritable).

    Nothing half-written is kept: the write that raised did not happen.
    """


class StoragePermissionError(StorageError, PermissionError):
    """This process may not use the database file, its directory or the
    ``-wal``/``-shm`` files SQLite keeps beside it (or the directory is missing).

    The message names the user, the path and the fix; nothing was written.
    Retry once the permissions are fixed.
    """


# -- the peer is broken ---------------------------------------------------------------


class CorruptData(PeerError):
    """Stored data could not be read back (a damaged file or a garbage record)."""


class ClockError(PeerError):
    """A remote timestamp is too far in the future to be trusted."""


# -- sync with the relay (a topic across families) --------------------------------------


class SyncError(TiendaSyncError):
    """Synchronisation with the relay failed; local data is intact.

    Every sync failure is one; its family (:class:`RetryLater`,
    :class:`Unauthorized`, :class:`PeerError`...) says what to do.
    """

    #: A sync that failed for no more specific reason: retry later.
    http_status = RetryLater.http_status
    exit_code = RetryLater.exit_code


class UnreachableRelay(RetryLater, SyncError, ConnectionError):
    """The relay could not be reached (network down, wrong URL, relay stopped)."""


class SyncBusy(RetryLater, SyncError):
    """Another process is already syncing this store file; its status says how it goes."""


class AuthError(Unauthorized, SyncError):
    """The relay refused our credentials (bad, revoked or wrong-tenant token)."""


class ClockAhead(UsageError, SyncError):
    """The relay refused our writes: this machine's clock is ahead of the relay's.

    Fix the clock; the refused writes stay in the queue (``queue.process``
    retries one) and new writes sync again once they carry a sane time.
    """


class ProtocolError(PeerError, SyncError):
    """The sync protocol was violated.

    ``code`` is the websocket close code that goes with it and ``reason`` the
    short text sent to the peer.
    """

    def __init__(self, reason: str, code: int = 1002) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class LocalProtocolError(InternalError, ProtocolError):
    """We were asked to send something the protocol does not allow (a bug here)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed or unexpected."""


# -- the one mapping --------------------------------------------------------------------


def http_status_of(exc: BaseException) -> int:
    """The HTTP status for ``exc`` (500 for anything outside the tree)."""
    return exc.http_status if isinstance(exc, TiendaSyncError) else 500


def exit_code_of(exc: BaseException) -> int:
    """The CLI exit code for ``exc`` (70, a bug, for anything outside the tree)."""
    return exc.exit_code if isinstance(exc, TiendaSyncError) else 70
