"""The y-protocols wire format (``y-websocket``'s sync and awareness messages), sans I/O.

A y-protocols message is a lib0 varuint *message type* (:class:`MessageType`)
followed by its body.  A sync message's body is a *sync type*
(:class:`SyncType`: step 1 carries a state vector, step 2 and update carry a
Yjs update) and the payload as a lib0 ``varUint8Array`` (varuint length, then
the bytes), which must end the message.

An awareness message (:data:`MessageType.AWARENESS`) carries one
``varUint8Array``: an awareness update, a varuint count of entries, each a
varuint client id, a varuint clock and a ``varString`` holding the client's
state as JSON (``"null"``: the client left).  :func:`decode_awareness`
checks all of it, JSON included, because every receiving y-protocols client
runs ``JSON.parse`` on the state and would throw on a bad one.

Close codes for y-websocket clients: y-websocket (3.x) reconnects after any
close *except* one in 4400-4499, which it takes as permanent (it stops and
emits ``closed``).  :func:`follower_close_code` turns the relay's own close
codes into that convention: refusals that reconnecting cannot fix become
44xx (:class:`FollowerClose`), transient ones (rate limits, a relay
restart, an internal error) keep a code y-websocket retries.

Only the framing lives here: what a follower may read or write, and which
document it follows, is the relay's business (``relay.followers``).  The
encoders produce the same bytes as pycrdt's ``create_sync_message``,
``create_update_message`` and ``handle_sync_message``.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from tiendasync.errors import RemoteProtocolError
from tiendasync.protocol.codes import CloseCode
from tiendasync.protocol.statevector import read_varuint

__all__ = [
    "KEEPALIVE",
    "MAX_AWARENESS_BYTES",
    "MAX_AWARENESS_ENTRIES",
    "REFUSALS",
    "AwarenessEntry",
    "FollowerClose",
    "MessageType",
    "SyncMessage",
    "SyncType",
    "decode_awareness",
    "decode_sync",
    "encode_awareness",
    "encode_sync_step1",
    "encode_sync_step2",
    "encode_update",
    "follower_close_code",
]


class MessageType(enum.IntEnum):
    """The first varuint of every y-protocols message."""

    SYNC = 0
    AWARENESS = 1
    #: y-protocols' auth message (``permission denied``); the relay never sends it:
    #: y-websocket only logs it and keeps retrying, a 44xx close stops it.
    AUTH = 2
    #: "send me every awareness state you know" (answered with an awareness message)
    QUERY_AWARENESS = 3


class SyncType(enum.IntEnum):
    """The second varuint of a sync message."""

    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


@dataclass(frozen=True)
class SyncMessage:
    """A decoded sync message.

    ``sync_type`` is kept as the raw number: an unknown one is the receiver's
    error to report (with the number in the reason), not a framing error.
    """

    sync_type: int
    payload: bytes

    @property
    def carries_update(self) -> bool:
        """Step 2 and update messages carry a Yjs update (step 1 a state vector)."""
        return self.sync_type in (SyncType.STEP2, SyncType.UPDATE)


def _varuint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def _sync(sync_type: SyncType, payload: bytes) -> bytes:
    return bytes([MessageType.SYNC, sync_type]) + _varuint(len(payload)) + payload


def encode_sync_step1(state_vector: bytes) -> bytes:
    """``SyncStep1``: "here is what I have" (a Yjs state vector)."""
    return _sync(SyncType.STEP1, state_vector)


def encode_sync_step2(update: bytes) -> bytes:
    """``SyncStep2``: the answer to a step 1 (what its sender lacks)."""
    return _sync(SyncType.STEP2, update)


def encode_update(update: bytes) -> bytes:
    """``Update``: an incremental Yjs update."""
    return _sync(SyncType.UPDATE, update)


def decode_sync(message: bytes) -> SyncMessage | None:
    """The sync message in ``message``, or None if it is not one (awareness, unknown types).

    Raises :class:`~tiendasync.errors.RemoteProtocolError` (code
    ``CloseCode.PROTOCOL``) if a sync message is truncated or its payload
    length does not match the message.
    """
    if message[:1] != bytes([MessageType.SYNC]):
        return None
    if len(message) < 2:
        raise RemoteProtocolError("truncated sync message", CloseCode.PROTOCOL)
    try:
        length, pos = read_varuint(message, 2, "sync message")
    except ValueError as exc:
        raise RemoteProtocolError(str(exc), CloseCode.PROTOCOL) from exc
    if pos + length != len(message):
        raise RemoteProtocolError(
            "sync message length does not match its payload", CloseCode.PROTOCOL
        )
    return SyncMessage(message[1], message[pos:])


# -- awareness ----------------------------------------------------------------------------

#: The largest awareness message the relay relays (a presence state is a few hundred bytes).
MAX_AWARENESS_BYTES = 8 * 1024
#: Entries in one awareness message (a provider sends its own, one entry).
MAX_AWARENESS_ENTRIES = 16
#: Client ids and clocks must fit a JavaScript number exactly.
_MAX_SAFE = 2**53 - 1


@dataclass(frozen=True)
class AwarenessEntry:
    """One client's awareness state: ``state`` is its JSON text (``"null"``: it left)."""

    client: int
    clock: int
    state: str

    @property
    def removed(self) -> bool:
        return self.state == "null"


def _reject_constant(name: str) -> object:
    raise ValueError(f"non-standard JSON constant {name}")


def decode_awareness(message: bytes) -> list[AwarenessEntry]:
    """The entries of an awareness message (``[1, varUint8Array(update)]``).

    Raises :class:`~tiendasync.errors.RemoteProtocolError` (``CloseCode.PROTOCOL``)
    if the message is not one, is longer than :data:`MAX_AWARENESS_BYTES`, has
    more than :data:`MAX_AWARENESS_ENTRIES` entries, a client id or clock
    beyond 2**53 - 1, a state that is not valid UTF-8 JSON, or trailing bytes.
    """

    def bad(reason: str) -> RemoteProtocolError:
        return RemoteProtocolError(f"bad awareness message: {reason}", CloseCode.PROTOCOL)

    if message[:1] != bytes([MessageType.AWARENESS]):
        raise bad("not an awareness message")
    if len(message) > MAX_AWARENESS_BYTES:
        raise bad(f"{len(message)} bytes, over the limit of {MAX_AWARENESS_BYTES}")
    try:
        length, pos = read_varuint(message, 1, "awareness message")
        if pos + length != len(message):
            raise bad("length does not match its payload")
        count, pos = read_varuint(message, pos, "awareness update")
        if count > MAX_AWARENESS_ENTRIES:
            raise bad(f"{count} entries, over the limit of {MAX_AWARENESS_ENTRIES}")
        entries = []
        for _ in range(count):
            client, pos = read_varuint(message, pos, "awareness client id")
            clock, pos = read_varuint(message, pos, "awareness clock")
            size, pos = read_varuint(message, pos, "awareness state")
            if client > _MAX_SAFE or clock > _MAX_SAFE:
                raise bad("client id or clock beyond 2**53 - 1")
            if pos + size > len(message):
                raise bad("truncated state")
            text = message[pos : pos + size].decode("utf-8")
            pos += size
            json.loads(text, parse_constant=_reject_constant)
            entries.append(AwarenessEntry(client, clock, text))
    except RemoteProtocolError:
        raise
    except ValueError as exc:  # varuints, UTF-8, JSON
        raise bad(str(exc)[:200]) from exc
    if pos != len(message):
        raise bad("bytes after the last entry")
    return entries


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    """An awareness message carrying ``entries`` (none: a no-op every client accepts)."""
    body = bytearray(_varuint(len(entries)))
    for e in entries:
        state = e.state.encode("utf-8")
        body += _varuint(e.client) + _varuint(e.clock) + _varuint(len(state)) + state
    return bytes([MessageType.AWARENESS]) + _varuint(len(body)) + bytes(body)


#: An awareness message with no entries: a keepalive.  y-websocket closes a
#: socket that received nothing for 30 s; receiving this changes no state.
KEEPALIVE = encode_awareness([])


# -- close codes for y-websocket ----------------------------------------------------------


class FollowerClose(enum.IntEnum):
    """Close codes a y-protocols follower sees (4400-4499: y-websocket stops retrying).

    The number is 4000 plus the HTTP status that says the same thing.
    """

    #: a malformed or unsupported message (text frame, bad update, bad awareness)
    BAD_MESSAGE = 4400
    #: no token, or a bad or revoked one
    UNAUTHORIZED = 4401
    #: the token may not read this document, or may not write it
    FORBIDDEN = 4403
    #: not a document name (or not a tenant/doc path)
    NOT_FOUND = 4404
    #: the relay's protocol version is not the client's
    VERSION = 4410
    #: the writer's timestamps are ahead of the relay's clock
    CLOCK_AHEAD = 4412
    #: an update over the relay's size limit
    TOO_BIG = 4413
    #: one connection too many for this token (see ``RateLimits.max_connections_per_token``)
    TOO_MANY = 4429


#: The codes that refuse a follower (what the sync log records as ``rejected``).
REFUSALS = frozenset(
    {
        FollowerClose.UNAUTHORIZED,
        FollowerClose.FORBIDDEN,
        FollowerClose.NOT_FOUND,
        FollowerClose.TOO_MANY,
    }
)

_PERMANENT: dict[int, FollowerClose] = {
    CloseCode.PROTOCOL: FollowerClose.BAD_MESSAGE,
    CloseCode.UNSUPPORTED_DATA: FollowerClose.BAD_MESSAGE,
    CloseCode.TOO_BIG: FollowerClose.TOO_BIG,
}


def follower_close_code(code: int) -> int:
    """The close code to send a follower for the relay's ``code``.

    Refusals that a reconnect cannot fix become :class:`FollowerClose`
    (4400-4499, permanent for y-websocket): 1002/1003 -> 4400, 1009 -> 4413,
    40xx -> 44xx.  ``CloseCode.RATE_LIMIT`` (4029, "slow down"), 1000 and
    1011 are left as they are: y-websocket retries them with its back-off.
    Codes already in 4400-4499 pass unchanged.
    """
    if code in _PERMANENT:
        return int(_PERMANENT[code])
    if 4000 <= code < 4100 and code != CloseCode.RATE_LIMIT:
        return code + 400
    return code
