"""The sync protocol, sans I/O.

Two pure state machines, :class:`ReplicaConnection` and
:class:`RelayConnection`, turn bytes received into events and calls into
bytes to send.  They never touch sockets, threads or clocks, which is what
lets the tests drive them through simulated networks.  Frames are typed
records (:mod:`~tiendasync.protocol.frames`), the conversation is two
transition tables (:mod:`~tiendasync.protocol.transitions`) and close codes
are one enum (:class:`CloseCode`).  See docs/protocol.md.
"""

from tiendasync.protocol.codes import (
    CLOSE_AUTH,
    CLOSE_CLOCK_AHEAD,
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_RATE_LIMIT,
    CLOSE_TOO_BIG,
    CLOSE_VERSION,
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    CloseCode,
    FrameType,
)
from tiendasync.protocol.events import (
    Ack,
    ConnectionClosed,
    Event,
    GenerationsAnnounced,
    Hello,
    NextGenerationUpdate,
    ProtocolFailure,
    Synced,
    SyncRequested,
    UpdateReceived,
    Welcome,
)
from tiendasync.protocol.frames import (
    AckFrame,
    ByeFrame,
    ErrorFrame,
    Frame,
    FrameDecoder,
    GenerationsFrame,
    HelloFrame,
    NextUpdateFrame,
    SyncedFrame,
    SyncNowFrame,
    UpdateFrame,
    WelcomeFrame,
    decode_frame,
    encode,
)
from tiendasync.protocol.relay_side import RelayConnection
from tiendasync.protocol.replica_side import ReplicaConnection
from tiendasync.protocol.transitions import RelayState, ReplicaState, Role

__all__ = [
    "CLOSE_AUTH",
    "CLOSE_CLOCK_AHEAD",
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
    "AckFrame",
    "ByeFrame",
    "CloseCode",
    "ConnectionClosed",
    "ErrorFrame",
    "Event",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "GenerationsAnnounced",
    "GenerationsFrame",
    "Hello",
    "HelloFrame",
    "NextGenerationUpdate",
    "NextUpdateFrame",
    "ProtocolFailure",
    "RelayConnection",
    "RelayState",
    "ReplicaConnection",
    "ReplicaState",
    "Role",
    "SyncNowFrame",
    "SyncRequested",
    "Synced",
    "SyncedFrame",
    "UpdateFrame",
    "UpdateReceived",
    "Welcome",
    "WelcomeFrame",
    "decode_frame",
    "encode",
]
