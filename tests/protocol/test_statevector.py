"""The one-client lookup in a state vector reads exactly what the full decode reads.

``clock_in_state_vector`` runs in every local write (a sale asks it of the
sales and the stock document), so it must not decode every entry; these
properties hold it to ``decode_state_vector(data).get(client, 0)`` for
vectors yrs writes and for any bytes at all (the same value or the same
error).
"""

from __future__ import annotations

import pycrdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiendasync.protocol.statevector import (
    MalformedStateVector,
    _write_varuint,
    clock_in_state_vector,
    decode_state_vector,
    encode_state_vector,
    read_varuint,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Client ids and clocks across the varuint lengths (1 to 10 bytes).
uints = st.one_of(
    st.integers(0, 0x7F),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.sampled_from([0, 0x7F, 0x80, 0x3FFF, 0x4000, 2**32 - 1, 2**63, 2**64 - 1]),
)


def _expected(data: bytes, client: int) -> int | type[MalformedStateVector]:
    try:
        return decode_state_vector(data).get(client, 0)
    except MalformedStateVector:
        return MalformedStateVector


def _looked_up(data: bytes, client: int) -> int | type[MalformedStateVector]:
    try:
        return clock_in_state_vector(data, client)
    except MalformedStateVector:
        return MalformedStateVector


def _raw(entries: list[tuple[int, int]], count: int | None = None) -> bytes:
    """A state vector written entry by entry (repeats kept, unlike ``encode_state_vector``)."""
    out = bytearray()
    _write_varuint(out, len(entries) if count is None else count)
    for client, clock in entries:
        _write_varuint(out, client)
        _write_varuint(out, clock)
    return bytes(out)


@FUZZ
@given(st.dictionaries(uints, uints, max_size=40), uints, st.data())
def test_lookup_matches_the_full_decode(
    sv: dict[int, int], other: int, data: st.DataObject
) -> None:
    encoded = encode_state_vector(sv)
    for client in [other, *sv]:
        assert clock_in_state_vector(encoded, client) == sv.get(client, 0)
    # a clock whose bytes spell a client id, at every position, is not read as that client
    if sv:
        client = data.draw(st.sampled_from(sorted(sv)))
        spoof = _raw([(c, client if c != client else k) for c, k in sv.items()])
        assert clock_in_state_vector(spoof, client) == decode_state_vector(spoof)[client]


@FUZZ
@given(st.lists(st.tuples(uints, uints), max_size=30), uints)
def test_a_repeated_client_reads_its_last_entry(entries: list[tuple[int, int]], other: int) -> None:
    encoded = _raw(entries)
    for client in [other, *(c for c, _ in entries)]:
        assert _looked_up(encoded, client) == _expected(encoded, client)


@FUZZ
@given(st.binary(max_size=120), uints)
def test_any_bytes_give_the_same_value_or_the_same_error(data: bytes, client: int) -> None:
    assert _looked_up(data, client) == _expected(data, client)


@FUZZ
@given(st.lists(st.tuples(uints, uints), min_size=1, max_size=20), st.data())
def test_damaged_vectors_give_the_same_value_or_the_same_error(
    entries: list[tuple[int, int]], data: st.DataObject
) -> None:
    """Truncated, extended, miscounted, with a non-shortest or an overlong varuint."""
    good = _raw(entries)
    client = data.draw(st.sampled_from([c for c, _ in entries]))
    cut = data.draw(st.integers(0, len(good)))
    at = data.draw(st.integers(0, len(good)))
    count = data.draw(st.integers(0, 2 * len(entries) + 2))
    damaged = [
        good[:cut],
        good + data.draw(st.binary(min_size=1, max_size=6)),
        _raw(entries, count),
        good[:at] + b"\x80" * data.draw(st.integers(1, 11)) + good[at:],
        _spelled_long(entries),
    ]
    for bad in damaged:
        assert _looked_up(bad, client) == _expected(bad, client)


def _spelled_long(entries: list[tuple[int, int]]) -> bytes:
    """``entries`` with the first client written in a longer (non-shortest) form."""
    (client, clock), rest = entries[0], entries[1:]
    out = bytearray()
    _write_varuint(out, len(entries))
    one = bytearray()
    _write_varuint(one, client)
    if len(one) < 10:
        one[-1] |= 0x80
        one.append(0)
    out += one
    _write_varuint(out, clock)
    for c, k in rest:
        _write_varuint(out, c)
        _write_varuint(out, k)
    return bytes(out)


def test_non_shortest_client_is_read_by_its_value() -> None:
    # client 5 as 0x85 0x00: the full decode reads 5, so must the lookup
    data = bytes([1, 0x85, 0x00, 7])
    assert decode_state_vector(data) == {5: 7}
    assert clock_in_state_vector(data, 5) == 7


def test_what_yrs_writes_with_many_writers() -> None:
    doc: pycrdt.Doc[pycrdt.Map[int]] = pycrdt.Doc()
    root = doc.get("m", type=pycrdt.Map)
    for n in range(60):
        other: pycrdt.Doc[pycrdt.Map[int]] = pycrdt.Doc(client_id=1000 + n * 7919)
        m = other.get("m", type=pycrdt.Map)
        for i in range(n % 5 + 1):
            m[f"{n}-{i}"] = i
        doc.apply_update(other.get_update())
    root["own"] = 1
    state = bytes(doc.get_state())
    decoded = decode_state_vector(state)
    assert len(decoded) == 61
    for client, clock in decoded.items():
        assert clock_in_state_vector(state, client) == clock
    assert clock_in_state_vector(state, 1) == 0


def test_lookup_reads_two_varuints_however_many_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The growth this replaced: the full decode reads 1 + 2n varuints in Python."""
    from tiendasync.protocol import statevector

    calls = 0

    def counting(data: bytes, pos: int, what: str = "state vector") -> tuple[int, int]:
        nonlocal calls
        calls += 1
        return read_varuint(data, pos, what)

    monkeypatch.setattr(statevector, "read_varuint", counting)
    for n in (1, 10, 200):
        sv = {2**31 + i * 7: i + 1 for i in range(n)}
        calls = 0
        assert clock_in_state_vector(encode_state_vector(sv), 2**31 + 7 * (n - 1)) == n
        assert calls == 2
