"""The HTTP API's bearer tokens: created once, shown once, stored as SHA-256 hashes.

A token is ``hrld_`` and 43 urlsafe characters (32 random bytes). The store (its
``ApiTokenStore`` role) keeps its hash, role, optional name and group; revoking stamps
``revoked_at``. Verified hashes are cached in memory for ``ttl`` seconds, so authenticating
a request costs a hash and a dict lookup, not a database read: a token revoked from another
process (``herald token revoke`` while ``herald serve`` runs) stops working within ``ttl``;
one revoked through this ``TokenStore`` stops at once.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Literal

import msgspec

from engine.errors import InputError, NotFound
from engine.store.base import ApiTokenStore, TokenRow

__all__ = ["PREFIX", "ROLES", "Role", "Token", "TokenStore", "allows"]

Role = Literal["viewer", "sender", "admin"]
#: Least to most powerful: each role may do what the ones before it may.
ROLES: tuple[Role, ...] = ("viewer", "sender", "admin")
PREFIX = "hrld_"
_RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}


class Token(msgspec.Struct, frozen=True, kw_only=True):
    """A token's record (never the token itself)."""

    id: int
    role: Role
    name: str | None = None
    #: Uploads made with this token are tagged ``group-<group>``.
    group: str | None = None
    created_at: float
    revoked_at: float | None = None


def allows(role: str, needed: Role) -> bool:
    """Whether a token of ``role`` may use a route that needs ``needed``."""
    return _RANK.get(role, -1) >= _RANK[needed]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _token(row: TokenRow) -> Token:
    return msgspec.convert(
        {"id": row.id, "name": row.name, "role": row.role, "group": row.group,
         "created_at": row.created_at, "revoked_at": row.revoked_at},
        Token,
    )


class TokenStore:
    """Tokens kept by a store's ``ApiTokenStore`` role (any ``Store``)."""

    def __init__(self, store: ApiTokenStore, *, ttl: float = 30.0,
                 max_cached: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl = ttl
        #: Seconds, for the cache's expiry (a fake clock in tests).
        self.clock = clock
        self.max_cached = max_cached
        #: hash -> (token, monotonic expiry)
        self._cache: dict[str, tuple[Token, float]] = {}
        #: Bumped by each revoke: a verify whose read a revoke overtook caches nothing.
        self._revokes = 0

    async def create(
        self, role: str, *, name: str | None = None, group: str | None = None
    ) -> tuple[Token, str]:
        """A new token: its record and the secret, which is not kept anywhere."""
        if role not in _RANK:
            raise InputError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        for key, value in (("name", name), ("group", group)):
            if value is not None and not (0 < len(value) <= 200 and value.isprintable()):
                raise InputError(f"{key}: 1 to 200 printable characters")
        secret = PREFIX + secrets.token_urlsafe(32)
        row = await self.store.add_token(role=role, digest=_digest(secret), name=name,
                                         group=group, created_at=time.time())
        return _token(row), secret

    async def get(self, token_id: int) -> Token:
        row = await self.store.token_row(token_id)
        if row is None:
            raise NotFound(f"no token with id {token_id}")
        return _token(row)

    async def list(self) -> builtins.list[Token]:
        """Every token, revoked ones too, oldest first."""
        return [_token(r) for r in await self.store.token_rows()]

    async def revoke(self, token_id: int) -> Token:
        """Revoke a token for good (revoking twice keeps the first time)."""
        row = await self.store.revoke_token(token_id, time.time())
        if row is None:
            raise NotFound(f"no token with id {token_id}")
        self._revokes += 1
        self._cache = {h: hit for h, hit in self._cache.items() if hit[0].id != token_id}
        return _token(row)

    async def verify(self, secret: str) -> Token | None:
        """The live token whose secret this is, or None."""
        if not secret.startswith(PREFIX) or len(secret) > 100:
            return None
        digest = _digest(secret)
        now = self.clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        revokes = self._revokes
        row = await self.store.live_token(digest)
        if row is None or not hmac.compare_digest(row.digest, digest):
            self._cache.pop(digest, None)
            return None
        token = _token(row)
        if revokes != self._revokes:
            return token
        if len(self._cache) >= self.max_cached:
            self._cache.clear()
        self._cache[digest] = (token, now + self.ttl)
        return token
