"""Admin operations on the central writers, served by any node of a relay cluster.

The conflicts live in the central writers (one embedded replica per tenant,
``relay.central``), and on a cluster only the node holding the ``review``
lock keeps them current and writes through them.  Any other node's admin API
forwards such an operation to that node **through the database**:

1. the asking node records the request in ``admin_requests`` under its
   idempotency key (the ``Idempotency-Key`` header, else a random one), with
   the operation and its arguments as canonical JSON, and sends a cluster
   message of kind :data:`ASK` (``{"id": key}``);
2. the reviewing node claims the row (``asked`` -> ``running``, one claim
   wins), runs the operation on its central writer, waits (bounded) until the
   writes it made are committed to the store of record, records the answer
   (``done`` with the result, or ``failed`` with the typed error) and sends
   :data:`DONE`; it also looks for unclaimed rows every
   :attr:`Forwarder.poll_seconds` (a message lost while its LISTEN was down);
3. the asking node waits for :data:`DONE` (and reads the row every
   :attr:`Forwarder.poll_seconds`, in case that message is lost) at most
   :attr:`Forwarder.timeout` seconds, then answers with the stored outcome.

Exactly once: an operation runs only after its row is claimed, and a row is
claimed once.  Asking again with the same key answers the stored outcome
(or waits for the run in progress); it never runs it again.  A key reused for
another operation or other arguments is refused (``InvalidArgument``).  On
timeout: a request nobody claimed yet is cancelled (nothing was done, and
asking again with its key asks it anew), one in progress answers 503 and
keeps running; ask again with the key to get its outcome.  A request that
failed with a passing error (:class:`~tiendasync.errors.RetryLater`, say the
store of record was busy: nothing was done) answers that error and is
cancelled, so asking again with its key runs it.  A request whose
runner stopped mid-way (the row stays ``running`` past twice the timeout) is
failed as :class:`~tiendasync.errors.PeerError` (502): whether its writes
were made is unknown, so it is never run a second time; look at the conflict.

Reads (listing, one conflict, its sales and timeline) go the same way, with
a random key, and their rows are removed once answered.  The reviewing node
itself runs its own reads directly, and its own writes at once, through the
same rows (so their keys count alike on every node).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import tiendasync.errors as errors
from tiendasync.errors import (
    CorruptData,
    InternalError,
    InvalidArgument,
    RetryLater,
    TiendaSyncError,
)
from tiendasync.relay.cluster import ClusterNode, Notice
from tiendasync.relay.records import AdminRequest

__all__ = ["ASK", "DONE", "READS", "WRITES", "Forwarder", "RequestBook", "check_key"]

log = logging.getLogger("tiendasync.relay.forward")

#: Cluster message kinds: a request was recorded; a request was answered.
ASK, DONE = "admin", "admin-done"

#: Operations that only read the central writer (their rows are removed once answered).
READS = frozenset({"list_conflicts", "get_conflict", "conflict_timeline", "conflict_sales"})
#: Operations that write through it (their rows keep their key for a day).
WRITES = frozenset({"process_conflict", "resolve_conflict"})

_KEY = re.compile(r"[A-Za-z0-9._:-]{8,100}")


def check_key(key: str) -> str:
    """``key`` if it is a valid idempotency key: 8-100 letters, digits, ``._:-``."""
    if not _KEY.fullmatch(key):
        raise InvalidArgument(
            "Idempotency-Key must be 8-100 letters, digits, '.', '_', ':' or '-' "
            f"(got {key[:40]!r})"
        )
    return key


@runtime_checkable
class RequestBook(Protocol):
    """Where forwarded requests are recorded (``PostgresRelayStore``)."""

    def ask_admin(self, request: AdminRequest) -> AdminRequest: ...
    def admin_request(self, request_id: str) -> AdminRequest | None: ...
    def claim_admin(self, request_id: str, node: str, now: float) -> AdminRequest | None: ...
    def finish_admin(
        self,
        request_id: str,
        node: str,
        now: float,
        *,
        result: str | None,
        error_class: str | None,
        error: str | None,
        retry: bool = False,
    ) -> bool: ...
    def cancel_admin(self, request_id: str, now: float) -> bool: ...
    def unfinished_admin(self) -> list[AdminRequest]: ...
    def forget_admin(self, request_id: str) -> None: ...
    def prune_admin(self, before: float) -> int: ...


#: ``executor(op, tenant, args)``: run an operation on this node's central writer;
#: its JSON-able answer, or a TiendaSyncError.
Executor = Callable[[str, str, dict[str, Any]], Any]


def _error(cls_name: str | None, message: str | None) -> TiendaSyncError:
    """The typed error a failed request answers with (its class, by name)."""
    cls = getattr(errors, cls_name or "", None)
    if isinstance(cls, type) and issubclass(cls, TiendaSyncError):
        try:
            return cls(message or "")
        except TypeError:  # a class with other arguments: its family's status is lost
            pass
    return InternalError(message or "the forwarded request failed")


def _answered(row: AdminRequest) -> bool:
    """Whether ``row`` holds an answer: done, failed, or cancelled by a passing error."""
    return row.state in ("done", "failed") or (
        row.state == "cancelled" and row.error_class is not None
    )


def _outcome(row: AdminRequest) -> Any:
    if row.state != "done":
        raise _error(row.error_class, row.error)
    try:
        return json.loads(row.result or "null")
    except ValueError:  # a damaged row: the database's bytes are not trusted either
        raise CorruptData(f"the stored answer of request {row.id!r} is not JSON") from None


class Forwarder:
    """One node's side of forwarded admin operations (see the module docstring).

    ``settle(timeout)``: wait until the writes queued now are committed to the
    store of record; whether they were within ``timeout``.
    """

    def __init__(
        self,
        cluster: ClusterNode,
        book: RequestBook,
        *,
        settle: Callable[[float], Awaitable[bool]] | None = None,
        timeout: float = 10.0,
        poll_seconds: float = 0.5,
        keep_seconds: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster = cluster
        self.book = book
        self.node_id = cluster.node_id
        self.settle = settle
        #: Longest the asking node waits for an answer (then 503).
        self.timeout = timeout
        #: How often the reviewer looks for unclaimed rows and the asker reads its row.
        self.poll_seconds = poll_seconds
        #: How long a finished write's key is kept (asking again answers its outcome).
        self.keep_seconds = keep_seconds
        self.clock = clock
        #: Runs operations here (set by ``RelayAdmin``); None: this node cannot run any.
        self.executor: Executor | None = None
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._running: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._pruned_at = 0.0
        #: requests this node ran, and answered from the stored outcome without running
        self.ran = 0
        self.replayed = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.cluster.on(ASK, self._on_ask)
        self.cluster.on(DONE, self._on_done)
        self._sweeper = asyncio.create_task(self._sweep(), name="relay-forwarded-requests")

    async def stop(self) -> None:
        tasks = [t for t in (self._sweeper, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._sweeper = None
        self._tasks.clear()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def metrics(self) -> dict[str, float]:
        return {
            "cluster_admin_requests_run_total": float(self.ran),
            "cluster_admin_requests_replayed_total": float(self.replayed),
        }

    @property
    def runs_here(self) -> bool:
        """This node runs forwarded operations now (it holds the review lock)."""
        return self.cluster.reviewer and self.executor is not None

    # -- the asking side ---------------------------------------------------------------------

    async def call(self, op: str, tenant: str, args: dict[str, Any], key: str | None = None) -> Any:
        """Run ``op`` on the reviewing node; its answer, or the typed error it raised.

        :class:`~tiendasync.errors.RetryLater` (503) when no answer came within
        :attr:`timeout`; asking again with the same ``key`` never runs it twice."""
        if op not in READS | WRITES:
            raise InvalidArgument(f"not a forwarded operation: {op!r}")
        if op in READS and self.runs_here:
            assert self.executor is not None
            return self.executor(op, tenant, args)  # nothing to forward, nothing to keep
        request_id = check_key(key) if key is not None else f"auto-{secrets.token_hex(12)}"
        args_json = json.dumps(args, sort_keys=True, separators=(",", ":"))
        asked = AdminRequest(request_id, tenant, op, args_json, "asked", self.node_id, self.clock())
        row = await asyncio.to_thread(self.book.ask_admin, asked)
        if (row.tenant, row.op, row.args) != (tenant, op, args_json):
            raise InvalidArgument(
                f"Idempotency-Key {request_id!r} was already used for another request "
                f"({row.op} in tenant {row.tenant!r}); use a new key"
            )
        if row.state in ("done", "failed"):
            self.replayed += 1
        else:
            row = await self._follow(row)
        if op in READS:
            await self._forget(request_id)
        return _outcome(row)

    async def _follow(self, row: AdminRequest) -> AdminRequest:
        """Hand ``row`` over (or run it here) and wait for its answer."""
        event = asyncio.Event()
        self._waiting.setdefault(row.id, set()).add(event)
        try:
            if row.state == "asked":
                await self._hand_over(row.id)
            return await self._wait(row.id, event)
        except RetryLater:
            if row.op in READS:  # nobody asks a read again by its key
                await self._forget(row.id)
            raise
        finally:
            waiting = self._waiting.get(row.id)
            if waiting is not None:
                waiting.discard(event)
                if not waiting:
                    del self._waiting[row.id]

    async def _hand_over(self, request_id: str) -> None:
        if self.runs_here:
            await self.run(request_id)
            return
        try:
            await self.cluster.send(ASK, {"id": request_id})
        except TiendaSyncError as exc:  # the reviewer's sweep finds the row
            log.warning("forwarded request %s: no message sent: %s", request_id, exc)

    async def _forget(self, request_id: str) -> None:
        with contextlib.suppress(TiendaSyncError):
            await asyncio.to_thread(self.book.forget_admin, request_id)

    async def _wait(self, request_id: str, event: asyncio.Event) -> AdminRequest:
        """The row once answered; RetryLater at the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            row = await asyncio.to_thread(self.book.admin_request, request_id)
            if row is None:
                raise RetryLater(f"the request {request_id!r} was forgotten; ask again")
            if _answered(row):
                return row
            left = deadline - loop.time()
            if left <= 0:
                return await self._gave_up(request_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(left, self.poll_seconds))
            event.clear()

    async def _gave_up(self, request_id: str) -> AdminRequest:
        if await asyncio.to_thread(self.book.cancel_admin, request_id, self.clock()):
            raise RetryLater(
                f"no relay node ran the request within {self.timeout:g} s (the node "
                "holding the review lock may be starting or taking over): nothing was "
                "done; ask again (with the same Idempotency-Key it runs at most once)"
            )
        row = await asyncio.to_thread(self.book.admin_request, request_id)
        if row is not None and _answered(row):
            return row
        runner = row.node if row is not None else None
        raise RetryLater(
            f"relay node {runner or '?'} is still running the request after "
            f"{self.timeout:g} s; ask again with the same Idempotency-Key for its outcome "
            "(it runs once)"
        )

    def _on_done(self, notice: Notice) -> None:
        request_id = notice.fields.get("id")
        if isinstance(request_id, str):
            for event in self._waiting.get(request_id, ()):
                event.set()

    # -- the reviewing side ------------------------------------------------------------------

    def _on_ask(self, notice: Notice) -> None:
        request_id = notice.fields.get("id")
        if isinstance(request_id, str) and self.runs_here and notice.node != self.node_id:
            self._spawn(self.run(request_id))

    async def run(self, request_id: str) -> None:
        """Claim, run and answer one request (if it is still waiting)."""
        if request_id in self._running or self.executor is None:
            return
        self._running.add(request_id)
        try:
            row = await asyncio.to_thread(
                self.book.claim_admin, request_id, self.node_id, self.clock()
            )
            if row is None:
                return  # taken, answered or cancelled meanwhile
            result, error_class, error, retry = await self._execute(row)
            finished = await asyncio.to_thread(
                lambda: self.book.finish_admin(
                    request_id,
                    self.node_id,
                    self.clock(),
                    result=result,
                    error_class=error_class,
                    error=error,
                    retry=retry,
                )
            )
            if not finished:
                log.warning("forwarded request %s was failed by another node meanwhile", row.id)
            self.ran += 1
            with contextlib.suppress(TiendaSyncError):
                await self.cluster.send(DONE, {"id": request_id})
        except TiendaSyncError as exc:  # the store of record: the row stays, see _sweep
            log.error("forwarded request %s: %s", request_id, exc)
        finally:
            self._running.discard(request_id)

    async def _execute(self, row: AdminRequest) -> tuple[str | None, str | None, str | None, bool]:
        """``(result, error_class, error, retry)`` of running ``row`` here; ``retry``:
        a passing error (:class:`~tiendasync.errors.RetryLater`: nothing was done), so
        asking again with the key runs it again."""
        assert self.executor is not None
        try:
            value = self.executor(row.op, row.tenant, json.loads(row.args))
            result = json.dumps(value)
        except TiendaSyncError as exc:
            return None, type(exc).__name__, str(exc), isinstance(exc, RetryLater)
        except Exception as exc:  # a bug: answered as one, the relay goes on
            log.exception("forwarded request %s (%s) failed", row.id, row.op)
            return None, "InternalError", f"internal error: {type(exc).__name__}", False
        if row.op in WRITES and self.settle is not None and not await self.settle(self.timeout):
            # kept in the central writer's file: stored at its next retry (relay.reviews)
            log.warning("forwarded request %s: its writes are not stored yet", row.id)
        return result, None, None, False

    async def _sweep(self) -> None:
        """On the reviewer: run what was asked and not claimed; fail what a runner left."""
        while True:
            await asyncio.sleep(self.poll_seconds)
            if not self.runs_here:
                continue
            try:
                await self._sweep_once()
            except TiendaSyncError as exc:
                log.warning("forwarded requests: %s (retrying)", exc)
            except Exception:  # a bug must not stop the sweeps
                log.exception("forwarded requests: the sweep failed")

    async def _sweep_once(self) -> None:
        now = self.clock()
        for row in await asyncio.to_thread(self.book.unfinished_admin):
            if row.id in self._running:
                continue
            if row.state == "asked":
                await self.run(row.id)
            elif row.node is not None and (
                row.node == self.node_id or (row.started_at or 0.0) < now - 2 * self.timeout
            ):
                await self._abandon(row)
        if now - self._pruned_at >= 60.0:
            self._pruned_at = now
            await asyncio.to_thread(self.book.prune_admin, now - self.keep_seconds)

    async def _abandon(self, row: AdminRequest) -> None:
        """Its runner stopped before answering: fail it, never run it again."""
        assert row.node is not None
        message = (
            f"relay node {row.node} stopped while running this request: whether it was "
            "applied is unknown; look at the conflict before asking again with a new key"
        )
        failed = await asyncio.to_thread(
            lambda: self.book.finish_admin(
                row.id,
                str(row.node),
                self.clock(),
                result=None,
                error_class="PeerError",
                error=message,
            )
        )
        if failed:
            log.warning("forwarded request %s: %s", row.id, message)
            with contextlib.suppress(TiendaSyncError):
                await self.cluster.send(DONE, {"id": row.id})
