"""API tokens (ApiTokenStore): the ``api_tokens`` table, SHA-256 digests only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from engine.store.base import ApiTokenStore, TokenRow
from engine.store.postgres.connection import PgBase

__all__ = ["DDL", "PgTokens"]

#: This role's tables, in the first migration (``schema.py``).
DDL = """
CREATE TABLE api_tokens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text,
    role text NOT NULL,
    group_name text,
    hash text NOT NULL UNIQUE,
    created_at double precision NOT NULL,
    revoked_at double precision
);
"""

_COLUMNS: Final = "id, name, role, group_name, created_at, revoked_at, hash"
_BIGINT: Final = range(-(2**63), 2**63)


def _row(row: Sequence[Any]) -> TokenRow:
    return TokenRow(int(row[0]), row[1], str(row[2]), row[3], float(row[4]),
                    None if row[5] is None else float(row[5]), str(row[6]))


class PgTokens(PgBase, ApiTokenStore):
    async def add_token(
        self, *, role: str, digest: str, name: str | None = None, group: str | None = None,
        created_at: float,
    ) -> TokenRow:
        row = await self.db.fetchone(
            "INSERT INTO api_tokens (name, role, group_name, hash, created_at)"
            f" VALUES (%s, %s, %s, %s, %s) RETURNING {_COLUMNS}",
            (name, role, group, digest, created_at),
        )
        assert row is not None
        return _row(row)

    async def token_row(self, token_id: int) -> TokenRow | None:
        if token_id not in _BIGINT:
            return None
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE id = %s", (token_id,))
        return None if row is None else _row(row)

    async def token_rows(self) -> list[TokenRow]:
        rows = await self.db.fetchall(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY id")
        return [_row(r) for r in rows]

    async def revoke_token(self, token_id: int, at: float) -> TokenRow | None:
        if token_id not in _BIGINT:
            return None
        row = await self.db.fetchone(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, %s) WHERE id = %s"
            f" RETURNING {_COLUMNS}",
            (at, token_id),
        )
        return None if row is None else _row(row)

    async def live_token(self, digest: str) -> TokenRow | None:
        row = await self.db.fetchone(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE hash = %s AND revoked_at IS NULL",
            (digest,),
        )
        return None if row is None else _row(row)
