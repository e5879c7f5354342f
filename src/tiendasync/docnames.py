"""Names of the documents a tenant's data is split into.

``catalog``                 products (LWW records)
``locations``               stores and warehouses (LWW records)
``stock/<location>``        PN-counters per SKU at one location
``sales/<location>/<YYYY-MM>``  sales tickets of one location and month (ledger)
``conflicts``               conflicts opened by the relay (LWW records)
"""

from __future__ import annotations

import time

from .crdt.keys import check_name
from .errors import InvalidArgument

__all__ = ["CATALOG", "CONFLICTS", "LOCATIONS", "data_type_of", "sales_doc", "stock_doc"]

CATALOG = "catalog"
LOCATIONS = "locations"
CONFLICTS = "conflicts"
MAX_DOC_NAME = 300


def stock_doc(location: str) -> str:
    return f"stock/{location}"


def sales_doc(location: str, wall_ms: int) -> str:
    period = time.strftime("%Y-%m", time.gmtime(wall_ms / 1000))
    return f"sales/{location}/{period}"


def location_of(doc: str) -> str | None:
    """The location a stock or sales document belongs to."""
    kind, _, rest = doc.partition("/")
    if kind == "stock":
        return rest
    if kind == "sales":
        return rest.rpartition("/")[0]
    return None


def data_type_of(doc: str) -> str:
    """The data type of a document name; raises InvalidArgument for bad names."""
    if not isinstance(doc, str) or not doc or len(doc) > MAX_DOC_NAME:
        raise InvalidArgument(f"bad document name {doc!r}")
    if doc in (CATALOG, LOCATIONS, CONFLICTS):
        return doc
    kind, _, rest = doc.partition("/")
    if kind == "stock" and rest:
        check_name(rest, "location")
        return "stock"
    if kind == "sales":
        location, _, period = rest.rpartition("/")
        if location and len(period) == 7 and period[4] == "-" and period.replace("-", "").isdigit():
            check_name(location, "location")
            return "sales"
    raise InvalidArgument(f"bad document name {doc!r}")
