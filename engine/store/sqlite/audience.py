"""The audience cursor's reads and the per-chunk lookups of the hot path (AudienceStore)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from engine.core.prepare import AudienceRow
from engine.segments.condition import Condition
from engine.store.models import AudienceSource
from engine.store.sqlite.connection import PICK_SUBSCRIPTION
from engine.store.sqlite.journal import SQLiteJournal
from engine.store.sqlite.segments import SQLiteSegments
from engine.store.sqlite.suppression import SQLiteSuppression

__all__ = ["SQLiteAudience"]

_json = msgspec.json.Encoder()
_PICK_SUBSCRIPTION = PICK_SUBSCRIPTION


class SQLiteAudience(SQLiteSegments, SQLiteSuppression, SQLiteJournal):
    """Reads segments, and the suppression lists and dedupe record of a run."""

    async def count_audience(self, source: AudienceSource) -> int:
        if source.kind == "segment":
            row = self.conn.execute(
                "SELECT kind FROM segments WHERE id = ?", (source.segment_id,)
            ).fetchone()
            if row is not None and row[0] == "dynamic":
                # An upper bound: judging every profile now would hold the event loop for
                # seconds on a big database; the run judges them as it reads them anyway.
                row = self.conn.execute(
                    "SELECT count(*) FROM profiles WHERE database_id = ?",
                    (source.database_id,),
                ).fetchone()
                return int(row[0])
            row = self.conn.execute(
                "SELECT count(*) FROM segment_members WHERE segment_id = ?", (source.segment_id,)
            ).fetchone()
        else:
            row = self.conn.execute(
                "SELECT count(*) FROM profiles WHERE database_id = ?", (source.database_id,)
            ).fetchone()
        return int(row[0])

    async def audience_chunk(
        self, source: AudienceSource, resource_id: int, after_id: int, limit: int
    ) -> list[AudienceRow]:
        pick = _PICK_SUBSCRIPTION
        if source.kind == "segment":
            sql = (
                "SELECT p.id, p.fields, s.phone, s.fields FROM segment_members g"
                f" JOIN profiles p ON p.id = g.profile_id {pick}"
                " WHERE g.segment_id = ? AND g.profile_id > ? ORDER BY g.profile_id LIMIT ?"
            )
            args: tuple[Any, ...] = (resource_id, source.segment_id, after_id, limit)
        else:
            sql = (
                f"SELECT p.id, p.fields, s.phone, s.fields FROM profiles p {pick}"
                " WHERE p.database_id = ? AND p.id > ? ORDER BY p.id LIMIT ?"
            )
            args = (resource_id, source.database_id, after_id, limit)
        return self.conn.execute(sql, args).fetchall()

    async def audience_page(
        self, source: AudienceSource, resource_id: int, after_id: int, limit: int, now: float,
        *, condition: Condition | None = None,
    ) -> tuple[list[AudienceRow], int | None]:
        if source.kind == "segment":
            assert source.segment_id is not None
            segment = await self.segment_by_id(source.segment_id)
            return await self.segment_page(segment, condition, resource_id, after_id, limit,
                                           now)
        rows = await self.audience_chunk(source, resource_id, after_id, limit)
        return rows, (rows[-1][0] if rows else None)

    async def audience_rows(
        self, source: AudienceSource, resource_id: int, profile_ids: Sequence[int]
    ) -> list[AudienceRow]:
        rows: list[AudienceRow] = []
        for i in range(0, len(profile_ids), 500):
            part = profile_ids[i : i + 500]
            rows += self.conn.execute(
                f"SELECT p.id, p.fields, s.phone, s.fields FROM profiles p {_PICK_SUBSCRIPTION}"
                " WHERE p.id IN (SELECT value FROM json_each(?))",
                (resource_id, _json.encode(list(part))),
            ).fetchall()
        return rows

    async def lookup(
        self, run_id: int, phones: Sequence[str], maybe_seen: Sequence[str]
    ) -> tuple[set[str], set[str]]:
        c = self.conn
        suppressed: set[str] = set()
        seen: set[str] = set()
        lists = self._lists_for_run(run_id)
        if lists:
            in_lists = ",".join(str(int(i)) for i in lists)
            for i in range(0, len(phones), 500):
                part = phones[i : i + 500]
                marks = ",".join("?" * len(part))
                suppressed.update(
                    r[0]
                    for r in c.execute(
                        f"SELECT value FROM suppressions WHERE value IN ({marks})"
                        f" AND kind = 'phone' AND list_id IN ({in_lists})",
                        part,
                    )
                )
        if maybe_seen:
            scratch, table = self._seen_table(run_id)
            found = scratch.execute(
                f"SELECT phone FROM {table} WHERE phone IN"
                " (SELECT value FROM json_each(?))",
                (_json.encode([int(p[1:]) for p in maybe_seen]),),
            )
            seen.update(f"+{r[0]}" for r in found)
        return suppressed, seen
