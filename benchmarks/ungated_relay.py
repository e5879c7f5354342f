"""The relay with the ownership gate taken out: benchmark 7's baseline, never a product mode.

``python -m benchmarks.ungated_relay relay ...`` runs ``tiendasync relay`` with
what the ownership rule added to the per-update path removed: the item-level
parse (the relay parses only the struct ranges it needs, as it did before the
rule) and :meth:`OwnershipGate.refusal` (always "may apply").  Everything else
(grants, limits, group commit, ACK after storage, fan-out, review) is the
product's own code.  It exists so that the end-to-end cost of the gate is
measured against a baseline in the same run; nothing in ``src/`` can turn the
gate off.
"""

from __future__ import annotations

from typing import Any

from tiendasync.cli import main
from tiendasync.protocol import yjs_update
from tiendasync.relay import followers, ownership, sessions


def _structs_only(data: bytes, *, items: bool = False) -> yjs_update.ParsedUpdate:
    return yjs_update.parse_update(data)


def _may_apply(self: ownership.OwnershipGate, *args: Any, **kwargs: Any) -> None:
    return None


def ungate() -> None:
    """Take the ownership rule out of this process's relay."""
    sessions.parse_update = _structs_only  # type: ignore[assignment]
    followers.parse_update = _structs_only  # type: ignore[assignment]
    ownership.OwnershipGate.refusal = _may_apply  # type: ignore[assignment,method-assign]


if __name__ == "__main__":
    ungate()
    raise SystemExit(main())
