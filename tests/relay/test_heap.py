"""Giving the memory of unloaded documents back (relay/heap.py)."""

from __future__ import annotations

import asyncio
import itertools
import platform
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tiendasync.relay.server as server_module
from tiendasync import Replica
from tiendasync.relay import RelayServer, SqliteRelayStore, issue_token
from tiendasync.relay.heap import HeapTrimPolicy, release_free_heap

events = st.lists(
    st.tuples(st.floats(min_value=0, max_value=30), st.integers(min_value=-2, max_value=5)),
    max_size=40,
)


@given(min_interval=st.floats(min_value=0.5, max_value=60), steps=events)
def test_trims_only_after_unloading_and_never_twice_within_the_interval(
    min_interval: float, steps: list[tuple[float, int]]
) -> None:
    policy = HeapTrimPolicy(min_interval)
    now = 0.0
    pending = 0
    trims: list[float] = []
    for gap, count in steps:
        now += gap
        policy.unloaded(count)
        pending += max(0, count)
        if policy.due(now):
            assert pending > 0, "a trim with nothing unloaded"
            trims.append(now)
            pending = 0
        elif pending and (not trims or now - trims[-1] >= min_interval):
            raise AssertionError("something was unloaded and the interval passed: no trim")
    assert all(b - a >= min_interval for a, b in itertools.pairwise(trims))


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_the_free_heap_left_between_live_blocks_goes_back_to_the_system() -> None:
    assert platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    # 4 KiB blocks come from the heap (below the mmap threshold); one kept in
    # every 64 pins the heap's top, so the allocator alone returns nothing.
    blocks = [bytes(4096) + bytes([i % 251]) for i in range(16_384)]
    kept = blocks[::64]
    del blocks
    before = _rss_kib()
    assert release_free_heap()
    after = _rss_kib()
    assert before - after > 32 * 1024, (before, after)
    assert len(kept) == 256


@pytest.mark.parametrize("trim_heap", [True, False])
def test_a_relay_trims_its_heap_after_unloading_documents_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trim_heap: bool
) -> None:
    trims: list[int] = []

    def counted() -> bool:
        trims.append(len(relay_docs()))
        return True

    monkeypatch.setattr(server_module, "release_free_heap", counted)
    holder: list[RelayServer] = []

    def relay_docs() -> list[object]:
        return list(holder[0].docs._docs) if holder else []

    async def scenario() -> tuple[int, int]:
        with SqliteRelayStore(str(tmp_path / "relay.db")) as store:
            token = issue_token(store, tenant="acme", replica_id="tienda-1")
            async with RelayServer(store, port=0, idle_seconds=1.0, trim_heap=trim_heap) as relay:
                holder.append(relay)

                def sell_and_sync() -> None:
                    with Replica.open(
                        tmp_path / "tienda-1.db",
                        tenant="acme",
                        replica_id="tienda-1",
                        location="tienda-1",
                    ) as replica:
                        replica.catalog.put("SKU-1", {"name": "Cafe", "price_cents": 450})
                        replica.inventory.receive("SKU-1", 5)
                        replica.sync_now(f"ws://127.0.0.1:{relay.port}/sync", token=token)

                await asyncio.to_thread(sell_and_sync)
                loaded = len(relay_docs())
                for _ in range(100):  # the sweep unloads what was idle 1 s (at most 10 s)
                    if not relay_docs() and (trims or not trim_heap):
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.5)  # more sweeps, nothing more unloaded
                return loaded, len(relay_docs())

    loaded, left = asyncio.run(scenario())
    assert loaded > 0 and left == 0
    # Trimmed once the documents were gone, and not again at every sweep after.
    assert trims == ([0] if trim_heap else [])
