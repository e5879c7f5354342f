"""Smoke test of the paced-load tools of issue 19: the A/B against a baseline revision
and the echo server's floor, in a tiny configuration (seconds)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import ab_paced, paced_floor  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def test_ab_paced_runs_both_trees(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ab.json"
    argv = ["--baseline", "HEAD", "--k", "2", "--rates", "20", "--seconds", "0.5"]
    assert ab_paced.main([*argv, "--bulk-sales", "0", "--rounds", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["2x20/s"]
    for who in ("baseline", "candidate"):
        assert row[who]["complete"] and row[who]["sales"] == 20
        assert row[who]["cpu_ms_per_sale"] >= 0 and row[who]["lat_p50_ms"] > 0
    assert "2x20/s       cpu_ms_per_sale" in capsys.readouterr().out


def test_ab_paced_compression_arms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--compression``: the same tree, light stores plain (baseline) then compressing."""
    from benchmarks import b3_light

    seen: list[tuple[str | None, bool]] = []
    connect = b3_light.LightStore.connect

    async def recording(self: b3_light.LightStore, url: str) -> None:
        await connect(self, url)
        seen.append((b3_light.COMPRESSION, self.compressed))

    monkeypatch.setattr(b3_light.LightStore, "connect", recording)
    out = tmp_path / "ab.json"
    argv = ["--compression", "--k", "2", "--rates", "20", "--seconds", "0.5"]
    assert ab_paced.main([*argv, "--bulk-sales", "0", "--rounds", "1", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["2x20/s"]
    for who in ("baseline", "candidate"):
        assert row[who]["complete"] and row[who]["sales"] == 20
    # each arm's stores (and follower, and headquarters) connected as configured
    assert {(None, False), ("deflate", True)} == set(seen)
    assert b3_light.COMPRESSION is None
    assert "2x20/s       cpu_ms_per_sale" in capsys.readouterr().out


def test_paced_floor_reports_bulk_and_paced(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--k", "2", "--rates", "50", "--seconds", "0.3", "--bulk", "500"]
    assert paced_floor.main(argv) == 0
    text = capsys.readouterr().out
    assert "echo server, bulk:" in text and "2 x 50/s (100/s)" in text and "bulk" in text


def test_wire_breakdown_adds_up(tmp_path: Path) -> None:
    from benchmarks import wire_breakdown

    result = wire_breakdown.breakdown(tmp_path, lines=1)
    assert result["captured_docs"][0].startswith("sales/") and len(result["docs"]) == 2
    parts = result["websocket_header"]
    for part in result["docs"].values():
        assert part["keys"] + part["content"] + part["other"] == part["update"]
        parts += part["envelope"] + part["update"]
    assert parts == result["total"] and 64 < result["total"] < 200
    assert result["docs"]["sales"]["content"] > 0  # the sale record's JSON text
    deflated = wire_breakdown.compressed(tmp_path, lines=1, sales=40)
    assert deflated["total"] == deflated["deflated_payload"] + deflated["websocket_header"]
    # the window kept across messages: a streamed sale deflates to a fraction of itself
    assert deflated["total"] <= 64 < deflated["uncompressed_payload"]
