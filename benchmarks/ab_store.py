"""The durable sale and the bulk import, this tree against a baseline revision (A/B).

``python -m benchmarks.ab_store --baseline REV [--rounds 3] [--sales 300] [--products 100000]
[--only sale,import] [--json F] [--svg F]``; ``--from-json F`` reports (and plots) a saved run.

Issue 19 parts 3 and 4.  The baseline's ``src/`` is exported with ``git archive``
(as :mod:`benchmarks.ab_paced` does); each measurement runs in a subprocess
importing ``tiendasync`` from there or from this tree.  Every worker measures
its own raw SQLite baseline right after itself, in the same process and
directory, so each figure is a ratio to raw SQLite taken in the same minute;
rounds alternate the order (A/B, then B/A) and the report gives medians.

- **sale**: ``record_sale`` (1 line, ``synchronous=FULL``) against raw 1-row
  INSERT+COMMIT (WAL, FULL), as benchmark 1 does; plus the WAL bytes and pages
  one sale writes (:mod:`benchmarks.wal_per_sale`, a size, not a speed).
- **import**: N products with stock against ``sqlite-utils insert_all`` of the
  same rows, in wall-clock time and in CPU time (``process_time``: what the disk's
  fsync latency does not change).  ``one call``: everything handed over at once
  (``catalog.put_many(products, stock=...)`` where the tree has it, else
  ``put_many`` then ``receive_many``); ``batches``: 1,000 rows per call, as
  benchmark 2 does.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .ab_paced import export

ROOT = Path(__file__).resolve().parent.parent


def sale_worker(workdir: Path, sales: int) -> dict[str, Any]:
    """``record_sale`` and raw commits, alternating 3 times in this process."""
    from . import b1_sale, wal_per_sale

    r = b1_sale.open_store(workdir / "sale.db")
    ours: list[float] = []
    raw: list[float] = []
    try:
        b1_sale.record_sales(r, min(50, sales))
        b1_sale.raw_commits(workdir / "raw.db", min(50, sales))
        for n in range(3):
            ours.append(b1_sale.record_sales(r, sales, n * sales))
            raw.append(b1_sale.raw_commits(workdir / "raw.db", sales))
    finally:
        r.close()
    wal = wal_per_sale.measure(min(200, max(sales, 20)))
    return {
        "sales_per_s": statistics.median(ours),
        "raw_per_s": statistics.median(raw),
        "ratio": statistics.median(a / b for a, b in zip(ours, raw, strict=True)),
        "wal_bytes_per_sale": wal.pop("bytes"),
        "wal_pages_per_sale": sum(wal.values()),
        "btrees_per_sale": len([name for name, pages in wal.items() if pages >= 0.5]),
    }


def import_worker(workdir: Path, products: int, batch: int) -> dict[str, Any]:
    """One call and batches of ``batch``, each against its own sqlite-utils insert."""
    from tiendasync import Replica
    from tiendasync.store.catalog import Catalog

    from . import b2_import

    data = b2_import.rows(products)
    catalog = {d["sku"]: {"name": d["name"], "price_cents": d["price_cents"]} for d in data}
    stock = {d["sku"]: d["stock"] for d in data}
    one_pass = "stock" in inspect.signature(Catalog.put_many).parameters
    out: dict[str, Any] = {"one_pass_api": one_pass}

    def one_call(r: Replica) -> None:
        if one_pass:
            r.catalog.put_many(catalog, stock=stock)
        else:
            r.catalog.put_many(catalog)
            r.inventory.receive_many(stock)

    def batches(r: Replica) -> None:
        skus = list(catalog)
        for start in range(0, products, batch):
            chunk = skus[start : start + batch]
            r.catalog.put_many({sku: catalog[sku] for sku in chunk})
        for start in range(0, products, batch):
            r.inventory.receive_many([(sku, stock[sku]) for sku in skus[start : start + batch]])

    for name, how in (("one_call", one_call), ("batches", batches)):
        path = workdir / f"import-{name}.db"
        with Replica.open(path, tenant="acme", replica_id="t", location="tienda-1") as r:
            c0, t0 = time.process_time(), time.perf_counter()
            how(r)
            ours, ours_cpu = time.perf_counter() - t0, time.process_time() - c0
            assert r.inventory.stock(data[-1]["sku"]) == data[-1]["stock"]
        c0 = time.process_time()
        raw = b2_import.raw_import(workdir / f"raw-{name}.db", data, batch)
        raw_cpu = time.process_time() - c0
        out[name] = {
            "s": ours,
            "raw_s": raw,
            "ratio": raw / ours,
            "cpu_s": ours_cpu,
            "raw_cpu_s": raw_cpu,
            "cpu_ratio": raw_cpu / ours_cpu,
        }
    return out


def _worker(src: Path, what: str, args: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
        cmd = [sys.executable, "-m", "benchmarks.ab_store", "--worker", what, "--dir", tmp]
        cmd += ["--sales", str(args["sales"]), "--products", str(args["products"])]
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{what} worker failed ({src}):\n{done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


def compare(
    baseline: str, *, rounds: int, sales: int, products: int, only: list[str]
) -> dict[str, Any]:
    """``{"sale": {"baseline": [...], "candidate": [...]}, "import": ...}``, one entry a round."""
    out: dict[str, Any] = {"baseline_rev": baseline, "rounds": rounds}
    with tempfile.TemporaryDirectory() as tmp:
        base_src = export(baseline, Path(tmp))
        args = {"sales": sales, "products": products}
        for what in only:
            runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "candidate": []}
            for n in range(rounds):
                order = [("baseline", base_src), ("candidate", ROOT / "src")]
                for name, src in order if n % 2 == 0 else order[::-1]:
                    runs[name].append(_worker(src, what, args))
            out[what] = runs
    return out


def _median(runs: list[dict[str, Any]], *keys: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in keys:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def report(result: dict[str, Any]) -> list[str]:
    """Lines of text: each figure of both revisions, medians over the rounds."""
    lines = [f"baseline {result['baseline_rev']}, {result['rounds']} round(s), medians"]
    if "sale" in result:
        b, c = result["sale"]["baseline"], result["sale"]["candidate"]
        for label, key, fmt in (
            ("record_sale / raw FULL commit", "ratio", "{:.3f}"),
            ("record_sale sales/s", "sales_per_s", "{:,.0f}"),
            ("raw FULL commits/s", "raw_per_s", "{:,.0f}"),
            ("WAL bytes per sale", "wal_bytes_per_sale", "{:,.0f}"),
            ("WAL pages per sale", "wal_pages_per_sale", "{:.1f}"),
            ("B-trees written per sale", "btrees_per_sale", "{:.0f}"),
        ):
            lines.append(
                f"  sale    {label:34s} baseline {fmt.format(_median(b, key)):>9s}"
                f"   this tree {fmt.format(_median(c, key)):>9s}"
            )
    if "import" in result:
        b, c = result["import"]["baseline"], result["import"]["candidate"]
        for label, key in (("one call", "one_call"), ("batches of 1,000", "batches")):
            lines.append(
                f"  import  {label:18s} / sqlite-utils      baseline "
                f"{_median(b, key, 'ratio'):9.3f}   this tree {_median(c, key, 'ratio'):9.3f}"
                f"   (seconds: {_median(b, key, 's'):.2f} / {_median(c, key, 's'):.2f}, "
                f"raw {_median(c, key, 'raw_s'):.2f})"
            )
            if all("cpu_ratio" in run[key] for run in b + c):  # runs saved before it lack it
                lines.append(
                    f"  import  {label:18s} CPU / its CPU     baseline "
                    f"{_median(b, key, 'cpu_ratio'):9.3f}   this tree "
                    f"{_median(c, key, 'cpu_ratio'):9.3f}   (CPU seconds: "
                    f"{_median(b, key, 'cpu_s'):.2f} / {_median(c, key, 'cpu_s'):.2f}, "
                    f"raw {_median(c, key, 'raw_cpu_s'):.2f})"
                )
    return lines


#: ``(label, keys into one worker's result, target)`` of each plotted ratio.
_PLOTTED = (
    ("record_sale / raw FULL commit", ("sale", "ratio"), 0.8),
    ("import, one call / sqlite-utils", ("import", "one_call", "ratio"), 0.3),
    ("import, batches / sqlite-utils", ("import", "batches", "ratio"), 0.3),
)


def svg(result: dict[str, Any]) -> str:
    """Each ratio for both revisions: median bars, rounds as dots, the target as a line."""
    left, width, row = 230, 420, 18
    shown = [p for p in _PLOTTED if p[1][0] in result]
    height = 50 + len(shown) * (2 * row + 16) + 30

    def x(v: float) -> float:
        return left + width * min(max(v, 0.0), 1.0)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 40}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="10" y="16" font-size="13">Ratio to raw SQLite in the same run, baseline '
        f"{result['baseline_rev']} (grey) and this tree (blue); dots: rounds; red: target</text>",
    ]
    top = 36
    for tick in (0, 0.2, 0.4, 0.6, 0.8, 1.0):
        out.append(
            f'<line x1="{x(tick):.1f}" y1="{top - 4}" x2="{x(tick):.1f}" y2="{height - 30}" '
            'stroke="#ddd"/>'
        )
        out.append(f'<text x="{x(tick):.1f}" y="{top - 7}" text-anchor="middle">{tick:g}</text>')
    y = top
    for label, keys, target in shown:
        out.append(f'<text x="{left - 8}" y="{y + row + 4}" text-anchor="end">{label}</text>')
        for side, colour in (("baseline", "#aaa"), ("candidate", "#4c78a8")):
            values = []
            for run in result[keys[0]][side]:
                value: Any = run
                for key in keys[1:]:
                    value = value[key]
                values.append(float(value))
            med = statistics.median(values)
            out.append(
                f'<rect x="{left}" y="{y + 2}" width="{x(med) - left:.1f}" height="{row - 4}" '
                f'fill="{colour}"/>'
            )
            out.append(f'<text x="{x(med) + 4:.1f}" y="{y + row - 5}">{med:.3f}</text>')
            out += [f'<circle cx="{x(v):.1f}" cy="{y + row / 2}" r="2"/>' for v in values]
            y += row
        out.append(
            f'<line x1="{x(target):.1f}" y1="{y - 2 * row}" x2="{x(target):.1f}" y2="{y}" '
            'stroke="#d62728" stroke-width="2"/>'
        )
        y += 16
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", help="git revision to compare with")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sales", type=int, default=300)
    ap.add_argument("--products", type=int, default=100_000)
    ap.add_argument("--only", default="sale,import")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--svg", type=Path, help="plot the ratios (see docs/benchmarks.md)")
    ap.add_argument("--from-json", type=Path, help="report (and plot) a saved run instead")
    ap.add_argument("--worker", choices=["sale", "import"], help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        if args.worker == "sale":
            result = sale_worker(args.dir, args.sales)
        else:
            result = import_worker(args.dir, args.products, 1000)
        print(json.dumps(result))
        return 0
    if args.from_json:
        result = json.loads(args.from_json.read_text())
    elif not args.baseline:
        ap.error("--baseline is required")
    else:
        result = compare(
            args.baseline,
            rounds=args.rounds,
            sales=args.sales,
            products=args.products,
            only=args.only.split(","),
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    if args.svg:
        args.svg.write_text(svg(result))
    print("\n".join(report(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
