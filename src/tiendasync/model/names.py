"""Names and integers every layer checks the same way.

SKUs, locations and record names become parts of CRDT keys joined by the
ASCII unit separator (see :mod:`tiendasync.crdt.keys`), which is why they may
not contain control characters.  Quantities and cents travel as Yjs numbers
(IEEE doubles), exact only below 2**53.
"""

from __future__ import annotations

import re

from tiendasync.errors import InvalidArgument

__all__ = ["MAX_NAME_LENGTH", "MAX_SAFE_INTEGER", "check_name", "check_safe_int"]

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
