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
GENS       9     {doc: generation}                                      relay -> R
NEXT       10    doc, generation, update                                relay -> R
=========  ====  =====================================================  =========

HELLO's flags may carry ``"gens": {doc: generation}``: the generation of every
counter and LWW document the replica holds, 0 included (docs/generations.md);
a document left out is one it does not hold, caught up with the relay's
current generation.  A replica that sends the key (even empty) understands
GENERATIONS and NEXT frames; the relay sends a GENERATIONS frame, after its
WELCOME, only to such a replica and only if a document it may read is past
generation 0.  Older relays ignore the key; an older replica never sends it,
so never receives either frame.  To a replica one generation behind on a
document, the relay sends that document's current generation as NEXT frames
(catch-up and live), never as UPDATE: the replica builds it beside the one
it holds and moves over once its writes to the old one are acknowledged.

Each frame type is a frozen dataclass (:class:`HelloFrame` ... :class:`ByeFrame`):
``frame.encode()`` packs it, :func:`decode_frame` checks one unpacked msgpack
object and returns the record, raising :class:`RemoteProtocolError` (close code
1002) naming the field that is wrong.  :func:`encode` and :func:`validate` are
the untyped forms of the same two steps, kept for callers that build or inspect
raw field lists; both produce the same bytes and fields as the records.

Document names are sent in full once per connection and direction, as
``[alias, name]``; after that the sender refers to the document by its alias
alone (a small integer).  An alias the receiver has not been told is a
protocol error, so even a lost message can never make an update land in
the wrong document.  A plain name (no alias) is also accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeAlias

import msgpack

from tiendasync.errors import RemoteProtocolError
from tiendasync.model.docnames import is_period
from tiendasync.protocol.codes import (
    CLOSE_AUTH,
    CLOSE_FORBIDDEN,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_RATE_LIMIT,
    CLOSE_TOO_BIG,
    CLOSE_VERSION,
    MAX_DOCS_PER_HELLO,
    MAX_FRAME_BYTES,
    MAX_HELLO_CONFIG_KEYS,
    MAX_NAME,
    MAX_REASON,
    MAX_TOKEN,
    PROTOCOL_VERSION,
    CloseCode,
    FrameType,
)

__all__ = [
    "CLOSE_AUTH",
    "CLOSE_FORBIDDEN",
    "CLOSE_INTERNAL",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL",
    "CLOSE_RATE_LIMIT",
    "CLOSE_TOO_BIG",
    "CLOSE_VERSION",
    "FRAME_CLASSES",
    "MAX_DOCS_PER_HELLO",
    "MAX_FRAME_BYTES",
    "PROTOCOL_VERSION",
    "AckFrame",
    "ByeFrame",
    "CloseCode",
    "DocRef",
    "ErrorFrame",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "GenerationsFrame",
    "HelloFrame",
    "NextUpdateFrame",
    "SyncNowFrame",
    "SyncedFrame",
    "UpdateFrame",
    "WelcomeFrame",
    "count_frames",
    "decode_frame",
    "encode",
    "fit_state_vectors",
    "sv_bytes",
    "validate",
]

#: How a frame names a document: a plain name, an alias named before, or
#: ``(alias, name)`` declaring an alias (sent as a two-element array).
DocRef: TypeAlias = str | int | tuple[int, str]


def encode(frame_type: FrameType, *fields: Any) -> bytes:
    """Pack one frame from raw fields (``Frame.encode()`` is the typed form)."""
    packed: bytes = msgpack.packb([int(frame_type), *fields], use_bin_type=True)
    return packed


# -- field checks ---------------------------------------------------------------------------


def _fail(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(reason, CloseCode.PROTOCOL)


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
        raise _fail(f"document alias must be an integer below {MAX_DOCS_PER_HELLO}")
    return value


def _doc(value: Any) -> DocRef:
    """A document name, ``[alias, name]`` (naming an alias), or an alias named before."""
    if isinstance(value, list):
        if len(value) != 2:
            raise _fail("a document alias declaration is [alias, name]")
        return _alias(value[0]), _str(value[1], "document name")
    if isinstance(value, int) and not isinstance(value, bool):
        return _alias(value)
    return _str(value, "document name")


def _generations(value: Any) -> dict[str, int]:
    if not isinstance(value, dict) or len(value) > MAX_DOCS_PER_HELLO:
        raise _fail(f"generations must be a map of at most {MAX_DOCS_PER_HELLO} documents")
    return {_str(k, "document name"): _uint(v, "generation") for k, v in value.items()}


def _svs(value: Any) -> dict[str, bytes]:
    if not isinstance(value, dict):
        raise _fail("state vectors must be a map")
    return {_str(k, "document name"): _bin(v, "state vector") for k, v in value.items()}


# -- typed frames ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    """Base of the typed frames.

    ``TYPE`` is the frame's code, ``ARITY`` the number of fields after it.
    ``fields()`` gives the wire fields in order; ``from_fields`` checks wire
    fields (already unpacked) and raises :class:`RemoteProtocolError` naming
    the first bad one.  ``Frame.from_fields(f).fields()`` equals what
    :func:`validate` returns for the same input.
    """

    TYPE: ClassVar[FrameType]
    ARITY: ClassVar[int]

    def fields(self) -> list[Any]:
        raise NotImplementedError

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        raise NotImplementedError

    def encode(self) -> bytes:
        """The frame's bytes on the wire."""
        return encode(self.TYPE, *self.fields())


@dataclass(frozen=True, slots=True)
class HelloFrame(Frame):
    """A replica introduces itself (first frame of a connection)."""

    TYPE: ClassVar[FrameType] = FrameType.HELLO
    ARITY: ClassVar[int] = 7

    version: int
    tenant: str
    replica_id: str
    token: str
    client_id: int
    state_vectors: dict[str, bytes]
    full: bool = False
    past_client_ids: tuple[int, ...] = ()
    #: the store config the replica runs with (so the console shows what it uses);
    #: None: not told (older replicas)
    config: dict[str, Any] | None = None
    #: the oldest sales period (``YYYY-MM``) the replica keeps: older sales documents
    #: left it (kept at the relay), so the relay sends nothing of them; None: all
    sales_from: str | None = None
    #: ``{doc: generation}`` of every document held (None: knows no generations)
    generations: dict[str, int] | None = None

    def fields(self) -> list[Any]:
        flags: dict[str, Any] = {"full": self.full, "past": list(self.past_client_ids)}
        if self.config is not None:
            flags["config"] = self.config
        if self.sales_from is not None:
            flags["sales_from"] = self.sales_from
        if self.generations is not None:
            flags["gens"] = self.generations
        return [
            self.version,
            self.tenant,
            self.replica_id,
            self.token,
            self.client_id,
            self.state_vectors,
            flags,
        ]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        flags = f[6]
        if not isinstance(flags, dict):
            raise _fail("HELLO flags must be a map")
        past = flags.get("past", [])
        if not isinstance(past, list):
            raise _fail("HELLO past client ids must be an array")
        config = flags.get("config")
        if config is not None and (
            not isinstance(config, dict)
            or len(config) > MAX_HELLO_CONFIG_KEYS
            or not all(isinstance(k, str) and len(k) <= MAX_NAME for k in config)
        ):
            raise _fail("HELLO config must be a small map of names")
        sales_from = flags.get("sales_from")
        if sales_from is not None and not is_period(sales_from):
            raise _fail("HELLO sales_from must be a period YYYY-MM")
        gens = flags.get("gens")
        return cls(
            _uint(f[0], "version"),
            _str(f[1], "tenant"),
            _str(f[2], "replica id"),
            _str(f[3], "token", MAX_TOKEN),
            _uint(f[4], "client id"),
            _svs(f[5]),
            # Lenient on purpose: any truthy "full" asks for a full sync.
            full=bool(flags.get("full", False)),
            past_client_ids=tuple(_uint(c, "past client id") for c in past),
            config=config,
            sales_from=sales_from,
            generations=None if gens is None else _generations(gens),
        )


@dataclass(frozen=True, slots=True)
class WelcomeFrame(Frame):
    """The relay accepts a HELLO and tells what it holds."""

    TYPE: ClassVar[FrameType] = FrameType.WELCOME
    ARITY: ClassVar[int] = 4

    version: int
    session_id: str
    state_vectors: dict[str, bytes]
    config: dict[str, Any] | None = None

    def fields(self) -> list[Any]:
        return [self.version, self.session_id, self.state_vectors, self.config]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        if f[3] is not None and not isinstance(f[3], dict):
            raise _fail("WELCOME config must be a map or nil")
        return cls(_uint(f[0], "version"), _str(f[1], "session id"), _svs(f[2]), f[3])


@dataclass(frozen=True, slots=True)
class UpdateFrame(Frame):
    """A CRDT update of one document."""

    TYPE: ClassVar[FrameType] = FrameType.UPDATE
    ARITY: ClassVar[int] = 2

    doc: DocRef
    data: bytes

    def fields(self) -> list[Any]:
        return [self.doc, self.data]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(_doc(f[0]), _bin(f[1], "update"))


@dataclass(frozen=True, slots=True)
class AckFrame(Frame):
    """The relay durably holds ``doc`` up to ``clock`` of ``client_id``."""

    TYPE: ClassVar[FrameType] = FrameType.ACK
    ARITY: ClassVar[int] = 3

    doc: DocRef
    client_id: int
    clock: int

    def fields(self) -> list[Any]:
        return [self.doc, self.client_id, self.clock]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(_doc(f[0]), _uint(f[1], "client id"), _uint(f[2], "clock"))


@dataclass(frozen=True, slots=True)
class SyncedFrame(Frame):
    """Every catch-up diff of the session has been sent."""

    TYPE: ClassVar[FrameType] = FrameType.SYNCED
    ARITY: ClassVar[int] = 0

    def fields(self) -> list[Any]:
        return []

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls()


@dataclass(frozen=True, slots=True)
class ErrorFrame(Frame):
    """The sender closes the connection because of ``code`` (a :class:`CloseCode` or other)."""

    TYPE: ClassVar[FrameType] = FrameType.ERROR
    ARITY: ClassVar[int] = 2

    code: int
    reason: str

    def fields(self) -> list[Any]:
        return [int(self.code), self.reason]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(_uint(f[0], "close code"), _str(f[1], "reason", MAX_REASON))


@dataclass(frozen=True, slots=True)
class SyncNowFrame(Frame):
    """The relay asks the replica to sync now (``full``: re-send everything)."""

    TYPE: ClassVar[FrameType] = FrameType.SYNC_NOW
    ARITY: ClassVar[int] = 1

    full: bool

    def fields(self) -> list[Any]:
        return [self.full]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        if not isinstance(f[0], bool):
            raise _fail("SYNC_NOW full must be a boolean")
        return cls(f[0])


@dataclass(frozen=True, slots=True)
class ByeFrame(Frame):
    """The sender closes the connection normally."""

    TYPE: ClassVar[FrameType] = FrameType.BYE
    ARITY: ClassVar[int] = 1

    reason: str

    def fields(self) -> list[Any]:
        return [self.reason]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(_str(f[0], "reason", MAX_REASON))


@dataclass(frozen=True, slots=True)
class GenerationsFrame(Frame):
    """The relay tells the generation of each document it holds past generation 0."""

    TYPE: ClassVar[FrameType] = FrameType.GENERATIONS
    ARITY: ClassVar[int] = 1

    generations: dict[str, int]

    def fields(self) -> list[Any]:
        return [self.generations]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(_generations(f[0]))


@dataclass(frozen=True, slots=True)
class NextUpdateFrame(Frame):
    """An update of ``generation`` of ``doc``, the generation after the replica's."""

    TYPE: ClassVar[FrameType] = FrameType.NEXT_UPDATE
    ARITY: ClassVar[int] = 3

    doc: DocRef
    generation: int
    data: bytes

    def fields(self) -> list[Any]:
        return [self.doc, self.generation, self.data]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Self:
        return cls(_doc(f[0]), _uint(f[1], "generation"), _bin(f[2], "update"))


#: The record class of each frame type.
FRAME_CLASSES: dict[FrameType, type[Frame]] = {
    cls.TYPE: cls
    for cls in (
        HelloFrame,
        WelcomeFrame,
        UpdateFrame,
        AckFrame,
        SyncedFrame,
        ErrorFrame,
        SyncNowFrame,
        ByeFrame,
        GenerationsFrame,
        NextUpdateFrame,
    )
}


def decode_frame(obj: Any) -> Frame:
    """Check one unpacked msgpack object; return it as a typed frame.

    Raises :class:`RemoteProtocolError` (1002) if it is not a well-formed frame.
    """
    if not isinstance(obj, list) or not obj:
        raise _fail("a frame must be a non-empty array")
    code = obj[0]
    if isinstance(code, bool) or not isinstance(code, int):
        raise _fail("a frame must start with an integer frame type")
    try:
        frame_type = FrameType(code)
    except ValueError as exc:
        raise _fail(f"unknown frame type {code}") from exc
    cls = FRAME_CLASSES[frame_type]
    if len(obj) != cls.ARITY + 1:
        raise _fail(f"{frame_type.name} frame must have {cls.ARITY} fields")
    return cls.from_fields(obj[1:])


def validate(obj: Any) -> tuple[FrameType, list[Any]]:
    """Check one unpacked msgpack object; return its type and typed fields."""
    frame = decode_frame(obj)
    return frame.TYPE, frame.fields()


# -- sizes ----------------------------------------------------------------------------------

#: Upper bound of the msgpack framing of one ``name: state_vector`` map entry.
_SV_ENTRY_OVERHEAD = 10


def sv_bytes(state_vectors: dict[str, bytes] | Any) -> int:
    """An upper bound of the bytes a ``{doc: state_vector}`` map takes in a frame."""
    return 5 + sum(
        len(name.encode("utf-8")) + len(sv) + _SV_ENTRY_OVERHEAD
        for name, sv in state_vectors.items()
    )


def fit_state_vectors(
    state_vectors: dict[str, bytes], max_bytes: int, max_docs: int = MAX_DOCS_PER_HELLO
) -> dict[str, bytes]:
    """The first entries of ``state_vectors`` (in its order) that fit ``max_docs``
    entries and ``max_bytes`` bytes (see :func:`sv_bytes`).

    What a HELLO or WELCOME carries when its peer's decoder could not take the
    whole map: a document left out is only one whose state the peer does not
    know, which costs a larger diff, never an error.
    """
    out: dict[str, bytes] = {}
    size = 5
    for name, sv in state_vectors.items():
        size += len(name.encode("utf-8")) + len(sv) + _SV_ENTRY_OVERHEAD
        if len(out) >= max_docs or size > max_bytes:
            break
        out[name] = sv
    return out


def count_frames(data: bytes) -> tuple[int, bool]:
    """How many whole msgpack objects ``data`` holds, and whether it ends after one.

    Cheap (nothing is built): what the relay charges per frame before it
    decodes a message.  Bytes that are not msgpack stop the count (the
    decoder reports them) and count as ending cleanly.
    """
    unpacker = msgpack.Unpacker(max_buffer_size=max(len(data), 1))
    unpacker.feed(data)
    count = whole = 0
    try:
        while True:
            unpacker.skip()
            count += 1
            whole = unpacker.tell()
    except msgpack.OutOfData:
        return count, whole == len(data)
    except (ValueError, msgpack.UnpackException):  # malformed: the decoder reports it
        return count + 1, True


# -- stream decoder -------------------------------------------------------------------------

# What msgpack raises for bytes that are not msgpack (or exceed a container limit).
_UNPACK_ERRORS = (
    ValueError,
    msgpack.ExtraData,
    msgpack.FormatError,
    msgpack.StackError,
    TypeError,
    RecursionError,
)


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)``, then ``records()`` (or ``frames()``).

    Raises :class:`RemoteProtocolError` (with a close code) on anything that
    is not a well-formed frame; after that the decoder must be discarded.
    """

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._max_buffer = max_frame_bytes + 1024
        self._fed = 0
        self._unpacker = msgpack.Unpacker(
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_buffer_size=self._max_buffer,
            max_bin_len=max_frame_bytes,
            max_str_len=64 * 1024,
            max_array_len=MAX_DOCS_PER_HELLO,
            max_map_len=MAX_DOCS_PER_HELLO,
            max_ext_len=0,
        )

    def feed(self, data: bytes) -> None:
        """Buffer ``data``; raises :class:`RemoteProtocolError` (1009) past the limit."""
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull as exc:
            raise RemoteProtocolError("frame too large", CloseCode.TOO_BIG) from exc
        self._fed += len(data)

    def room(self) -> int:
        """Bytes :meth:`feed` takes now: what the buffer holds beside the unread bytes.

        Feeding a long message in pieces of at most this (decoding in between)
        accepts any number of frames per message, each up to the frame limit.
        """
        unread = self._fed - int(self._unpacker.tell())
        return self._max_buffer - unread

    def records(self) -> list[Frame]:
        """Every complete frame buffered so far, as typed frames.

        All or nothing: if any buffered frame is malformed, this raises and
        returns none of the frames before it.
        """
        out: list[Frame] = []
        while True:
            try:
                obj = next(self._unpacker)
            except StopIteration:
                return out
            except _UNPACK_ERRORS as exc:
                raise RemoteProtocolError(
                    f"malformed frame: {type(exc).__name__} {exc}".strip(), CloseCode.PROTOCOL
                ) from exc
            out.append(decode_frame(obj))

    def frames(self) -> list[tuple[FrameType, list[Any]]]:
        """Every complete frame buffered so far, validated, as ``(type, fields)``."""
        return [(frame.TYPE, frame.fields()) for frame in self.records()]
