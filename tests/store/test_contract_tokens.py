"""ApiTokenStore on every store: the API's token records, kept by digest, revoked for good."""

from __future__ import annotations

import hashlib

import pytest

from engine.store.base import Store, TokenRow
from tests.store.helpers import T0

pytestmark = pytest.mark.anyio


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def test_a_token_is_kept_and_found_by_id_and_by_digest(store: Store) -> None:
    row = await store.add_token(role="admin", digest=digest("one"), name="ops", group="g1",
                                created_at=T0)
    assert isinstance(row, TokenRow)
    assert row[1:] == ("ops", "admin", "g1", T0, None, digest("one"))
    assert await store.token_row(row.id) == row
    assert await store.live_token(digest("one")) == row
    assert await store.live_token(digest("two")) is None
    assert await store.token_row(row.id + 100) is None
    bare = await store.add_token(role="viewer", digest=digest("two"), created_at=T0 + 1)
    assert (bare.name, bare.group, bare.role) == (None, None, "viewer")
    assert bare.id != row.id


async def test_a_revoked_token_is_listed_but_never_live_again(store: Store) -> None:
    first = await store.add_token(role="sender", digest=digest("a"), created_at=T0)
    second = await store.add_token(role="viewer", digest=digest("b"), created_at=T0 + 5)
    revoked = await store.revoke_token(first.id, T0 + 10)
    assert revoked == first._replace(revoked_at=T0 + 10)
    # revoking twice keeps the first time
    assert await store.revoke_token(first.id, T0 + 20) == revoked
    assert await store.revoke_token(second.id + 100, T0) is None
    assert await store.live_token(digest("a")) is None
    assert await store.live_token(digest("b")) == second
    assert await store.token_rows() == [revoked, second]
    assert await store.token_row(first.id) == revoked
