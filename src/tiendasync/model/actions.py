"""Conflict resolution actions: one table the store, CLI, admin API and console read.

An administrator resolves a conflict with a *compensating* action: a new
ordinary write (an adjustment, a void, a product edit...) that brings the
merged state back within its invariants.  :data:`ACTIONS` names every
action, the parameters it takes and the conflicts it applies to;
:func:`check_params` is the one validation of a request's parameters.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from tiendasync.errors import InvalidArgument
from tiendasync.model.names import check_name, check_safe_int

__all__ = [
    "ACTIONS",
    "CATALOG_REVIEW",
    "PARAM_KINDS",
    "Action",
    "Param",
    "action_table",
    "check_params",
    "get_action",
]

#: The invariant name of a catalog review item (concurrent edits of one field).
CATALOG_REVIEW = "catalog_review"

#: What a parameter's value must be.
PARAM_KINDS = ("int", "positive_int", "name", "sale_ids", "fields")


@dataclass(frozen=True)
class Param:
    """One parameter of an action."""

    name: str
    #: One of :data:`PARAM_KINDS`.
    kind: str
    required: bool
    help: str


@dataclass(frozen=True)
class Action:
    """One compensating action."""

    name: str
    help: str
    params: tuple[Param, ...] = ()
    #: The invariants whose conflicts it can resolve (empty: any).
    applies_to: tuple[str, ...] = ()

    def applies(self, invariant: str) -> bool:
        return not self.applies_to or invariant in self.applies_to


#: Every action, in the order a menu shows them.
ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Action("accept", "accept the state as it is (e.g. a backorder); the conflict closes"),
        Action(
            "adjust",
            "add (or with a negative number take out) units at the conflict's location",
            (Param("quantity", "int", True, "units to add, negative to take out"),),
        ),
        Action(
            "recount",
            "a stocktake at the conflict's location: we counted this many units",
            (Param("count", "int", True, "counted units"),),
        ),
        Action(
            "transfer",
            "move units from another location to the conflict's location",
            (
                Param("from_location", "name", True, "the location the units come from"),
                Param("quantity", "positive_int", True, "units to move"),
            ),
        ),
        Action(
            "void",
            "void some of the conflict's sales (their units go back to stock)",
            (Param("sale_ids", "sale_ids", True, "the sales to void, all part of the conflict"),),
        ),
        Action(
            "restore",
            "put the unknown product back in the catalog",
            (Param("fields", "fields", False, "product fields (default: its SKU as name)"),),
            ("unknown_product",),
        ),
        Action(
            "remap",
            "move the conflict's sales to another, existing SKU",
            (Param("sku", "name", True, "the SKU the sales really were"),),
            ("unknown_product",),
        ),
        Action(
            "keep_central",
            "keep the value the merge chose for concurrently edited product fields",
            (Param("field", "name", False, "only this product field"),),
            (CATALOG_REVIEW,),
        ),
        Action(
            "keep_local",
            "keep the concurrently overwritten (losing) value instead",
            (Param("field", "name", False, "only this product field"),),
            (CATALOG_REVIEW,),
        ),
    )
}


def get_action(name: object) -> Action:
    """The action called ``name``; InvalidArgument naming the valid ones otherwise."""
    action = ACTIONS.get(name) if isinstance(name, str) else None
    if action is None:
        raise InvalidArgument(f"unknown action {name!r}; use one of {', '.join(ACTIONS)}")
    return action


def _check_value(param: Param, value: Any) -> Any:
    if param.kind == "int":
        return check_safe_int(value, param.name)
    if param.kind == "positive_int":
        return check_safe_int(value, param.name, positive=True)
    if param.kind == "name":
        return check_name(value, param.name)
    if param.kind == "sale_ids":
        ids = (
            [i.strip() for i in value.split(",") if i.strip()] if isinstance(value, str) else value
        )
        if not isinstance(ids, list) or not ids:
            raise InvalidArgument(f"{param.name} must be a non-empty list of sale ids")
        return [check_name(i, "sale id") for i in ids]
    # fields: a non-empty JSON object (a JSON string is accepted, as a CLI gives it)
    fields = value
    if isinstance(value, str):
        try:
            fields = json.loads(value)
        except ValueError:
            fields = None
    if not isinstance(fields, Mapping) or not fields:
        raise InvalidArgument(f"{param.name} must be a non-empty JSON object, got {value!r}")
    return dict(fields)


def check_params(action: Action, params: Mapping[str, Any]) -> dict[str, Any]:
    """The action's parameters, checked and normalised; InvalidArgument if wrong.

    Unknown parameters and missing required ones are refused; ``None`` counts
    as absent.
    """
    known = {p.name: p for p in action.params}
    extra = sorted(set(params) - set(known))
    if extra:
        takes = ", ".join(known) or "no"
        raise InvalidArgument(
            f"action {action.name!r} takes {takes} parameters, not {', '.join(extra)}"
        )
    out: dict[str, Any] = {}
    for param in action.params:
        value = params.get(param.name)
        if value is None:
            if param.required:
                raise InvalidArgument(f"action {action.name!r} needs {param.name}")
            continue
        out[param.name] = _check_value(param, value)
    return out


def action_table() -> list[dict[str, Any]]:
    """The table as JSON-ready dicts (served to the console by the admin API)."""
    return [asdict(a) for a in ACTIONS.values()]
