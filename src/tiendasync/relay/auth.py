"""Relay tokens: issued once, stored hashed, compared in constant time.

A token looks like ``ts_<id>_<secret>``: ``id`` (12 hex characters) is
public, names the token in listings and revocations, and finds its row;
the whole token is hashed with SHA-256 and only the hex digest is stored.
A replica token is bound to one (tenant, replica id); an admin token has no
tenant and opens the admin API.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from tiendasync.errors import InvalidArgument
from tiendasync.model.names import check_name
from tiendasync.relay.storage import RelayStore, TokenRecord

__all__ = [
    "TOKEN_PREFIX",
    "authenticate",
    "check_token",
    "hash_token",
    "issue_token",
    "list_tokens",
    "new_token",
    "revoke_token",
    "token_id_of",
]

TOKEN_PREFIX = "ts_"
_ID_LEN = 12
# compared against when a token id is unknown, so both paths hash and compare
_DUMMY_HASH = hashlib.sha256(b"tiendasync: no such token").hexdigest()


def new_token() -> str:
    """A fresh random token (``ts_<12 hex id>_<43 url-safe chars>``)."""
    return f"{TOKEN_PREFIX}{secrets.token_hex(_ID_LEN // 2)}_{secrets.token_urlsafe(32)}"


def hash_token(token: str) -> str:
    """SHA-256 hex digest: what is stored instead of the token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_id_of(token: str) -> str | None:
    """The public id inside ``token``, or None if it is not shaped like one."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    rest = token[len(TOKEN_PREFIX) :]
    token_id = rest[:_ID_LEN]
    if len(rest) <= _ID_LEN + 1 or rest[_ID_LEN] != "_":
        return None
    if any(c not in "0123456789abcdef" for c in token_id):
        return None
    return token_id


def issue_token(
    store: RelayStore,
    *,
    tenant: str | None = None,
    replica_id: str | None = None,
    admin: bool = False,
    location: str | None = None,
) -> str:
    """Create, store (hashed) and return a new token.  The caller shows it once.

    ``location``: the location the replica's store sells at.  A token tied to
    a location writes, by default, only that location's stock, sales, record
    and resolution requests (see :class:`~tiendasync.relay.policy.Grants`).
    """
    if admin:
        if tenant is not None or replica_id is not None or location is not None:
            raise InvalidArgument("an admin token has no tenant, replica or location")
    elif not tenant or not replica_id:
        raise InvalidArgument("a replica token needs a tenant and a replica id")
    if location is not None:
        check_name(location, "location")
    token = new_token()
    token_id = token_id_of(token)
    assert token_id is not None
    store.add_token(
        TokenRecord(
            id=token_id,
            token_hash=hash_token(token),
            tenant=tenant,
            replica_id=replica_id,
            admin=admin,
            created_at=time.time(),
            location=location,
        )
    )
    return token


def check_token(store: RelayStore, token: str) -> tuple[TokenRecord | None, str | None]:
    """``(record, None)`` for a live token, else ``(None, why)``: what to tell its holder.

    ``why`` tells a malformed token from an unknown one (no such id, or the
    secret does not match) and, only to a holder of the right secret, a
    revoked one.  The stored digest is compared with
    :func:`hmac.compare_digest`; an unknown id still costs one hash and one
    comparison.
    """
    token_id = token_id_of(token) if isinstance(token, str) else None
    record = store.get_token(token_id) if token_id is not None else None
    expected = record.token_hash if record is not None else _DUMMY_HASH
    given = hash_token(token) if isinstance(token, str) else ""
    matches = hmac.compare_digest(expected.encode(), given.encode())
    if token_id is None:
        return None, "malformed token (a relay token looks like ts_<12 hex digits>_<secret>)"
    if record is None or not matches:
        return None, f"unknown token {token_id} (no such token, or its secret is wrong)"
    if record.revoked:
        return None, f"token {token_id} was revoked; ask the relay's admin for a new one"
    return record, None


def authenticate(store: RelayStore, token: str) -> TokenRecord | None:
    """The live (not revoked) token record matching ``token``, or None (see :func:`check_token`)."""
    return check_token(store, token)[0]


def list_tokens(store: RelayStore) -> list[TokenRecord]:
    return store.list_tokens()


def revoke_token(store: RelayStore, token_id: str) -> None:
    """Revoke by public id (NotFound if there is no such token)."""
    store.revoke_token(token_id)
