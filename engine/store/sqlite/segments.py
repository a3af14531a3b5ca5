"""Segments: static lists of profiles, and dynamic conditions judged when read
(SegmentStore).

A static segment is a list of profiles (``segment_members``). A dynamic one stores its
condition text and is evaluated whenever it is read: counting it, or reading it for a
launch, selects its members at that moment. Its condition is turned into SQLite's SQL
(``conditions/``), once per condition and set of template functions; the rows that SQL
leaves undecided are judged by ``Condition.residual``. Reads are keyset-paginated by
profile id and stream: Python judges a chunk at a time, never the whole database.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any, Final, Literal

import msgspec

from engine.core.prepare import AudienceRow
from engine.errors import InputError, NotFound
from engine.segments.condition import Condition, compile_condition, lead_view
from engine.segments.dates import Now
from engine.store.base import ConditionPlan, Member, SegmentRow
from engine.store.sqlite.conditions import Verdict, verdict_of
from engine.store.sqlite.connection import SQLiteBase, pick_subscription

__all__ = ["SQLiteSegments"]

_SCAN_CHUNK: Final = 2000  # rows per query when a scan needs Python
_ID_CHUNK: Final = 10_000  # ids per query when checking a static segment's members
_CACHED: Final = 256  # conditions whose SQL is kept
_json = msgspec.json.Encoder()
_SEGMENT_COLUMNS: Final = (
    "SELECT g.id, g.name, d.name, g.database_id, g.kind, g.condition, g.created_at"
    " FROM segments g JOIN databases d ON d.id = g.database_id"
)


def _segment(row: Sequence[Any]) -> SegmentRow:
    kind: Literal["static", "dynamic"] = "dynamic" if row[4] == "dynamic" else "static"
    return SegmentRow(id=row[0], name=row[1], database=row[2], database_id=row[3], kind=kind,
                      condition=row[5], created_at=row[6])


class SQLiteSegments(SQLiteBase):
    async def segment_id(self, name: str) -> tuple[int, int]:
        row = self.conn.execute(
            "SELECT id, database_id FROM segments WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no segment named {name!r}")
        return int(row[0]), int(row[1])

    async def create_segment(
        self, name: str, database_id: int, *, condition: str | None = None,
        profile_ids: Sequence[int] | None = None,
    ) -> SegmentRow:
        if (condition is None) == (profile_ids is None):
            raise InputError("give a segment either a condition or a list of profile ids")
        try:
            with self._tx() as c:
                cur = c.execute(
                    "INSERT INTO segments (name, database_id, kind, condition, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (name, database_id, "static" if condition is None else "dynamic",
                     condition, time.time()),
                )
                if profile_ids is not None:
                    sid = int(cur.lastrowid or 0)
                    ids = list(dict.fromkeys(profile_ids))
                    self._check_members(c, database_id, ids)
                    c.executemany(
                        "INSERT OR IGNORE INTO segment_members (segment_id, profile_id)"
                        " VALUES (?, ?)",
                        [(sid, p) for p in ids],
                    )
        except sqlite3.IntegrityError:
            raise InputError(f"a segment named {name!r} already exists") from None
        return await self.get_segment(name)

    @staticmethod
    def _check_members(c: sqlite3.Connection, database_id: int, ids: list[int]) -> None:
        """InputError naming (up to five) ``ids`` that are not profiles of the database."""
        for start in range(0, len(ids), _ID_CHUNK):
            missing = c.execute(
                "SELECT j.value FROM json_each(?) j LEFT JOIN profiles p ON p.id = j.value"
                " AND p.database_id = ? WHERE p.id IS NULL LIMIT 5",
                (_json.encode(ids[start : start + _ID_CHUNK]), database_id),
            ).fetchall()
            if missing:
                (database,) = c.execute(
                    "SELECT name FROM databases WHERE id = ?", (database_id,)
                ).fetchone() or (str(database_id),)
                shown = ", ".join(str(row[0]) for row in missing)
                raise InputError(f"no profile with id {shown} in database {database!r}")

    async def get_segment(self, name: str) -> SegmentRow:
        row = self.conn.execute(f"{_SEGMENT_COLUMNS} WHERE g.name = ?", (name,)).fetchone()
        if row is None:
            raise NotFound(f"no segment named {name!r}")
        return _segment(row)

    async def segment_by_id(self, segment_id: int) -> SegmentRow:
        row = self.conn.execute(f"{_SEGMENT_COLUMNS} WHERE g.id = ?", (segment_id,)).fetchone()
        if row is None:
            raise NotFound(f"no segment with id {segment_id}")
        return _segment(row)

    async def segment_rows(self) -> list[SegmentRow]:
        return [_segment(r) for r in self.conn.execute(f"{_SEGMENT_COLUMNS} ORDER BY g.name")]

    # -- conditions --------------------------------------------------------------------

    def _compiled(self, condition: Condition) -> Verdict:
        """The SQL of ``condition``, translated once per text and set of functions."""
        key = condition.key
        found = self._verdicts.get(key)
        if found is None:
            if len(self._verdicts) >= _CACHED:
                del self._verdicts[next(iter(self._verdicts))]  # the oldest
            found = self._verdicts[key] = (condition, verdict_of(condition))
        return found[1]

    def _condition(self, segment: SegmentRow, condition: Condition | None) -> Condition:
        """A dynamic segment's condition: the one given, or its text compiled with the
        built-in functions."""
        if condition is not None:
            return condition
        assert segment.condition is not None, segment
        found = self._verdicts.get((segment.condition, ()))
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
            (n,) = self.conn.execute(
                "SELECT count(*) FROM segment_members WHERE segment_id = ?", (segment.id,)
            ).fetchone()
            return int(n)
        condition = self._condition(segment, condition)
        verdict = self._compiled(condition)
        params = verdict.bind(now)
        (n,) = self.conn.execute(
            f"SELECT count(*) FROM profiles p WHERE p.database_id = ? AND ({verdict.text}) = 1",
            (segment.database_id, *params),
        ).fetchone()
        count = int(n)
        if not verdict.decided:
            for rows in self._undecided(segment.database_id, verdict, params):
                count += sum(condition.residual(lead_view(*row), now) for row in rows)
        return count

    def _undecided(
        self, database_id: int, verdict: Verdict, params: tuple[Any, ...]
    ) -> Iterator[list[Any]]:
        """Pages of (id, fields, phone, email) of the profiles SQL leaves to Python."""
        after = 0
        while True:
            rows = self.conn.execute(
                "SELECT p.id, p.fields, p.phone, p.email FROM profiles p"
                f" WHERE p.database_id = ? AND p.id > ? AND ({verdict.text}) IS NULL"
                " ORDER BY p.id LIMIT ?",
                (database_id, after, *params, _SCAN_CHUNK),
            ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield rows

    async def segment_sample(
        self, segment: SegmentRow, condition: Condition | None, now: Now, limit: int
    ) -> list[Member]:
        if segment.kind == "static":
            return [
                Member(*row) for row in self.conn.execute(
                    "SELECT p.id, p.phone, p.email FROM segment_members g JOIN profiles p"
                    " ON p.id = g.profile_id WHERE g.segment_id = ? ORDER BY g.profile_id"
                    " LIMIT ?",
                    (segment.id, limit),
                )
            ]
        condition = self._condition(segment, condition)
        verdict = self._compiled(condition)
        params = verdict.bind(now)
        members: list[Member] = []
        after = 0
        while len(members) < limit:
            scanned = self.conn.execute(
                f"SELECT p.id, p.phone, p.email, ({verdict.text}) IS NULL, p.fields"
                " FROM profiles p WHERE p.database_id = ? AND p.id > ?"
                f" AND ({verdict.text}) IS NOT 0 ORDER BY p.id LIMIT ?",
                (*params, segment.database_id, after, *params, _SCAN_CHUNK),
            ).fetchall()
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
        after_id: int, limit: int, now: Now, *, channel: str = "sms",
    ) -> tuple[list[AudienceRow], int | None]:
        """``SegmentStore.segment_page``, reading the subscriptions of ``channel`` (the
        audience source's)."""
        pick = pick_subscription(channel)
        if segment.kind == "static":
            rows = self.conn.execute(
                "SELECT p.id, p.fields, s.phone, s.fields FROM segment_members g"
                f" JOIN profiles p ON p.id = g.profile_id {pick}"
                " WHERE g.segment_id = ? AND g.profile_id > ? ORDER BY g.profile_id LIMIT ?",
                (resource_id, segment.id, after_id, limit),
            ).fetchall()
            return rows, (rows[-1][0] if rows else None)
        condition = self._condition(segment, condition)
        verdict = self._compiled(condition)
        params = verdict.bind(now)
        text = verdict.text
        scanned = self.conn.execute(
            f"SELECT p.id, p.fields, s.phone, s.fields, ({text}) IS NULL, p.phone, p.email"
            f" FROM profiles p {pick}"
            f" WHERE p.database_id = ? AND p.id > ? AND ({text}) IS NOT 0"
            " ORDER BY p.id LIMIT ?",
            (*params, resource_id, segment.database_id, after_id, *params, limit),
        ).fetchall()
        if not scanned:
            return [], None
        rows = [
            row[:4] for row in scanned
            if not row[4] or condition.residual(lead_view(row[0], row[1], row[5], row[6]), now)
        ]
        return rows, scanned[-1][0]
