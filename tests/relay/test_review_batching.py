"""The central review gathers committed batches (``CentralReviews.defer``): one merge and
one review for all of them, each conflict opened once; a flood is handed over at once.

Deterministic: the simulated network drives the relay's core; ``defer`` is a list the
test empties, where the server would start a timer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.relay.test_central_retry import _open_stock_conflicts, _oversell
from tests.support.simnet import SimNet
from tiendasync.relay.reviews import ReviewWork


def _deferring(net: SimNet, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[int]]:
    """Defer the net's reviews into a list; count the works run and what they merged."""
    deferred: list[Callable[[], None]] = []
    merged: list[int] = []
    reviews = net.relay.core.reviews
    assert reviews is not None
    reviews.defer = deferred.append
    real_run = ReviewWork.run

    def run(work: ReviewWork) -> None:
        merged.append(sum(len(u) for u in work.updates.values()))
        real_run(work)

    monkeypatch.setattr(ReviewWork, "run", run)
    return deferred, merged


def test_committed_batches_are_reviewed_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = SimNet(tmp_path, seed=7)
    try:
        _oversell(net)
        central = net.relay.central()
        deferred, merged = _deferring(net, monkeypatch)
        net.connect("a")
        net.connect("b")
        net.run()
        assert net.replica("a").inventory.stock("CAFE") == -3  # stored and acknowledged
        assert len(deferred) == 1  # one flush asked for, however many commits
        assert merged == [] and _open_stock_conflicts(central) == []
        deferred.pop()()
        assert len(merged) == 1 and merged[0] >= 2  # both stores' sales in one work
        (conflict,) = _open_stock_conflicts(central)
        assert conflict.observed == -3
        net.run()  # the conflict record is stored and fanned out: reviewed, nothing new
        for flush in list(deferred):
            flush()
        assert [c.id for c in _open_stock_conflicts(central)] == [conflict.id]
    finally:
        net.close()


def test_past_max_pending_the_batch_is_handed_over_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = SimNet(tmp_path, seed=7)
    try:
        _oversell(net)
        central = net.relay.central()
        deferred, merged = _deferring(net, monkeypatch)
        reviews = net.relay.core.reviews
        assert reviews is not None
        reviews.max_pending = 1
        net.connect("a")
        net.connect("b")
        net.run()
        assert deferred == [] and merged  # never deferred: every batch went at once
        (conflict,) = _open_stock_conflicts(central)
        assert conflict.observed == -3
    finally:
        net.close()
