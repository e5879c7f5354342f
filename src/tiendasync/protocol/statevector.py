"""Yjs state vectors: ``{client_id: next_clock}`` encoded as lib0 varuints."""

from __future__ import annotations

from tiendasync.errors import RemoteProtocolError

__all__ = [
    "MalformedStateVector",
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
