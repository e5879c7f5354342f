"""``python -m tiendasync`` is the ``tiendasync`` command."""

from tiendasync.cli import main

raise SystemExit(main())
