"""Yjs state vectors: ``{client_id: next_clock}`` encoded as lib0 varuints."""

from __future__ import annotations

from tiendasync.errors import RemoteProtocolError

__all__ = [
    "MalformedStateVector",
    "clock_in_state_vector",
    "decode_state_vector",
    "encode_state_vector",
    "missing_from",
    "read_varuint",
]


class MalformedStateVector(RemoteProtocolError, ValueError):
    """Bytes that are not a lib0 state vector (or varuint); also a ``ValueError``."""


def read_varuint(data: bytes, pos: int, what: str = "state vector") -> tuple[int, int]:
    """A lib0 varuint at ``pos``: ``(value, next position)``.

    Raises :class:`MalformedStateVector` naming ``what`` if it is truncated or longer than 64 bits.
    """
    value = shift = 0
    while True:
        if pos >= len(data):
            raise MalformedStateVector(f"truncated {what}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise MalformedStateVector(f"varuint too long in {what}")


def _write_varuint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)


def decode_state_vector(data: bytes) -> dict[int, int]:
    """Decode; raises ValueError on malformed input."""
    count, pos = read_varuint(data, 0)
    if count > len(data):
        raise MalformedStateVector("state vector declares more entries than it has bytes")
    out: dict[int, int] = {}
    for _ in range(count):
        client, pos = read_varuint(data, pos)
        clock, pos = read_varuint(data, pos)
        out[client] = clock
    if pos != len(data):
        raise MalformedStateVector("trailing bytes after state vector")
    return out


#: Each byte's mark: 1 if it has the continuation bit (a varuint goes on), else 0
#: (the last byte of a varuint).
_MARKS = bytes(0 if b < 0x80 else 1 for b in range(256))
#: Ten continuation bytes in a row: a varuint longer than :func:`read_varuint` reads.
_TOO_LONG = b"\x01" * 10


def clock_in_state_vector(data: bytes, client: int) -> int:
    """``decode_state_vector(data).get(client, 0)``, without decoding every entry.

    A replica records its own clock in each document it writes, once per
    write; a sales document gains a writer with every restart in its month, so
    decoding the whole vector in Python made a sale cost more the later in the
    month it was.  Here the work that grows with the entries is done by bytes
    methods in C: each varuint ends with its one byte below 0x80, so the
    varuints before a position are the such bytes before it, and the encoded
    ``client`` found at an odd varuint (entry ``i`` is varuints ``2i+1`` and
    ``2i+2``) is that entry's client.  Same result and same errors as
    :func:`decode_state_vector` for any bytes (what is not the shortest
    encoding, which yrs never writes, takes the full decode).
    """
    marks = data.translate(_MARKS)
    if (
        not data
        or marks[-1]
        or _TOO_LONG in marks
        or marks.count(0) != 1 + 2 * read_varuint(data, 0)[0]
        or _not_shortest(data)
    ):
        return decode_state_vector(data).get(client, 0)  # its error, or its reading
    needle = bytearray()
    _write_varuint(needle, client)
    end = len(data)
    while (at := data.rfind(needle, 0, end)) > 0:  # the last entry of a repeated client counts
        if not marks[at - 1] and marks.count(0, 0, at) % 2:
            return read_varuint(data, at + len(needle))[0]
        end = at + len(needle) - 1
    return 0


def _not_shortest(data: bytes) -> bool:
    """Whether a varuint of ``data`` ends in a zero byte after a continuation byte."""
    at = data.find(0, 1)
    while at > 0:
        if data[at - 1] & 0x80:
            return True
        at = data.find(0, at + 1)
    return False


def encode_state_vector(sv: dict[int, int]) -> bytes:
    out = bytearray()
    _write_varuint(out, len(sv))
    for client, clock in sorted(sv.items()):
        _write_varuint(out, client)
        _write_varuint(out, clock)
    return bytes(out)


def missing_from(have: dict[int, int], other: dict[int, int]) -> bool:
    """True if ``have`` holds items that ``other`` lacks."""
    return any(clock > other.get(client, 0) for client, clock in have.items())
