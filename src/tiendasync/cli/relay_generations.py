"""``tiendasync relay generations``, ``archive-generations``, ``restore-generations``.

::

    tiendasync relay generations --db relay.db --tenant acme [--json]
    tiendasync relay archive-generations --db relay.db --tenant acme --older-than-days 90 -o FILE
    tiendasync relay restore-generations --db relay.db FILE

What the store of record keeps of past generations, and moving the old ones
to a file and back (:mod:`tiendasync.relay.generation_archive`).  They work on
a running relay's store of record.
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from tiendasync.cli.exits import guard
from tiendasync.cli.tables import format_table, format_time
from tiendasync.errors import InvalidArgument
from tiendasync.relay.generation_archive import (
    ArchiveReport,
    archive_generations,
    restore_generations,
)
from tiendasync.relay.storage import open_relay_store

__all__ = ["register_generations"]

DAY_S = 86_400.0


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        "--store",
        dest="generations_db",
        default=None,
        metavar="DB",
        help="relay database file or URL",
    )


def register_generations(sub: Any) -> None:
    """Add the three generation commands to the ``relay`` sub-commands."""
    listing = sub.add_parser(
        "generations",
        help="list the past generations the relay keeps",
        description="List the past generations of the tenant's documents that the store "
        "of record keeps (docs/generations.md): when each was cut, its late updates, "
        "its stored bytes.",
    )
    _store_option(listing)
    listing.add_argument("--tenant", required=True, help="the tenant")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=guard(_list))

    archive = sub.add_parser(
        "archive-generations",
        help="move past generations cut long ago to a file, and drop them",
        description="Write the tenant's past generations cut more than --older-than-days "
        "ago (never the one just before the current generation) to a new file, made "
        "durable first, then drop them from the store of record. A store that comes "
        "back holding one of them is refused, keeping its queue, until it is restored.",
    )
    _store_option(archive)
    archive.add_argument("--tenant", required=True, help="the tenant")
    archive.add_argument(
        "--older-than-days",
        type=float,
        required=True,
        metavar="DAYS",
        help="archive generations cut more than DAYS ago (above your longest offline period)",
    )
    archive.add_argument(
        "--output", "-o", required=True, metavar="PATH", help="the archive file (must not exist)"
    )
    archive.set_defaults(handler=guard(_archive))

    restore = sub.add_parser(
        "restore-generations",
        help="put archived past generations back into the store of record",
        description="Read an archive written by archive-generations, check every entry, "
        "and put back each past generation the store of record no longer keeps.",
    )
    _store_option(restore)
    restore.add_argument("archive", metavar="PATH", help="the archive file")
    restore.set_defaults(handler=guard(_restore))


def _db(args: argparse.Namespace) -> str:
    spec: str | None = args.generations_db or getattr(args, "db", None)
    if not spec:
        raise InvalidArgument("give --db (the relay's database file or URL)")
    return spec


def _list(args: argparse.Namespace) -> int:
    with closing(open_relay_store(_db(args))) as store:
        past = store.past_generations(args.tenant)
    if args.json:
        print(json.dumps([p.public() for p in past], indent=2))
        return 0
    rows = [
        (p.doc, p.generation, format_time(p.cut_at), p.late_updates, p.stored_bytes) for p in past
    ]
    print(
        format_table(
            ("DOCUMENT", "GENERATION", "CUT", "LATE", "BYTES"),
            rows,
            right=(1, 3, 4),
            empty="(no past generations kept)",
        )
    )
    return 0


def _archive(args: argparse.Namespace) -> int:
    if not args.older_than_days >= 0:
        raise InvalidArgument("--older-than-days must be 0 or more")
    with closing(open_relay_store(_db(args))) as store:
        report = archive_generations(
            store, args.tenant, Path(args.output), older_than_s=args.older_than_days * DAY_S
        )
    _print(report, "archived to " + args.output)
    return 0


def _restore(args: argparse.Namespace) -> int:
    with closing(open_relay_store(_db(args))) as store:
        report = restore_generations(store, Path(args.archive))
    _print(report, "restored")
    return 0


def _print(report: ArchiveReport, verb: str) -> None:
    for doc, generation in report.done:
        print(f"{doc} generation {generation}: {verb}")
    for doc, generation, why in report.kept:
        print(f"{doc} generation {generation}: kept ({why})", file=sys.stderr)
    if not report.done and not report.kept:
        print("nothing to do", file=sys.stderr)
