"""cProfile the benchmarks that miss their targets.

``python -m benchmarks.profile relay``: the relay subprocess under cProfile
while K=10 stores stream sales (benchmark 3); prints its top functions.
``python -m benchmarks.profile import``: ``catalog.put_many`` (benchmark 2).
``python -m benchmarks.profile paced [--rate 50]``: the relay subprocess
under cProfile while K=10 light stores sell at a fixed rate each (benchmark 8's
paced mode, ``--sales`` in all).
``python -m benchmarks.profile client``: the stores' process during benchmark 3.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import tempfile
from pathlib import Path

from . import b2_import, b3_relay, b8_hocuspocus


def _top(stats: pstats.Stats, n: int, sort: str) -> str:
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats(sort).print_stats(n)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["relay", "paced", "import", "client"])
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--sales", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=50.0, help="paced: sales/s per store")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    wd = Path(tempfile.mkdtemp(prefix="tiendasync-prof-"))
    try:
        if args.what == "relay":
            prof = wd / "relay.prof"
            r = b3_relay.tiendasync_stream(wd, args.k, args.sales // args.k, 300, profile=prof)
            print(r)
            stats = pstats.Stats(str(prof))
        elif args.what == "paced":
            prof = wd / "relay.prof"
            r = b8_hocuspocus.ours_run(
                wd, args.k, args.sales // args.k, args.rate, 300, profile=prof
            )
            print(r)
            stats = pstats.Stats(str(prof))
        elif args.what == "client":
            p = cProfile.Profile()
            p.enable()
            r = b3_relay.tiendasync_stream(wd, args.k, args.sales // args.k, 300)
            p.disable()
            print(r)
            stats = pstats.Stats(p)
        else:
            p = cProfile.Profile()
            p.enable()
            b2_import.run(wd, products=args.sales, stock_sample=200)
            p.disable()
            stats = pstats.Stats(p)
        print(_top(stats, args.top, "cumulative"))
        print(_top(stats, args.top, "tottime"))
    finally:
        shutil.rmtree(wd, ignore_errors=True)


if __name__ == "__main__":
    main()
