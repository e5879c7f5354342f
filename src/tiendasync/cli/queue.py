"""``tiendasync queue list|process|resolve``: inspect and act on the sync queue.

``queue resolve`` reads the one table of compensating actions
(:data:`tiendasync.model.actions.ACTIONS`): its ``--action`` choices and
one option per action parameter (``from_location`` is ``--from-location``)
come from there, and :func:`~tiendasync.model.actions.check_params` judges
the values, so an option the action does not take is a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

from tiendasync.cli.common import (
    Commands,
    add_command,
    db_parent,
    int_arg,
    json_parent,
    non_negative_int,
    open_replica,
    positive_int,
    print_json,
    relay_parent,
    token_of,
)
from tiendasync.cli.tables import format_fields, format_table, format_time
from tiendasync.errors import InvalidArgument, SyncError
from tiendasync.model.actions import ACTIONS, Param, check_params, get_action
from tiendasync.store.queue import STATUSES, QueueEntry

__all__ = ["register"]

_ENTRY_HEADERS = (
    "ID",
    "STATUS",
    "PRIO",
    "TYPE",
    "KIND",
    "TRIES",
    "UPDATED",
    "CONFLICTS",
    "SUMMARY",
)

#: How a parameter of each kind is read from the command line (check_params judges it).
_PARAM_TYPES: dict[str, Callable[[str], Any]] = {
    "int": int_arg,
    "positive_int": int_arg,
    "name": str,
    "sale_ids": str,  # "A,B": check_params splits it
    "fields": str,  # a JSON object: check_params parses it
}
_PARAM_METAVARS = {
    "int": "N",
    "positive_int": "N",
    "name": "NAME",
    "sale_ids": "A,B",
    "fields": "JSON",
}


def _entry_row(e: QueueEntry) -> list[Any]:
    summary = e.summary if not e.error else f"{e.summary} (error: {e.error})"
    return [
        e.id,
        e.status,
        e.priority,
        e.data_type,
        e.kind,
        e.attempts,
        format_time(e.updated_at),
        ",".join(e.conflict_ids) or None,
        summary,
    ]


def _print_entries(entries: list[QueueEntry]) -> None:
    print(format_table(_ENTRY_HEADERS, [_entry_row(e) for e in entries], right=(0, 2, 5)))


def _cmd_queue_list(args: argparse.Namespace) -> int:
    with open_replica(args, read_only=True) as replica:
        entries = replica.queue.list(
            conflicts=True if args.conflicts else None,
            status=args.status,
            kind=args.kind,
            limit=args.limit,
            offset=args.offset,
        )
        if args.json:
            print_json([e.to_dict() for e in entries])
        else:
            _print_entries(entries)
    return 0


def _cmd_queue_process(args: argparse.Namespace) -> int:
    with open_replica(args) as replica:
        sync_args: dict[str, Any] = {}
        if args.relay:
            sync_args["url"] = args.relay
        token = token_of(args)
        if token:
            sync_args["token"] = token
        replica.queue.get(args.id)  # NotFound before anything is counted
        if not sync_args.get("url") and not replica.config.relay_url:
            print(
                "tiendasync: note: no relay URL configured; only the attempt was counted",
                file=sys.stderr,
            )
        error: SyncError | None = None
        try:
            entry = replica.queue.process(args.id, **sync_args)
        except SyncError as exc:
            error = exc
            entry = replica.queue.get(args.id)
        if args.json:
            print_json(entry.to_dict())
        else:
            _print_entries([entry])
        if error is not None:
            raise error
    return 0


# -- resolve: options from the actions table --------------------------------------------


def _params_by_name() -> dict[str, list[tuple[str, Param]]]:
    """Each parameter name of the table, with the ``(action, param)`` pairs that use it."""
    out: dict[str, list[tuple[str, Param]]] = {}
    for action in ACTIONS.values():
        for param in action.params:
            out.setdefault(param.name, []).append((action.name, param))
    return out


#: Parameter name -> the actions that take it; one ``--option`` each.
_PARAMS = _params_by_name()


def _param_help(uses: list[tuple[str, Param]]) -> str:
    """``for adjust: units...; for transfer: units to move`` (actions sharing a help joined)."""
    actions_by_help: dict[str, list[str]] = {}
    for action, param in uses:
        actions_by_help.setdefault(param.help, []).append(action)
    return "; ".join(
        f"for {' and '.join(names)}: {text}" for text, names in actions_by_help.items()
    )


def _add_param_options(parser: argparse.ArgumentParser) -> None:
    """One ``--option`` per parameter name of the table (dest: the parameter's name)."""
    for name, uses in _PARAMS.items():
        kinds = sorted({param.kind for _, param in uses})
        readers = {_PARAM_TYPES[kind] for kind in kinds}
        if len(readers) != 1:
            raise AssertionError(f"parameter {name!r} would be read in two ways: {kinds}")
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=readers.pop(),
            metavar=_PARAM_METAVARS[kinds[0]],
            help=_param_help(uses),
        )


def _actions_epilog() -> str:
    lines = ["Actions (and the options each takes; [optional]):"]
    for action in ACTIONS.values():
        options = " ".join(
            ("--{}" if p.required else "[--{}]").format(p.name.replace("_", "-"))
            for p in action.params
        )
        lines.append(f"  {action.name:<13} {options}".rstrip())
        lines.append(f"      {action.help}")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _readable(key: str, value: Any) -> Any:
    """A result field for people: times as local time, structures as compact JSON."""
    if key.endswith("_at") and isinstance(value, int | float) and not isinstance(value, bool):
        return format_time(value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return value


def _cmd_queue_resolve(args: argparse.Namespace) -> int:
    action = get_action(args.action)
    given = {name: getattr(args, name) for name in _PARAMS}
    takes = {p.name for p in action.params}
    extra = any(v is not None and k not in takes for k, v in given.items())
    for param in action.params:  # (an option it does not take is check_params' to explain)
        if not extra and param.required and given.get(param.name) is None:
            option = "--" + param.name.replace("_", "-")
            raise InvalidArgument(
                f"--action {action.name} needs {option} {_PARAM_METAVARS[param.kind]} "
                f"({param.help})"
            )
    params = check_params(action, {k: v for k, v in given.items() if v is not None})
    for name in ("note", "by"):
        if getattr(args, name) is not None:
            params[name] = getattr(args, name)
    with open_replica(args) as replica:
        result = _jsonable(replica.queue.resolve(args.conflict_id, action.name, **params))
        if args.json:
            print_json(result)
        elif isinstance(result, Mapping):
            print(format_fields((str(k), _readable(str(k), v)) for k, v in result.items()))
        else:
            print(f"resolved {args.conflict_id} with {action.name}: {result}")
    return 0


# -- registration -------------------------------------------------------------------------


def register(commands: Commands) -> None:
    """Add ``queue list|process|resolve``."""
    db, as_json = db_parent(), json_parent()
    queue = add_command(commands, "queue", "inspect and act on the sync queue", None, [])
    queue_cmds = queue.add_subparsers(
        dest="queue_command", metavar="ACTION", required=True, help="what to do"
    )
    p = add_command(
        queue_cmds,
        "list",
        "list queue entries, highest priority first",
        _cmd_queue_list,
        [db, as_json],
    )
    p.add_argument(
        "--conflicts", action="store_true", help="only entries that took part in a conflict"
    )
    p.add_argument("--status", choices=STATUSES, help="only entries with this status")
    p.add_argument("--kind", help="only entries of this kind (e.g. sale, receive, transfer)")
    p.add_argument(
        "--limit",
        type=positive_int,
        default=100,
        metavar="N",
        help="show at most N entries (default: 100)",
    )
    p.add_argument(
        "--offset",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="skip the first N entries (default: 0)",
    )
    p = add_command(
        queue_cmds,
        "process",
        "retry one queue entry now (counts an attempt and syncs)",
        _cmd_queue_process,
        [db, relay_parent(), as_json],
        epilog="Without a relay URL (option or saved config) only the attempt is counted.",
    )
    p.add_argument("id", type=int_arg, metavar="ID", help="the queue entry id")
    p = add_command(
        queue_cmds,
        "resolve",
        "resolve a conflict with a compensating action",
        _cmd_queue_resolve,
        [db, as_json],
        epilog=_actions_epilog(),
    )
    p.add_argument("conflict_id", metavar="CONFLICT_ID", help="the conflict id")
    p.add_argument("--action", required=True, choices=list(ACTIONS), help="the compensating action")
    _add_param_options(p)
    p.add_argument("--note", metavar="TEXT", help="a note recorded with the resolution")
    p.add_argument("--by", metavar="WHO", help="who resolves (default: this replica's id)")
