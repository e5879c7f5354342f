"""Smoke test of the benchmarks: a tiny configuration of each, in seconds.

Keeps ``benchmarks/`` from rotting.  It needs neither matplotlib nor the
peer (pycrdt-websocket): the peer comparison runs only when the ``bench``
extra is installed, and is checked here only then (said in the output).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import Figure, table  # noqa: E402

from benchmarks import (  # noqa: E402
    b1_sale,
    b2_import,
    b3_relay,
    b4_wire,
    b5_storm,
    b6_state,
    b7_gate,
    long_life,
    peer,
    plots,
    run,
)

pytestmark = pytest.mark.timeout(240)


def _check(figs: list[Figure], bench: str) -> None:
    assert figs, f"{bench} produced no figure"
    for f in figs:
        assert f.bench == bench
        assert math.isfinite(f.value) and f.value >= 0, f
        if f.baseline is not None:
            assert f.ratio is not None and math.isfinite(f.ratio)
        json.dumps(f.to_dict())


def test_durable_sale(tmp_path: Path) -> None:
    _check(b1_sale.run(tmp_path, **run.TINY["sale"]), "1-durable-sale")


def test_import_and_open_time(tmp_path: Path) -> None:
    figs = b2_import.run(tmp_path, **run.TINY["import"])
    _check(figs, "2-import")
    n = run.TINY["import"]["products"]
    opened = b6_state.open_time(tmp_path, tmp_path / "b2-replica.db", tmp_path / "b2-raw.db", n)
    _check(opened, "6-state")
    assert opened[0].extra["skus_in_stock"] == n


def test_relay_throughput_without_peer(tmp_path: Path) -> None:
    figs = b3_relay.run(tmp_path, with_peer=False, **run.TINY["relay"])
    _check(figs, "3-relay")
    echo = [f for f in figs if "echo" in f.name]
    assert len(echo) == 2 and all(f.extra["tiendasync"]["sales"] > 0 for f in echo)


@pytest.mark.bench
def test_relay_peer(tmp_path: Path) -> None:
    """Needs the bench extra (run by `make bench-quick`, deselected from `make test`)."""
    why = peer.available()
    assert why is None, why
    result = b3_relay.peer_stream(tmp_path, 2, 5, 60)
    assert result["complete"], result


def test_wire(tmp_path: Path) -> None:
    figs = b4_wire.run(tmp_path, **run.TINY["wire"])
    _check(figs, "4-wire")
    assert figs[0].value > 0


def test_storm(tmp_path: Path) -> None:
    figs = b5_storm.run(tmp_path, **run.TINY["storm"])
    _check(figs, "5-storm")
    assert figs[0].extra["late_joiner_sales"] == 10


def test_state(tmp_path: Path) -> None:
    _check(b6_state.state_size(tmp_path, **run.TINY["state"]), "6-state")


def test_long_life(tmp_path: Path) -> None:
    till = long_life.till_year(tmp_path, days=3, sales_per_day=5, skus=60)
    _check(till, "long_life")
    assert {f.extra["day"] for f in till} == {1, 3}
    svs = [f.value for f in till if f.name.startswith("state-vector")]
    assert svs == [2.0, 4.0]  # the seeding incarnation, then one per day that sold
    gens = long_life.till_generations(tmp_path, days=3, sales_per_day=5, skus=60, rollover_slots=1)
    _check(gens, "long_life")
    assert {f.extra["mode"] for f in gens} == {"generations"}
    # the relay restarted (with rollover) after days 1 and 2: the till moved twice
    assert [f.extra["generation"] for f in gens if f.name.startswith("state-vector")] == [0, 2]
    assert [f.value for f in gens if f.name.startswith("state-vector")][-1] <= svs[-1]
    arms = long_life.chain_arms(60, restart_every=1)[1:]
    chain = long_life.chain_year(tmp_path, days=2, stores=2, sales_per_day=2, skus=60, arms=arms)
    _check(chain, "long_life")
    assert [(f.extra["day"], f.extra["arm"]) for f in chain] == [
        (day, arm.label) for day in (1, 2) for arm in arms
    ]


def test_gate(tmp_path: Path) -> None:
    per_update, through = b7_gate.run(workdir=tmp_path, **run.TINY["gate"])
    _check([per_update, through], "7-gate")
    assert through.baseline is not None and through.baseline > 0
    assert through.extra["sales"] == run.TINY["gate"]["e2e"]["sales"]
    assert per_update.value > 0 and per_update.extra["updates"] == 40


def test_table_and_plots(tmp_path: Path) -> None:
    figs = [
        Figure(
            "3-relay",
            "K=1 sales/s vs pycrdt-websocket+store",
            100.0,
            "sales/s",
            baseline=10.0,
            ratio=10.0,
            target=">= 10",
            met=True,
        ),
        Figure(
            "4-wire",
            "streaming, 1-line sales: bytes up per sale line",
            100.0,
            "B/line",
            baseline=64,
            ratio=1.5,
            target="<= 64 B",
            met=False,
            extra={
                "lines_per_sale": 1,
                "yjs_update_bytes_per_line": {"sales": 50},
                "uncompressed": {"up_per_line": 140.0},
            },
        ),
    ]
    text = table(figs)
    assert "K=1" in text and "NO" in text
    if plots.available() is None:
        written = plots.render({"figures": [f.to_dict() for f in figs]}, tmp_path)
        assert written and all(p.stat().st_size > 0 for p in written)


def test_the_ungated_baseline_really_has_no_gate() -> None:
    """Benchmark 7's baseline relay lets through what the product refuses."""
    import subprocess

    probe = (
        "import pycrdt; "
        "from benchmarks.ungated_relay import ungate; "
        "from tiendasync.relay import sessions; "
        "from tiendasync.relay.ownership import OwnershipGate; "
        "doc = pycrdt.Doc(); doc['m'] = pycrdt.Map({'k': 1}); "
        "update = doc.get_update(); "
        "assert sessions.parse_update(update, items=True).items; "
        "ungate(); "
        "assert OwnershipGate.refusal(None, 't', 'conflicts', None, None) is None; "
        "assert not sessions.parse_update(update, items=True).items"
    )
    subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True)
