"""What the pump reads from (and writes to) storage for the core's decisions.

These functions do blocking storage I/O; the server runs them in a worker
thread (``asyncio.to_thread``: a :class:`~tiendasync.relay.storage.RelayStore`
is thread-safe), the simulated network calls them inline.  Their results go
to the core as plain values (:mod:`tiendasync.relay.state`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from tiendasync.errors import NotFound, TiendaSyncError
from tiendasync.model.config import StoreConfig
from tiendasync.protocol import Hello
from tiendasync.relay.auth import authenticate, check_token
from tiendasync.relay.generations import past_state_vector
from tiendasync.relay.state import FollowerFacts, HelloFacts, RelaySession
from tiendasync.relay.storage import RelayStore, SessionRecord

if TYPE_CHECKING:
    from tiendasync.relay.core import RelayCore

__all__ = ["answer_hello", "log_session", "lookup_follower", "lookup_hello"]

log = logging.getLogger("tiendasync.relay")


def lookup_hello(store: RelayStore, hello: Hello) -> HelloFacts:
    """Claim the HELLO's client ids; if they are the replica's, read what the welcome needs."""
    foreign = store.claim_client_ids(
        hello.tenant, hello.replica_id, [hello.client_id, *hello.past_client_ids]
    )
    if foreign:
        return HelloFacts(foreign=tuple(foreign))
    _keep_reported_config(store, hello)
    generations = store.generations(hello.tenant)
    past: dict[str, bytes] = {}
    archived: dict[str, int] = {}
    for doc, mine in (hello.generations or {}).items():
        if generations.get(doc, 0) > mine:
            try:
                past[doc] = past_state_vector(store, hello.tenant, doc, mine)
            except NotFound:
                archived[doc] = mine
    return HelloFacts(
        config=store.get_replica_config(hello.tenant, hello.replica_id),
        owned=frozenset(store.client_ids_of(hello.tenant, hello.replica_id)),
        state_vectors=store.state_vectors(hello.tenant),
        generations=generations,
        past_state_vectors=past,
        archived=archived,
    )


def _keep_reported_config(store: RelayStore, hello: Hello) -> None:
    """Store the config the replica says it runs with, if it is a valid one (only
    shown by the admin API and console: it never changes what the relay does)."""
    if hello.config is None:
        return
    try:
        config = StoreConfig.from_dict(dict(hello.config)).to_dict()
    except (TiendaSyncError, TypeError, ValueError):
        log.warning("replica %s/%s told an invalid config; ignored", hello.tenant, hello.replica_id)
        return
    known = store.get_reported_config(hello.tenant, hello.replica_id)
    if known is None or known[0] != config:  # most HELLOs repeat it: no write then
        store.set_reported_config(hello.tenant, hello.replica_id, config, time.time())


def answer_hello(core: RelayCore, store: RelayStore, session: RelaySession, hello: Hello) -> None:
    """Drive the HELLO steps inline (what the server does across worker threads)."""
    try:
        token, refused = check_token(store, hello.token)
        if not core.authenticated(session, hello, token, refused):
            return
        assert token is not None
        facts = lookup_hello(store, hello)
    except TiendaSyncError as exc:
        core.lookup_failed(session, exc)
        return
    core.welcome(session, hello, token, facts)


def lookup_follower(
    store: RelayStore, tenant: str | None, doc: str | None, token: str | None
) -> FollowerFacts:
    """The follower's token record and, for a replica token of ``tenant``, its configuration."""
    if tenant is None or doc is None or not token:
        return FollowerFacts()
    record = authenticate(store, token)
    if record is None or record.admin or record.tenant != tenant or record.replica_id is None:
        return FollowerFacts(record)
    return FollowerFacts(record, store.get_replica_config(tenant, record.replica_id))


def log_session(
    store: RelayStore, record: SessionRecord, prune_before: float | None = None
) -> None:
    """Write one row of the sync log and, given ``prune_before``, delete the sessions
    older than it (:meth:`RelayStore.prune_sessions`); a failure is logged, never
    raised (the session is over)."""
    try:
        store.log_session(record)
        if prune_before is not None:
            store.prune_sessions(prune_before)
    except Exception:
        log.exception("cannot write the sync log of session %s", record.session_id)
