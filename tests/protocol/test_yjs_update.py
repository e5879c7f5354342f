"""Tests for tiendasync.protocol.yjs_update: the Yjs v1 update decoder used by the relay.

Oracles: pycrdt (yrs) itself. For updates produced by pycrdt the parsed struct
ranges must agree with the state vector pycrdt reports (``Doc.get_state()`` /
``pycrdt.get_state(update)``), and known edits must give known delete ranges.
Hand-built updates cover encodings pycrdt never emits, and are applied to a
pycrdt Doc where yrs accepts them, to check that both read them the same way.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import (
    Array,
    Doc,
    Map,
    Text,
    XmlElement,
    XmlFragment,
    XmlText,
    get_state,
    get_update,
    merge_updates,
)

from tiendasync.errors import InvalidArgument, RemoteProtocolError
from tiendasync.protocol import statevector
from tiendasync.protocol.statevector import MalformedStateVector
from tiendasync.protocol.yjs_update import (
    MAX_CLIENT_ID,
    MAX_CLOCK,
    MalformedUpdate,
    ParsedUpdate,
    StructRange,
    parse_update,
)

# --------------------------------------------------------------------------- helpers


def read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def decode_state_vector(sv: bytes) -> dict[int, int]:
    """Tiny decoder for a v1 state vector: count, then (client, clock) pairs."""
    count, pos = read_varuint(sv, 0)
    out: dict[int, int] = {}
    for _ in range(count):
        client, pos = read_varuint(sv, pos)
        clock, pos = read_varuint(sv, pos)
        out[client] = clock
    assert pos == len(sv)
    return out


def vu(n: int) -> bytes:
    """lib0 varuint."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def vi(n: int) -> bytes:
    """lib0 signed varint (sign in bit 6 of the first byte)."""
    mag = abs(n)
    first = (mag & 0x3F) | (0x40 if n < 0 else 0)
    mag >>= 6
    out = bytearray([first | (0x80 if mag else 0)])
    while mag:
        out.append((mag & 0x7F) | (0x80 if mag > 0x7F else 0))
        mag >>= 7
    return bytes(out)


def vs(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return vu(len(raw)) + raw


def map_item(content_ref: int, content: bytes, key: str = "k", root: str = "m") -> bytes:
    """An Item with no origins, parent = root type ``root``, parentSub = ``key``."""
    return bytes([0x20 | content_ref]) + vu(1) + vs(root) + vs(key) + content


def group(client: int, clock: int, *structs: bytes) -> bytes:
    return vu(len(structs)) + vu(client) + vu(clock) + b"".join(structs)


def build(*groups: bytes, ds: bytes = b"\x00") -> bytes:
    return vu(len(groups)) + b"".join(groups) + ds


def any_content(*values: bytes) -> bytes:
    return vu(len(values)) + b"".join(values)


def check_against_state(update: bytes) -> ParsedUpdate:
    """Parse a from-scratch ``update``; check it against the state vector yrs derives."""
    parsed = parse_update(update)
    sv = decode_state_vector(get_state(update))
    assert {r.client for r in parsed.structs} == set(sv)
    for r in parsed.structs:
        assert r.end == sv[r.client], (r, sv)
        assert r.clock == 0
    assert len({r.client for r in parsed.structs}) == len(parsed.structs)
    return parsed


def doc_with(client_id: int, fill: Callable[[Doc[Any]], None]) -> Doc[Any]:
    doc: Doc[Any] = Doc(client_id=client_id)
    fill(doc)
    return doc


def apply_to_pycrdt(update: bytes) -> dict[int, int]:
    doc: Doc[Any] = Doc()
    doc.apply_update(update)
    return decode_state_vector(doc.get_state())


# ------------------------------------------------------------ pycrdt-produced updates

MAP_VALUES = {
    "str": "hola",
    "unicode": "ñandú 😀 中文",
    "empty": "",
    "int": 42,
    "neg": -7,
    "big": 2**60,
    "zero": 0,
    "float": 3.25,
    "float64": 0.1,
    "true": True,
    "false": False,
    "none": None,
    "list": [1, "two", 3.5, None, [True]],
    "dict": {"a": 1, "b": {"c": [1, 2, {"d": None}]}},
    "bytes": b"\x00\x01\xff" * 10,
    "empty_bytes": b"",
}


def test_map_scalar_values() -> None:
    def fill(doc: Doc[Any]) -> None:
        m = doc.get("m", type=Map)
        for key, value in MAP_VALUES.items():
            m[key] = value

    doc = doc_with(1234, fill)
    update = doc.get_update()
    parsed = check_against_state(update)
    assert parsed.structs == (StructRange(1234, 0, len(MAP_VALUES)),)
    assert decode_state_vector(doc.get_state()) == {1234: len(MAP_VALUES)}
    assert parsed.writer_clients == frozenset({1234})
    assert parsed.struct_clients == frozenset({1234})
    assert parsed.deletes == ()


def test_nested_types_and_utf16_lengths() -> None:
    def fill(doc: Doc[Any]) -> None:
        m = doc.get("root", type=Map)
        m["arr"] = Array([1, "x", Map({"inner": Text("a😀b")})])
        m["txt"] = Text("𝄞 clef")  # astral char: 2 UTF-16 units
        arr = doc.get("list", type=Array)
        arr.extend([{"k": [1, 2]}, Array([Array([Map({"deep": "yes"})])])])
        t = doc.get("t", type=Text)
        t.insert(0, "hello", {"bold": True})  # Format + String content
        t.insert_embed(5, {"img": "x.png"})  # Embed content
        t.format(0, 2, {"italic": True})
        frag = doc.get("xml", type=XmlFragment)
        frag.children.append(XmlElement("p", {"class": "c"}, [XmlText("hi 👋")]))
        m["sub"] = Doc(guid="sub-guid")  # Doc content (ref 9)

    doc = doc_with(77, fill)
    parsed = check_against_state(doc.get_update())
    assert parsed.writer_clients == {77}
    # "a😀b" is 4 UTF-16 units, "𝄞 clef" is 7: exercised through the state vector.
    assert parsed.structs[0].length == decode_state_vector(doc.get_state())[77]


def test_utf16_length_of_string_content() -> None:
    for text in ["", "a", "é", "€", "😀", "a😀b𝄞c", "中文" * 50, "\U0010ffff"]:
        doc: Doc[Any] = Doc(client_id=3)
        if text:
            doc.get("t", type=Text).insert(0, text)
        else:
            doc.get("t", type=Text)
        parsed = parse_update(doc.get_update())
        expected = len(text.encode("utf-16-le")) // 2
        assert sum(r.length for r in parsed.structs) == expected


def test_deletes_are_reported() -> None:
    doc: Doc[Any] = Doc(client_id=5)
    arr = doc.get("a", type=Array)
    arr.extend([10, 20, 30, 40, 50])  # clocks 0..4
    text = doc.get("t", type=Text)
    text.insert(0, "abcdef")  # clocks 5..10
    before = doc.get_state()
    updates: list[bytes] = []
    sub = doc.observe(lambda event: updates.append(event.update))
    del arr[1:3]  # clocks 1, 2
    del text[4:6]  # clocks 9, 10
    doc.unobserve(sub)

    # Delete-only transactions: no structs, no writers, exact delete ranges.
    first, second = (parse_update(u) for u in updates)
    assert first.structs == () and first.writer_clients == frozenset()
    assert first.deletes == (StructRange(5, 1, 2),)
    assert second.deletes == (StructRange(5, 9, 2),)

    full = check_against_state(doc.get_update())
    assert set(full.deletes) == {StructRange(5, 1, 2), StructRange(5, 9, 2)}
    assert full.delete_clients == {5}

    diff = parse_update(get_update(doc.get_update(), before))
    assert diff.structs == ()  # nothing new was written, only deleted
    assert set(diff.deletes) == {StructRange(5, 1, 2), StructRange(5, 9, 2)}


def test_map_overwrite_deletes_previous_value() -> None:
    doc: Doc[Any] = Doc(client_id=9)
    m = doc.get("m", type=Map)
    m["k"] = "v1"
    updates: list[bytes] = []
    sub = doc.observe(lambda event: updates.append(event.update))
    m["k"] = "v2"
    doc.unobserve(sub)
    (parsed,) = (parse_update(u) for u in updates)
    assert parsed.structs == (StructRange(9, 1, 1),)
    assert parsed.deletes == (StructRange(9, 0, 1),)
    assert parsed.writer_clients == {9}


CLIENT_IDS = [0, 1, 127, 128, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**48 + 5, 2**53 - 1]


@pytest.mark.parametrize("client_id", CLIENT_IDS)
def test_client_ids(client_id: int) -> None:
    doc: Doc[Any] = Doc(client_id=client_id)
    doc.get("m", type=Map)["x"] = [1, 2, 3]
    doc.get("a", type=Array).append("y")
    parsed = check_against_state(doc.get_update())
    assert parsed.structs == (StructRange(client_id, 0, 2),)
    assert parsed.writer_clients == {client_id}


def test_multiple_clients_merged() -> None:
    ids = [2**53 - 1, 2**32 - 1, 2**31 + 7, 42]
    docs: list[Doc[Any]] = [Doc(client_id=i) for i in ids]
    # Build interleaved history: every doc edits shared types after syncing.
    for round_no in range(3):
        for doc in docs:
            for other in docs:
                if other is not doc:
                    doc.apply_update(other.get_update())
            doc.get("m", type=Map)[f"{doc.client_id}-{round_no}"] = round_no
            doc.get("t", type=Text).insert(0, f"[{round_no}]")
            doc.get("a", type=Array).append(round_no)
    # Someone deletes from another client's content.
    docs[0].apply_update(docs[1].get_update())
    del docs[0].get("t", type=Text)[0:4]

    merged = merge_updates(*(d.get_update() for d in docs))
    parsed = check_against_state(merged)
    assert parsed.writer_clients == set(ids)
    final: Doc[Any] = Doc()
    final.apply_update(merged)
    assert decode_state_vector(final.get_state()) == {r.client: r.end for r in parsed.structs}
    assert parsed.deletes
    assert all(r.client in ids and r.length > 0 for r in parsed.deletes)


def test_observed_transaction_updates_chain() -> None:
    doc: Doc[Any] = Doc(client_id=2**32 - 1)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    m = doc.get("m", type=Map)
    t = doc.get("t", type=Text)
    with doc.transaction():
        m["a"] = 1
        t.insert(0, "héllo😀")
    m["b"] = {"x": [1, 2]}
    t.insert(3, "ZZ")
    with doc.transaction():
        m["c"] = Array([Text("t")])
    clock = 0
    for update in updates:
        parsed = parse_update(update)
        (r,) = parsed.structs
        assert r.client == doc.client_id and r.clock == clock
        clock = r.end
    assert decode_state_vector(doc.get_state()) == {doc.client_id: clock}


def test_diff_update_starts_at_remote_state() -> None:
    doc: Doc[Any] = Doc(client_id=600)
    m = doc.get("m", type=Map)
    for i in range(5):
        m[str(i)] = i
    sv = doc.get_state()
    t = doc.get("t", type=Text)
    t.insert(0, "abc")
    parsed = parse_update(get_update(doc.get_update(), sv))
    assert parsed.structs == (StructRange(600, 5, 3),)
    assert parsed.structs[0].end == decode_state_vector(doc.get_state())[600]


def test_skip_structs_from_merging_non_contiguous_updates() -> None:
    doc: Doc[Any] = Doc(client_id=31)
    steps: list[bytes] = []
    doc.observe(lambda event: steps.append(event.update))
    m = doc.get("m", type=Map)
    for i in range(3):
        m[f"k{i}"] = i  # one transaction per clock
    # Steps 0 and 2 only: the merge bridges the missing clock 1 with a Skip struct.
    merged = merge_updates(steps[0], steps[2])
    assert merged == build(group(31, 0, merged[4:17], b"\x0a\x01", merged[19:-1]))
    parsed = parse_update(merged)
    assert parsed.structs == (StructRange(31, 0, 3),)
    assert parsed.writer_clients == {31}
    # yrs' own state-vector view stops at the gap.
    assert decode_state_vector(get_state(merged)) == {31: 1}


def test_gc_only_group_is_not_a_writer() -> None:
    a: Doc[Any] = Doc(client_id=8)
    b: Doc[Any] = Doc(client_id=9)
    a.get("a", type=Array).append(Array([1]))
    b.apply_update(a.get_update())
    inner = b.get("a", type=Array)[0]
    inner.append(2)
    inner.append(3)
    a.apply_update(b.get_update())
    del a.get("a", type=Array)[0]  # children of the nested array are garbage-collected
    parsed = check_against_state(a.get_update())
    assert parsed.struct_clients == {8, 9}
    assert parsed.writer_clients == {8}  # client 9's group is GC structs only
    assert parsed.delete_clients == {8, 9}


def test_empty_update() -> None:
    doc: Doc[Any] = Doc()
    assert parse_update(doc.get_update()) == ParsedUpdate((), (), frozenset())
    assert parse_update(b"\x00\x00") == ParsedUpdate((), (), frozenset())
    assert parse_update(bytearray(b"\x00\x00")).structs == ()
    assert parse_update(memoryview(b"\x00\x00")).deletes == ()


# ---------------------------------------------------------------- hand-built updates


def test_every_any_type() -> None:
    values = [
        b"\x7f",  # undefined
        b"\x7e",  # null
        b"\x7d" + vi(0),
        b"\x7d" + vi(-1),
        b"\x7d" + vi(2**53 - 1),
        b"\x7d" + vi(-(2**31)),
        b"\x7c" + struct.pack(">f", 1.5),
        b"\x7b" + struct.pack(">d", 0.1),
        b"\x7a" + struct.pack(">q", -(2**63)),
        b"\x79",  # false
        b"\x78",  # true
        b"\x77" + vs("ñ😀"),
        b"\x76" + vu(2) + vs("a") + b"\x7e" + vs("b") + b"\x75" + vu(1) + b"\x78",
        b"\x75" + vu(3) + b"\x7f" + b"\x74" + vs(b"\x00\xff") + b"\x76" + vu(0),
        b"\x74" + vs(b"bytes"),
    ]
    update = build(group(7, 0, map_item(8, any_content(*values))))
    parsed = parse_update(update)
    assert parsed.structs == (StructRange(7, 0, len(values)),)
    assert parsed.writer_clients == {7}
    assert apply_to_pycrdt(update) == {7: len(values)}  # yrs reads it identically


def test_origins_parent_ids_and_all_content_refs() -> None:
    structs = [
        map_item(4, vs("ab😀")),  # String, 4 units: clocks 0..3
        bytes([0x84]) + vu(7) + vu(3) + vs("c"),  # origin (7,3): clock 4
        bytes([0x44]) + vu(7) + vu(0) + vs("d"),  # right origin (7,0): clock 5
        bytes([0xC4]) + vu(7) + vu(4) + vu(7) + vu(5) + vs("e"),  # both: clock 6
        map_item(1, vu(3), key="gone"),  # Deleted, len 3: clocks 7..9
        map_item(3, vs(b"\x00\x01\x02"), key="bin"),  # Binary: 10
        map_item(5, vs('{"img": [1, 2]}'), key="emb"),  # Embed: 11
        map_item(6, vs("bold") + vs("true"), key="fmt"),  # Format: 12
        map_item(7, b"\x00", key="arr"),  # Type: YArray: 13
        map_item(7, b"\x03" + vs("div"), key="el"),  # Type: XmlElement: 14
        bytes([0x08]) + vu(0) + vu(7) + vu(13) + any_content(b"\x78", b"\x79"),  # parent ID: 15..16
        map_item(9, vs("guid") + b"\x76" + vu(1) + vs("gc") + b"\x78", key="doc"),  # Doc: 17
    ]
    update = build(group(7, 0, *structs))
    parsed = parse_update(update)
    assert parsed.structs == (StructRange(7, 0, 18),)
    assert parse_update(update, engine="yjs") == parsed


def test_content_json_and_xml_hook_dialects() -> None:
    json_update = build(group(3, 0, map_item(2, vu(2) + vs('"v"') + vs("undefined"))))
    with pytest.raises(MalformedUpdate, match="JSON content"):
        parse_update(json_update)  # yrs would read 3 strings here
    assert parse_update(json_update, engine="yjs").structs == (StructRange(3, 0, 2),)

    yjs_hook = build(group(3, 0, map_item(7, b"\x05" + vs("hook"))))
    yrs_hook = build(group(3, 0, map_item(7, b"\x05")))
    assert parse_update(yjs_hook, engine="yjs").structs == (StructRange(3, 0, 1),)
    assert parse_update(yrs_hook).structs == (StructRange(3, 0, 1),)
    assert apply_to_pycrdt(yrs_hook) == {3: 1}
    with pytest.raises(MalformedUpdate):
        parse_update(yjs_hook)
    with pytest.raises(MalformedUpdate):
        parse_update(yrs_hook, engine="yjs")

    for type_ref in (9, 15):
        update = build(group(3, 0, map_item(7, bytes([type_ref]))))
        assert parse_update(update).structs == (StructRange(3, 0, 1),)
        with pytest.raises(MalformedUpdate, match="type ref"):
            parse_update(update, engine="yjs")
    with pytest.raises(MalformedUpdate, match="type ref 7"):
        parse_update(build(group(3, 0, map_item(7, b"\x07"))))


def test_skip_only_and_zero_length_groups() -> None:
    skip_only = build(group(50, 10, b"\x0a" + vu(5)))
    parsed = parse_update(skip_only)
    assert parsed.structs == (StructRange(50, 10, 5),)
    assert parsed.writer_clients == frozenset()
    empty_group = build(vu(0) + vu(51) + vu(4))
    assert parse_update(empty_group).structs == (StructRange(51, 4, 0),)
    # A zero-length Item still counts as written (yrs drops it on apply).
    zero_item = build(group(52, 0, map_item(4, vs(""))))
    assert parse_update(zero_item).writer_clients == {52}


def test_delete_set_wire_order_and_limits() -> None:
    ds = vu(2) + vu(9) + vu(2) + vu(0) + vu(3) + vu(10) + vu(1) + vu(2**53 - 1) + vu(1)
    ds += vu(MAX_CLOCK - 1) + vu(1)
    parsed = parse_update(build(ds=ds))
    assert parsed.deletes == (
        StructRange(9, 0, 3),
        StructRange(9, 10, 1),
        StructRange(2**53 - 1, MAX_CLOCK - 1, 1),
    )
    assert parsed.structs == () and parsed.writer_clients == frozenset()


def test_non_minimal_varuints_are_accepted() -> None:
    update = b"\x81\x00" + b"\x81\x80\x00" + b"\x87\x80\x80\x00" + b"\x80\x00" + b"\x0a\x02"
    update += b"\x80\x80\x00"
    assert parse_update(update).structs == (StructRange(7, 0, 2),)


# ------------------------------------------------------------------------ rejection

BAD_UPDATES: dict[str, tuple[bytes, str]] = {
    "empty": (b"", "input ends"),
    "no delete set": (b"\x00", "input ends"),
    "trailing": (b"\x00\x00\x00", "trailing"),
    "huge group count": (vu(MAX_CLOCK) + b"\x00" * 8, "remain"),
    "group count over u32": (vu(MAX_CLOCK + 1) + b"\x00" * 8, "maximum"),
    "huge struct count": (b"\x01" + vu(10**6) + b"\x01\x00\x00", "remain"),
    "client over 2**53-1": (build(group(2**53, 0, b"\x0a\x01")), "maximum"),
    "clock over u32": (build(group(1, 2**32, b"\x0a\x01")), "maximum"),
    "clock overflow": (build(group(1, MAX_CLOCK, b"\x0a\x01")), "runs past"),
    "duplicate group": (build(group(1, 0, b"\x0a\x01"), group(1, 1, b"\x0a\x01")), "more than one"),
    "gc with flags": (build(group(1, 0, b"\x80\x01")), "flag bits"),
    "skip with flags": (build(group(1, 0, b"\x2a\x01")), "flag bits"),
    "content ref 11": (build(group(1, 0, map_item(11, b""))), "unknown struct"),
    "content ref 31": (build(group(1, 0, map_item(31, b""))), "unknown struct"),
    "parent info 2": (build(group(1, 0, b"\x04\x02" + vs("x"))), "parent info"),
    "string too long": (build(group(1, 0, map_item(4, vu(10**9) + b"ab"))), "declares"),
    "bad utf-8": (build(group(1, 0, map_item(4, vs(b"a\xff")))), "UTF-8"),
    "surrogate utf-8": (build(group(1, 0, map_item(4, vs(b"\xed\xa0\x80")))), "UTF-8"),
    "unknown any tag": (build(group(1, 0, map_item(8, any_content(b"\x73")))), "any type tag"),
    "any count too big": (build(group(1, 0, map_item(8, vu(10**6)))), "remain"),
    "any array too big": (build(group(1, 0, map_item(8, any_content(b"\x75" + vu(99))))), "remain"),
    "truncated float": (build(group(1, 0, map_item(8, any_content(b"\x7b\x00")))), "input ends"),
    "varint too big": (build(group(1, 0, map_item(8, any_content(b"\x7d" + vi(2**53))))), "2**53"),
    "invalid embed json": (build(group(1, 0, map_item(5, vs("{nope")))), "JSON"),
    "NaN in format": (build(group(1, 0, map_item(6, vs("k") + vs("NaN")))), "JSON"),
    "unknown type ref": (build(group(1, 0, map_item(7, b"\x08"))), "type ref"),
    "varuint 11 bytes": (b"\x80" * 10 + b"\x00\x00", "longer than"),
    "dup delete client": (build(ds=b"\x02\x01\x01\x00\x01\x01\x01\x02\x01"), "twice"),
    "delete past u32": (build(ds=b"\x01\x01\x01" + vu(MAX_CLOCK) + b"\x01"), "runs past"),
    "delete count big": (build(ds=b"\x01\x01" + vu(1000) + b"\x00\x01"), "remain"),
}


@pytest.mark.parametrize("name", sorted(BAD_UPDATES))
def test_rejects_malformed(name: str) -> None:
    data, fragment = BAD_UPDATES[name]
    with pytest.raises(MalformedUpdate) as info:
        parse_update(data)
    assert fragment in str(info.value)
    assert "byte offset" in str(info.value)
    assert 0 <= info.value.offset <= len(data)


def test_error_offsets_point_at_the_field() -> None:
    data = build(group(1, 0, b"\x0a\x01", b"\x80\x01"))
    with pytest.raises(MalformedUpdate) as info:
        parse_update(data)
    assert info.value.offset == data.index(b"\x80\x01")
    bad_utf8 = build(group(1, 0, map_item(4, vs(b"ok\xc3("))))
    with pytest.raises(MalformedUpdate) as info:
        parse_update(bad_utf8)
    assert bad_utf8[info.value.offset] == 0xC3
    trailing = b"\x00\x00\x07"
    with pytest.raises(MalformedUpdate) as info:
        parse_update(trailing)
    assert info.value.offset == 2


def test_exception_is_value_error_and_picklable() -> None:
    with pytest.raises(ValueError):
        parse_update(b"")
    try:
        parse_update(b"\x05")
    except MalformedUpdate as exc:
        clone = pickle.loads(pickle.dumps(exc))
        assert (clone.reason, clone.offset, str(clone)) == (exc.reason, exc.offset, str(exc))


def test_max_structs() -> None:
    doc: Doc[Any] = Doc(client_id=4)
    arr = doc.get("a", type=Array)
    for i in range(10):
        arr.insert(0, i)  # 10 separate items
    update = doc.get_update()
    assert len(parse_update(update, max_structs=10).structs) == 1
    with pytest.raises(MalformedUpdate, match="max_structs"):
        parse_update(update, max_structs=9)
    ds = b"\x01\x01\x03" + b"\x00\x01\x02\x01\x04\x01"
    assert len(parse_update(build(ds=ds), max_structs=3).deletes) == 3
    with pytest.raises(MalformedUpdate, match="max_structs"):
        parse_update(build(ds=ds), max_structs=2)


def test_max_depth() -> None:
    def nested(depth: int) -> bytes:
        return b"\x75\x01" * depth + b"\x7e"

    ok = build(group(1, 0, map_item(8, any_content(nested(64)))))
    assert parse_update(ok).writer_clients == {1}
    too_deep = build(group(1, 0, map_item(8, any_content(nested(65)))))
    with pytest.raises(MalformedUpdate, match="max_depth"):
        parse_update(too_deep)
    assert parse_update(too_deep, max_depth=65).writer_clients == {1}
    # Far beyond the interpreter's recursion limit: still just MalformedUpdate.
    with pytest.raises(MalformedUpdate, match="max_depth"):
        parse_update(build(group(1, 0, map_item(8, any_content(nested(100_000))))))
    obj = b"\x76\x01" + vs("k")
    with pytest.raises(MalformedUpdate, match="max_depth"):
        parse_update(build(group(1, 0, map_item(8, any_content(obj * 3 + b"\x7e")))), max_depth=2)
    deep_json = "[" * 65 + "]" * 65
    with pytest.raises(MalformedUpdate, match="max_depth"):
        parse_update(build(group(1, 0, map_item(5, vs(deep_json)))))
    huge_json = "[" * 100_000 + "]" * 100_000
    with pytest.raises(MalformedUpdate):
        parse_update(build(group(1, 0, map_item(5, vs(huge_json)))))


def test_bad_arguments() -> None:
    with pytest.raises(InvalidArgument):
        parse_update("not bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        parse_update(b"\x00\x00", max_structs=-1)
    with pytest.raises(ValueError):
        parse_update(b"\x00\x00", engine="automerge")  # type: ignore[arg-type]


def _sample_update() -> bytes:
    a: Doc[Any] = Doc(client_id=2**53 - 1)
    b: Doc[Any] = Doc(client_id=2**32 - 1)
    m = a.get("m", type=Map)
    for key, value in MAP_VALUES.items():
        m[key] = value
    m["nested"] = Array([Map({"t": Text("x😀")})])
    a.get("t", type=Text).insert(0, "hello", {"bold": True})
    b.apply_update(a.get_update())
    b.get("t", type=Text).insert(2, "ZZ")
    del b.get("m", type=Map)["str"]
    return merge_updates(a.get_update(), b.get_update())


SAMPLE = _sample_update()


def test_every_strict_prefix_is_rejected() -> None:
    parsed = check_against_state(SAMPLE)
    assert parsed.writer_clients == {2**53 - 1, 2**32 - 1}
    for cut in range(len(SAMPLE)):
        with pytest.raises(MalformedUpdate):
            parse_update(SAMPLE[:cut])


# ------------------------------------------------------------------------ hypothesis

FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_malformed(data: bytes) -> ParsedUpdate | None:
    try:
        return parse_update(data)
    except MalformedUpdate:
        return None


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_malformed(data: bytes) -> None:
    _parse_or_malformed(data)
    _parse_or_malformed(b"\x01" + data)  # plausible group count prefix


def _rich_update() -> bytes:
    doc: Doc[Any] = Doc(client_id=77)
    root = doc.get("root", type=Map)
    root["arr"] = Array([1, "x", Map({"inner": Text("a😀b")})])
    text = doc.get("t", type=Text)
    text.insert(0, "hello", {"bold": True, "c": {"x": [1, None]}})
    text.insert_embed(5, {"img": "x.png", "n": 1.5})
    text.format(0, 2, {"italic": "yes"})
    doc.get("xml", type=XmlFragment).children.append(
        XmlElement("p", {"class": "c"}, [XmlText("hi 👋")])
    )
    root["sub"] = Doc(guid="sub-guid")
    root["bin"] = b"\x01\x02"
    root["f"] = 0.1
    other: Doc[Any] = Doc(client_id=5)
    other.apply_update(doc.get_update())
    other.get("t", type=Text).insert(1, "Q")
    del other.get("root", type=Map)["f"]
    return merge_updates(doc.get_update(), other.get_update())


SAMPLES = [SAMPLE, _rich_update()]

mutations = st.tuples(
    st.sampled_from(range(len(SAMPLES))),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
            st.integers(min_value=0),
            st.integers(min_value=0, max_value=255),
        ),
        min_size=1,
        max_size=3,
    ),
)


def mutate(sample: int, edits: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(SAMPLES[sample])
    for op, where, byte in edits:
        i = where % (len(data) + 1)
        if op == "flip" and i < len(data):
            data[i] ^= 1 << (byte % 8)
        elif op == "set" and i < len(data):
            data[i] = byte
        elif op == "insert":
            data.insert(i, byte)
        elif op == "delete" and i < len(data):
            del data[i]
        elif op == "truncate" and where % 8 == 0:
            del data[i:]
    return bytes(data)


@FUZZ
@given(mutations)
def test_mutated_updates_only_raise_malformed(
    mutation: tuple[int, list[tuple[str, int, int]]],
) -> None:
    parsed = _parse_or_malformed(mutate(*mutation))
    if parsed is not None:
        for r in (*parsed.structs, *parsed.deletes):
            assert 0 <= r.client <= MAX_CLIENT_ID
            assert r.clock >= 0 and r.end <= MAX_CLOCK
        assert parsed.writer_clients <= parsed.struct_clients


@FUZZ
@given(mutations)
def test_accepted_mutations_apply_within_reported_ranges(
    mutation: tuple[int, list[tuple[str, int, int]]],
) -> None:
    """Differential check against yrs: whatever pycrdt integrates from an update we
    accepted lies inside the struct ranges we reported for it."""
    data = mutate(*mutation)
    parsed = _parse_or_malformed(data)
    if parsed is None:
        return
    doc: Doc[Any] = Doc()
    try:
        doc.apply_update(data)
    except (ValueError, RuntimeError):
        return  # semantically invalid (e.g. a parent that is not a type): yrs refuses
    ranges = {r.client: r for r in parsed.structs}
    for client, clock in decode_state_vector(doc.get_state()).items():
        assert client in ranges
        assert clock <= ranges[client].end


json_leaf = st.none() | st.booleans() | st.text(max_size=8) | st.floats(allow_nan=False, width=32)
json_values = st.recursive(
    json_leaf | st.integers(min_value=-(2**31), max_value=2**31),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
map_values = json_values | st.binary(max_size=8)


@settings(max_examples=60, deadline=None)
@given(
    client_id=st.sampled_from(CLIENT_IDS),
    sets=st.lists(st.tuples(st.text(max_size=3), map_values), min_size=1, max_size=6),
    text=st.text(max_size=12),
    deletions=st.integers(min_value=0, max_value=3),
)
def test_generated_documents_match_state_vector(
    client_id: int, sets: list[tuple[str, object]], text: str, deletions: int
) -> None:
    doc: Doc[Any] = Doc(client_id=client_id)
    m = doc.get("m", type=Map)
    for key, value in sets:
        m[key] = value
    t = doc.get("t", type=Text)
    t.insert(0, text)
    if text:
        del t[0 : min(deletions, len(t))]
    update = doc.get_update()
    parsed = check_against_state(update)
    written = decode_state_vector(doc.get_state())
    assert parsed.writer_clients == set(written)
    overwrites = len(sets) - len({k for k, _ in sets})
    assert sum(r.length for r in parsed.deletes) >= overwrites
    assert bool(parsed.deletes) == bool(overwrites or (text and deletions))
    for r in parsed.deletes:
        assert r.client == client_id and r.end <= written[client_id]
    for chunk in (update[: len(update) // 2], update + b"\x00"):
        with pytest.raises(MalformedUpdate):
            parse_update(chunk)


def test_malformed_input_errors_are_in_the_tree() -> None:
    with pytest.raises(MalformedUpdate) as update_error:
        parse_update(b"\x01")
    assert isinstance(update_error.value, RemoteProtocolError)
    with pytest.raises(MalformedStateVector) as sv_error:
        statevector.decode_state_vector(b"\x05\x01")
    assert isinstance(sv_error.value, RemoteProtocolError)
    assert isinstance(sv_error.value, ValueError)  # callers catching ValueError still work
