"""``tiendasync config show|set|set-token``: the store's sync config and relay token.

``config set KEY=VALUE...`` changes all values or none: each value is JSON
when it parses (else text) and must fit the type of its
:class:`~tiendasync.model.config.StoreConfig` field.  A key the relay sets
centrally wins over the store's own value, so ``config set`` refuses to
change one (``config show`` marks them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from tiendasync.cli.common import (
    Commands,
    add_command,
    db_parent,
    json_parent,
    open_replica,
    print_json,
)
from tiendasync.cli.tables import format_fields
from tiendasync.errors import ConfigError, InvalidArgument
from tiendasync.model.config import StoreConfig

__all__ = ["parse_assignments", "register"]

_TYPE_NAMES: dict[Any, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    type(None): "null",
    dict: "a JSON object",
    list: "a JSON list",
}

#: The checks of the types JSON gives exactly (a bool is not an int; an int is a float).
_EXACT_CHECKS: dict[Any, Callable[[Any], bool]] = {
    type(None): lambda v: v is None,
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, int) and not isinstance(v, bool),
    float: lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def _show_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether ``value`` (parsed JSON) fits the type hint ``hint``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    exact = _EXACT_CHECKS.get(hint)
    if exact is not None:
        return exact(value)
    if origin is not None:
        return isinstance(value, origin)
    return not isinstance(hint, type) or isinstance(value, hint)


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return _TYPE_NAMES.get(origin or hint, str(hint))


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> typed changes; values are JSON when they parse.

    Raises :class:`ConfigError` for a malformed item, a key given twice or a
    value of the wrong type; unknown keys are left for the replica to refuse.
    """
    hints = typing.get_type_hints(StoreConfig)
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r}")
        if key in changes:
            raise ConfigError(f"{key} is given twice")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        hint = hints.get(key)
        if hint is not None:
            if not _type_ok(value, hint):
                raise ConfigError(f"{key} must be {_describe(hint)}, got {raw!r}")
            if hint is float and isinstance(value, int):
                value = float(value)
        changes[key] = value
    return changes


def _cmd_config_show(args: argparse.Namespace) -> int:
    with open_replica(args, read_only=True) as replica:
        config = replica.config.to_dict()
        token_saved = replica.relay_token is not None
        central = replica.central_config_keys
    if args.json:
        print_json({"config": config, "central_keys": central, "relay_token_saved": token_saved})
        return 0
    pairs = [
        (k, _show_value(v) + ("  (set centrally on the relay)" if k in central else ""))
        for k, v in config.items()
    ]
    pairs.append(("relay token", "saved" if token_saved else "(not set)"))
    print(format_fields(pairs))
    return 0


def _cmd_config_set(args: argparse.Namespace) -> int:
    changes = parse_assignments(args.assignments)
    with open_replica(args) as replica:
        try:
            config = replica.configure(**changes)
        except (TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"invalid config: {exc}") from exc
        shown = config.to_dict()
    print(format_fields((k, _show_value(shown[k])) for k in changes))
    return 0


def _cmd_config_set_token(args: argparse.Namespace) -> int:
    token: str = args.token_value
    if token == "-":
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise InvalidArgument("the token must not be empty")
    with open_replica(args) as replica:
        replica.set_relay_token(token)
    print("relay token saved")
    return 0


def register(commands: Commands) -> None:
    """Add ``config show|set|set-token``."""
    db = db_parent()
    config = add_command(commands, "config", "show or change the store's sync config", None, [])
    config_cmds = config.add_subparsers(
        dest="config_command", metavar="ACTION", required=True, help="what to do"
    )
    add_command(
        config_cmds,
        "show",
        "show the sync config (keys set centrally on the relay are marked)",
        _cmd_config_show,
        [db, json_parent()],
    )
    keys = ", ".join(f.name for f in dataclasses.fields(StoreConfig))
    p = add_command(
        config_cmds,
        "set",
        "change config values (all or nothing)",
        _cmd_config_set,
        [db],
        epilog=f"Keys: {keys}.\nA key set centrally on the relay wins at every sync: "
        "changing it here is refused.\nValues are parsed as JSON when possible, else taken as "
        "text, e.g.\n  interval_s=10 'priorities={\"sales\":9}' "
        "relay_url=ws://127.0.0.1:8765 relay_url=null",
    )
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE", help="a config value to set")
    p = add_command(
        config_cmds,
        "set-token",
        "save the relay token this store uses",
        _cmd_config_set_token,
        [db],
    )
    p.add_argument(
        "token_value", metavar="TOKEN", help="the token, or - to read it from standard input"
    )
