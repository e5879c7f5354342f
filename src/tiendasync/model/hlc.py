"""Hybrid logical clock (HLC).

A timestamp is ``(wall_ms, counter, replica_id)``.  Timestamps from one clock
strictly increase, even when the machine's wall clock jumps backwards, and a
clock that has seen a remote timestamp never issues one below it.  Ordering is
total: ties on ``(wall_ms, counter)`` are broken by ``replica_id``.

The clock reads time only through the ``wall`` callable it is given, so tests
and the sans-I/O layers can drive it deterministically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from tiendasync.errors import ClockError, InvalidArgument

__all__ = ["DEFAULT_MAX_DRIFT_MS", "HLC", "Timestamp"]

#: A remote timestamp further ahead of our wall clock than this is refused.
DEFAULT_MAX_DRIFT_MS = 24 * 60 * 60 * 1000

_MAX_COUNTER = 2**31 - 1


class Timestamp(NamedTuple):
    """One HLC reading; tuples compare in the clock's total order."""

    wall_ms: int
    counter: int
    replica_id: str

    def encode(self) -> str:
        """A compact text form that sorts like the timestamp (for ids and storage).

        Fixed widths: 13 digits of wall_ms, 10 of counter (the clock issues
        counters up to 2**31 - 1, which has 10 digits).
        """
        return f"{self.wall_ms:013d}.{self.counter:010d}.{self.replica_id}"

    @classmethod
    def decode(cls, text: str) -> Timestamp:
        """Inverse of :meth:`encode`; raises :class:`InvalidArgument` on bad text."""
        try:
            wall, counter, replica = text.split(".", 2)
            return cls(int(wall), int(counter), replica)
        except ValueError as exc:
            raise InvalidArgument(f"not an HLC timestamp: {text!r}") from exc


def _system_wall_ms() -> int:
    return time.time_ns() // 1_000_000


class HLC:
    """A hybrid logical clock owned by one replica.

    ``now()`` issues a new timestamp for a local event; ``observe(ts)`` folds in
    a timestamp seen on a remote write.  ``last`` is the greatest timestamp the
    clock has issued or observed; persist it and pass it back as ``last`` on
    restart so the clock never goes back.
    """

    def __init__(
        self,
        replica_id: str,
        *,
        wall: Callable[[], int] = _system_wall_ms,
        last: Timestamp | None = None,
        max_drift_ms: int = DEFAULT_MAX_DRIFT_MS,
    ) -> None:
        if not replica_id:
            raise InvalidArgument("an HLC needs a non-empty replica id")
        if max_drift_ms <= 0:
            raise InvalidArgument("max_drift_ms must be positive")
        self.replica_id = replica_id
        self._wall = wall
        self.max_drift_ms = max_drift_ms
        self._wall_ms = last.wall_ms if last else 0
        self._counter = last.counter if last else 0

    @property
    def last(self) -> Timestamp:
        """The greatest (wall_ms, counter) seen, stamped with our replica id."""
        return Timestamp(self._wall_ms, self._counter, self.replica_id)

    def now(self) -> Timestamp:
        """Issue a timestamp greater than every one issued or observed before."""
        physical = self._wall()
        if physical > self._wall_ms:
            self._wall_ms, self._counter = physical, 0
        else:
            self._bump()
        return self.last

    def now_many(self, n: int) -> Timestamp:
        """Issue ``n`` timestamps at once and return the first; the others follow it in
        the same millisecond, ``counter + 1`` to ``counter + n - 1`` (what ``n`` calls of
        :meth:`now` issue while the wall clock stands still).  A bulk write stamps its
        records with them without a call per record."""
        if not 0 < n <= _MAX_COUNTER:
            raise InvalidArgument(f"between 1 and {_MAX_COUNTER} timestamps at once, not {n}")
        first = self.now()
        if first.counter > _MAX_COUNTER - (n - 1):  # no room left in this millisecond
            self._wall_ms, self._counter = self._wall_ms + 1, 0
            first = self.last
        self._counter += n - 1
        return first

    def observe(self, remote: Timestamp) -> None:
        """Advance past a remote timestamp.

        Raises :class:`ClockError` (and leaves the clock unchanged) when
        ``remote`` is more than ``max_drift_ms`` ahead of our wall clock: one
        machine with a wrong date must not drag every clock into the future.
        """
        physical = self._wall()
        if remote.wall_ms - physical > self.max_drift_ms:
            raise ClockError(
                f"remote timestamp from {remote.replica_id!r} is "
                f"{(remote.wall_ms - physical) / 1000:.0f} s in the future "
                f"(limit {self.max_drift_ms / 1000:.0f} s); check that machine's clock"
            )
        if (remote.wall_ms, remote.counter) > (self._wall_ms, self._counter):
            self._wall_ms, self._counter = remote.wall_ms, remote.counter

    def _bump(self) -> None:
        if self._counter >= _MAX_COUNTER:
            self._wall_ms, self._counter = self._wall_ms + 1, 0
        else:
            self._counter += 1
