"""Fan-out of committed updates to the sessions of a tenant.

:class:`Broker` is the seam where a stream engine (Redis, NATS, Kafka...)
plugs in once several relay processes serve one tenant; the in-process
broker is enough for one process.  Callbacks are called on the event loop
thread and must not block; each one filters what its session may read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol, runtime_checkable

__all__ = ["Broker", "InProcessBroker", "Subscriber", "Unsubscribe"]

log = logging.getLogger("tiendasync.relay.broker")

#: ``callback(doc, update, origin_session)``
Subscriber = Callable[[str, bytes, "str | None"], None]
Unsubscribe = Callable[[], None]


@runtime_checkable
class Broker(Protocol):
    def subscribe(
        self, tenant: str, callback: Subscriber, *, session_id: str | None = None
    ) -> Unsubscribe:
        """Receive every update published for ``tenant`` except those that
        ``session_id`` itself published.  Returns the unsubscribe function."""
        ...

    def publish(self, tenant: str, doc: str, update: bytes, origin_session: str | None) -> None:
        """Deliver ``update`` of ``doc`` to the tenant's other subscribers."""
        ...


class InProcessBroker:
    """Synchronous fan-out inside one process."""

    def __init__(self) -> None:
        self._subs: dict[str, dict[int, tuple[Subscriber, str | None]]] = {}
        self._next = 0

    def subscribe(
        self, tenant: str, callback: Subscriber, *, session_id: str | None = None
    ) -> Unsubscribe:
        key = self._next
        self._next += 1
        self._subs.setdefault(tenant, {})[key] = (callback, session_id)

        def unsubscribe() -> None:
            subs = self._subs.get(tenant)
            if subs is not None:
                subs.pop(key, None)
                if not subs:
                    del self._subs[tenant]

        return unsubscribe

    def publish(self, tenant: str, doc: str, update: bytes, origin_session: str | None) -> None:
        for callback, session_id in list(self._subs.get(tenant, {}).values()):
            if origin_session is not None and session_id == origin_session:
                continue
            try:
                callback(doc, update, origin_session)
            except Exception:
                log.exception("fan-out subscriber failed")

    def subscriber_count(self, tenant: str) -> int:
        return len(self._subs.get(tenant, {}))
