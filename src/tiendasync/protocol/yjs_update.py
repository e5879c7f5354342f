"""Validating decoder for the Yjs **v1** update format.

A relay that forwards untrusted CRDT updates must know *who* an update writes as
before it applies it. :func:`parse_update` walks the complete binary layout of a
v1 update (as produced by Yjs ``encodeStateAsUpdate``/``mergeUpdates`` and by
pycrdt's ``Doc.get_update()``, transaction ``.update`` and ``merge_updates``)
and reports, per struct group, the client id and clock range its structs occupy,
plus the delete set. Content is skipped, not materialised, but it is fully
validated, because a bad byte anywhere shifts every following field.

Layout (all integers are lib0 unsigned LEB128 "varuint" unless stated)::

    update      := numGroups group* deleteSet
    group       := numStructs client clock struct*
    struct      := info:u8 ( GC: len | Skip: len | Item )
    Item        := [origin:ID] [rightOrigin:ID]
                   [parentInfo (parentYKey:string | parent:ID) [parentSub:string]]
                   content
    ID          := client clock
    deleteSet   := numClients (client numRanges (clock len)*)*
    string      := varuint byteLength, UTF-8 bytes

``info & 0x1F`` is the struct/content ref (0 GC, 1 Deleted, 2 JSON, 3 Binary,
4 String, 5 Embed, 6 Format, 7 Type, 8 Any, 9 Doc, 10 Skip); bit 0x80 = has
origin, 0x40 = has right origin, 0x20 = has parentSub. Parent info (and
parentSub) is present only when neither origin bit is set.

The clock span of a struct is: the explicit length for GC, Skip and Deleted;
the number of UTF-16 code units for String; the element count for JSON and
Any; and 1 for Binary, Embed, Format, Type and Doc.

Strictness. Besides truncated input and unknown tags, the following are
rejected. No real encoder produces them, and Yjs and yrs (the Rust engine
inside pycrdt) read several of them *differently*, so that accepting them
would let what this module reports differ from what the engine applies:

* client ids above ``2**53 - 1`` (lib0's limit) and clocks, lengths and counts
  above ``2**32 - 1`` (yrs reads those as ``u32`` and silently wraps);
  a struct group or delete range whose end clock exceeds ``2**32 - 1``;
* varuints longer than 10 bytes;
* a client id appearing in two struct groups, or twice in the delete set
  (Yjs keeps only the last struct group, yrs concatenates them; for the delete
  set it is the other way round);
* a GC or Skip info byte with flag bits set (Yjs ignores the flags, yrs fails);
* content refs 11-31 (Yjs fails; yrs masks the ref to four bits, so 20 would
  be read as String);
* a parent-info value other than 0 or 1 (both engines read it as "parent ID");
* any bytes after the delete set (yrs ignores them);
* text that is not valid UTF-8 (yrs fails; Yjs substitutes U+FFFD);
* Embed/Format/JSON payloads that are not JSON (``"undefined"`` is allowed for
  JSON content, as in Yjs), including NaN/Infinity literals;
* nested ``any`` values or JSON deeper than ``max_depth``.

Engine dialects. Yjs and yrs 0.28 (the engine in pycrdt 0.14.13) disagree on
the framing of two rare constructs that pycrdt never produces, so
:func:`parse_update` takes the engine that will *apply* the update:

=====================  ==================================  ===================
construct              ``engine="yrs"`` (default)          ``engine="yjs"``
=====================  ==================================  ===================
JSON content (ref 2)   rejected: yrs reads *len + 1*       ``len`` JSON strings
                       strings, so it would frame the      (each may also be
                       rest of the update differently      ``"undefined"``)
XmlHook type ref (5)   no payload (yrs writes no name)     followed by the hook
                                                           name string
type refs 9, 15        accepted, no payload (yrs SubDoc /  rejected (Yjs has
                       Undefined)                          no such type)
=====================  ==================================  ===================

Other type refs inside Type content: 0 Array, 1 Map, 2 Text, 3 XmlElement
(+ node name), 4 XmlFragment and 6 XmlText. 7 (yrs weak links, not compiled
into pycrdt) is rejected.

The module is pure Python, allocation-bounded (every declared length or count
is checked against the bytes that remain before anything is read) and
non-recursive, so it raises nothing but :class:`MalformedUpdate` for any
``bytes`` input.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal, NoReturn

from tiendasync.errors import InvalidArgument, RemoteProtocolError

__all__ = [
    "MAX_CLIENT_ID",
    "MAX_CLOCK",
    "REF_ANY",
    "REF_DELETED",
    "ItemInfo",
    "MalformedUpdate",
    "ParsedUpdate",
    "StructRange",
    "parse_update",
    "restrict_deletes",
]

MAX_CLIENT_ID = 2**53 - 1
"""Largest client id accepted (``Number.MAX_SAFE_INTEGER`` in lib0)."""

MAX_CLOCK = 2**32 - 1
"""Largest clock, length or count accepted (yrs stores these as ``u32``)."""

_MAX_VARUINT_BYTES = 10

# Struct / content refs (low five bits of the info byte).
_REF_GC = 0
_REF_DELETED = 1
_REF_JSON = 2
_REF_BINARY = 3
_REF_STRING = 4
_REF_EMBED = 5
_REF_FORMAT = 6
_REF_TYPE = 7
_REF_ANY = 8
_REF_DOC = 9
_REF_SKIP = 10

#: Content refs callers of ``parse_update(items=True)`` usually care about.
REF_ANY = _REF_ANY
REF_DELETED = _REF_DELETED

_INFO_HAS_ORIGIN = 0x80
_INFO_HAS_RIGHT_ORIGIN = 0x40
_INFO_HAS_PARENT_SUB = 0x20
_INFO_REF_MASK = 0x1F

# Type refs (ContentType payload).
_TYPE_XML_ELEMENT = 3
_TYPE_XML_HOOK = 5
# Type refs followed by a name string, and type refs with no payload, per engine.
_TYPE_REFS_WITH_NAME: dict[str, frozenset[int]] = {
    "yrs": frozenset({_TYPE_XML_ELEMENT}),
    "yjs": frozenset({_TYPE_XML_ELEMENT, _TYPE_XML_HOOK}),
}
_TYPE_REFS_PLAIN: dict[str, frozenset[int]] = {
    # Array, Map, Text, XmlFragment, XmlHook, XmlText, SubDoc, Undefined.
    "yrs": frozenset({0, 1, 2, 4, 5, 6, 9, 15}),
    # Array, Map, Text, XmlFragment, XmlText.
    "yjs": frozenset({0, 1, 2, 4, 6}),
}

# lib0 `any` tags.
_ANY_UNDEFINED = 127
_ANY_NULL = 126
_ANY_VARINT = 125
_ANY_FLOAT32 = 124
_ANY_FLOAT64 = 123
_ANY_BIGINT = 122
_ANY_FALSE = 121
_ANY_TRUE = 120
_ANY_STRING = 119
_ANY_OBJECT = 118
_ANY_ARRAY = 117
_ANY_BUFFER = 116
_ANY_FIXED_WIDTH = {_ANY_FLOAT32: 4, _ANY_FLOAT64: 8, _ANY_BIGINT: 8}
_ANY_NO_PAYLOAD = frozenset({_ANY_UNDEFINED, _ANY_NULL, _ANY_FALSE, _ANY_TRUE})
# Decoded values (``parse_update(items=True)``); lib0 writes numbers big-endian.
_FIXED_DECODERS: dict[int, Callable[[bytes], object]] = {
    _ANY_FLOAT32: lambda raw: struct.unpack(">f", raw)[0],
    _ANY_FLOAT64: lambda raw: struct.unpack(">d", raw)[0],
    _ANY_BIGINT: lambda raw: struct.unpack(">q", raw)[0],
}
_NO_PAYLOAD_VALUES: dict[int, object] = {
    _ANY_UNDEFINED: None,
    _ANY_NULL: None,
    _ANY_FALSE: False,
    _ANY_TRUE: True,
}

# Lead bytes of 4-byte UTF-8 sequences: each such code point is two UTF-16 units.
_UTF8_FOUR_BYTE_LEADS = (b"\xf0", b"\xf1", b"\xf2", b"\xf3", b"\xf4")


class MalformedUpdate(RemoteProtocolError, ValueError):
    """The bytes are not a well-formed, unambiguous Yjs v1 update.

    Raised for truncated input, unknown tags, out-of-range numbers, declared
    lengths larger than the remaining input, exceeded limits and trailing bytes.
    ``str(exc)`` states what is wrong and where; :attr:`reason` holds the bare
    description and :attr:`offset` the byte offset (into the input) of the field
    that could not be decoded.
    """

    reason: str
    offset: int

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(f"malformed Yjs update: {reason} (at byte offset {offset})")
        self.reason = reason
        self.offset = offset

    def __reduce__(self) -> tuple[type[MalformedUpdate], tuple[str, int]]:
        return (type(self), (self.reason, self.offset))


@dataclass(frozen=True)
class StructRange:
    """A contiguous run of ids written by one client: clocks ``[clock, clock + length)``."""

    client: int
    clock: int
    length: int

    @property
    def end(self) -> int:
        """The first clock *after* the range (``clock + length``)."""
        return self.clock + self.length


@dataclass(frozen=True, slots=True)
class ItemInfo:
    """One Item struct, as ``parse_update(items=True)`` reports it.

    ``origin`` / ``right_origin`` are the ``(client, clock)`` ids the item was
    inserted next to.  When either is present the item inherits its parent and
    map key from that neighbour and ``parent_name``, ``parent_id`` and ``key``
    are ``None``.  Otherwise exactly one of ``parent_name`` (a root type) and
    ``parent_id`` (a nested type) is set, and ``key`` is the map key
    (``parentSub``) if any.  ``values`` holds the decoded elements of Any
    content (lib0 numbers come back as ``int`` or ``float``, byte arrays as
    ``bytes``); it is ``None`` for every other content ref.
    """

    client: int
    clock: int
    length: int
    ref: int
    origin: tuple[int, int] | None
    right_origin: tuple[int, int] | None
    parent_name: str | None
    parent_id: tuple[int, int] | None
    key: str | None
    values: tuple[object, ...] | None


@dataclass(frozen=True)
class ParsedUpdate:
    """What a v1 update contains, as far as ids are concerned.

    ``structs`` has one :class:`StructRange` per struct group, in wire order;
    its length is the total clock span of all structs in the group (GC, Skip
    and Item alike). ``deletes`` is the delete set flattened to one range per
    encoded ``(client, clock, len)`` entry, in wire order. ``item_clients``
    holds the clients whose group contains at least one Item struct (any
    content, including Deleted content and zero-length items).
    """

    structs: tuple[StructRange, ...]
    deletes: tuple[StructRange, ...]
    item_clients: frozenset[int]
    #: Every Item struct in wire order (only with ``parse_update(items=True)``).
    items: tuple[ItemInfo, ...] = field(default=(), compare=False)
    #: Byte offset where the delete set starts.
    delete_set_offset: int = field(default=0, compare=False)

    @property
    def writer_clients(self) -> frozenset[int]:
        """Clients the update writes new Items as.

        A struct group counts iff it has at least one Item struct. Groups made
        only of GC and Skip structs do not: a Skip carries nothing, and a GC
        struct only records that a clock range was garbage collected (pycrdt
        produces such groups, e.g. for the children of a deleted nested type).
        Zero-length Items do count, although yrs drops them on apply.
        """
        return self.item_clients

    @property
    def struct_clients(self) -> frozenset[int]:
        """Every client that has a struct group, whatever its structs are."""
        return frozenset(r.client for r in self.structs)

    @property
    def delete_clients(self) -> frozenset[int]:
        """Every client that appears in the delete set."""
        return frozenset(r.client for r in self.deletes)


def _reject_json_constant(name: str) -> object:
    # JSON.parse rejects NaN / Infinity / -Infinity; so do we.
    raise ValueError(f"non-standard JSON constant {name}")


class _Reader:
    """Cursor over the input. Every method fails with MalformedUpdate."""

    __slots__ = ("buf", "end", "engine", "items", "max_depth", "pos")

    def __init__(self, buf: bytes, max_depth: int, engine: str, *, items: bool = False) -> None:
        self.buf = buf
        self.pos = 0
        self.end = len(buf)
        self.max_depth = max_depth
        self.engine = engine
        #: Collected Items (``parse_update(items=True)``), else None.
        self.items: list[ItemInfo] | None = [] if items else None

    def fail(self, reason: str, offset: int | None = None) -> NoReturn:
        raise MalformedUpdate(reason, self.pos if offset is None else offset)

    def remaining(self) -> int:
        return self.end - self.pos

    def u8(self, what: str) -> int:
        pos = self.pos
        if pos >= self.end:
            self.fail(f"input ends before {what}")
        self.pos = pos + 1
        return self.buf[pos]

    def varuint(self, what: str, limit: int) -> int:
        """Read an unsigned LEB128 number and check it against ``limit``."""
        buf = self.buf
        start = pos = self.pos
        end = self.end
        if pos < end and buf[pos] < 0x80:  # fast path: one byte
            value = buf[pos]
        else:
            value = 0
            shift = 0
            while True:
                if pos >= end:
                    self.fail(f"input ends inside {what}", start)
                byte = buf[pos]
                pos += 1
                value |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
                if shift >= 7 * _MAX_VARUINT_BYTES:
                    self.fail(f"{what} is a varuint longer than {_MAX_VARUINT_BYTES} bytes", start)
            pos -= 1
        if value > limit:
            self.fail(f"{what} is {value}, more than the maximum {limit}", start)
        self.pos = pos + 1
        return value

    def varint(self, what: str) -> None:
        """Skip a lib0 signed varint (sign in bit 6 of the first byte)."""
        buf = self.buf
        start = pos = self.pos
        end = self.end
        if pos >= end:
            self.fail(f"input ends before {what}")
        byte = buf[pos]
        pos += 1
        magnitude = byte & 0x3F
        shift = 6
        count = 1
        while byte >= 0x80:
            if count >= _MAX_VARUINT_BYTES:
                self.fail(f"{what} is a varint longer than {_MAX_VARUINT_BYTES} bytes", start)
            if pos >= end:
                self.fail(f"input ends inside {what}", start)
            byte = buf[pos]
            pos += 1
            count += 1
            magnitude |= (byte & 0x7F) << shift
            shift += 7
        if magnitude > MAX_CLIENT_ID:
            self.fail(f"{what} magnitude {magnitude} exceeds 2**53 - 1", start)
        self.pos = pos

    def declared_count(self, what: str, min_bytes_each: int) -> int:
        """Read a count of following elements, each at least ``min_bytes_each`` bytes."""
        start = self.pos
        count = self.varuint(what, MAX_CLOCK)
        if count * min_bytes_each > self.remaining():
            self.fail(
                f"{what} declares {count} entries but only {self.remaining()} bytes remain",
                start,
            )
        return count

    def skip_bytes(self, what: str) -> int:
        """Skip a varuint-length-prefixed byte string; return the offset of its payload."""
        start = self.pos
        length = self.varuint(f"length of {what}", MAX_CLOCK)
        payload = self.pos
        if length > self.end - payload:
            self.fail(f"{what} declares {length} bytes but only {self.end - payload} remain", start)
        self.pos = payload + length
        return payload

    def string(self, what: str) -> str:
        """Read a varuint-length-prefixed UTF-8 string (strictly decoded)."""
        payload = self.skip_bytes(what)
        raw = self.buf[payload : self.pos]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.fail(f"{what} is not valid UTF-8 ({exc.reason})", payload + exc.start)

    def string_utf16_length(self, what: str) -> int:
        """Read a string and return its length in UTF-16 code units."""
        payload = self.skip_bytes(what)
        raw = self.buf[payload : self.pos]
        try:
            code_points = len(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            self.fail(f"{what} is not valid UTF-8 ({exc.reason})", payload + exc.start)
        # Valid UTF-8: every 4-byte sequence is one astral code point = 2 UTF-16 units.
        return code_points + sum(raw.count(lead) for lead in _UTF8_FOUR_BYTE_LEADS)

    def json_text(self, what: str, *, allow_undefined: bool = False) -> None:
        """Read a string that must hold a JSON document of bounded depth."""
        start = self.pos
        text = self.string(what)
        if allow_undefined and text == "undefined":
            return
        try:
            value = json.loads(text, parse_constant=_reject_json_constant, parse_int=float)
        except (ValueError, RecursionError) as exc:
            self.fail(f"{what} is not valid JSON ({type(exc).__name__}: {exc})", start)
        # Iterative depth check: containers nested more than max_depth deep fail.
        stack: list[tuple[object, int]] = [(value, 0)]
        while stack:
            node, depth = stack.pop()
            if isinstance(node, dict):
                children: list[object] = list(node.values())
            elif isinstance(node, list):
                children = node
            else:
                continue
            if depth + 1 > self.max_depth:
                self.fail(f"{what} nests deeper than max_depth={self.max_depth}", start)
            stack.extend((child, depth + 1) for child in children)

    def any_value(self, what: str) -> None:
        """Skip one lib0 ``any`` value, iteratively, bounding nesting by max_depth."""
        # Each frame: [values still to read, whether each value is preceded by a key].
        stack: list[list[int]] = [[1, 0]]
        while stack:
            frame = stack[-1]
            if frame[0] == 0:
                stack.pop()
                continue
            frame[0] -= 1
            if frame[1]:
                self.string(f"object key in {what}")
            tag_offset = self.pos
            tag = self.u8(f"type tag of {what}")
            if tag in _ANY_NO_PAYLOAD:
                continue
            if tag == _ANY_STRING:
                self.string(f"string in {what}")
            elif tag == _ANY_VARINT:
                self.varint(f"integer in {what}")
            elif tag in _ANY_FIXED_WIDTH:
                width = _ANY_FIXED_WIDTH[tag]
                if self.remaining() < width:
                    self.fail(f"input ends inside {width}-byte number in {what}")
                self.pos += width
            elif tag == _ANY_BUFFER:
                self.skip_bytes(f"byte array in {what}")
            elif tag in (_ANY_ARRAY, _ANY_OBJECT):
                is_object = tag == _ANY_OBJECT
                count = self.declared_count(
                    f"{'object' if is_object else 'array'} size in {what}",
                    2 if is_object else 1,
                )
                if len(stack) > self.max_depth:
                    self.fail(f"{what} nests deeper than max_depth={self.max_depth}", tag_offset)
                stack.append([count, int(is_object)])
            else:
                self.fail(f"unknown any type tag {tag} in {what}", tag_offset)

    def any_decoded(self, what: str, depth: int = 0) -> object:  # noqa: PLR0911  (a tag each)
        """Read one lib0 ``any`` value and return it (recursion bounded by max_depth)."""
        tag_offset = self.pos
        tag = self.u8(f"type tag of {what}")
        if tag == _ANY_STRING:
            return self.string(f"string in {what}")
        if tag == _ANY_VARINT:
            return self.varint_value(f"integer in {what}")
        if tag in _ANY_FIXED_WIDTH:
            width = _ANY_FIXED_WIDTH[tag]
            if self.remaining() < width:
                self.fail(f"input ends inside {width}-byte number in {what}")
            raw = self.buf[self.pos : self.pos + width]
            self.pos += width
            return _FIXED_DECODERS[tag](raw)
        if tag in _ANY_NO_PAYLOAD:
            return _NO_PAYLOAD_VALUES[tag]
        if tag == _ANY_BUFFER:
            start = self.skip_bytes(f"byte array in {what}")
            return self.buf[start : self.pos]
        if tag in (_ANY_ARRAY, _ANY_OBJECT):
            is_object = tag == _ANY_OBJECT
            count = self.declared_count(
                f"{'object' if is_object else 'array'} size in {what}", 2 if is_object else 1
            )
            if depth >= self.max_depth:
                self.fail(f"{what} nests deeper than max_depth={self.max_depth}", tag_offset)
            if is_object:
                obj: dict[str, object] = {}
                for _ in range(count):
                    name = self.string(f"object key in {what}")
                    obj[name] = self.any_decoded(what, depth + 1)
                return obj
            return [self.any_decoded(what, depth + 1) for _ in range(count)]
        self.fail(f"unknown any type tag {tag} in {what}", tag_offset)

    def varint_value(self, what: str) -> int:
        """Read a lib0 signed varint and return it."""
        start = self.pos
        self.varint(what)
        buf = self.buf
        byte = buf[start]
        value = byte & 0x3F
        shift = 6
        pos = start + 1
        while byte >= 0x80:
            byte = buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
        return -value if buf[start] & 0x40 else value

    def id(self, what: str) -> None:
        self.varuint(f"client of {what}", MAX_CLIENT_ID)
        self.varuint(f"clock of {what}", MAX_CLOCK)

    def id_value(self, what: str) -> tuple[int, int]:
        return (
            self.varuint(f"client of {what}", MAX_CLIENT_ID),
            self.varuint(f"clock of {what}", MAX_CLOCK),
        )

    def item_content(self, ref: int, struct_offset: int) -> int:
        """Skip an Item's content; return its clock span."""
        if ref == _REF_STRING:  # by far the most common: no dispatch
            return self.string_utf16_length("String content")
        return self._CONTENT_READERS[ref](self, struct_offset)

    # -- content readers (refs 1-3, 5-9): skip the payload, return the clock span --------

    def _content_any(self, struct_offset: int) -> int:
        count = self.declared_count("Any content length", 1)
        for _ in range(count):
            self.any_value("Any content")
        return count

    def _content_deleted(self, struct_offset: int) -> int:
        return self.varuint("Deleted content length", MAX_CLOCK)

    def _content_type(self, struct_offset: int) -> int:
        offset = self.pos
        type_ref = self.u8("type ref of Type content")
        if type_ref in _TYPE_REFS_WITH_NAME[self.engine]:
            self.string("node name of Type content")
        elif type_ref not in _TYPE_REFS_PLAIN[self.engine]:
            self.fail(
                f"type ref {type_ref} in Type content is not valid for engine {self.engine!r}",
                offset,
            )
        return 1

    def _content_binary(self, struct_offset: int) -> int:
        self.skip_bytes("Binary content")
        return 1

    def _content_json(self, struct_offset: int) -> int:
        if self.engine == "yrs":
            self.fail(
                "JSON content (ref 2) is framed differently by yrs (it reads one string"
                " more than declared); rejected for engine 'yrs'",
                struct_offset,
            )
        count = self.declared_count("JSON content length", 1)
        for _ in range(count):
            self.json_text("JSON content element", allow_undefined=True)
        return count

    def _content_embed(self, struct_offset: int) -> int:
        self.json_text("Embed content")
        return 1

    def _content_format(self, struct_offset: int) -> int:
        self.string("Format content key")
        self.json_text("Format content value")
        return 1

    def _content_doc(self, struct_offset: int) -> int:
        self.string("Doc content guid")
        self.any_value("Doc content options")
        return 1

    # Every Item content ref but String (handled first in item_content); struct()
    # has already rejected GC, Skip and refs above 10.
    _CONTENT_READERS: ClassVar[Mapping[int, Callable[[_Reader, int], int]]] = {
        _REF_DELETED: _content_deleted,
        _REF_JSON: _content_json,
        _REF_BINARY: _content_binary,
        _REF_EMBED: _content_embed,
        _REF_FORMAT: _content_format,
        _REF_TYPE: _content_type,
        _REF_ANY: _content_any,
        _REF_DOC: _content_doc,
    }

    def struct(self) -> tuple[int, bool]:
        """Read one struct; return ``(clock span, is_item)``."""
        offset = self.pos
        info = self.u8("struct info byte")
        ref = info & _INFO_REF_MASK
        if ref in (_REF_GC, _REF_SKIP):
            if info != ref:
                self.fail(
                    f"{'GC' if ref == _REF_GC else 'Skip'} info byte {info:#04x} has flag bits set",
                    offset,
                )
            return self.varuint("GC length" if ref == _REF_GC else "Skip length", MAX_CLOCK), False
        if ref > _REF_SKIP:
            self.fail(f"unknown struct/content ref {ref} (info byte {info:#04x})", offset)
        if self.items is not None:
            return self._collected_item(info, ref, offset), True
        if info & _INFO_HAS_ORIGIN:
            self.id("origin")
        if info & _INFO_HAS_RIGHT_ORIGIN:
            self.id("right origin")
        if not info & (_INFO_HAS_ORIGIN | _INFO_HAS_RIGHT_ORIGIN):
            parent_offset = self.pos
            parent_info = self.varuint("parent info", MAX_CLOCK)
            if parent_info == 1:
                self.string("parent type name")
            elif parent_info == 0:
                self.id("parent")
            else:
                self.fail(f"parent info is {parent_info}, expected 0 or 1", parent_offset)
            if info & _INFO_HAS_PARENT_SUB:
                self.string("parent sub key")
        return self.item_content(ref, offset), True

    def _collected_item(self, info: int, ref: int, offset: int) -> int:
        """Like the Item branch of :meth:`struct`, recording an :class:`ItemInfo`."""
        assert self.items is not None
        origin = self.id_value("origin") if info & _INFO_HAS_ORIGIN else None
        right = self.id_value("right origin") if info & _INFO_HAS_RIGHT_ORIGIN else None
        parent_name: str | None = None
        parent_id: tuple[int, int] | None = None
        key: str | None = None
        if origin is None and right is None:
            parent_offset = self.pos
            parent_info = self.varuint("parent info", MAX_CLOCK)
            if parent_info == 1:
                parent_name = self.string("parent type name")
            elif parent_info == 0:
                parent_id = self.id_value("parent")
            else:
                self.fail(f"parent info is {parent_info}, expected 0 or 1", parent_offset)
            if info & _INFO_HAS_PARENT_SUB:
                key = self.string("parent sub key")
        values: tuple[object, ...] | None = None
        if ref == _REF_ANY:
            count = self.declared_count("Any content length", 1)
            values = tuple(self.any_decoded("Any content") for _ in range(count))
            span = count
        else:
            span = self.item_content(ref, offset)
        # client and clock are filled in by _read_group (they belong to the group)
        self.items.append(
            ItemInfo(-1, -1, span, ref, origin, right, parent_name, parent_id, key, values)
        )
        return span


def parse_update(
    data: bytes | bytearray | memoryview,
    *,
    max_structs: int = 1_000_000,
    max_depth: int = 64,
    engine: Literal["yrs", "yjs"] = "yrs",
    items: bool = False,
) -> ParsedUpdate:
    """Decode and validate a complete Yjs v1 update.

    Args:
        data: the update bytes (``bytes``, ``bytearray`` or ``memoryview``).
        max_structs: upper bound on the total number of structs over all
            struct groups, and, separately, on the number of delete-set ranges.
        max_depth: upper bound on the nesting of arrays/objects inside ``any``
            values and JSON payloads (a top-level array is depth 1).
        engine: the decoder that will apply the update: ``"yrs"`` (pycrdt,
            the default) or ``"yjs"``. Only the framing of JSON content, the
            XmlHook type ref and the yrs-only type refs 9/15 depend on it; see
            the module docstring.
        items: also report every Item struct (:attr:`ParsedUpdate.items`:
            neighbours, parent, map key, decoded Any values), for callers that
            judge *what* an update writes (the relay's ownership rule).

    Returns:
        The struct groups (client, first clock, clock span) and delete-set
        ranges, in wire order, plus the clients that wrote Items.

    Raises:
        MalformedUpdate: for any input that is not exactly one well-formed v1
            update (see the module docstring for the strictness rules), and
            for input exceeding ``max_structs`` / ``max_depth``. No other
            exception escapes for any byte input.
        TypeError: if ``data`` is not bytes-like (a programming error).
        ValueError: if ``max_structs`` or ``max_depth`` is negative, or
            ``engine`` is unknown.
    """
    data = _check_arguments(data, max_structs, max_depth, engine)
    reader = _Reader(data, max_depth, engine, items=items)
    structs, item_clients = _read_struct_groups(reader, max_structs)
    delete_set_offset = reader.pos
    deletes = _read_delete_set(reader, max_structs)
    if reader.pos != reader.end:
        reader.fail(f"{reader.remaining()} trailing bytes after the delete set")
    return ParsedUpdate(
        tuple(structs),
        tuple(deletes),
        frozenset(item_clients),
        tuple(reader.items or ()),
        delete_set_offset,
    )


def _varuint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def restrict_deletes(data: bytes, keep: Callable[[int], bool]) -> bytes:
    """``data`` with its delete set cut down to the clients ``keep`` accepts.

    The struct part is kept byte for byte.  A replica uses it to send only
    the deletes it may make (its own items) although ``Doc.get_update(sv)``
    always carries the whole delete set.  Raises :class:`MalformedUpdate`
    for bytes that are not an update.
    """
    parsed = parse_update(data)
    by_client: dict[int, list[StructRange]] = {}
    for r in parsed.deletes:
        if keep(r.client):
            by_client.setdefault(r.client, []).append(r)
    if len(by_client) == len({r.client for r in parsed.deletes}):
        return bytes(data)
    out = bytearray(data[: parsed.delete_set_offset])
    out += _varuint_bytes(len(by_client))
    for client, ranges in by_client.items():
        out += _varuint_bytes(client) + _varuint_bytes(len(ranges))
        for r in ranges:
            out += _varuint_bytes(r.clock) + _varuint_bytes(r.length)
    return bytes(out)


def _check_arguments(
    data: bytes | bytearray | memoryview, max_structs: int, max_depth: int, engine: str
) -> bytes:
    """The update as ``bytes``; TypeError / ValueError for a wrong call."""
    if isinstance(data, bytearray | memoryview):
        data = bytes(data)
    if not isinstance(data, bytes):
        raise InvalidArgument(f"update must be bytes, not {type(data).__name__}")
    if max_structs < 0 or max_depth < 0:
        raise InvalidArgument("max_structs and max_depth must be non-negative")
    if engine not in _TYPE_REFS_PLAIN:
        raise InvalidArgument(f"engine must be 'yrs' or 'yjs', not {engine!r}")
    return data


def _read_struct_groups(reader: _Reader, max_structs: int) -> tuple[list[StructRange], set[int]]:
    """Every struct group: their ranges and the clients that wrote Items."""
    structs: list[StructRange] = []
    item_clients: set[int] = set()
    seen_clients: set[int] = set()
    total_structs = 0
    # A group needs >= 3 bytes; the delete set after the groups needs >= 1.
    num_groups = reader.declared_count("number of struct groups", 3)
    for _ in range(num_groups):
        count_offset = reader.pos
        num_structs = reader.varuint("number of structs in group", MAX_CLOCK)
        if num_structs > max_structs - total_structs:
            reader.fail(f"update has more than max_structs={max_structs} structs", count_offset)
        if num_structs > reader.remaining():
            reader.fail(
                f"group declares {num_structs} structs but only {reader.remaining()} bytes remain",
                count_offset,
            )
        total_structs += num_structs
        client_offset = reader.pos
        client = reader.varuint("client id of struct group", MAX_CLIENT_ID)
        if client in seen_clients:
            reader.fail(f"client {client} has more than one struct group", client_offset)
        seen_clients.add(client)
        group, has_item = _read_group(reader, client, num_structs)
        structs.append(group)
        if has_item:
            item_clients.add(client)
    return structs, item_clients


def _read_group(reader: _Reader, client: int, num_structs: int) -> tuple[StructRange, bool]:
    """The structs of one group (after its client id): its range, and whether it has an Item."""
    first_clock = reader.varuint("first clock of struct group", MAX_CLOCK)
    clock = first_clock
    has_item = False
    items = reader.items
    for _ in range(num_structs):
        struct_offset = reader.pos
        span, is_item = reader.struct()
        if is_item and items is not None:
            items[-1] = _with_id(items[-1], client, clock)
        clock += span
        if clock > MAX_CLOCK:
            reader.fail(f"clock of client {client} runs past {MAX_CLOCK}", struct_offset)
        has_item = has_item or is_item
    return StructRange(client, first_clock, clock - first_clock), has_item


def _with_id(item: ItemInfo, client: int, clock: int) -> ItemInfo:
    return ItemInfo(
        client,
        clock,
        item.length,
        item.ref,
        item.origin,
        item.right_origin,
        item.parent_name,
        item.parent_id,
        item.key,
        item.values,
    )


def _read_delete_set(reader: _Reader, max_structs: int) -> list[StructRange]:
    """The delete set, one range per encoded ``(client, clock, len)`` entry."""
    deletes: list[StructRange] = []
    ds_clients: set[int] = set()
    num_ds_clients = reader.declared_count("number of delete-set clients", 2)
    for _ in range(num_ds_clients):
        client_offset = reader.pos
        client = reader.varuint("client id in delete set", MAX_CLIENT_ID)
        if client in ds_clients:
            reader.fail(f"client {client} appears twice in the delete set", client_offset)
        ds_clients.add(client)
        count_offset = reader.pos
        num_ranges = reader.declared_count("number of delete ranges", 2)
        if num_ranges > max_structs - len(deletes):
            reader.fail(f"delete set has more than max_structs={max_structs} ranges", count_offset)
        for _ in range(num_ranges):
            range_offset = reader.pos
            clock = reader.varuint("delete range clock", MAX_CLOCK)
            length = reader.varuint("delete range length", MAX_CLOCK)
            if clock + length > MAX_CLOCK:
                reader.fail(f"delete range of client {client} runs past {MAX_CLOCK}", range_offset)
            deletes.append(StructRange(client, clock, length))
    return deletes
