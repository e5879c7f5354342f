"""Wire frames: msgpack arrays ``[type, ...fields]``, concatenated in a byte stream.

Over websockets each message carries one or more whole frames, but the
decoder does not rely on it: it accepts any chunking of the stream.  Hard
limits on frame size, buffered bytes, container sizes and nesting depth are
enforced by msgpack's ``Unpacker``; every field is type-checked here, so the
state machines only ever see well-formed frames.

=========  ====  =====================================================  =========
frame      code  fields                                                 direction
=========  ====  =====================================================  =========
HELLO      1     version, tenant, replica, token, client_id,            R -> relay
                 {doc: state_vector}, {"full": bool, "past": [ids]}
WELCOME    2     version, session_id, {doc: state_vector}, config|nil   relay -> R
UPDATE     3     doc, update                                            both
ACK        4     doc, client_id, clock                                  relay -> R
SYNCED     5     (none)                                                 relay -> R
ERROR      6     close_code, reason                                     both
SYNC_NOW   7     full                                                   relay -> R
BYE        8     reason                                                 both
=========  ====  =====================================================  =========

Document names are sent in full once per connection and direction, as
``[alias, name]``; after that the sender refers to the document by its alias
alone (a small integer).  An alias the receiver has not been told is a
protocol error, so even a lost message can never make an update land in
the wrong document.
"""

from __future__ import annotations

import enum
from typing import Any

import msgpack

from tiendasync.errors import RemoteProtocolError

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
    "FrameDecoder",
    "FrameType",
    "encode",
]

PROTOCOL_VERSION = 1

#: Largest single frame accepted (an update of a big catch-up diff fits).
MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_DOCS_PER_HELLO = 10_000
MAX_NAME = 300
MAX_TOKEN = 512

# websocket close codes (RFC 6455 + application range)
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL = 1002
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_AUTH = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_RATE_LIMIT = 4029
CLOSE_VERSION = 4010


class FrameType(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    UPDATE = 3
    ACK = 4
    SYNCED = 5
    ERROR = 6
    SYNC_NOW = 7
    BYE = 8


def encode(frame_type: FrameType, *fields: Any) -> bytes:
    """Pack one frame."""
    packed: bytes = msgpack.packb([int(frame_type), *fields], use_bin_type=True)
    return packed


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)``, then iterate ``frames()``.

    Raises :class:`RemoteProtocolError` (with a close code) on anything that
    is not a well-formed frame; after that the decoder must be discarded.
    """

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._unpacker = msgpack.Unpacker(
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_buffer_size=max_frame_bytes + 1024,
            max_bin_len=max_frame_bytes,
            max_str_len=64 * 1024,
            max_array_len=MAX_DOCS_PER_HELLO,
            max_map_len=MAX_DOCS_PER_HELLO,
            max_ext_len=0,
        )

    def feed(self, data: bytes) -> None:
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull as exc:
            raise RemoteProtocolError("frame too large", CLOSE_TOO_BIG) from exc

    def frames(self) -> list[tuple[FrameType, list[Any]]]:
        """Every complete frame buffered so far, validated."""
        out: list[tuple[FrameType, list[Any]]] = []
        while True:
            try:
                obj = next(self._unpacker)
            except StopIteration:
                return out
            except (
                ValueError,
                msgpack.ExtraData,
                msgpack.FormatError,
                msgpack.StackError,
                TypeError,
                RecursionError,
            ) as exc:
                raise RemoteProtocolError(
                    f"malformed frame: {type(exc).__name__} {exc}".strip(), CLOSE_PROTOCOL
                ) from exc
            out.append(validate(obj))


def _fail(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(reason, CLOSE_PROTOCOL)


def _str(value: Any, what: str, limit: int = MAX_NAME) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise _fail(f"{what} must be a string of at most {limit} characters")
    return value


def _uint(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise _fail(f"{what} must be a non-negative integer below 2**53")
    return value


def _bin(value: Any, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise _fail(f"{what} must be binary")
    return value


def _alias(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_DOCS_PER_HELLO:
        raise _fail("document alias must be an integer below 10000")
    return value


def _doc(value: Any) -> str | int | tuple[int, str]:
    """A document name, ``[alias, name]`` (naming an alias), or an alias named before."""
    if isinstance(value, list):
        if len(value) != 2:
            raise _fail("a document alias declaration is [alias, name]")
        return _alias(value[0]), _str(value[1], "document name")
    if isinstance(value, int) and not isinstance(value, bool):
        return _alias(value)
    return _str(value, "document name")


def _svs(value: Any) -> dict[str, bytes]:
    if not isinstance(value, dict):
        raise _fail("state vectors must be a map")
    return {_str(k, "document name"): _bin(v, "state vector") for k, v in value.items()}


_ARITY = {
    FrameType.HELLO: 8,
    FrameType.WELCOME: 5,
    FrameType.UPDATE: 3,
    FrameType.ACK: 4,
    FrameType.SYNCED: 1,
    FrameType.ERROR: 3,
    FrameType.SYNC_NOW: 2,
    FrameType.BYE: 2,
}


def validate(obj: Any) -> tuple[FrameType, list[Any]]:
    """Check one decoded msgpack object; return its type and typed fields."""
    if not isinstance(obj, list) or not obj:
        raise _fail("a frame must be a non-empty array")
    code = obj[0]
    if isinstance(code, bool) or not isinstance(code, int):
        raise _fail("a frame must start with an integer frame type")
    try:
        frame_type = FrameType(code)
    except ValueError as exc:
        raise _fail(f"unknown frame type {code}") from exc
    if len(obj) != _ARITY[frame_type]:
        raise _fail(f"{frame_type.name} frame must have {_ARITY[frame_type] - 1} fields")
    f = obj[1:]
    if frame_type is FrameType.HELLO:
        flags = f[6]
        if not isinstance(flags, dict):
            raise _fail("HELLO flags must be a map")
        past = flags.get("past", [])
        if not isinstance(past, list):
            raise _fail("HELLO past client ids must be an array")
        return frame_type, [
            _uint(f[0], "version"),
            _str(f[1], "tenant"),
            _str(f[2], "replica id"),
            _str(f[3], "token", MAX_TOKEN),
            _uint(f[4], "client id"),
            _svs(f[5]),
            {
                "full": bool(flags.get("full", False)),
                "past": [_uint(c, "past client id") for c in past],
            },
        ]
    if frame_type is FrameType.WELCOME:
        if f[3] is not None and not isinstance(f[3], dict):
            raise _fail("WELCOME config must be a map or nil")
        return frame_type, [_uint(f[0], "version"), _str(f[1], "session id"), _svs(f[2]), f[3]]
    if frame_type is FrameType.UPDATE:
        return frame_type, [_doc(f[0]), _bin(f[1], "update")]
    if frame_type is FrameType.ACK:
        return frame_type, [_doc(f[0]), _uint(f[1], "client id"), _uint(f[2], "clock")]
    if frame_type is FrameType.ERROR:
        return frame_type, [_uint(f[0], "close code"), _str(f[1], "reason", 1024)]
    if frame_type is FrameType.SYNC_NOW:
        if not isinstance(f[0], bool):
            raise _fail("SYNC_NOW full must be a boolean")
        return frame_type, [f[0]]
    if frame_type is FrameType.BYE:
        return frame_type, [_str(f[0], "reason", 1024)]
    return frame_type, []
