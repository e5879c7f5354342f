"""Numbers both peers must agree on: protocol version, frame types, close codes, limits."""

from __future__ import annotations

import enum
from typing import Final

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
    "MAX_DOCS_PER_HELLO",
    "MAX_FRAME_BYTES",
    "MAX_HELLO_BYTES",
    "MAX_HELLO_CONFIG_KEYS",
    "MAX_NAME",
    "MAX_REASON",
    "MAX_TOKEN",
    "MAX_WELCOME_SV_BYTES",
    "PROTOCOL_VERSION",
    "CloseCode",
    "FrameType",
]

PROTOCOL_VERSION: Final = 1

#: Largest single frame accepted (an update of a big catch-up diff fits).
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
#: Documents per HELLO / WELCOME, elements of any array or map, aliases per connection.
MAX_DOCS_PER_HELLO: Final = 10_000
#: The largest HELLO a replica sends: past it, it leaves state vectors out (the relay
#: then sends those documents whole).  A relay accepts at least this much.
MAX_HELLO_BYTES: Final = 4 * 1024 * 1024
#: The most bytes of state vectors a WELCOME carries (the rest of the frame fits in
#: MAX_FRAME_BYTES): past it the relay leaves documents out.
MAX_WELCOME_SV_BYTES: Final = MAX_FRAME_BYTES - 1024 * 1024
#: Document names, tenant, replica id, session id.
MAX_NAME: Final = 300
MAX_TOKEN: Final = 512
#: Keys of the store config a HELLO may tell (the relay validates the values).
MAX_HELLO_CONFIG_KEYS: Final = 32
#: ERROR and BYE reasons (longer reasons are cut when sent).
MAX_REASON: Final = 1024


class FrameType(enum.IntEnum):
    """The first element of every frame (see :mod:`tiendasync.protocol.frames`)."""

    HELLO = 1
    WELCOME = 2
    UPDATE = 3
    ACK = 4
    SYNCED = 5
    ERROR = 6
    SYNC_NOW = 7
    BYE = 8
    #: sent only to a replica whose HELLO told its generations (docs/generations.md)
    GENERATIONS = 9
    #: an update of a document's next generation, for a replica still at the one
    #: before (docs/generations.md); sent only to a replica that told its generations
    NEXT_UPDATE = 10


class CloseCode(enum.IntEnum):
    """Websocket close codes: RFC 6455 range (1xxx) and the application range (4xxx).

    The same number travels in an ERROR frame and closes the websocket.  A code
    received from a peer is kept as a plain ``int``: peers may send codes not
    listed here.
    """

    NORMAL = 1000
    PROTOCOL = 1002
    #: The replica received a websocket text frame.
    UNSUPPORTED_DATA = 1003
    TOO_BIG = 1009
    INTERNAL = 1011
    AUTH = 4001
    FORBIDDEN = 4003
    #: The writer's timestamps are ahead of the relay's clock: fix the writer's clock.
    CLOCK_AHEAD = 4012
    VERSION = 4010
    RATE_LIMIT = 4029


# The names the package has always exported: aliases of the enum members.
CLOSE_NORMAL: Final = CloseCode.NORMAL
CLOSE_PROTOCOL: Final = CloseCode.PROTOCOL
CLOSE_TOO_BIG: Final = CloseCode.TOO_BIG
CLOSE_INTERNAL: Final = CloseCode.INTERNAL
CLOSE_AUTH: Final = CloseCode.AUTH
CLOSE_FORBIDDEN: Final = CloseCode.FORBIDDEN
CLOSE_CLOCK_AHEAD: Final = CloseCode.CLOCK_AHEAD
CLOSE_RATE_LIMIT: Final = CloseCode.RATE_LIMIT
CLOSE_VERSION: Final = CloseCode.VERSION
