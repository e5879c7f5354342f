"""Convergence with document generations: the state machine of
``test_convergence_stateful`` plus relay restarts that roll every counter and
LWW document over to a new generation (docs/generations.md).

Everything the base machine does still happens (sales, receipts, transfers,
stocktakes, product edits; message loss, duplication, reordering, broken
connections, partitions; replica crashes, relay restarts; the malicious
store) and a rollover may come between any two steps: stores offline across
it send their writes to the old generation late, the relay carries them
once, every store moves to the new generation once its writes are
acknowledged, the relay's own writer follows.  The teardown's checks are the
base machine's: every store and the relay's writer hold the same state, the
stock totals equal the model (each sale counted once), every returned sale is
everywhere, and the open conflicts are the invariants' verdict.

Rollovers come whether or not every store has moved: a store offline across
several of them holds a generation two or more behind, and its writes to it
are carried straight into the current one (docs/generations.md).

CI runs a bounded profile; ``TIENDASYNC_SOAK=1 pytest -m soak`` the long one.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest
from hypothesis.stateful import precondition, rule, run_state_machine_as_test

from tests.convergence.test_convergence_stateful import (
    CI_SETTINGS,
    FIGURES,
    LOCS,
    SOAK_SETTINGS,
    START_MS,
    SyncConvergence,
)
from tests.support.rollovers import EVERYTHING
from tests.support.simnet import SimClock, SimNet


class RolloverConvergence(SyncConvergence):
    def __init__(self) -> None:
        super().__init__()
        self.rollovers = 0

    def _count_stores_far_behind(self) -> None:
        """Count the honest stores that now hold a document two or more generations
        behind the relay's (their writes to it are carried across several cuts)."""
        net = self.n
        relay = net.relay.store.generations(net.tenant)
        for name in self.names:
            r = net.replica(name)
            held = r.core.generations()
            if any(relay.get(d, 0) - held.get(d, 0) >= 2 for d in r.doc_names()):
                FIGURES["stores_two_generations_behind"] += 1

    @precondition(lambda self: self.net is not None and self.rollovers < 4)
    @rule()
    def rollover(self) -> None:
        """Restart the relay with rollover on: every document starts a new generation."""
        self.rollovers += 1
        lost = self.n.restart_relay(rollover=EVERYTHING)
        FIGURES["rollovers"] += 1
        FIGURES["relay_writes_lost_uncommitted"] += lost
        self._count_stores_far_behind()

    @precondition(lambda self: self.net is not None and self.rollovers < 4)
    @rule()
    def rollover_live(self) -> None:
        """Roll every document over while the relay runs: live sessions are sent to a new
        session, queued writes are committed first, the relay's writer is reopened."""
        self.rollovers += 1
        self.n.roll_over_live(EVERYTHING)
        FIGURES["rollovers"] += 1
        FIGURES["live_rollovers"] += 1
        self._count_stores_far_behind()

    def _heal_and_check(self) -> None:
        super()._heal_and_check()
        FIGURES["rollover_cases"] += bool(self.rollovers)
        FIGURES["late_updates_carried"] += _late_updates(self)


def _late_updates(machine: RolloverConvergence) -> int:
    """Late updates the relay carried in this case (read from its store file)."""
    with contextlib.closing(sqlite3.connect(machine.n.relay.db_path)) as conn:
        (count,) = conn.execute("SELECT COUNT(*) FROM late_updates").fetchone()
    return int(count)


def test_convergence_with_rollovers() -> None:
    """CI profile: the base machine's bounds, with rollovers between any two steps."""
    FIGURES.clear()
    run_state_machine_as_test(RolloverConvergence, settings=CI_SETTINGS)
    print(f"\nrollover convergence: {dict(sorted(FIGURES.items()))}")
    assert FIGURES["rollovers"] > 0  # the rule ran: this was not the base machine again
    assert FIGURES["live_rollovers"] > 0
    assert FIGURES["cases_converged"] == FIGURES["cases"]


@pytest.mark.soak
@pytest.mark.timeout(6 * 3600)
def test_convergence_with_rollovers_soak() -> None:
    """Soak profile (``make soak``): the base machine's long bounds, with rollovers."""
    FIGURES.clear()
    run_state_machine_as_test(RolloverConvergence, settings=SOAK_SETTINGS)
    print(f"\nrollover convergence (soak): {dict(sorted(FIGURES.items()))}")
    assert FIGURES["rollovers"] > 0
    assert FIGURES["stores_two_generations_behind"] > 0  # carried across several cuts
    assert FIGURES["cases_converged"] == FIGURES["cases"]


def test_a_document_created_after_the_hello_is_recorded_at_the_relays_generation(
    tmp_path: Path,
) -> None:
    """Found by the soak profile: a transfer into a location's stock document the store
    did not hold when it sent its HELLO reaches the relay's current generation; the
    file must record that generation, or the next HELLO (telling 0) has it carried
    over a second time."""
    net = SimNet(tmp_path, seed=7, clock=SimClock(START_MS))
    try:
        a = net.add_replica("a", LOCS[0]).replica
        b = net.add_replica("b", LOCS[1]).replica
        b.locations.put(LOCS[0])
        a.inventory.receive("LECHE", 10)
        net.connect("a")
        net.run()  # b has not synced yet: it holds no stock of tienda-1
        net.restart_relay(rollover=EVERYTHING)  # stock/tienda-1 is at generation 1
        assert f"stock/{LOCS[0]}" not in b.doc_names()
        assert net.connect("b") is not None  # its HELLO is on its way, without the doc
        b.inventory.transfer("LECHE", 4, from_location=LOCS[0], to_location=LOCS[1])
        net.run()
        assert b.core.generations()[f"stock/{LOCS[0]}"] == 1
        net.heal()
        net.heal()  # (a second session: its HELLO tells generation 1, nothing is carried)
        for r in (a, b):
            assert r.inventory.stock("LECHE", location=LOCS[0]) == 6
            assert r.inventory.stock("LECHE", location=LOCS[1]) == 4
    finally:
        net.close()
