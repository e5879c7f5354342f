"""The relay's policy: grants, rate limits and the decisions they make (sans I/O).

Nothing here reads a clock or storage: times are passed in (``now``, seconds
on any monotonic epoch) and so are the token records and configurations
storage returned.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tiendasync.errors import ConfigError
from tiendasync.model.config import StoreConfig
from tiendasync.relay.central import CENTRAL_REPLICA_ID
from tiendasync.relay.storage import TokenRecord

if TYPE_CHECKING:
    from tiendasync.relay.state import RelaySession

__all__ = [
    "NO_GRANTS",
    "Grants",
    "Policy",
    "RateLimits",
    "TokenBucket",
    "replica_token_fits",
    "store_config",
]


@functools.lru_cache(maxsize=65536)
def _matches(patterns: tuple[str, ...], doc: str) -> bool:
    """Whether ``doc`` matches a grant (cached: fan-out asks for every update)."""
    return patterns == ("*",) or any(fnmatch.fnmatchcase(doc, p) for p in patterns)


@dataclass(frozen=True)
class Grants:
    """Which docs a replica may read and write (fnmatch patterns)."""

    read: tuple[str, ...] = ("*",)
    write: tuple[str, ...] = ("*",)

    def can_read(self, doc: str) -> bool:
        return _matches(self.read, doc)

    def can_write(self, doc: str) -> bool:
        return _matches(self.write, doc)

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> Grants:
        config = config or {}

        def patterns(key: str) -> tuple[str, ...]:
            value = config.get(key, ["*"])
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise ConfigError(f"{key} grants must be a list of patterns")
            return tuple(value)

        return cls(patterns("read"), patterns("write"))


#: Grants of a replica whose stored configuration is unreadable: nothing.
NO_GRANTS = Grants((), ())


def store_config(raw: dict[str, Any] | None) -> StoreConfig | None:
    """The store settings of a replica's stored configuration (its grants aside)."""
    if raw is None:
        return None
    return StoreConfig.from_dict({k: v for k, v in raw.items() if k not in ("read", "write")})


def replica_token_fits(token: TokenRecord | None, tenant: str, replica_id: str) -> bool:
    """Whether ``token`` (as authenticated) may open a sync session as ``tenant/replica_id``.

    Admin tokens never sync, and no replica may pose as the relay's own writer.
    """
    return (
        token is not None
        and not token.admin
        and token.tenant == tenant
        and token.replica_id == replica_id
        and replica_id != CENTRAL_REPLICA_ID
    )


@dataclass(frozen=True)
class RateLimits:
    """Caps the relay enforces on its clients (0 disables a limit).

    * ``max_connections_per_token``: open sessions (sync and y-protocols)
      one token may hold at once; one more is closed with
      ``CLOSE_RATE_LIMIT`` right after authentication.
    * ``max_messages_per_s`` / ``message_burst``: a token bucket per
      connection, one token per websocket message received.
    * ``max_new_connections_per_ip_per_s`` / ``new_connection_burst``: a
      token bucket per peer address, one token per websocket connection.
    """

    max_connections_per_token: int = 4
    max_messages_per_s: float = 500.0
    message_burst: int = 1000
    max_new_connections_per_ip_per_s: float = 20.0
    new_connection_burst: int = 100

    def __post_init__(self) -> None:
        for name in (
            "max_connections_per_token",
            "max_messages_per_s",
            "message_burst",
            "max_new_connections_per_ip_per_s",
            "new_connection_burst",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved.  Time is passed in."""

    rate: float
    burst: float
    tokens: float
    stamp: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, float(burst), now)

    def take(self, now: float, cost: float = 1.0) -> bool:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False

    def idle(self, now: float) -> bool:
        """Would be full again at ``now`` (so forgetting it changes nothing)."""
        return self.tokens + max(0.0, now - self.stamp) * self.rate >= self.burst


#: Per-address buckets kept before the idle ones are forgotten.
MAX_TRACKED_PEERS = 10_000


class Policy:
    """The rate-limit decisions over :class:`RateLimits` (state: the per-address buckets)."""

    def __init__(self, limits: RateLimits | None = None) -> None:
        self.limits = limits if limits is not None else RateLimits()
        self._peers: dict[str, TokenBucket] = {}

    def admit(self, peer: str, now: float) -> str | None:
        """A new connection from address ``peer`` at ``now``: None, or why to refuse it."""
        rate = self.limits.max_new_connections_per_ip_per_s
        if not rate:
            return None
        bucket = self._peers.get(peer)
        if bucket is None:
            if len(self._peers) >= MAX_TRACKED_PEERS:
                self._peers = {p: b for p, b in self._peers.items() if not b.idle(now)}
            burst = max(1.0, float(self.limits.new_connection_burst or rate))
            bucket = self._peers[peer] = TokenBucket.full(rate, burst, now)
        if bucket.take(now):
            return None
        return "too many new connections from this address; retry later"

    def over_message_rate(self, session: RelaySession, now: float | None) -> bool:
        """One more message of ``session`` at ``now``: over its rate?  (``now`` None: no limit.)

        The session's bucket is made full on its first message.
        """
        rate = self.limits.max_messages_per_s
        if now is None or not rate:
            return False
        if session.bucket is None:
            burst = max(1.0, float(self.limits.message_burst or rate))
            session.bucket = TokenBucket.full(rate, burst, now)
        return not session.bucket.take(now)

    @property
    def message_rate_reason(self) -> str:
        return f"more than {self.limits.max_messages_per_s:g} messages per second"

    def over_token_cap(
        self, session: RelaySession, token_id: str, sessions: Iterable[RelaySession]
    ) -> bool:
        """Whether ``session`` would be one too many open sessions of ``token_id``."""
        cap = self.limits.max_connections_per_token
        if not cap:
            return False
        holding = sum(1 for s in sessions if s is not session and s.token_id == token_id and s.open)
        return holding >= cap
