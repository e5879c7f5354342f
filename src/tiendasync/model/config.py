"""Per-store sync configuration (the seed's ``ConfiguracionSincronizacion``).

Stored in the replica's database, editable locally (``tiendasync config set``)
and centrally on the relay, which sends the keys an admin set at the next
sync; those win over the store's own values (see :class:`StoreConfig`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tiendasync.errors import ConfigError
from tiendasync.model.docnames import DATA_TYPES as _DATA_TYPE_TABLE

__all__ = ["DATA_TYPES", "DEFAULT_PRIORITIES", "StoreConfig"]

#: Data types, one per family of documents (see :data:`tiendasync.model.docnames.DATA_TYPES`).
DATA_TYPES = tuple(_DATA_TYPE_TABLE)

#: Higher syncs first and weighs more in conflict priority.
DEFAULT_PRIORITIES: dict[str, int] = {
    name: t.default_priority for name, t in _DATA_TYPE_TABLE.items()
}

_DURABILITY = ("full", "normal")


@dataclass(frozen=True)
class StoreConfig:
    """How one store synchronises.  Every field has a safe default.

    What each key does: ``relay_url`` where to sync; ``enabled`` whether this
    store syncs at all; ``interval_s`` seconds between keepalive pings of a
    sync connection (how soon a relay that vanished silently is noticed);
    ``priorities`` the order data types are sent in, and the weight of their
    conflicts; ``batch_size`` the most local writes a live session sends in
    one websocket message; ``backoff_min_s`` / ``backoff_max_s`` the reconnect
    backoff of continuous sync; ``durability`` the SQLite ``synchronous`` mode;
    ``retention_days`` how long acknowledged queue entries and sync-log rows
    are kept (pruned after each sync; see docs/reliability.md, "What a store keeps");
    ``sales_months`` how many months of sales documents the replica keeps (this
    month and the ones before; older ones leave it once every local write to
    them is acknowledged, and stay readable at the relay); 0 keeps every month.

    Precedence: a key an admin set centrally on the relay (sent at every
    sync) > the store's own value (``tiendasync config set``) > the default.
    The relay alone owns the grants (``read``, ``write``), which are not
    store config.
    """

    relay_url: str | None = None
    enabled: bool = True
    interval_s: float = 30.0
    priorities: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_PRIORITIES))
    batch_size: int = 500
    backoff_min_s: float = 0.5
    backoff_max_s: float = 60.0
    durability: str = "full"
    retention_days: float = 30.0
    sales_months: int = 13

    def __post_init__(self) -> None:
        self._check_types()
        if self.relay_url is not None and not self.relay_url.startswith(("ws://", "wss://")):
            raise ConfigError(f"relay_url must start with ws:// or wss://, got {self.relay_url!r}")
        if not (self.interval_s > 0):
            raise ConfigError("interval_s must be positive")
        if not (isinstance(self.batch_size, int) and 1 <= self.batch_size <= 100_000):
            raise ConfigError("batch_size must be an integer between 1 and 100000")
        if not (0 < self.backoff_min_s <= self.backoff_max_s):
            raise ConfigError("need 0 < backoff_min_s <= backoff_max_s")
        if not (1 <= self.retention_days <= 36_500):
            raise ConfigError("retention_days must be between 1 and 36500")
        if self.durability not in _DURABILITY:
            raise ConfigError(f"durability must be one of {_DURABILITY}")
        if (
            isinstance(self.sales_months, bool)
            or not isinstance(self.sales_months, int)
            or not 0 <= self.sales_months <= 1200
        ):
            raise ConfigError("sales_months must be an integer between 0 (keep all) and 1200")
        for name, value in self.priorities.items():
            if name not in DATA_TYPES:
                raise ConfigError(f"unknown data type {name!r} in priorities")
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise ConfigError(f"priority of {name!r} must be an integer 0..100")

    def _check_types(self) -> None:
        """Each field has its type (values from JSON or a CLI may not)."""
        if self.relay_url is not None and not isinstance(self.relay_url, str):
            raise ConfigError("relay_url must be a string like ws://host:port")
        if not isinstance(self.enabled, bool):
            raise ConfigError("enabled must be true or false")
        for name in ("interval_s", "backoff_min_s", "backoff_max_s", "retention_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name} must be a number")
        if isinstance(self.batch_size, bool):
            raise ConfigError("batch_size must be an integer between 1 and 100000")
        if not isinstance(self.durability, str):
            raise ConfigError("durability must be 'full' or 'normal'")
        if not isinstance(self.priorities, dict):
            raise ConfigError("priorities must be a map of data type to integer")

    def priority(self, data_type: str) -> int:
        return self.priorities.get(data_type, DEFAULT_PRIORITIES.get(data_type, 0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoreConfig:
        """Build from a dict, refusing unknown keys with :class:`ConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
        merged = dict(data)
        if "priorities" in merged:
            merged["priorities"] = {**DEFAULT_PRIORITIES, **merged["priorities"]}
        try:
            return cls(**merged)
        except TypeError as exc:
            raise ConfigError(str(exc)) from exc

    def updated(self, **changes: Any) -> StoreConfig:
        """A copy with ``changes`` applied (validated)."""
        return StoreConfig.from_dict({**self.to_dict(), **changes})
