"""Store-side sub-commands of ``tiendasync``.

``init``, ``sync``, ``queue list|process|resolve``, ``log``, ``status``,
``config show|set|set-token`` and ``import``, one module each (``import`` is
:mod:`tiendasync.cli.csv_import`).  Each works on one replica database
(``--db``).  Human output is aligned tables; ``--json`` prints one JSON
document instead (``sync --continuous --json`` prints one JSON object per
line, one per finished session).  Exit codes follow the one policy of
:mod:`tiendasync.cli.exits`.
"""

from __future__ import annotations

from tiendasync.cli import config, csv_import, init, queue, status, sync
from tiendasync.cli.common import TOKEN_ENV, Commands

__all__ = ["TOKEN_ENV", "register"]


def register(commands: Commands) -> None:
    """Add the store-side sub-commands to the ``tiendasync`` parser (in help order)."""
    init.register(commands)
    sync.register(commands)
    queue.register(commands)
    status.register_log(commands)
    status.register(commands)
    config.register(commands)
    csv_import.register(commands)
