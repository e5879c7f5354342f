"""The relay's single writer task: group commit of applied updates.

Applied updates queue here (``put``); one task takes what is queued (up to
``max_batch``), asks the core which of it may still be stored
(:meth:`~tiendasync.relay.core.RelayCore.storable`: nothing applied on top
of a failed write), stores it in one transaction in a worker thread, then
reports it :meth:`~tiendasync.relay.core.RelayCore.committed` (ACKs, fan-out,
reviews) or :meth:`~tiendasync.relay.core.RelayCore.commit_failed` (docs
reloaded from storage, nothing acknowledged).  Long logs are compacted in
the background.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from tiendasync.relay.core import RelayCore
from tiendasync.relay.docs import compact
from tiendasync.relay.records import GenerationMoved
from tiendasync.relay.state import PendingWrite
from tiendasync.relay.storage import AppendResult, RelayStore

__all__ = ["GroupCommit"]

log = logging.getLogger("tiendasync.relay")


class GroupCommit:
    """The writer queue and its task (created on the running loop: :meth:`run`)."""

    def __init__(
        self,
        core: RelayCore,
        store: RelayStore,
        *,
        max_batch: int,
        compact_threshold: int,
        spawn: Callable[[Coroutine[Any, Any, None]], None],
        after_commit: Callable[[list[PendingWrite], AppendResult], None] | None = None,
    ) -> None:
        self.core = core
        self.store = store
        self.max_batch = max_batch
        self.compact_threshold = compact_threshold
        self._spawn = spawn
        #: told of each stored batch and its seqs, before its ACKs (a cluster node's cursors)
        self.after_commit = after_commit
        self.queue: asyncio.Queue[PendingWrite | None] = asyncio.Queue()
        self._compacting: set[tuple[str, str]] = set()
        #: batches whose commit failed since start
        self.failures = 0
        #: writes queued since start, and of those, how many were committed or failed
        self.queued = 0
        self.handled = 0

    def put(self, write: PendingWrite) -> None:
        self.queued += 1
        self.queue.put_nowait(write)

    async def settled(self, timeout: float) -> bool:
        """Wait until every write queued now was committed (or failed); whether it was
        within ``timeout`` seconds."""
        target = self.queued
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.handled < target:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    def depth(self) -> int:
        return self.queue.qsize()

    async def run(self) -> None:
        """Commit batches until a ``None`` is queued (see :meth:`stop`)."""
        queue = self.queue
        stopping = False
        while not stopping:
            item = await queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    nxt = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            await self.commit(batch)

    def stop(self) -> None:
        """Ask :meth:`run` to end after what is queued now."""
        self.queue.put_nowait(None)

    async def drain(self) -> None:
        """Commit what is queued now (the central writers' last writes), without review."""
        batch: list[PendingWrite] = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is not None:
                batch.append(item)
        if batch:
            await self.commit(batch, review=False)

    async def commit(self, batch: list[PendingWrite], *, review: bool = True) -> None:
        try:
            await self._commit(batch, review=review)
        finally:
            self.handled += len(batch)

    async def _commit(self, batch: list[PendingWrite], *, review: bool) -> None:
        batch = self.core.storable(batch)
        if not batch:
            return
        try:
            result = await asyncio.to_thread(self.store.append_many, [w.entry() for w in batch])
        except GenerationMoved as moved:
            # Another relay node cut these documents: their writes (made on the old
            # generation) are failed, their sessions come back and the stores send them
            # again as late updates, carried once; the rest of the batch is stored.
            for (tenant, doc), generation in sorted(moved.moved.items()):
                self.core.docs.saw_generation(tenant, doc, generation)
            failed = [w for w in batch if (w.tenant, w.doc) in moved.moved]
            log.info("%d write(s) made on a generation cut meanwhile: sent again", len(failed))
            self.core.commit_failed(failed, moved)
            rest = [w for w in batch if (w.tenant, w.doc) not in moved.moved]
            if rest:
                await self._commit(rest, review=review)
            return
        except Exception as exc:
            self.failures += 1
            log.exception(
                "commit of %d updates failed: none is acknowledged; their documents are "
                "reloaded from storage",
                len(batch),
            )
            self.core.commit_failed(batch, exc)
            return
        if self.after_commit is not None:
            self.after_commit(batch, result)
        self.core.committed(batch, result, review=review)
        for key, count in result.log_counts.items():
            if count >= self.compact_threshold and key not in self._compacting:
                self._compacting.add(key)
                self._spawn(self._compact(*key))

    async def _compact(self, tenant: str, doc: str) -> None:
        try:
            folded = await asyncio.to_thread(compact, self.store, tenant, doc)
            log.info("compacted %s/%s: %d updates folded into a snapshot", tenant, doc, folded)
        except Exception:
            log.exception("compaction of %s/%s failed", tenant, doc)
        finally:
            self._compacting.discard((tenant, doc))
