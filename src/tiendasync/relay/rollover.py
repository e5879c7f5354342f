"""Rolling documents over while the relay runs (docs/generations.md).

At start the relay rolls over every document past its
:class:`~tiendasync.relay.generations.RolloverPolicy` before it serves
anyone.  A relay that runs for months must fold its documents without a
restart too, or its memory grows with every incarnation of every till.
Two parts:

* :class:`RolloverSchedule` decides *which* documents to look at and *when*
  (sans I/O: the pump passes the time in): those committed to since the last
  look, every ``check_s`` seconds, and never one rolled over (or the relay
  started) less than ``min_interval_s`` ago, so stores move over at most that
  often (one offline longer is carried across several cuts at once);
* :class:`LiveRollover` checks those documents cheaply (below) and runs one
  rollover on the event loop, in the steps of
  :meth:`~tiendasync.relay.core.RelayCore.begin_rollover`: the sessions that
  may use the document are sent to a new session, every queued write is
  committed, the late updates of the document are carried, the central
  writer's reviews handed over so far run (later ones wait), the cut is
  stored (in a worker thread), the document is served again from storage
  and the central writer moves over in place.  Stores come back
  at once, a generation behind, and move over as after a restart.
  Without a schedule (rollover while running off) it still runs the
  rollovers asked for (:meth:`~tiendasync.relay.RelayServer.roll_over`).

The check of a loaded document runs on the event loop, so it neither encodes
the document nor replays it: the engine's key count, the sum of its clocks
and the stored bytes (read in a worker thread).  Every key added since the
last full count took at least one clock tick and a delete never adds to what
a cut folds, so "what it folded then plus the ticks since" bounds what it
folds now; the keys are counted again
(:func:`~tiendasync.relay.generations.footprint`) only once that bound could
pass the policy.

On a relay cluster the node holding the review lock decides and cuts, as a
lone relay does for its own sessions and central writers.  The other nodes'
sessions are not waited for: the cut commits under the document's row lock
with a notice (``relay.cluster``), every node drops the old generation and
sends its sessions of it away, and a write a node applied to the old one is
refused by the store of record (``GenerationMoved``), so its store sends it
again as a late update, carried once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from tiendasync.crdt.generations import slot_count
from tiendasync.errors import ConfigError, TiendaSyncError
from tiendasync.relay.core import RelayCore
from tiendasync.relay.docs import RelayDoc
from tiendasync.relay.generations import (
    Footprint,
    Generations,
    RolloverPolicy,
    crdt_of,
    footprint,
)
from tiendasync.relay.state import PendingWrite
from tiendasync.relay.storage import AppendResult

__all__ = ["LiveRollover", "RolloverSchedule", "loaded_due"]

log = logging.getLogger("tiendasync.relay.generations")

#: How long a rollover waits for the queued writes to be committed before it gives up
#: (and serves the document on, uncut: it is tried again at the next check).
SETTLE_TIMEOUT_S = 30.0

DocKey = tuple[str, str]


@dataclass
class RolloverSchedule:
    """Which documents to check for a rollover while the relay runs, and when.

    ``started_at`` counts as every document's last rollover (the relay rolls
    documents over at start).  Times are seconds on one clock (the pump's).
    """

    min_interval_s: float
    started_at: float
    check_s: float = 60.0
    _changed: set[DocKey] = field(default_factory=set)
    _last: dict[DocKey, float] = field(default_factory=dict)
    _next_check: float = 0.0

    def __post_init__(self) -> None:
        if not self.min_interval_s > 0 or not self.check_s > 0:
            raise ConfigError("a rollover interval and its check period must be positive")
        self._next_check = self.started_at + min(self.check_s, self.min_interval_s)

    def noted(self, keys: Iterable[DocKey]) -> None:
        """These documents were committed to (only counter and LWW ones are kept)."""
        for key in keys:
            if key not in self._changed and crdt_of(key[1]) is not None:
                self._changed.add(key)

    def candidates(self, now: float) -> list[DocKey]:
        """The documents to check now: committed to since their last check and not
        rolled over within ``min_interval_s`` (none until the next check is due)."""
        if now < self._next_check:
            return []
        self._next_check = now + self.check_s
        ready = sorted(
            key
            for key in self._changed
            if now - self._last.get(key, self.started_at) >= self.min_interval_s
        )
        self._changed.difference_update(ready)
        return ready

    def rolled(self, key: DocKey, now: float) -> None:
        self._last[key] = now

    def restart(self, now: float) -> None:
        """Count ``now`` as every document's last rollover (a cluster node that starts
        deciding: the node that decided before may have cut any of them just now)."""
        self.started_at = now
        self._last.clear()
        self._next_check = now + min(self.check_s, self.min_interval_s)


def loaded_due(policy: RolloverPolicy, crdt: str, rdoc: RelayDoc, stored_bytes: int) -> bool:
    """Whether a cut of ``rdoc`` (a loaded counter or LWW document) folds past
    ``policy``: ``policy.due(footprint(...))``, but counting its keys only when the bound
    from its last count (``rdoc.fold_tally``) could pass it (see the module docstring)."""
    slots = slot_count(crdt, rdoc.doc)
    ticks = sum(rdoc.clocks().values())
    most = slots  # nothing counted yet: every slot might fold
    if rdoc.fold_tally is not None and ticks >= rdoc.fold_tally[0]:
        most = min(slots, rdoc.fold_tally[1] + ticks - rdoc.fold_tally[0])
    if not policy.due(Footprint(slots, slots - most, stored_bytes)):
        return False  # not even if every key added since folds
    counted = footprint(crdt, rdoc.doc, stored_bytes)
    rdoc.fold_tally = (ticks, counted.foldable_slots)
    return policy.due(counted)


def _nothing() -> None:
    """A review-thread barrier: runs after everything handed to it before."""


class LiveRollover:
    """One relay's rollovers while it runs (see the module docstring).

    ``schedule``: which documents to check, and when (None: none are, and only
    :meth:`roll_over` runs).  ``settle(timeout)``: wait until the writes queued now are committed
    (whether they were); ``late_lock(key)``: the lock late updates of a
    document are carried under; ``in_reviews(fn)``: run ``fn`` where the central
    writers' reviews run, after those handed over so far.
    """

    def __init__(
        self,
        core: RelayCore,
        generations: Generations,
        schedule: RolloverSchedule | None,
        *,
        settle: Callable[[float], Awaitable[bool]],
        late_lock: Callable[[DocKey], AbstractAsyncContextManager[object]],
        in_reviews: Callable[[Callable[[], None]], Awaitable[None]],
        deciding: Callable[[], bool] = lambda: True,
    ) -> None:
        self.core = core
        self._deciding = deciding
        self._decided = True
        self.generations = generations
        self.schedule = schedule
        self._settle = settle
        self._late_lock = late_lock
        self._in_reviews = in_reviews
        self._checking: asyncio.Task[None] | None = None
        #: rollovers done while running (``/metrics``-style figure, and the tests')
        self.count = 0
        #: documents checked for a rollover while running (the same)
        self.checked = 0

    def committed(self, batch: list[PendingWrite], _result: AppendResult) -> None:
        """``GroupCommit.after_commit``: note the documents written to."""
        if self.schedule is not None:
            self.schedule.noted((w.tenant, w.doc) for w in batch)

    def tick(self, now: float) -> None:
        """Start a check if one is due (the sweeper calls this every few seconds).  Only
        while ``deciding()`` (on a cluster: this node holds the review lock); from when
        it starts to, every document waits a whole interval again."""
        if self.schedule is None:
            return
        deciding = self._deciding()
        if deciding and not self._decided:
            self.schedule.restart(now)
        self._decided = deciding
        if not deciding:
            return
        if self._checking is not None and not self._checking.done():
            return
        keys = self.schedule.candidates(now)
        if keys:
            self._checking = asyncio.ensure_future(self._check(keys, now))

    async def wait(self) -> None:
        """Wait for the check under way, if any (the server's stop)."""
        if self._checking is not None:
            await asyncio.gather(self._checking, return_exceptions=True)

    async def _check(self, keys: list[DocKey], now: float) -> None:
        assert self.schedule is not None
        due: dict[str, list[str]] = {}
        for tenant, doc in keys:
            try:
                stored = 0
                if self.generations.policy.max_bytes is not None:
                    stored = await asyncio.to_thread(self.generations.stored_bytes, tenant, doc)
                past = self._due(tenant, doc, stored)
                if past is None:
                    past = await asyncio.to_thread(self.generations.due, tenant, doc)
            except TiendaSyncError as exc:
                log.error("%s/%s: rollover check failed (tried again later): %s", tenant, doc, exc)
                continue
            except Exception:  # a bug must not stop the checks
                log.exception("%s/%s: rollover check failed", tenant, doc)
                continue
            self.checked += 1
            if past:
                due.setdefault(tenant, []).append(doc)
        for tenant, docs in sorted(due.items()):
            for doc in await self.roll_over(tenant, docs):
                self.schedule.rolled((tenant, doc), now)

    def _due(self, tenant: str, doc: str, stored_bytes: int) -> bool | None:
        """Whether a cut of the loaded document would fold past the policy (None: not
        loaded here, or broken); on the event loop, so cheap (see the module docstring)."""
        rdoc = self.core.docs.current(tenant, doc)
        crdt = crdt_of(doc)
        if rdoc is None or rdoc.broken or crdt is None:
            return None
        return loaded_due(self.generations.policy, crdt, rdoc, stored_bytes)

    async def roll_over(self, tenant: str, docs: list[str]) -> dict[str, int]:
        """Roll ``docs`` of ``tenant`` over now, together (the stores reconnect once):
        the new generation of each one cut.  One left out was not cut (the queued writes
        did not settle, or storage failed): it is served on as it was."""
        docs = sorted(set(docs))
        for doc in docs:
            self.core.begin_rollover(tenant, doc)
        rolled: dict[str, int] = {}
        try:
            async with contextlib.AsyncExitStack() as locks:
                for doc in docs:  # (always in this order: no two rollovers deadlock)
                    await locks.enter_async_context(self._late_lock((tenant, doc)))
                settled = await self._settle(SETTLE_TIMEOUT_S)
                # Held either way: a write of it to these was not taken meanwhile, and
                # following the cut (or finding none) offers or carries what we lack.
                if self.core.hold_central(tenant):
                    await self._in_reviews(_nothing)  # what it was handed has run
                await asyncio.sleep(0)  # its last writes' callbacks ran (and were dropped)
                if not settled:
                    log.warning("%s: writes did not settle; rollover of %s put off", tenant, docs)
                    return rolled
                for doc in docs:
                    try:
                        rolled[doc] = await asyncio.to_thread(
                            self.generations.roll_over, tenant, doc
                        )
                    except TiendaSyncError as exc:
                        log.error("%s/%s: rollover failed: %s", tenant, doc, exc)
        finally:
            for doc in docs:
                self.core.end_rollover(tenant, doc)
        self.count += len(rolled)
        for doc, generation in rolled.items():
            log.info("%s/%s rolled over to generation %d while running", tenant, doc, generation)
        return rolled
