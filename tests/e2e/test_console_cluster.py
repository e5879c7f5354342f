"""The web console on a relay cluster, in a real browser: any node serves it.

Two ``tiendasync relay --store postgresql://`` processes on one real
PostgreSQL database; node n1 holds the review lock, both tills sync through
n1 and sell the last unit of milk while offline.  The console of node **n2**
lists the conflict, shows both nodes (n1 reviews, n2 is "this node"), shows
on which node each till is connected, and voids a sale: node n1 applies it
once and the tills converge.  Chromium is required (see tests/e2e/test_console.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.e2e.test_console import Chromium, chromium
from tests.e2e.test_relay_cluster import Node
from tests.support.processes import HOST, demo, wait_until
from tiendasync.relay.auth import issue_token
from tiendasync.relay.pgstore import PostgresRelayStore

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def two_nodes(pg_url: str, tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    n1 = Node(pg_url, tmp_path, "n1")
    started = [n1]
    try:
        wait_until(n1.up, "relay node n1 serving", 20)
        wait_until(
            lambda: n1.metrics().get("tiendasync_cluster_reviewer") == "1.0", "n1 reviews", 20
        )
        n2 = Node(pg_url, tmp_path, "n2")
        started.append(n2)
        wait_until(n2.up, "relay node n2 serving", 20)
        yield n1, n2
    finally:
        for n in started:
            n.stop()


def _login(browser: Chromium, url: str, token: str) -> None:
    browser.navigate(url)
    browser.wait("!!document.querySelector('#login-form input[type=password]')", "the login form")
    browser.type_into("#login-form input[type=password]", token)
    browser.press_enter()
    browser.wait("location.hash === '#/conflicts'", "the console opens on the queue")


def test_the_console_of_a_non_reviewing_node_resolves_a_conflict(
    pg_url: str, two_nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    n1, n2 = two_nodes
    with PostgresRelayStore(pg_url) as store:
        tokens = {r: issue_token(store, tenant="acme", replica_id=r) for r in ("caja-1", "caja-2")}
        admin_token = issue_token(store, admin=True)
    caja1 = demo.Store(tmp_path, "caja-1", n1.ws, tokens["caja-1"])
    caja2 = demo.Store(tmp_path, "caja-2", n1.ws, tokens["caja-2"])
    tills = [caja1, caja2]
    try:
        caja1.do("product LECHE-1L 120 Leche 1 L")
        caja1.do("receive LECHE-1L 1")
        for till in tills:
            till.do("online")
        for till in tills:
            till.do("wait-synced 20")
        wait_until(lambda: caja2.do("stock LECHE-1L") == 1, "caja-2 sees the last unit")
        for till in tills:
            till.do("offline")
        caja1.do("sell LECHE-1L 1")
        s2 = caja2.do("sell LECHE-1L 1")["id"]
        for till in tills:
            till.do("online")
        for till in tills:
            till.do("wait-synced 20")

        with chromium(tmp_path) as browser:
            _login(browser, f"http://{HOST}:{n2.admin_port}/console/", admin_token)
            conflict_id = browser.wait(
                "document.querySelector('tr[data-conflict]')?.dataset.conflict",
                "n2's queue lists the conflict n1's review opened",
                30,
            )

            # the nodes view: both live, n1 reviews, n2 is the one serving this page
            browser.click("#mainnav a[data-route=nodes]")
            rows = browser.wait(
                """(() => { const rows = [...document.querySelectorAll('tr[data-node]')];
                    return rows.length === 2 ? rows.map(r => [r.dataset.node,
                      r.querySelector('[data-reviews]').dataset.reviews, r.textContent]) : null;
                 })()""",
                "the nodes view lists both nodes",
            )
            assert [(name, reviews) for name, reviews, _ in rows] == [
                ("n1", "true"),
                ("n2", "false"),
            ]
            assert "este nodo" in rows[1][2] and "este nodo" not in rows[0][2]
            assert browser.js("document.querySelector('#nodes-summary').textContent") == (
                "2 nodos en vivo"
            )

            # the stores view: both tills on n1
            browser.click("#mainnav a[data-route=stores]")
            placed = browser.wait(
                """(() => { const dd = [...document.querySelectorAll('[data-nodes]')];
                    return dd.length === 2 ? dd.map(d => d.dataset.nodes) : null; })()""",
                "each till shows its relay node",
            )
            assert placed == ["n1", "n1"]

            # void caja-2's sale from n2's console: run on n1, once
            browser.navigate(f"http://{HOST}:{n2.admin_port}/console/#/conflict/{conflict_id}")
            browser.wait(f"!!document.querySelector(\"input[data-sale-id='{s2}']\")", "the sales")
            browser.click(f"input[data-sale-id='{s2}']")
            browser.click("#act-void-btn")
            browser.wait(
                "!!document.querySelector('#conflict-status .badge-resolved')",
                "the console of n2 shows the conflict resolved",
            )
            assert browser.error_notices() == []
            with psycopg.connect(pg_url) as conn:
                asked = conn.execute(
                    "SELECT id, state, asked_by, node FROM admin_requests "
                    "WHERE op = 'resolve_conflict'"
                ).fetchall()
            # asked by n2 with the console's own idempotency key, run by n1, once
            assert [(state, by, ran) for _, state, by, ran in asked] == [("done", "n2", "n1")]
            assert asked[0][0].startswith("console-")

            browser.click(".lang-switch button[data-lang=en]")
            browser.click("#mainnav a[data-route=nodes]")
            browser.wait(
                "document.querySelector('#page-title').textContent === 'Relay nodes' && "
                "/this node/.test(document.querySelector('tr[data-node=n2]')?.textContent)",
                "the nodes view in English",
            )

        wait_until(
            lambda: all(t.do("stock LECHE-1L") == 0 for t in tills), "stock is 0 on both tills"
        )
        wait_until(
            lambda: all(
                t.do("snapshot")["conflicts"].get(conflict_id) == "resolved" for t in tills
            ),
            "the conflict reads resolved on both tills",
        )
    finally:
        for till in tills:
            till.close()
