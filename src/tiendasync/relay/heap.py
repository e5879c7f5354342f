"""Giving the memory of unloaded documents back to the operating system.

A relay loads documents, serves them and unloads them when idle, all year.
pycrdt's documents live in native memory, and glibc's allocator keeps what
they freed in its heap for reuse: measured over a simulated chain year
(``benchmarks/long_life.py``), the heap a relay held in use stayed flat while
the heap it kept free grew month after month, because the next documents
loaded never fit exactly in the holes the last ones left.  ``malloc_trim``
returns the free pages of every arena to the system.

Two parts: :class:`HeapTrimPolicy` decides *when* (sans I/O: the caller
passes the time and what it unloaded), :func:`release_free_heap` does it.
Elsewhere than glibc (macOS, musl) there is nothing to call and the relay's
RSS is the platform allocator's business.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["HeapTrimPolicy", "release_free_heap"]


@dataclass
class HeapTrimPolicy:
    """Trim after documents were unloaded, at most once per ``min_interval_s``.

    ``released`` counts the documents unloaded since the last trim; a trim with
    nothing unloaded would only cost time (it walks the heap under its lock).
    Times are seconds on one monotonic clock.
    """

    min_interval_s: float
    last_trim: float | None = None
    released: int = 0

    def unloaded(self, count: int) -> None:
        """``count`` documents (any non-negative number) left memory."""
        self.released += max(0, count)

    def due(self, now: float) -> bool:
        """Whether to trim now; if so, the policy counts it as done."""
        if self.released == 0:
            return False
        if self.last_trim is not None and now - self.last_trim < self.min_interval_s:
            return False
        self.last_trim = now
        self.released = 0
        return True


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


def release_free_heap() -> bool:
    """Return the allocator's free heap to the system; False where there is no
    ``malloc_trim`` (or it found nothing to return).  Safe from any thread."""
    trim = _malloc_trim()
    return trim is not None and bool(trim(0))
