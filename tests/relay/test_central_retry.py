"""The central writer after a storage failure on its directory: logged, retried, caught up.

Deterministic: the simulated network drives the relay's core, and the central
writer's own storage (its ``write()`` transaction) is made to fail as a full
disk would, then to work again; ``RelayCore.retry_reviews`` is what the
server's housekeeping task calls every couple of seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.simnet import SimNet
from tiendasync.errors import StorageError
from tiendasync.relay.central import CentralWriter


class FullDisk:
    """Makes a central writer's storage transactions fail while ``full``."""

    def __init__(self, writer: CentralWriter, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        self.failures = 0
        storage = writer.replica.core.storage
        real = storage.write

        @contextmanager
        def write() -> Iterator[Any]:
            if self.full:
                self.failures += 1
                raise StorageError("write to central/acme.db failed: database or disk is full")
            with real() as conn:
                yield conn

        monkeypatch.setattr(storage, "write", write)


def _oversell(net: SimNet) -> None:
    """Two tills of one shop each sell 4 of the 5 in stock while apart."""
    a = net.add_replica("a", "tienda-1").replica
    b = net.add_replica("b", "tienda-1").replica
    a.catalog.put("CAFE", {"name": "Café", "price_cents": 100})
    a.inventory.receive("CAFE", 5)
    net.connect("a")
    net.connect("b")
    net.run()
    assert b.inventory.stock("CAFE") == 5
    net.disconnect("a")
    net.disconnect("b")
    a.record_sale([("CAFE", 4, 100)])
    b.record_sale([("CAFE", 4, 100)])


def _open_stock_conflicts(writer: CentralWriter) -> list[Any]:
    return [c for c in writer.conflicts(status="open") if c.sku == "CAFE"]


def test_failed_merges_are_caught_up_once_the_disk_is_writable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    net = SimNet(tmp_path, seed=7)
    try:
        _oversell(net)
        central = net.relay.central()
        disk = FullDisk(central, monkeypatch)
        disk.full = True
        with caplog.at_level(logging.ERROR, logger="tiendasync.relay"):
            net.connect("a")
            net.connect("b")
            net.run()
        assert net.replica("a").inventory.stock("CAFE") == -3  # the relay has both sales
        assert disk.failures > 0 and _open_stock_conflicts(central) == []
        assert "failed (retried later)" in caplog.text  # said loudly, not silent
        assert central.needs_retry
        net.relay.core.retry_reviews()  # still full: still waiting, nothing lost
        assert _open_stock_conflicts(central) == [] and central.needs_retry

        disk.full = False
        net.relay.core.retry_reviews()
        net.run()
        (conflict,) = _open_stock_conflicts(central)
        assert conflict.invariant == "non_negative_stock" and conflict.observed == -3
        assert not central.needs_retry
        # the conflict record reached the relay and the tills like any write
        net.run()
        assert any(c.sku == "CAFE" for c in net.replica("a").conflicts.list(status="open"))
    finally:
        net.close()


def test_a_failed_review_keeps_its_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Merges work, the review's own write fails: the touched keys are not drained away."""
    net = SimNet(tmp_path, seed=7)
    try:
        _oversell(net)
        central = net.relay.central()
        disk = FullDisk(central, monkeypatch)
        book = central.replica.conflicts
        real_review = book.review

        def review_on_full_disk(*args: Any, **kwargs: Any) -> Any:
            disk.full = True
            try:
                return real_review(*args, **kwargs)
            finally:
                disk.full = False

        monkeypatch.setattr(book, "review", review_on_full_disk)
        net.connect("a")
        net.connect("b")
        net.run()
        assert disk.failures > 0 and _open_stock_conflicts(central) == []
        assert central.needs_retry

        monkeypatch.setattr(book, "review", real_review)
        net.relay.core.retry_reviews()
        net.run()
        (conflict,) = _open_stock_conflicts(central)
        assert conflict.observed == -3 and not central.needs_retry
    finally:
        net.close()
