"""Key layout shared by the CRDT views.

Root-map keys are made of parts joined by ``SEP`` (the ASCII unit separator),
which is why names may not contain control characters
(:func:`tiendasync.model.names.check_name`).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pycrdt

from tiendasync.model.names import MAX_NAME_LENGTH, MAX_SAFE_INTEGER, check_name, check_safe_int

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_SAFE_INTEGER",
    "ROOT",
    "SEP",
    "bulk_setter",
    "check_name",
    "check_safe_int",
    "paused_gc",
]

#: Name of the root map in every document.  Short, because it is on the wire.
ROOT = "t"
SEP = "\x1f"


@contextmanager
def bulk_setter(
    root: pycrdt.Map,  # type: ignore[type-arg]
    origin: str,
) -> Iterator[Callable[[str, Any], None]]:
    """One transaction of ``root``'s doc and ``set(key, value)``: ``root[key] = value``
    for a plain (JSON) value, inside that transaction.

    ``set`` calls pycrdt's native insert, which item assignment reaches through a
    transaction context of its own per key (most of the cost of writing many
    keys).  It relies on pycrdt internals, which is why pycrdt is pinned to one
    version; the bulk-import property tests compare the result with item
    assignment.
    """
    with root.doc.transaction(origin=origin) as txn:
        raw = txn._txn  # noqa: SLF001  (see above)
        yield partial(root.integrated.insert, raw)  # a C-level call: no Python frame per key


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off for the duration of a bulk write.

    A bulk write allocates hundreds of thousands of objects that all stay
    alive (slot values, index entries), and every allocation threshold runs a
    collection over the growing heap: that was a third of a 100,000-product
    import.  Nothing a bulk write creates is cyclic garbage.  Left alone when
    the collector is already off; turned back on afterwards otherwise.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
