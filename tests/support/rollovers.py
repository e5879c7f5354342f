"""A rollover policy for tests of what a rollover does, not of when it is due.

:class:`~tiendasync.relay.generations.RolloverPolicy` rolls a document over only
when a cut would fold something (docs/generations.md), so a document written by
one writer is never due.  The tests of the move, the carry and the relay's steps
roll every counter and LWW document over, folding or not: :data:`EVERYTHING`.
When a document is due is tested in ``tests/relay/test_rollover_policy.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tiendasync.relay.generations import Footprint, RolloverPolicy

__all__ = ["EVERYTHING", "RollEverything"]


@dataclass(frozen=True)
class RollEverything(RolloverPolicy):
    """Every counter and LWW document is due, whatever a cut of it would fold."""

    max_bytes: int | None = 1

    def due(self, footprint: Footprint) -> bool:
        return True


#: Every counter and LWW document rolls over, at each rollover.
EVERYTHING = RollEverything()
