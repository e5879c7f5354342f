"""Giving the memory of unloaded documents back (relay/heap.py)."""

from __future__ import annotations

import itertools
import platform
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

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
