"""``manage.py sincronizar``: the seed's command, run by the ``tiendasync sync`` CLI loop.

* no option: one sync session (the queue is sent, the relay's changes come back);
* ``--completa --tienda=ID``: a full state exchange, refused unless the
  store file is store ``ID``;
* ``--continuo``: keep syncing with reconnects, one line per session on
  stdout, clean stop on SIGTERM/SIGINT.

The exit code is the CLI's (:mod:`tiendasync.cli.exits`): 0 done, 1 retry
later, 2 fix the call or the settings, 3 token refused, 70 a bug.
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tiendasync.cli import main as cli_main
from tiendasync.cli.exits import report
from tiendasync.contrib.django import conf
from tiendasync.errors import TiendaSyncError


class Command(BaseCommand):
    """Synchronise this store with its relay."""

    help = "Sincroniza la tienda con el relay (una vez, --completa o --continuo)."

    def add_arguments(self, parser: CommandParser) -> None:
        """The seed's options."""
        parser.add_argument("--completa", action="store_true", help="full sync")
        parser.add_argument("--tienda", metavar="ID", help="refuse unless this is store ID")
        parser.add_argument("--continuo", action="store_true", help="daemon until SIGTERM")
        parser.add_argument("--relay", metavar="URL", help="relay URL (default: the saved one)")
        parser.add_argument("--timeout", default="30", help="one-shot timeout in seconds")
        parser.add_argument("--poll", default="1", help="--continuo: session check interval")

    def handle(self, *args: Any, **options: Any) -> None:
        """Run the CLI's ``sync`` on the configured store file; exit with its code."""
        try:
            if not conf.db_path().exists():  # the CLI never creates a store: the settings do
                conf.get_replica()
                conf.close_replica()
            argv = self.argv(options)
        except TiendaSyncError as exc:
            sys.exit(report(exc))
        code = cli_main(argv)
        if code:
            sys.exit(code)

    @staticmethod
    def argv(options: dict[str, Any]) -> list[str]:
        """The ``tiendasync sync`` arguments for these options and settings."""
        argv = ["sync", "--db", str(conf.db_path())]
        if options["completa"]:
            argv.append("--full")
        if options["continuo"]:
            argv += ["--continuous", "--poll", str(options["poll"])]
        else:
            argv += ["--timeout", str(options["timeout"])]
        if options["tienda"]:
            argv += ["--store", options["tienda"]]
        relay = options["relay"] or conf.options().get("RELAY_URL")
        if relay:
            argv += ["--relay", str(relay)]
        token = conf.token()
        if token:
            argv += ["--token", token]
        return argv
