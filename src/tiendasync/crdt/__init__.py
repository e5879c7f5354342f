"""CRDT views over pycrdt documents.

Each view owns the flat root map of one pycrdt ``Doc`` (see DESIGN.md: keys
are flat, never nested shared maps) and keeps an in-memory index of it that it
updates from the doc's change events, so that local and remote writes are read
the same way.
"""

from tiendasync.crdt.counter import PNCounter
from tiendasync.crdt.keys import MAX_SAFE_INTEGER, ROOT, check_name, check_safe_int
from tiendasync.crdt.ledger import Ledger
from tiendasync.crdt.lww import LWWMap

#: The view class for each CRDT name of the data-type table
#: (:data:`tiendasync.model.docnames.DATA_TYPES`).
VIEW_OF_CRDT: dict[str, type[PNCounter | LWWMap | Ledger]] = {
    "counter": PNCounter,
    "lww": LWWMap,
    "ledger": Ledger,
}

__all__ = [
    "MAX_SAFE_INTEGER",
    "ROOT",
    "VIEW_OF_CRDT",
    "LWWMap",
    "Ledger",
    "PNCounter",
    "check_name",
    "check_safe_int",
]
