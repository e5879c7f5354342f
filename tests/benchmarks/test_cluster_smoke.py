"""Smoke test of benchmark 9 (the relay cluster on PostgreSQL): a tiny run, its model."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import b9_cluster  # noqa: E402
from tests.support.postgres import PgServer  # noqa: E402


def test_one_node_run_counts_every_sale_and_feeds_the_model(
    pg_server: PgServer, tmp_path: Path
) -> None:
    run = b9_cluster.cluster_run(pg_server, tmp_path, 1, 2, 10, 50.0, 60.0, idle=5)
    assert run["complete"] and run["follower_sales"] == 20
    # One ledger record and one stock slot per sale, committed as two update rows.
    assert 1.9 <= run["rows_per_sale"] <= 2.2
    assert run["payload_bytes_per_sale"] > 0 and run["table_bytes_per_sale"] > 0
    assert run["ack_p50_ms"] is not None and run["ack_p50_ms"] <= run["ack_p99_ms"]
    assert run["kb_per_idle_connection"] >= 0
    chain = b9_cluster.model(run, kb_per_connection=100.0)
    assert chain["sales_per_day"] == 600_000
    assert chain["pg_rows_per_day"] == round(600_000 * run["rows_per_sale"])
    assert chain["relay_mb_for_connections"] == round(3000 * 100.0 / 1024, 1)
