"""The sync protocol, sans I/O.

Two pure state machines, :class:`ReplicaConnection` and
:class:`RelayConnection`, turn bytes received into events and calls into
bytes to send.  They never touch sockets, threads or clocks, which is what
lets the tests drive them through simulated networks.  See docs/protocol.md.
"""

from tiendasync.protocol.events import (
    Ack,
    ConnectionClosed,
    Event,
    Hello,
    ProtocolFailure,
    Synced,
    SyncRequested,
    UpdateReceived,
    Welcome,
)
from tiendasync.protocol.frames import (
    CLOSE_AUTH,
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_RATE_LIMIT,
    CLOSE_TOO_BIG,
    CLOSE_VERSION,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    FrameType,
)
from tiendasync.protocol.relay_side import RelayConnection
from tiendasync.protocol.replica_side import ReplicaConnection

__all__ = [
    "CLOSE_AUTH",
    "CLOSE_FORBIDDEN",
    "CLOSE_INTERNAL",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL",
    "CLOSE_RATE_LIMIT",
    "CLOSE_TOO_BIG",
    "CLOSE_VERSION",
    "MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "Ack",
    "ConnectionClosed",
    "Event",
    "FrameType",
    "Hello",
    "ProtocolFailure",
    "RelayConnection",
    "ReplicaConnection",
    "SyncRequested",
    "Synced",
    "UpdateReceived",
    "Welcome",
]
