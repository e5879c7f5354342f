"""Run the benchmarks: ``python -m benchmarks.run --quick|--full``.

``--quick`` (about a minute): 1 (durable sale), 3 (relay, K=1 and 10, short),
4 (wire cost) and 7 (the ownership gate), then their ratios.  ``--full``: everything at the sizes
of the brief, results in ``benchmarks/results.json`` and plots under
``docs/img/``.  Every figure prints as one JSON line; a table follows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import b1_sale, b2_import, b3_relay, b4_wire, b5_storm, b6_state, b7_gate, plots
from .common import Figure, emit, machine, table

ROOT = Path(__file__).resolve().parent.parent

QUICK: dict[str, Any] = {
    "sale": {"sales": 200, "rounds": 3},
    "relay": {"ks": (1, 10), "sales": 1500, "timeout": 60.0, "echo_messages": 4000},
    "wire": {"sales": 100, "offline_sales": 10_000},
    "gate": {"sales": 1000, "rounds": 3, "e2e": {"k": 10, "sales": 1500, "rounds": 3}},
}

FULL: dict[str, Any] = {
    "sale": {"sales": 500, "rounds": 5},
    "import": {"products": 100_000, "batch": 1000, "stock_sample": 2000, "fixture_stock": True},
    "relay": {"ks": (1, 10, 50), "sales": 10_000, "timeout": 300.0, "echo_messages": 20_000},
    "wire": {"sales": 300, "offline_sales": 10_000},
    "storm": {"stores": 50, "sales": 1000, "timeout": 600.0},
    "state": {"sales": 1_000_000, "locations": 20, "skus": 500},
    "gate": {"sales": 5000, "rounds": 7, "e2e": {"k": 10, "sales": 10_000, "rounds": 5}},
}

#: a configuration small enough for the smoke test (seconds)
TINY: dict[str, Any] = {
    "sale": {"sales": 5, "rounds": 1},
    "import": {"products": 200, "batch": 50, "stock_sample": 10, "fixture_stock": True},
    "relay": {"ks": (1, 2), "sales": 20, "timeout": 60.0, "echo_messages": 50},
    "wire": {"sales": 5, "offline_sales": 50},
    "storm": {"stores": 2, "sales": 5, "timeout": 60.0},
    "state": {"sales": 50, "locations": 2, "skus": 5},
    "gate": {"sales": 20, "rounds": 1, "e2e": {"k": 2, "sales": 20, "rounds": 1}},
}


def run_all(
    config: dict[str, Any], workdir: Path, *, with_peer: bool = True
) -> tuple[list[Figure], list[str]]:
    """Run the benchmarks named in ``config``; return figures and errors."""
    figs: list[Figure] = []
    errors: list[str] = []

    def step(name: str, fn: Callable[[], list[Figure]]) -> None:
        t0 = time.monotonic()
        print(f"# {name} ...", file=sys.stderr, flush=True)
        try:
            figs.extend(fn())
        except Exception as exc:
            traceback.print_exc()
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            emit(
                Figure(
                    name,
                    "ERROR",
                    float("nan"),
                    "-",
                    extra={"error": f"{type(exc).__name__}: {exc}"},
                )
            )
        print(f"# {name} took {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)

    if "sale" in config:
        step("1-durable-sale", lambda: b1_sale.run(workdir, **config["sale"]))
    if "import" in config:
        step("2-import", lambda: b2_import.run(workdir, **config["import"]))
    if "relay" in config:
        step("3-relay", lambda: b3_relay.run(workdir, with_peer=with_peer, **config["relay"]))
    if "wire" in config:
        step("4-wire", lambda: b4_wire.run(workdir, **config["wire"]))
    if "storm" in config:
        step("5-storm", lambda: b5_storm.run(workdir, **config["storm"]))
    if "state" in config:
        step("6-state", lambda: b6_state.state_size(workdir, **config["state"]))
        imp = config.get("import", {})
        if imp.get("fixture_stock"):
            step(
                "6-state-open",
                lambda: b6_state.open_time(
                    workdir, workdir / "b2-replica.db", workdir / "b2-raw.db", imp["products"]
                ),
            )
    if "gate" in config:
        step("7-gate", lambda: b7_gate.run(workdir=workdir, **config["gate"]))
    return figs, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="1, 3 (K=1,10) and 4 (~1 min)")
    mode.add_argument("--full", action="store_true", help="everything; results.json + plots")
    ap.add_argument(
        "--only", help="comma-separated subset: sale,import,relay,wire,storm,state,gate"
    )
    ap.add_argument("--state-sales", type=int, help="sales for benchmark 6 (full: 1,000,000)")
    ap.add_argument("--no-peer", action="store_true", help="skip pycrdt-websocket")
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "results.json"))
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    args = ap.parse_args(argv)
    config = {k: dict(v) for k, v in (FULL if args.full else QUICK).items()}
    if args.only:
        wanted = set(args.only.split(","))
        config = {k: v for k, v in config.items() if k in wanted}
    if args.state_sales and "state" in config:
        config["state"]["sales"] = args.state_sales
    if not args.no_peer and "relay" in config and (why := b3_relay.peer.available()):
        print(f"# {why}", file=sys.stderr)
    info = machine()
    print(
        json.dumps(
            {"machine": info, "mode": "full" if args.full else "quick", "config": config},
            default=list,
        ),
        flush=True,
    )
    workdir = Path(tempfile.mkdtemp(prefix="tiendasync-bench-"))
    t0 = time.monotonic()
    try:
        figs, errors = run_all(config, workdir, with_peer=not args.no_peer)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - t0
    print()
    print(
        table(
            figs,
            f"tiendasync benchmarks ({'full' if args.full else 'quick'}, "
            f"{elapsed:.0f} s, {info['nproc']} cores, Python {info['python']})",
        )
    )
    print()
    print("Ratios:")
    for f in figs:
        if f.ratio is not None:
            verdict = (
                ""
                if f.met is None
                else ("  [target met]" if f.met else f"  [target {f.target} MISSED]")
            )
            print(f"  {f.bench:<15} {f.name}: {f.ratio:.3g}{verdict}")
    if errors:
        print("\nErrors:\n  " + "\n  ".join(errors))
    if args.full:
        out = Path(args.output)
        new = [f.to_dict() for f in figs]
        if args.only and out.exists():  # merge: replace the re-run benchmarks only
            old = json.loads(out.read_text())
            names = {(f["bench"], f["name"]) for f in new}
            benches = {f["bench"] for f in new} | {e.split(":")[0] for e in errors}
            new = [f for f in old["figures"] if (f["bench"], f["name"]) not in names] + new
            errors = [e for e in old.get("errors", []) if e.split(":")[0] not in benches] + errors
            config = {**old.get("config", {}), **config}
        out.write_text(
            json.dumps(
                {
                    "machine": info,
                    "elapsed_s": elapsed,
                    "config": config,
                    "figures": new,
                    "errors": errors,
                },
                indent=1,
                default=list,
            )
            + "\n"
        )
        print(f"\nwrote {out}")
        why = plots.available()
        if why is None:
            for p in plots.render(json.loads(out.read_text()), ROOT / "docs" / "img"):
                print(f"wrote {p}")
        else:
            print(f"no plots: {why}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
