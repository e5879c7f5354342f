"""The ownership rule: what one writer's update may change (sans I/O).

A store's token proves who it is, not that its updates are sane.  Before the
relay applies an update from writer W (sync sessions, y-protocols followers
and the relay's own writer alike) :func:`check_update` decides, from the
parsed update alone plus a few facts passed in, whether every change in it
is W's to make:

* **items** only under W's registered client ids (items of other writers that
  the relay already holds are re-sent no-ops and are let through);
* **deletes** only of W's own items, or of items the relay has already
  deleted (a state-vector diff always carries the whole delete set);
* **keys**: every item sits in the root map under a key that the document
  type's key grammar assigns to the item's own client id (the table below).
  An item that overwrites a key names it only through the item it replaces
  (its *origin*), so such an item must replace an item of its own client:
  by induction every key W writes is W's;
* **values** that pass the document type's schema (types, ranges, sizes);
* **timestamps** (LWW slots, sale ids, sales months) no further ahead of the
  relay's clock than the allowed drift.

=============  =====================================  ==============================
data type      key (``|`` is the unit separator)       value
=============  =====================================  ==============================
stock          ``sku|W``                               ``[increments, decrements]``
catalog        ``sku|field|W``                         LWW slot (below)
locations      ``location|field|W`` (W's own location) LWW slot
resolutions/L  ``conflict id|field|W`` (W at L)        LWW slot
conflicts      ``conflict id|field|W`` (the relay)     LWW slot
sales          ``sale id`` (the id ends with W)        sale record JSON, ``by`` = W's
               ``sale id|void|W``, ``…|remap:SKU|W``   replica; annotations JSON
=============  =====================================  ==============================

W is the decimal Yjs client id (hexadecimal inside a sale id).  An LWW slot is
``[wall_ms, counter, replica_id, json, field, seen]`` with ``replica_id`` the
writer's own and ``field`` repeating the key's (see :mod:`tiendasync.crdt.lww`).
Only the relay's own writer may add ``origin`` (a generation's seeded copy of
another writer's winner, keeping its timestamp, replica id and writer).
Sales are write-once: a sales item never replaces another.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tiendasync.crdt.counter import decode_counter_slot
from tiendasync.crdt.keys import ROOT, SEP
from tiendasync.crdt.lww import TOMBSTONE, decode_slot
from tiendasync.errors import InvalidArgument
from tiendasync.model.actions import ACTIONS
from tiendasync.model.docnames import PRODUCT_INTEGER_FIELDS, DocName, parse_doc
from tiendasync.model.names import MAX_SAFE_INTEGER, check_name
from tiendasync.model.sales import sale_id_writer, sale_record_problem, sale_time_ms
from tiendasync.protocol import CLOSE_FORBIDDEN, CLOSE_PROTOCOL, CloseCode
from tiendasync.protocol.statevector import decode_state_vector
from tiendasync.protocol.yjs_update import (
    REF_ANY,
    REF_DELETED,
    ItemInfo,
    ParsedUpdate,
    StructRange,
    parse_update,
)
from tiendasync.relay.docs import DocCache
from tiendasync.relay.state import RelaySession

__all__ = [
    "DEFAULT_MAX_DRIFT_MS",
    "MAX_FIELD_JSON_BYTES",
    "OwnershipGate",
    "Refusal",
    "Writer",
    "check_update",
    "deleted_in",
    "writer_of",
]

#: How far ahead of the relay's clock a writer's timestamps may be.
DEFAULT_MAX_DRIFT_MS = 5 * 60 * 1000
#: The largest JSON text of one LWW field or one ledger annotation.
MAX_FIELD_JSON_BYTES = 16 * 1024
#: The largest JSON text of one sale record.
MAX_SALE_JSON_BYTES = 256 * 1024
#: The longest field name of an LWW record.
MAX_FIELD_NAME = 100


@dataclass(frozen=True)
class Writer:
    """Who sends an update, as the relay knows it.

    ``owned``: the client ids registered to this writer (every incarnation of
    the replica); ``location``: the location its token is for (``None``: not
    tied to one); ``relay``: the relay's own writer, the only one that writes
    ``conflicts`` and records of any location.
    """

    owned: frozenset[int]
    replica_id: str
    location: str | None = None
    relay: bool = False


@dataclass(frozen=True)
class Refusal:
    """Why an update is refused: the close code and a reason for the writer."""

    code: int
    reason: str


class _Refused(Exception):
    def __init__(self, reason: str, code: int = CLOSE_FORBIDDEN) -> None:
        super().__init__(reason)
        self.refusal = Refusal(code, reason[:300])


def _clock_ahead(what: str, wall_ms: int, now_ms: int) -> _Refused:
    ahead_s = (wall_ms - now_ms) / 1000
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(wall_ms / 1000))
    return _Refused(
        f"{what} is dated {when} UTC, {ahead_s:.0f} s ahead of the relay's clock: "
        "fix this machine's clock",
        CloseCode.CLOCK_AHEAD,
    )


@dataclass(frozen=True)
class _Context:
    doc: DocName
    writer: Writer
    now_ms: int
    max_drift_ms: int

    @property
    def latest_ms(self) -> int:
        return self.now_ms + self.max_drift_ms


def check_update(
    doc: DocName,
    parsed: ParsedUpdate,
    writer: Writer,
    *,
    known: Mapping[int, int],
    deleted: Callable[[StructRange], bool],
    now_ms: int,
    max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
) -> Refusal | None:
    """``None`` if ``writer`` may make every change in ``parsed`` to ``doc``, else why not.

    ``parsed`` must come from ``parse_update(..., items=True)``.  ``known``:
    the relay's state vector of the document (clock per client);
    ``deleted(range)``: whether the relay's document already has that whole
    range deleted (asked only for ranges of other writers).  Pure: the same
    arguments always give the same answer.
    """
    ctx = _Context(doc, writer, now_ms, max_drift_ms)
    try:
        if _changes_anything(parsed, writer.owned, known):
            _check_doc(ctx)
        _check_structs(ctx, parsed, known)
        for item in parsed.items:
            if item.client in writer.owned and item.clock + item.length > known.get(item.client, 0):
                _check_item(ctx, item)
        for r in parsed.deletes:
            if r.length and r.client not in writer.owned and not deleted(r):
                raise _Refused(f"the update deletes data of another writer (client {r.client})")
    except _Refused as exc:
        return exc.refusal
    return None


def _changes_anything(
    parsed: ParsedUpdate, owned: frozenset[int], known: Mapping[int, int]
) -> bool:
    """Whether the update holds a new item or a delete of the writer's own.

    A re-sent or empty update (a full catch-up sends one per document) changes
    nothing, whatever the document.
    """
    return any(r.client in owned and r.end > known.get(r.client, 0) for r in parsed.structs) or any(
        r.length and r.client in owned for r in parsed.deletes
    )


def _check_doc(ctx: _Context) -> None:
    doc, writer = ctx.doc, ctx.writer
    if doc.data_type == "conflicts" and not writer.relay:
        raise _Refused("only the relay writes the conflicts document")
    if doc.data_type == "resolutions" and not writer.relay and doc.location != writer.location:
        raise _Refused(f"resolution requests of {doc.location!r} are not yours to write")
    if doc.period is not None:
        latest = _month_of_minute(ctx.latest_ms // 60_000)
        if doc.period > latest:
            raise _Refused(
                f"sales of {doc.period} are in the future of the relay's clock "
                f"({latest}): fix this machine's clock",
                CloseCode.CLOCK_AHEAD,
            )


@functools.lru_cache(maxsize=4)
def _month_of_minute(minute: int) -> str:
    """``YYYY-MM`` (UTC) of a minute since the epoch (one ``strftime`` a minute, not per update)."""
    return time.strftime("%Y-%m", time.gmtime(minute * 60))


def _check_structs(ctx: _Context, parsed: ParsedUpdate, known: Mapping[int, int]) -> None:
    for r in parsed.structs:
        if r.client not in ctx.writer.owned and r.end > known.get(r.client, 0):
            raise _Refused("the update contains items of another writer")


def _check_item(ctx: _Context, item: ItemInfo) -> None:
    if item.ref not in (REF_ANY, REF_DELETED):
        raise _Refused("the update holds content of a kind no tiendasync document uses")
    if item.origin is not None or item.right_origin is not None:
        _check_replacement(ctx, item)
        value_key = None
    else:
        if item.parent_name != ROOT or item.key is None:
            raise _Refused("the update writes outside the document's root map")
        _check_key(ctx, item.key, item.client)
        value_key = item.key
    if item.ref == REF_ANY:
        if item.values is None or len(item.values) != 1:
            raise _Refused("a map entry holds exactly one value")
        _check_value(ctx, value_key, item.client, item.values[0])


def _check_replacement(ctx: _Context, item: ItemInfo) -> None:
    """An item placed next to others inherits their key: they must be its own client's."""
    if ctx.doc.data_type == "sales":
        raise _Refused("sales are write-once: a sale or annotation cannot be rewritten")
    for neighbour in (item.origin, item.right_origin):
        if neighbour is None:
            continue
        client, clock = neighbour
        if client != item.client or clock >= item.clock:
            raise _Refused("the update overwrites a key another writer owns")


# -- keys ------------------------------------------------------------------------------


def _name(value: str, what: str) -> None:
    try:
        check_name(value, what)
    except InvalidArgument as exc:
        raise _Refused(str(exc)) from exc


def _check_key(ctx: _Context, key: str, client: int) -> None:
    kind = ctx.doc.data_type
    if kind == "stock":
        entity, _, owner = key.rpartition(SEP)
        _name(entity, "SKU")
        if owner != str(client):
            raise _Refused(f"stock slot {entity!r} belongs to writer {owner}, not to {client}")
    elif kind == "sales":
        _check_sales_key(ctx, key, client)
    else:
        parts = key.split(SEP)
        if len(parts) != 3:
            raise _Refused(f"{kind} keys are record|field|writer")
        record, field, owner = parts
        _name(record, "record name")
        if field != TOMBSTONE:
            _name(field, "field name")
            if len(field) > MAX_FIELD_NAME:
                raise _Refused(f"field names are at most {MAX_FIELD_NAME} characters")
        if owner != str(client):
            raise _Refused(f"{kind} slot of {record!r} belongs to writer {owner}, not to {client}")
        writer = ctx.writer
        if (
            kind == "locations"
            and not writer.relay
            and writer.location is not None
            and record != writer.location
        ):
            raise _Refused(f"the record of location {record!r} is not yours to write")


def _check_sales_key(ctx: _Context, key: str, client: int) -> None:
    sale_id, _, rest = key.partition(SEP)
    owner_of_id = sale_id_writer(sale_id)
    if owner_of_id is None:
        raise _Refused(f"{sale_id[:40]!r} is not a sale id")
    if not rest:
        if owner_of_id != client:
            raise _Refused(f"sale {sale_id} was made by another writer")
        wall = sale_time_ms(sale_id)
        if wall > ctx.latest_ms:
            raise _clock_ahead(f"sale {sale_id}", wall, ctx.now_ms)
        period = time.strftime("%Y-%m", time.gmtime(wall / 1000))
        if period != ctx.doc.period:
            raise _Refused(f"sale {sale_id} belongs to the sales of {period}")
        return
    tag, _, owner = rest.partition(SEP)
    if owner != str(client):
        raise _Refused(f"annotation {tag!r} of sale {sale_id} belongs to another writer")
    if tag != "void":
        sku = tag.removeprefix("remap:")
        if sku == tag:
            raise _Refused(f"unknown sale annotation {tag[:40]!r}")
        _name(sku, "SKU")


# -- values ----------------------------------------------------------------------------


def _check_value(ctx: _Context, key: str | None, client: int, value: object) -> None:
    kind = ctx.doc.data_type
    if kind == "stock":
        if decode_counter_slot(f"x{SEP}{client}", value) is None:
            raise _Refused("a stock slot is [increments, decrements]: exact integers 0..2**53-1")
    elif kind == "sales":
        if key is not None:  # sales items always name their key (no replacements)
            _check_sales_value(ctx, key, value)
    else:
        _check_slot(ctx, key, client, value)


def _json_text(value: object, limit: int, what: str) -> object:
    if not isinstance(value, str) or len(value) > limit:
        raise _Refused(f"{what} is JSON text of at most {limit} bytes")
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as exc:
        raise _Refused(f"{what} is not JSON") from exc


def _check_sales_value(ctx: _Context, key: str, value: object) -> None:
    sale_id, _, rest = key.partition(SEP)
    if not rest:
        record = _json_text(value, MAX_SALE_JSON_BYTES, "a sale record")
        problem = sale_record_problem(sale_id, record)
        if problem is not None:
            raise _Refused(problem)
        assert isinstance(record, dict)
        if record["by"] != ctx.writer.replica_id and not ctx.writer.relay:
            raise _Refused(f"sale {sale_id} claims to be made by {record['by']!r}")
        return
    note = _json_text(value, MAX_FIELD_JSON_BYTES, "a sale annotation")
    if not isinstance(note, dict) or not isinstance(note.get("by"), str):
        raise _Refused("a sale annotation is a JSON object with 'by'")
    if rest.startswith("remap:"):
        target = note.get("to")
        if not isinstance(target, str):
            raise _Refused("a remap annotation names the SKU it remaps 'to'")
        _name(target, "SKU")


def _check_slot(ctx: _Context, key: str | None, client: int, value: object) -> None:
    """An LWW slot: the new layout, the writer's own replica id, a sane time, a sane value.

    The relay's own writer may also write a seeded copy (a seventh element,
    ``origin``, and the original writer's replica id): a store may not, or it
    could pass its edit off as another writer's.
    """
    if isinstance(value, list) and len(value) == 7 and ctx.writer.relay:
        _check_copy(ctx, key, client, value)
        return
    if not isinstance(value, list) or len(value) != 6 or not isinstance(value[4], str):
        raise _Refused("an LWW slot is [wall_ms, counter, replica_id, json, field, seen]")
    field = value[4]
    if key is not None and key.split(SEP)[1] != field:
        raise _Refused("an LWW slot's field differs from its key")
    write = decode_slot(field, client, value)
    if write is None:
        raise _Refused(f"bad LWW slot for field {field[:40]!r}")
    if write.replica_id != ctx.writer.replica_id:
        raise _Refused(f"a slot of {ctx.writer.replica_id!r} claims to be {write.replica_id!r}'s")
    if write.wall_ms > ctx.latest_ms:
        raise _clock_ahead(f"the edit of {field[:40]!r}", write.wall_ms, ctx.now_ms)
    data = _json_text(write.json_value, MAX_FIELD_JSON_BYTES, f"field {field[:40]!r}")
    if field == TOMBSTONE:
        if data is not True:
            raise _Refused("a tombstone's value is true")
        return
    _check_field(ctx.doc.data_type, field, data)


def _check_copy(ctx: _Context, key: str | None, client: int, value: list[object]) -> None:
    """A seeded copy by the relay's writer: well formed, of its key's field, a sane value."""
    field = value[4]
    if not isinstance(field, str) or (key is not None and key.split(SEP)[1] != field):
        raise _Refused("a seeded LWW slot's field differs from its key")
    write = decode_slot(field, client, value)
    if write is None or write.origin is None:
        raise _Refused(f"bad seeded LWW slot for field {field[:40]!r}")
    _json_text(write.json_value, MAX_FIELD_JSON_BYTES, f"field {field[:40]!r}")


def _exact_non_negative(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SAFE_INTEGER


def _check_field(kind: str, field: str, data: object) -> None:
    if kind == "catalog" and field in PRODUCT_INTEGER_FIELDS and not _exact_non_negative(data):
        raise _Refused(f"{field} is an exact non-negative integer (cents)")
    if kind == "catalog" and field == "name" and not isinstance(data, str):
        raise _Refused("a product's name is text")
    if kind == "resolutions":
        if field == "action" and data not in ACTIONS:
            raise _Refused(f"unknown resolution action {str(data)[:40]!r}")
        if field == "params" and not isinstance(data, dict):
            raise _Refused("a resolution's params are a JSON object")


def _covered(r: StructRange, ranges: list[StructRange]) -> bool:
    """Whether ``r`` lies inside the union of ``ranges`` (all of one client)."""
    start, end = r.clock, r.end
    for d in sorted(ranges, key=lambda d: d.clock):
        if d.clock > start:
            return False
        start = max(start, d.end)
        if start >= end:
            return True
    return start >= end


def deleted_in(delete_set: list[StructRange]) -> Callable[[StructRange], bool]:
    """The ``deleted`` argument of :func:`check_update` for a document's delete set."""
    by_client: dict[int, list[StructRange]] = {}
    for d in delete_set:
        by_client.setdefault(d.client, []).append(d)
    return lambda r: _covered(r, by_client.get(r.client, []))


def writer_of(session: RelaySession) -> Writer:
    """The writer a session's updates come from."""
    return Writer(frozenset(session.owned), session.replica_id or "", session.location)


class OwnershipGate:
    """:func:`check_update` against the relay's in-memory documents.

    ``clock`` gives the wall-clock time in seconds (the pump's, passed in).
    """

    def __init__(
        self,
        docs: DocCache,
        *,
        clock: Callable[[], float],
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
    ) -> None:
        self.docs = docs
        self.clock = clock
        self.max_drift_ms = max_drift_ms

    def refusal(
        self,
        tenant: str,
        doc: str,
        parsed: ParsedUpdate,
        writer: Writer,
        *,
        state_vector: bytes | None = None,
    ) -> Refusal | None:
        """Why ``writer`` may not apply ``parsed`` to ``tenant``'s ``doc`` (None: it may).

        ``state_vector``: the relay doc's state vector now, if the caller has it.
        """
        try:
            name = parse_doc(doc)
        except InvalidArgument:
            return Refusal(CLOSE_PROTOCOL, f"bad document name {doc[:100]!r}")
        rdoc = self.docs.get(tenant, doc)
        deleted: Callable[[StructRange], bool] | None = None

        def already_deleted(r: StructRange) -> bool:
            nonlocal deleted
            if deleted is None:  # only for foreign deletes: rare, and costs a full encode
                state = rdoc.doc.get_state()
                deleted = deleted_in(list(parse_update(rdoc.doc.get_update(state)).deletes))
            return deleted(r)

        return check_update(
            name,
            parsed,
            writer,
            known=rdoc.clocks() if state_vector is None else decode_state_vector(state_vector),
            deleted=already_deleted,
            now_ms=int(self.clock() * 1000),
            max_drift_ms=self.max_drift_ms,
        )
