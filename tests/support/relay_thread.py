"""A real relay served from its own event-loop thread, for tests that drive stores
(and their sync daemons) from ordinary threads beside it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from tiendasync.relay.server import RelayServer
from tiendasync.relay.storage import RelayStore


class ServedRelay:
    """``server`` started on a new event loop in a daemon thread; construction returns
    once it listens (or raises what its start raised).  :meth:`close` stops it and
    closes ``store``, the server's store of record."""

    def __init__(self, server: RelayServer, store: RelayStore, *, start_timeout: float = 30.0):
        self.server, self.store = server, store
        self.loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        started = threading.Event()
        self.failed: BaseException | None = None

        def serve() -> None:
            asyncio.set_event_loop(self.loop)

            async def main() -> None:
                try:
                    await self.server.start()
                except BaseException as exc:
                    self.failed = exc
                    raise
                finally:
                    started.set()
                await self._stop.wait()
                await self.server.stop()

            self.loop.run_until_complete(main())

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        if not started.wait(start_timeout):
            raise TimeoutError(f"the relay did not start within {start_timeout} s")
        if self.failed is not None:
            raise AssertionError(f"the relay failed to start: {self.failed!r}")
        self.url = f"ws://127.0.0.1:{self.server.port}"

    def call(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run on the relay's loop (between its callbacks); its result."""

        async def wrapped() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(10)

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        """Await ``coro`` on the relay's loop; its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Stop the server (if it still runs) and close its store of record."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self.thread.join(20)
        self.store.close()
