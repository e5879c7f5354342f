"""Smoke test of ``benchmarks.ab_store`` (issue 19 parts 3 and 4): a tiny A/B run."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import ab_store  # noqa: E402

pytestmark = pytest.mark.timeout(240)


def test_a_tiny_ab_run_measures_both_revisions() -> None:
    result = ab_store.compare("HEAD", rounds=1, sales=20, products=300, only=["sale", "import"])
    for side in ("baseline", "candidate"):
        (sale,) = result["sale"][side]
        assert sale["sales_per_s"] > 0 and sale["raw_per_s"] > 0
        assert math.isclose(sale["ratio"], sale["sales_per_s"] / sale["raw_per_s"], rel_tol=1)
        assert sale["wal_bytes_per_sale"] > 1000 and sale["btrees_per_sale"] >= 2
        (imp,) = result["import"][side]
        assert imp["one_pass_api"] is True
        for how in ("one_call", "batches"):
            assert imp[how]["s"] > 0 and imp[how]["ratio"] == imp[how]["raw_s"] / imp[how]["s"]
            cpu, raw_cpu = imp[how]["cpu_s"], imp[how]["raw_cpu_s"]
            assert cpu > 0 and imp[how]["cpu_ratio"] == raw_cpu / cpu
    lines = ab_store.report(result)
    assert lines[0].startswith("baseline HEAD, 1 round(s)")
    assert sum("record_sale / raw FULL commit" in line for line in lines) == 1
    assert sum(line.lstrip().startswith("import") for line in lines) == 4  # wall and CPU
    plot = ab_store.svg(result)
    assert plot.startswith("<svg") and plot.count("<rect") == 6 and plot.rstrip().endswith("</svg>")


def test_a_failing_worker_is_reported_with_its_error() -> None:
    with pytest.raises(RuntimeError, match=r"import worker failed[\s\S]*IndexError"):
        ab_store._worker(ROOT / "src", "import", {"sales": 1, "products": 0})  # no rows
