"""The relay as before issue 14 part 4: the long-life benchmark's baseline, never a product mode.

``python -m benchmarks.untrimmed_relay relay ...`` runs ``tiendasync relay``
with :meth:`CentralWriter.trim` taken out, so the central writer keeps every
sales document it ever merged loaded, as it did before the invariant review
was bounded by what is active.  Everything else is the product's own code.
It exists so that the chain benchmark compares the relay's memory against a
baseline in the same run; nothing in ``src/`` turns the trim off.
"""

from __future__ import annotations

from tiendasync.cli import main
from tiendasync.relay.central import CentralWriter


def _keep_all(self: CentralWriter) -> list[str]:
    return []


if __name__ == "__main__":
    CentralWriter.trim = _keep_all  # type: ignore[method-assign]
    raise SystemExit(main())
