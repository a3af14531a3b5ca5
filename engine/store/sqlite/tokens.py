"""API tokens (ApiTokenStore): the ``api_tokens`` table, digests only."""

from __future__ import annotations

from typing import Any

from engine.store import base
from engine.store.sqlite.connection import SQLiteBase

__all__ = ["SQLiteTokens"]

_COLUMNS = "id, name, role, group_name, created_at, revoked_at, hash"


def _row(row: Any) -> base.TokenRow:
    return base.TokenRow(int(row[0]), row[1], str(row[2]), row[3], float(row[4]),
                         None if row[5] is None else float(row[5]), str(row[6]))


class SQLiteTokens(SQLiteBase, base.ApiTokenStore):
    async def add_token(
        self, *, role: str, digest: str, name: str | None = None, group: str | None = None,
        created_at: float,
    ) -> base.TokenRow:
        with self._tx() as c:
            row = c.execute(
                "INSERT INTO api_tokens (name, role, group_name, hash, created_at)"
                f" VALUES (?, ?, ?, ?, ?) RETURNING {_COLUMNS}",
                (name, role, group, digest, created_at),
            ).fetchall()
        return _row(row[0])

    async def token_row(self, token_id: int) -> base.TokenRow | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE id = ?", (token_id,)
        ).fetchone()
        return None if row is None else _row(row)

    async def token_rows(self) -> list[base.TokenRow]:
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY id").fetchall()
        return [_row(r) for r in rows]

    async def revoke_token(self, token_id: int, at: float) -> base.TokenRow | None:
        with self._tx() as c:
            row = c.execute(
                "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?"
                f" RETURNING {_COLUMNS}",
                (at, token_id),
            ).fetchall()
        return _row(row[0]) if row else None

    async def live_token(self, digest: str) -> base.TokenRow | None:
        row = self.conn.execute(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE hash = ? AND revoked_at IS NULL",
            (digest,),
        ).fetchone()
        return None if row is None else _row(row)
