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

A store two generations behind is refused by design (docs/generations.md),
so a second rollover waits until every honest store has moved to the
current generation.

CI runs a bounded profile; ``TIENDASYNC_SOAK=1 pytest -m soak`` the long one.
"""

from __future__ import annotations

import contextlib
import sqlite3

import pytest
from hypothesis.stateful import precondition, rule, run_state_machine_as_test

from tests.convergence.test_convergence_stateful import (
    CI_SETTINGS,
    FIGURES,
    SOAK_SETTINGS,
    SyncConvergence,
)
from tiendasync.relay.generations import RolloverPolicy

#: Every document past one byte rolls over: all of them, at each rollover.
EVERYTHING = RolloverPolicy(max_bytes=1)


class RolloverConvergence(SyncConvergence):
    def __init__(self) -> None:
        super().__init__()
        self.rollovers = 0

    def _everyone_current(self) -> bool:
        """Whether every honest store holds every document at the relay's generation."""
        net = self.n
        relay = net.relay.store.generations(net.tenant)
        for name in self.names:
            r = net.replica(name)
            held = r.core.generations()
            if any(held.get(d, 0) != relay.get(d, 0) for d in r.doc_names()):
                return False
        return True

    @precondition(
        lambda self: self.net is not None and self.rollovers < 3 and self._everyone_current()
    )
    @rule()
    def rollover(self) -> None:
        """Restart the relay with rollover on: every document starts a new generation."""
        self.rollovers += 1
        lost = self.n.restart_relay(rollover=EVERYTHING)
        FIGURES["rollovers"] += 1
        FIGURES["relay_writes_lost_uncommitted"] += lost

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
    assert FIGURES["cases_converged"] == FIGURES["cases"]


@pytest.mark.soak
@pytest.mark.timeout(6 * 3600)
def test_convergence_with_rollovers_soak() -> None:
    """Soak profile (``make soak``): the base machine's long bounds, with rollovers."""
    FIGURES.clear()
    run_state_machine_as_test(RolloverConvergence, settings=SOAK_SETTINGS)
    print(f"\nrollover convergence (soak): {dict(sorted(FIGURES.items()))}")
    assert FIGURES["rollovers"] > 0
