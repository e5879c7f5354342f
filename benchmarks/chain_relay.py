"""The relay of the long-life chain benchmark, in simulated time; never a product mode.

``python -m benchmarks.chain_relay [--doc-idle-s S] [--keep-sales-docs] relay ...``
runs ``tiendasync relay`` with two benchmark-only changes, taken out of the
arguments before the command reads them:

* ``--doc-idle-s S``: the relay's document cache unloads a document idle for
  ``S`` seconds (600 by default).  The benchmark plays a simulated day in
  about a second, so with the default every sales month it ever served would
  still count as recently used; ``S`` brings the cache back to simulated time.
* ``--keep-sales-docs``: :meth:`CentralWriter.trim` taken out, so the central
  writer keeps every sales document it merged loaded, as before issue 14
  part 4: the baseline of the relay's memory in the same run.

Everything else is the product's own code; nothing in ``src/`` turns either on.
"""

from __future__ import annotations

import sys
from typing import Any

from tiendasync.cli import main
from tiendasync.relay.central import CentralWriter
from tiendasync.relay.docs import DocCache


def _keep_all(self: CentralWriter) -> list[str]:
    return []


def configure(argv: list[str]) -> list[str]:
    """Apply the benchmark's options in ``argv``; the arguments left for the command."""
    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--keep-sales-docs":
            CentralWriter.trim = _keep_all  # type: ignore[method-assign]
        elif arg == "--doc-idle-s":
            idle = float(next(args))
            init = DocCache.__init__

            def patched(
                self: DocCache, *a: Any, _init: Any = init, _idle: float = idle, **kw: Any
            ) -> None:
                kw["idle_seconds"] = _idle
                _init(self, *a, **kw)

            DocCache.__init__ = patched  # type: ignore[method-assign]
        else:
            rest.append(arg)
    return rest


if __name__ == "__main__":
    raise SystemExit(main(configure(sys.argv[1:])))
