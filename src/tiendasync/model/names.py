"""Names and integers every layer checks the same way.

SKUs, locations and record names become parts of CRDT keys joined by the
ASCII unit separator (see :mod:`tiendasync.crdt.keys`), which is why they may
not contain control characters.  Quantities and cents travel as Yjs numbers
(IEEE doubles), exact only below 2**53.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from tiendasync.errors import InvalidArgument

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_SAFE_INTEGER",
    "all_safe_ints",
    "check_name",
    "check_names",
    "check_safe_int",
]

#: Yjs stores numbers as IEEE doubles: integers are exact only below 2**53.
MAX_SAFE_INTEGER = 2**53 - 1
MAX_NAME_LENGTH = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is usable as a SKU, location or record name.

    Raises :class:`InvalidArgument` for non-strings, empty strings, strings
    longer than ``MAX_NAME_LENGTH`` or containing control characters.
    """
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string, got {type(value).__name__}")
    if not value or not value.strip():
        raise InvalidArgument(f"{what} must not be empty")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"{what} is longer than {MAX_NAME_LENGTH} characters")
    if _CONTROL.search(value):
        raise InvalidArgument(f"{what} {value!r} contains control characters")
    return value


def check_names(values: Collection[Any], what: str) -> None:
    """:func:`check_name` of every one of ``values`` (a bulk import's SKUs).

    The common case (all valid) is a few passes at C speed over the whole
    collection; the per-value check runs only to name the first refusal.
    """
    if not values:
        return
    if (
        set(map(type, values)) == {str}
        and min(map(len, map(str.strip, values))) > 0
        and max(map(len, values)) <= MAX_NAME_LENGTH
        and _CONTROL.search("".join(values)) is None
    ):
        return
    for value in values:
        check_name(value, what)


def all_safe_ints(values: Collection[Any], minimum: int) -> bool:
    """Whether every one of ``values`` is an exact ``int`` (not a bool, not a subclass)
    from ``minimum`` (>= 0) to 2**53 - 1, in passes at C speed (a bulk import's
    quantities).  ``False`` says only "look at them one by one" (:func:`check_safe_int`)."""
    return (
        set(map(type, values)) <= {int}
        and (not values or min(values) >= minimum)
        and (not values or max(values) <= MAX_SAFE_INTEGER)
    )


def check_safe_int(value: object, what: str, *, positive: bool = False) -> int:
    """Return ``value`` if it is an exact integer Yjs can carry.

    Refuses bools, floats (even ``2.0``: quantities and cents are integers),
    magnitudes of 2**53 or more and, with ``positive``, zero and negatives.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{what} must be an integer, got {type(value).__name__} {value!r}")
    if abs(value) > MAX_SAFE_INTEGER:
        raise InvalidArgument(f"{what} {value} is too large (limit is 2**53 - 1)")
    if positive and value <= 0:
        raise InvalidArgument(f"{what} must be greater than zero, got {value}")
    return value
