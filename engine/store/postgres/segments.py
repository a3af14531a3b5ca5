"""Segments, with conditions compiled to jsonb SQL (SegmentStore).

A static segment is a list of profiles (``segment_members``). A dynamic one stores its
condition text and is evaluated whenever it is read. Its condition is turned into
PostgreSQL's SQL (``conditions.py``) once per condition and set of template functions; the
rows that SQL leaves undecided are judged by ``Condition.residual``. Reads are
keyset-paginated by profile id and stream: Python judges a chunk at a time, never the
whole database.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, Literal

import psycopg

from engine.core.prepare import AudienceRow
from engine.errors import InputError, NotFound
from engine.segments.condition import Condition, compile_condition, lead_view
from engine.segments.dates import Now
from engine.store.base import ConditionPlan, Member, SegmentRow, SegmentStore
from engine.store.postgres.conditions import Verdict, verdict_of
from engine.store.postgres.connection import (
    AUDIENCE_COLUMNS,
    Channel,
    PgBase,
    pick_subscription,
)
from engine.store.postgres.db import Tx

__all__ = ["DDL", "PgSegments"]

#: This role's tables, in the first migration (``schema.py``).
DDL = """
CREATE TABLE segments (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL UNIQUE,
    database_id bigint NOT NULL REFERENCES databases(id),
    kind text NOT NULL DEFAULT 'static',
    condition text,
    created_at double precision NOT NULL
);
CREATE TABLE segment_members (
    segment_id bigint NOT NULL REFERENCES segments(id) ON DELETE CASCADE,
    profile_id bigint NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    PRIMARY KEY (segment_id, profile_id)
);
"""

_SCAN_CHUNK: Final = 2000  # rows per query when a scan needs Python
_CACHED: Final = 256  # conditions whose SQL is kept
_BIGINT: Final = range(-(2**63), 2**63)
_SEGMENT_COLUMNS: Final = (
    "SELECT g.id, g.name, d.name, g.database_id, g.kind, g.condition, g.created_at"
    " FROM segments g JOIN databases d ON d.id = g.database_id"
)


def _segment(row: Sequence[Any]) -> SegmentRow:
    kind: Literal["static", "dynamic"] = "dynamic" if row[4] == "dynamic" else "static"
    return SegmentRow(id=int(row[0]), name=row[1], database=row[2],
                      database_id=int(row[3]), kind=kind, condition=row[5],
                      created_at=float(row[6]))


def _judged(verdict: str) -> str:
    """Joins each profile ``p`` to ``c.v``, its verdict, computed once per row (``OFFSET
    0`` keeps the planner from copying the expression into every place that reads it)."""
    return f"CROSS JOIN LATERAL (SELECT {verdict} AS v OFFSET 0) AS c"


class PgSegments(PgBase, SegmentStore):
    _pg_verdicts: dict[Any, tuple[Condition, Verdict]]

    async def segment_id(self, name: str) -> tuple[int, int]:
        row = None if "\x00" in name else await self.db.fetchone(
            "SELECT id, database_id FROM segments WHERE name = %s", (name,))
        if row is None:
            raise NotFound(f"no segment named {name!r}")
        return int(row[0]), int(row[1])

    async def create_segment(
        self, name: str, database_id: int, *, condition: str | None = None,
        profile_ids: Sequence[int] | None = None,
    ) -> SegmentRow:
        if (condition is None) == (profile_ids is None):
            raise InputError("give a segment either a condition or a list of profile ids")
        for what, text in (("name", name), ("condition", condition or "")):
            if "\x00" in text:  # PostgreSQL text cannot hold it
                raise InputError(f"a segment's {what} cannot hold the character U+0000")
        try:
            async with self.db.transaction() as tx:
                row = await tx.fetchone(
                    "INSERT INTO segments (name, database_id, kind, condition, created_at)"
                    " VALUES (%s, %s, %s, %s, %s) RETURNING id",
                    (name, database_id, "static" if condition is None else "dynamic",
                     condition, time.time()),
                )
                assert row is not None
                if profile_ids is not None:
                    ids = list(dict.fromkeys(profile_ids))
                    await self._check_members(tx, database_id, ids)
                    await tx.execute(
                        "INSERT INTO segment_members (segment_id, profile_id)"
                        " SELECT %s, unnest(%s::bigint[]) ON CONFLICT DO NOTHING",
                        (row[0], ids),
                    )
        except psycopg.errors.UniqueViolation:
            raise InputError(f"a segment named {name!r} already exists") from None
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound(f"no database with id {database_id}") from None
        return await self.get_segment(name)

    @staticmethod
    async def _check_members(tx: Tx, database_id: int, ids: list[int]) -> None:
        """InputError naming (up to five) ``ids`` that are not profiles of the database,
        in the order given."""
        outside = [(i, pid) for i, pid in enumerate(ids) if pid not in _BIGINT][:5]
        inside = [pid for pid in ids if pid in _BIGINT]
        rows = await tx.fetchall(
            "SELECT m.n, m.id FROM unnest(%s::bigint[]) WITH ORDINALITY AS m(id, n)"
            " LEFT JOIN profiles p ON p.id = m.id AND p.database_id = %s"
            " WHERE p.id IS NULL ORDER BY m.n LIMIT 5",
            (inside, database_id),
        )
        if not rows and not outside:
            return
        # positions among all ids: the in-range ones' ordinality counts only them
        positions = [i for i, pid in enumerate(ids) if pid in _BIGINT]
        missing = sorted([(positions[int(n) - 1], int(pid)) for n, pid in rows] + outside)
        found = await tx.fetchone("SELECT name FROM databases WHERE id = %s", (database_id,))
        database = found[0] if found else str(database_id)
        shown = ", ".join(str(pid) for _, pid in missing[:5])
        raise InputError(f"no profile with id {shown} in database {database!r}")

    async def get_segment(self, name: str) -> SegmentRow:
        row = None if "\x00" in name else await self.db.fetchone(
            f"{_SEGMENT_COLUMNS} WHERE g.name = %s", (name,))
        if row is None:
            raise NotFound(f"no segment named {name!r}")
        return _segment(row)

    async def segment_by_id(self, segment_id: int) -> SegmentRow:
        row = None
        if segment_id in _BIGINT:
            row = await self.db.fetchone(f"{_SEGMENT_COLUMNS} WHERE g.id = %s", (segment_id,))
        if row is None:
            raise NotFound(f"no segment with id {segment_id}")
        return _segment(row)

    async def segment_rows(self) -> list[SegmentRow]:
        rows = await self.db.fetchall(f'{_SEGMENT_COLUMNS} ORDER BY g.name COLLATE "C"')
        return [_segment(r) for r in rows]

    # -- conditions --------------------------------------------------------------------

    def _verdict_cache(self) -> dict[Any, tuple[Condition, Verdict]]:
        """Compiled conditions and their SQL, by ``Condition.key`` (made on first use)."""
        try:
            return self._pg_verdicts
        except AttributeError:
            self._pg_verdicts = {}
            return self._pg_verdicts

    def _compiled(self, condition: Condition) -> Verdict:
        """The SQL of ``condition``, translated once per text and set of functions."""
        cache = self._verdict_cache()
        key = condition.key
        found = cache.get(key)
        if found is None:
            if len(cache) >= _CACHED:
                del cache[next(iter(cache))]  # the oldest
            found = cache[key] = (condition, verdict_of(condition))
        return found[1]

    def _condition(self, segment: SegmentRow, condition: Condition | None) -> Condition:
        """A dynamic segment's condition: the one given, or its text compiled with the
        built-in functions."""
        if condition is not None:
            return condition
        assert segment.condition is not None, segment
        found = self._verdict_cache().get((segment.condition, ()))
        if found is not None:
            return found[0]
        return compile_condition(segment.condition)

    def condition_plan(self, condition: Condition) -> ConditionPlan:
        verdict = self._compiled(condition)
        return ConditionPlan(verdict.decided, verdict.python_only)

    # -- reading -----------------------------------------------------------------------

    async def count_segment(
        self, segment: SegmentRow, condition: Condition | None, now: Now
    ) -> int:
        if segment.kind == "static":
            row = await self.db.fetchone(
                "SELECT count(*) FROM segment_members WHERE segment_id = %s", (segment.id,))
            return int(row[0]) if row else 0
        condition = self._condition(segment, condition)
        verdict = self._compiled(condition)
        params = verdict.bind(now)
        row = await self.db.fetchone(
            f"SELECT count(*) FROM profiles p WHERE p.database_id = %s AND {verdict.text}",
            (segment.database_id, *params),
        )
        count = int(row[0]) if row else 0
        if not verdict.decided:
            async for rows in self._undecided(segment.database_id, verdict, params):
                count += sum(condition.residual(lead_view(*r), now) for r in rows)
        return count

    async def _undecided(
        self, database_id: int, verdict: Verdict, params: tuple[Any, ...]
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """Pages of (id, fields, phone, email) of the profiles SQL leaves to Python."""
        after = 0
        while True:
            rows = await self.db.fetchall(
                "SELECT p.id, p.fields::text, p.phone, p.email FROM profiles p"
                f" WHERE p.database_id = %s AND p.id > %s AND ({verdict.text}) IS NULL"
                " ORDER BY p.id LIMIT %s",
                (database_id, after, *params, _SCAN_CHUNK),
            )
            if not rows:
                return
            after = rows[-1][0]
            yield rows

    async def segment_sample(
        self, segment: SegmentRow, condition: Condition | None, now: Now, limit: int
    ) -> list[Member]:
        if segment.kind == "static":
            rows = await self.db.fetchall(
                "SELECT p.id, p.phone, p.email FROM segment_members g JOIN profiles p"
                " ON p.id = g.profile_id WHERE g.segment_id = %s ORDER BY g.profile_id"
                " LIMIT %s",
                (segment.id, limit),
            )
            return [Member(*row) for row in rows]
        condition = self._condition(segment, condition)
        verdict = self._compiled(condition)
        params = verdict.bind(now)
        members: list[Member] = []
        after = 0
        while len(members) < limit:
            scanned = await self.db.fetchall(
                "SELECT p.id, p.phone, p.email, c.v IS NULL, p.fields::text"
                f" FROM profiles p {_judged(verdict.text)}"
                " WHERE p.database_id = %s AND p.id > %s AND c.v IS NOT FALSE"
                " ORDER BY p.id LIMIT %s",
                (*params, segment.database_id, after, _SCAN_CHUNK),
            )
            if not scanned:
                break
            after = scanned[-1][0]
            members += [
                Member(row[0], row[1], row[2]) for row in scanned
                if not row[3] or condition.residual(lead_view(row[0], row[4], row[1], row[2]),
                                                    now)
            ]
        return members[:limit]

    async def segment_page(
        self, segment: SegmentRow, condition: Condition | None, resource_id: int,
        after_id: int, limit: int, now: Now, *, channel: Channel = "sms",
    ) -> tuple[list[AudienceRow], int | None]:
        """``SegmentStore.segment_page``, each profile with its subscription of
        ``channel`` (the audience source's)."""
        pick = pick_subscription(channel)
        if segment.kind == "static":
            rows = await self.db.fetchall(
                f"SELECT {AUDIENCE_COLUMNS} FROM segment_members g"
                f" JOIN profiles p ON p.id = g.profile_id {pick}"
                " WHERE g.segment_id = %s AND g.profile_id > %s ORDER BY g.profile_id"
                " LIMIT %s",
                (resource_id, segment.id, after_id, limit),
            )
            return [AudienceRow(*row) for row in rows], (rows[-1][0] if rows else None)
        condition = self._condition(segment, condition)
        verdict = self._compiled(condition)
        params = verdict.bind(now)
        scanned = await self.db.fetchall(
            f"SELECT {AUDIENCE_COLUMNS}, c.v IS NULL, p.phone, p.email"
            f" FROM profiles p {_judged(verdict.text)} {pick}"
            " WHERE p.database_id = %s AND p.id > %s AND c.v IS NOT FALSE"
            " ORDER BY p.id LIMIT %s",
            (*params, resource_id, segment.database_id, after_id, limit),
        )
        if not scanned:
            return [], None
        kept = [
            AudienceRow(*row[:4]) for row in scanned
            if not row[4] or condition.residual(lead_view(row[0], row[1], row[5], row[6]), now)
        ]
        return kept, scanned[-1][0]
