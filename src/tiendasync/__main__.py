"""``python -m tiendasync`` is the ``tiendasync`` command."""

from .cli import main

raise SystemExit(main())
