"""Which documents a replica may write: the rule the relay enforces and tells the replica.

The relay decides (``tiendasync.relay.policy.Grants``); the replica hears the
same rule in its WELCOME and sends nothing the relay would refuse, so one
document it may not write never stops the sync of the others.

Patterns match segment by segment (``/``-separated): ``*`` and ``?`` never
cross a ``/``, so ``sales/tienda-2/*`` matches ``sales/tienda-2/2026-01`` but
not the sales of a location named ``tienda-2/x``; the pattern ``*`` alone
matches every document.
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass
from typing import Any

from tiendasync.errors import InvalidArgument
from tiendasync.model.docnames import CONFLICTS, LOCATIONS, parse_doc

__all__ = ["GRANTS_KEY", "WriteGrants", "matches", "own_location_doc", "segment_match"]

#: The key of a WELCOME's config under which the relay tells the replica its grants.
GRANTS_KEY = "grants"


def segment_match(pattern: str, doc: str) -> bool:
    """``pattern`` matches ``doc`` segment by segment (see the module doc)."""
    if pattern == "*":
        return True
    wanted, parts = pattern.split("/"), doc.split("/")
    return len(wanted) == len(parts) and all(
        fnmatch.fnmatchcase(part, want) for part, want in zip(parts, wanted, strict=True)
    )


@functools.lru_cache(maxsize=65536)
def matches(patterns: tuple[str, ...], doc: str) -> bool:
    """Whether ``doc`` matches one of ``patterns`` (cached: fan-out asks per update)."""
    return any(segment_match(p, doc) for p in patterns)


@functools.lru_cache(maxsize=65536)
def own_location_doc(location: str, doc: str) -> bool:
    """``doc`` is one a store at ``location`` always writes: its stock, its sales,
    its resolution requests, and the shared ``locations`` document (where the
    ownership rule lets it write only its own record)."""
    if doc == LOCATIONS:
        return True
    try:
        name = parse_doc(doc)
    except InvalidArgument:
        return False
    return name.data_type in ("stock", "sales", "resolutions") and name.location == location


def _is_resolutions(doc: str) -> bool:
    try:
        return parse_doc(doc).data_type == "resolutions"
    except InvalidArgument:
        return False


@dataclass(frozen=True)
class WriteGrants:
    """The documents a replica may write.

    A replica whose token is tied to a ``location`` always writes that
    location's documents (:func:`own_location_doc`) plus what ``patterns``
    add.  Nobody but the relay writes ``conflicts``, whatever the patterns.
    """

    patterns: tuple[str, ...] = ("*",)
    location: str | None = None

    def can_write(self, doc: str) -> bool:
        if doc == CONFLICTS:
            return False
        if self.location is not None and own_location_doc(self.location, doc):
            return True
        if _is_resolutions(doc):  # a store asks only for its own location (the ownership rule)
            return False
        return matches(self.patterns, doc)

    def to_wire(self) -> dict[str, Any]:
        """The form a WELCOME carries (see :meth:`from_wire`)."""
        return {"location": self.location, "write": list(self.patterns)}

    @classmethod
    def from_wire(cls, value: object) -> WriteGrants | None:
        """Grants a WELCOME carried, or ``None`` if it carried none (an older relay) or
        garbage (the replica then sends everything and the relay decides)."""
        if not isinstance(value, dict):
            return None
        location, patterns = value.get("location"), value.get("write")
        if location is not None and not isinstance(location, str):
            return None
        if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
            return None
        return cls(tuple(patterns), location)
