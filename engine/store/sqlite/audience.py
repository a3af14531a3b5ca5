"""The audience cursor's reads and the per-chunk lookups of the hot path (AudienceStore)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import anyio.to_thread
import msgspec

from engine.core.emails import email_domain
from engine.core.prepare import AudienceRow
from engine.segments.condition import Condition
from engine.store.models import AudienceSource
from engine.store.sqlite.connection import pick_subscription
from engine.store.sqlite.journal import SQLiteJournal, seen_keys
from engine.store.sqlite.segments import SQLiteSegments
from engine.store.sqlite.suppression import SQLiteSuppression

__all__ = ["SQLiteAudience"]

_json = msgspec.json.Encoder()


class SQLiteAudience(SQLiteSegments, SQLiteSuppression, SQLiteJournal):
    """Reads segments, and the suppression lists and dedupe record of a run."""

    def _counted(self, source: AudienceSource) -> tuple[str, int]:
        """The table (and the key) whose rows the source's count counts."""
        if source.kind == "segment":
            row = self.conn.execute(
                "SELECT kind FROM segments WHERE id = ?", (source.segment_id,)
            ).fetchone()
            if row is None or row[0] != "dynamic":
                return "segment_members WHERE segment_id = ?", int(source.segment_id or 0)
            # A dynamic segment's database: an upper bound (judging every profile now
            # would take seconds on a big database; the run judges them as it reads them)
        return "profiles WHERE database_id = ?", int(source.database_id or 0)

    async def count_audience(self, source: AudienceSource) -> int:
        where, key = self._counted(source)
        sql = f"SELECT count(*) FROM {where}"

        def count() -> int:  # on a connection of its own (WAL: it reads beside writes)
            conn = sqlite3.connect(self.path, check_same_thread=False)
            try:
                return int(conn.execute(sql, (key,)).fetchone()[0])
            finally:
                conn.close()

        return await anyio.to_thread.run_sync(count)

    async def audience_bound(self, source: AudienceSource) -> int:
        where, key = self._counted(source)
        column = "profile_id" if where.startswith("segment_members") else "id"
        # one aggregate per statement: SQLite answers each from the index's end
        (lo,) = self.conn.execute(f"SELECT min({column}) FROM {where}", (key,)).fetchone()
        if lo is None:
            return 0
        (hi,) = self.conn.execute(f"SELECT max({column}) FROM {where}", (key,)).fetchone()
        return int(hi) - int(lo) + 1

    async def audience_chunk(
        self, source: AudienceSource, resource_id: int, after_id: int, limit: int
    ) -> list[AudienceRow]:
        pick = pick_subscription(source.channel)
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
                                           now, channel=source.channel)
        rows = await self.audience_chunk(source, resource_id, after_id, limit)
        return rows, (rows[-1][0] if rows else None)

    async def audience_rows(
        self, source: AudienceSource, resource_id: int, profile_ids: Sequence[int]
    ) -> list[AudienceRow]:
        rows: list[AudienceRow] = []
        pick = pick_subscription(source.channel)
        for i in range(0, len(profile_ids), 500):
            part = profile_ids[i : i + 500]
            rows += self.conn.execute(
                f"SELECT p.id, p.fields, s.phone, s.fields FROM profiles p {pick}"
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
        if lists and phones:
            in_lists = ",".join(str(int(i)) for i in lists)
            if self._run_channel(c, run_id) == "email":
                suppressed = self._suppressed_addresses(phones, in_lists)
            else:
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
            scratch, table, as_text = self._seen_table(run_id)
            held = self._seen_held if self._seen_run == run_id else set()
            keys = seen_keys(maybe_seen, as_text)
            found = [k for k in keys if k in held]  # accepted, not written yet
            rest = [k for k in keys if k not in held]
            if rest:
                found.extend(r[0] for r in scratch.execute(
                    f"SELECT phone FROM {table} WHERE phone IN"
                    " (SELECT value FROM json_each(?))",
                    (_json.encode(rest),),
                ))
            if as_text:
                seen.update(found)
            else:
                seen.update(f"+{k}" for k in found)
        return suppressed, seen

    def _suppressed_addresses(self, addresses: Sequence[str], in_lists: str) -> set[str]:
        """The email addresses (normalised) that are on one of the lists ``in_lists`` (SQL
        ids), or whose domain is."""
        suppressed: set[str] = set()
        domains: dict[str, list[str]] = {}
        # a list holds its addresses lowercased (``engine.suppression.classify``): an
        # address is on it whatever the case of its local part
        lowered: dict[str, list[str]] = {}
        for a in addresses:
            lowered.setdefault(a.lower(), []).append(a)
            if a.rfind("@") > 0:
                domains.setdefault(email_domain(a), []).append(a)
        # each through the primary key (value, kind, list)
        on_lists = f" AND list_id IN ({in_lists})"
        for (value,) in self.conn.execute(
            "SELECT value FROM suppressions WHERE value IN (SELECT value FROM json_each(?))"
            f" AND kind = 'email'{on_lists}", (_json.encode(list(lowered)),)):
            suppressed.update(lowered[value])
        for (domain,) in self.conn.execute(
            "SELECT value FROM suppressions WHERE value IN (SELECT value FROM json_each(?))"
            f" AND kind = 'domain'{on_lists}", (_json.encode(list(domains)),)):
            suppressed.update(domains[domain])
        return suppressed
