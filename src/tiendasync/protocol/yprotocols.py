"""The y-protocols wire format (``y-websocket``'s sync and awareness messages), sans I/O.

A y-protocols message is a lib0 varuint *message type* (:class:`MessageType`)
followed by its body.  A sync message's body is a *sync type*
(:class:`SyncType`: step 1 carries a state vector, step 2 and update carry a
Yjs update) and the payload as a lib0 ``varUint8Array`` (varuint length, then
the bytes), which must end the message.

Only the framing lives here: what a follower may read or write, and which
document it follows, is the relay's business (``relay.followers``).  The
encoders produce the same bytes as pycrdt's ``create_sync_message``,
``create_update_message`` and ``handle_sync_message``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tiendasync.errors import RemoteProtocolError
from tiendasync.protocol.codes import CloseCode
from tiendasync.protocol.statevector import read_varuint

__all__ = [
    "MessageType",
    "SyncMessage",
    "SyncType",
    "decode_sync",
    "encode_sync_step1",
    "encode_sync_step2",
    "encode_update",
]


class MessageType(enum.IntEnum):
    """The first varuint of every y-protocols message."""

    SYNC = 0
    AWARENESS = 1


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
