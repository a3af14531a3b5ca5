"""Suppression lists and their attachments (SuppressionStore)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from engine.core.emails import suppression_value
from engine.errors import InputError, NotFound
from engine.store.postgres.connection import PgBase

__all__ = ["DDL", "PgSuppression"]

#: This role's tables, in the first migration (``schema.py``).
DDL = """
CREATE TABLE suppression_lists (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    is_global boolean NOT NULL DEFAULT true,
    created_at double precision NOT NULL
);
CREATE TABLE suppressions (
    list_id bigint NOT NULL REFERENCES suppression_lists(id) ON DELETE CASCADE,
    kind text NOT NULL,
    value text NOT NULL,
    added_at double precision NOT NULL,
    PRIMARY KEY (value, kind, list_id)
);
-- mailing_id names a mailing: its foreign key is added by triggers.py, after runs.py.
CREATE TABLE suppression_attachments (
    list_id bigint NOT NULL REFERENCES suppression_lists(id) ON DELETE CASCADE,
    database_id bigint REFERENCES databases(id),
    mailing_id bigint,
    CHECK ((database_id IS NULL) <> (mailing_id IS NULL))
);
CREATE UNIQUE INDEX suppression_attachment_once
    ON suppression_attachments(list_id, coalesce(database_id, 0), coalesce(mailing_id, 0));
"""


class PgSuppression(PgBase):
    async def add_suppressions(
        self, list_name: str, kind: str, values: Sequence[str], *, is_global: bool = True
    ) -> int:
        if kind not in ("phone", "email", "domain"):
            raise InputError(f"a suppression is a phone, an email or a domain, not {kind!r}")
        now = time.time()
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "INSERT INTO suppression_lists (name, is_global, created_at)"
                " VALUES (%s, %s, %s) ON CONFLICT (name) DO NOTHING RETURNING id",
                (list_name, is_global, now),
            )
            if row is not None:  # a new list: it may apply to runs already looked up
                self._run_lists.clear()
            else:
                row = await tx.fetchone(
                    "SELECT id FROM suppression_lists WHERE name = %s", (list_name,))
                assert row is not None
            if not values:
                return 0
            added: int = await tx.execute(
                "INSERT INTO suppressions (list_id, kind, value, added_at)"
                " SELECT %s, %s, v, %s FROM unnest(%s::text[]) AS u(v)"
                " ON CONFLICT DO NOTHING",
                (row[0], kind, now, [suppression_value(kind, v) for v in values]),
            )
            return added

    async def attach_suppression_list(
        self, list_name: str, *, database_id: int | None = None, mailing_id: int | None = None
    ) -> None:
        if (database_id is None) == (mailing_id is None):
            raise InputError("attach a suppression list to a database or to a mailing")
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "SELECT id FROM suppression_lists WHERE name = %s", (list_name,))
            if row is None:
                raise NotFound(f"no suppression list named {list_name!r}")
            await tx.execute(
                "INSERT INTO suppression_attachments (list_id, database_id, mailing_id)"
                " VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                (row[0], database_id, mailing_id),
            )
        self._run_lists.clear()

    async def suppression_lists(self) -> list[dict[str, Any]]:
        async with self.db.transaction() as tx:
            lists = await tx.fetchall(
                "SELECT id, name, is_global FROM suppression_lists ORDER BY name")
            counts = await tx.fetchall(
                "SELECT list_id, kind, count(*) FROM suppressions GROUP BY list_id, kind")
            attached = await tx.fetchall(
                "SELECT a.list_id, d.name, a.mailing_id FROM suppression_attachments a"
                " LEFT JOIN databases d ON d.id = a.database_id")
        by_list: dict[int, dict[str, int]] = {}
        for lid, kind, n in counts:
            by_list.setdefault(lid, {})[kind] = int(n)
        databases: dict[int, list[str]] = {}
        mailings: dict[int, list[int]] = {}
        for lid, database, mailing in attached:
            if database:
                databases.setdefault(lid, []).append(database)
            if mailing:
                mailings.setdefault(lid, []).append(int(mailing))
        return [
            {
                "name": name, "global": bool(is_global), "counts": by_list.get(lid, {}),
                "databases": sorted(databases.get(lid, [])),
                "mailings": sorted(mailings.get(lid, [])),
            }
            for lid, name, is_global in lists
        ]
