"""Suppression lists and what they are attached to (SuppressionStore)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from engine.core.emails import suppression_value
from engine.errors import InputError, NotFound
from engine.store.sqlite.connection import SQLiteBase

__all__ = ["SQLiteSuppression"]


class SQLiteSuppression(SQLiteBase):
    async def add_suppressions(
        self, list_name: str, kind: str, values: Sequence[str], *, is_global: bool = True
    ) -> int:
        if kind not in ("phone", "email", "domain"):
            raise InputError(f"a suppression is a phone, an email or a domain, not {kind!r}")
        now = time.time()
        with self._tx() as c:
            if c.execute(
                "INSERT OR IGNORE INTO suppression_lists (name, is_global, created_at)"
                " VALUES (?, ?, ?)",
                (list_name, int(is_global), now),
            ).rowcount and is_global:
                self._run_lists.clear()  # a new global list applies to every run
            (list_id,) = c.execute(
                "SELECT id FROM suppression_lists WHERE name = ?", (list_name,)
            ).fetchone()
            before = c.total_changes
            c.executemany(
                "INSERT OR IGNORE INTO suppressions (list_id, kind, value, added_at)"
                " VALUES (?, ?, ?, ?)",
                [(list_id, kind, suppression_value(kind, v), now) for v in values],
            )
            return c.total_changes - before

    async def attach_suppression_list(
        self, list_name: str, *, database_id: int | None = None, mailing_id: int | None = None
    ) -> None:
        if (database_id is None) == (mailing_id is None):
            raise InputError("attach a suppression list to a database or to a mailing")
        row = self.conn.execute(
            "SELECT id FROM suppression_lists WHERE name = ?", (list_name,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no suppression list named {list_name!r}")
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO suppression_attachments (list_id, database_id, mailing_id)"
                " VALUES (?, ?, ?)",
                (row[0], database_id, mailing_id),
            )
        self._run_lists.clear()

    async def suppression_lists(self) -> list[dict[str, Any]]:
        out = []
        for lid, name, is_global in self.conn.execute(
            "SELECT id, name, is_global FROM suppression_lists ORDER BY name"
        ).fetchall():
            counts = dict(self.conn.execute(
                "SELECT kind, count(*) FROM suppressions WHERE list_id = ? GROUP BY kind", (lid,)
            ).fetchall())
            attached = self.conn.execute(
                "SELECT d.name, a.mailing_id FROM suppression_attachments a"
                " LEFT JOIN databases d ON d.id = a.database_id WHERE a.list_id = ?", (lid,)
            ).fetchall()
            out.append({
                "name": name, "global": bool(is_global), "counts": counts,
                "databases": sorted(d for d, _ in attached if d),
                "mailings": sorted(m for _, m in attached if m),
            })
        return out

    def _lists_for_run(self, run_id: int) -> list[int]:
        """The suppression lists that apply to a run: global ones, and those attached to
        its mailing or its mailing's database."""
        lists = self._run_lists.get(run_id)
        if lists is None:
            lists = [r[0] for r in self.conn.execute(
                "SELECT l.id FROM suppression_lists l WHERE l.is_global OR l.id IN"
                " (SELECT a.list_id FROM suppression_attachments a JOIN runs r ON r.id = ?"
                "  JOIN mailings m ON m.id = r.mailing_id"
                "  WHERE a.mailing_id = m.id OR a.database_id = m.database_id)",
                (run_id,),
            )]
            self._run_lists[run_id] = lists
        return lists
