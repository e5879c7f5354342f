"""Benchmark 8's paced mode, ours only, this tree against a baseline revision (A/B).

``python -m benchmarks.ab_paced --baseline REV [--k 10] [--rates 5,50] [--seconds 5]
[--bulk-sales 2000] [--rounds 2] [--json F]``

The baseline's ``src/`` is exported with ``git archive REV`` into a temporary
directory; the relay subprocess of each run imports ``tiendasync`` from there
(baseline) or from this tree (candidate), through ``PYTHONPATH``.  The clients
always run this tree's code.  Per round each point runs both, in alternating
order (A/B, then B/A), and the ratio candidate/baseline is taken per round;
the report gives medians.  Figures per run: relay CPU per sale (``/proc``),
write-to-follower p50/p99; a bulk run (``--bulk-sales``, rate 0) gives the
bulk CPU per sale the paced figures are compared with.

``--compression`` instead of ``--baseline``: one tree (this one), and the arms
are the light stores without websocket compression (baseline) and with it
(candidate: permessage-deflate, as a real replica offers): what compression
costs the relay per sale.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import b3_light, b8_hocuspocus

ROOT = Path(__file__).resolve().parent.parent


def export(rev: str, into: Path) -> Path:
    """``src/`` of ``rev`` under ``into``; returns the directory to put on PYTHONPATH."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "src"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def _run(
    src: Path, workdir: Path, k: int, per_store: int, rate: float, compression: str | None = None
) -> dict[str, Any]:
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(src)
    b3_light.COMPRESSION = compression
    try:
        return b8_hocuspocus.ours_run(workdir, k, per_store, rate, 120.0)
    finally:
        b3_light.COMPRESSION = None
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


KEYS = ("cpu_ms_per_sale", "lat_p50_ms", "lat_p99_ms", "sales_per_s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arms = ap.add_mutually_exclusive_group(required=True)
    arms.add_argument("--baseline", help="git revision to compare with")
    arms.add_argument(
        "--compression", action="store_true", help="this tree, light stores plain vs compressing"
    )
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rates", default="5,50", help="sales/s per store")
    ap.add_argument("--seconds", type=float, default=5.0, help="length of a paced run")
    ap.add_argument("--bulk-sales", type=int, default=2000, help="0: no bulk run")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="tiendasync-ab-"))
    try:
        if args.compression:
            trees = {"baseline": ROOT / "src", "candidate": ROOT / "src"}
        else:
            trees = {"baseline": export(args.baseline, tmp), "candidate": ROOT / "src"}
        compress = {"baseline": None, "candidate": "deflate" if args.compression else None}
        points: list[tuple[str, int, float]] = []
        if args.bulk_sales:
            points.append(("bulk", args.bulk_sales // args.k, 0.0))
        for rate in (float(x) for x in args.rates.split(",")):
            points.append((f"{args.k}x{rate:g}/s", max(1, int(rate * args.seconds)), rate))
        raw: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in points}
        for r in range(args.rounds):
            for name, per_store, rate in points:
                order = ["baseline", "candidate"] if r % 2 == 0 else ["candidate", "baseline"]
                row: dict[str, Any] = {}
                for who in order:
                    print(f"# {name} round {r}: {who}", file=sys.stderr, flush=True)
                    row[who] = _run(trees[who], tmp, args.k, per_store, rate, compress[who])
                raw[name].append(row)
        print(f"{'point':<12} {'figure':<16} {'baseline':>10} {'candidate':>10} {'ratio':>7}")
        for name, rows in raw.items():
            for key in KEYS:
                base = [row["baseline"][key] for row in rows if row["baseline"][key] is not None]
                cand = [row["candidate"][key] for row in rows if row["candidate"][key] is not None]
                ratios = [
                    row["candidate"][key] / row["baseline"][key]
                    for row in rows
                    if row["candidate"][key] is not None and row["baseline"][key]
                ]
                if not base or not cand:
                    continue
                print(
                    f"{name:<12} {key:<16} {statistics.median(base):>10.3f} "
                    f"{statistics.median(cand):>10.3f} {statistics.median(ratios):>7.2f}"
                )
        if args.json is not None:
            args.json.write_text(json.dumps(raw, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
