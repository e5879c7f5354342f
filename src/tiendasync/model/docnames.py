"""Documents and data types: one table every layer reads.

A tenant's data is split into documents, each of one data type:

``catalog``                     products (LWW records)
``locations``                   stores and warehouses (LWW records)
``stock/<location>``            PN-counters per SKU at one location
``sales/<location>/<YYYY-MM>``  sales tickets of one location and month (ledger)
``conflicts``                   conflicts opened by the relay (LWW records; only the relay writes)
``resolutions/<location>``      a location's requests to resolve conflicts (LWW records)

:data:`DATA_TYPES` says, per data type, which CRDT holds it and its default
sync priority; :func:`parse_doc` is the one parser of document names.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from tiendasync.errors import InvalidArgument
from tiendasync.model.names import check_name

__all__ = [
    "CATALOG",
    "CONFLICTS",
    "DATA_TYPES",
    "LOCATIONS",
    "MAX_DOC_NAME",
    "PRODUCT_INTEGER_FIELDS",
    "DataType",
    "DocName",
    "before_sales_floor",
    "data_type_of",
    "is_period",
    "location_of",
    "parse_doc",
    "resolutions_doc",
    "sales_doc",
    "sales_floor",
    "stock_doc",
]

CATALOG = "catalog"
LOCATIONS = "locations"
CONFLICTS = "conflicts"
MAX_DOC_NAME = 300

#: Product fields with a fixed meaning: non-negative exact integers (cents).
PRODUCT_INTEGER_FIELDS = ("price_cents", "cost_cents")


@dataclass(frozen=True)
class DataType:
    """One family of documents."""

    name: str
    #: The CRDT view over its documents: ``"lww"``, ``"counter"`` or ``"ledger"``.
    crdt: str
    #: Higher syncs first and weighs more in conflict priority.
    default_priority: int
    #: How its documents are named.
    pattern: str


#: Every data type, highest default priority first.
DATA_TYPES: dict[str, DataType] = {
    t.name: t
    for t in (
        DataType("sales", "ledger", 10, "sales/<location>/<YYYY-MM>"),
        DataType("stock", "counter", 8, "stock/<location>"),
        DataType("conflicts", "lww", 7, CONFLICTS),
        DataType("resolutions", "lww", 7, "resolutions/<location>"),
        DataType("catalog", "lww", 5, CATALOG),
        DataType("locations", "lww", 5, LOCATIONS),
    )
}


@dataclass(frozen=True)
class DocName:
    """A parsed document name."""

    name: str
    data_type: str
    #: The location of a stock or sales document, else ``None``.
    location: str | None = None
    #: ``YYYY-MM`` of a sales document, else ``None``.
    period: str | None = None


def stock_doc(location: str) -> str:
    return f"stock/{location}"


def resolutions_doc(location: str) -> str:
    return f"resolutions/{location}"


def sales_doc(location: str, wall_ms: int) -> str:
    period = time.strftime("%Y-%m", time.gmtime(wall_ms / 1000))
    return f"sales/{location}/{period}"


def parse_doc(doc: object) -> DocName:
    """Parse a document name; raises InvalidArgument for bad names."""
    if not isinstance(doc, str):
        raise InvalidArgument(f"bad document name {doc!r}")
    return _parse_doc_name(str(doc))


# The relay checks every update's document name several times: the good names
# (a few per store) are parsed once.  A bad name raises, and is never cached.
@functools.lru_cache(maxsize=4096)
def _parse_doc_name(doc: str) -> DocName:
    if not doc or len(doc) > MAX_DOC_NAME:
        raise InvalidArgument(f"bad document name {doc!r}")
    if doc in (CATALOG, LOCATIONS, CONFLICTS):
        return DocName(doc, doc)
    kind, _, rest = doc.partition("/")
    if kind in ("stock", "resolutions") and rest:
        check_name(rest, "location")
        return DocName(doc, kind, location=rest)
    if kind == "sales":
        location, _, period = rest.rpartition("/")
        if location and len(period) == 7 and period[4] == "-" and period.replace("-", "").isdigit():
            check_name(location, "location")
            return DocName(doc, "sales", location=location, period=period)
    raise InvalidArgument(f"bad document name {doc!r}")


def data_type_of(doc: str) -> str:
    """The data type of a document name; raises InvalidArgument for bad names."""
    return parse_doc(doc).data_type


def location_of(doc: str) -> str | None:
    """The location a stock or sales document belongs to (``None`` for others or bad names)."""
    try:
        return parse_doc(doc).location
    except InvalidArgument:
        return None


def is_period(value: object) -> bool:
    """Whether ``value`` is a sales period, ``YYYY-MM`` with a month 01..12."""
    return (
        isinstance(value, str)
        and len(value) == 7
        and value[4] == "-"
        and value[:4].isdigit()
        and value[5:].isdigit()
        and 1 <= int(value[5:]) <= 12
    )


def sales_floor(wall_ms: int, months: int) -> str:
    """The oldest sales period a replica keeping ``months`` months holds at ``wall_ms``:
    that month and the ``months - 1`` before it (``months`` >= 1)."""
    t = time.gmtime(wall_ms / 1000)
    index = t.tm_year * 12 + (t.tm_mon - 1) - (months - 1)
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def before_sales_floor(doc: str, floor: str | None) -> bool:
    """Whether ``doc`` is a sales document of a period before ``floor`` (``None``: no
    floor, every month is kept).  Periods compare as their ``YYYY-MM`` strings."""
    if floor is None or not doc.startswith("sales/"):
        return False
    try:
        period = parse_doc(doc).period
    except InvalidArgument:
        return False
    return period is not None and period < floor
