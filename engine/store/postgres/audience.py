"""The audience cursor and the hot path's lookups (AudienceStore).

An audience reads the subscriptions of its source's channel (``AudienceSource.channel``):
an SMS one's phones, an email one's addresses. The lookups of an email run find its
addresses suppressed by an email entry or by their domain's, and its accepted ones in
``run_addresses`` (journal.py), as an SMS run's phones are found in ``run_phones``."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.core.emails import email_domain
from engine.core.prepare import AudienceRow
from engine.errors import InputError
from engine.store.models import AudienceSource
from engine.store.postgres.connection import (
    AUDIENCE_COLUMNS,
    Channel,
    PgBase,
    pick_subscription,
)
from engine.store.postgres.db import Tx

if TYPE_CHECKING:
    from engine.segments.condition import Condition
    from engine.segments.dates import Now
    from engine.store.base import SegmentRow

__all__ = ["DDL", "PgAudience"]

#: This role's tables, in the first migration (``schema.py``): none of its own.
DDL = ""


@functools.lru_cache(maxsize=128)
def _builtin_condition(text: str) -> Condition:
    """A stored condition compiled with the built-in template functions only."""
    from engine.segments.condition import compile_condition

    return compile_condition(text)


#: The tables the audience cursor reads, kept analyzed (``_fresh_statistics``).
_AUDIENCE_TABLES = ("profiles", "subscriptions", "segment_members")


def _rows(rows: list[tuple[Any, ...]]) -> list[AudienceRow]:
    return [AudienceRow(*r) for r in rows]


class PgAudience(PgBase):
    if TYPE_CHECKING:  # SegmentStore's (segments.py), which reads a segment's pages
        async def segment_by_id(self, segment_id: int) -> SegmentRow: ...

        async def segment_page(
            self, segment: SegmentRow, condition: Condition | None, resource_id: int,
            after_id: int, limit: int, now: Now, *, channel: Channel = "sms",
        ) -> tuple[list[AudienceRow], int | None]: ...

    async def _counted(self, tx: Any, source: AudienceSource) -> tuple[str, str, str, int]:
        """The table whose rows the source's count counts: (table, key column, id column,
        key). A dynamic segment's is its database's profiles: an upper bound, cheap to get
        (the run judges the profiles as it reads them anyway)."""
        if source.kind == "segment":
            row = await tx.fetchone(
                "SELECT kind FROM segments WHERE id = %s", (source.segment_id,))
            if row is None or row[0] != "dynamic":
                return "segment_members", "segment_id", "profile_id", int(source.segment_id or 0)
        return "profiles", "database_id", "id", int(source.database_id or 0)

    async def audience_bound(self, source: AudienceSource) -> int:
        await self._fresh_statistics()  # before the run's first chunk is planned
        async with self.db.transaction() as tx:
            table, column, id_column, key = await self._counted(tx, source)
            # each an index's end (min and max in one statement would scan)
            lo = await tx.fetchone(
                f"SELECT {id_column} FROM {table} WHERE {column} = %s"
                f" ORDER BY {id_column} LIMIT 1", (key,))
            if lo is None:
                return 0
            hi = await tx.fetchone(
                f"SELECT {id_column} FROM {table} WHERE {column} = %s"
                f" ORDER BY {id_column} DESC LIMIT 1", (key,))
            return int(hi[0]) - int(lo[0]) + 1 if hi else 0

    async def count_audience(self, source: AudienceSource) -> int:
        async with self.db.transaction() as tx:
            table, column, _, key = await self._counted(tx, source)
            row = await tx.fetchone(f"SELECT count(*) FROM {table} WHERE {column} = %s", (key,))
            return int(row[0]) if row else 0

    async def _fresh_statistics(self) -> None:
        """ANALYZE the audience's tables if much of them changed since their statistics
        were taken (a big import just now: autovacuum takes a minute or more to come).
        On stale statistics the planner may read a chunk by sorting every profile left.
        Called once per run, as it starts (``audience_bound``)."""
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT relname FROM pg_stat_user_tables"
                " WHERE schemaname = current_schema() AND relname = ANY(%s::text[])"
                " AND n_mod_since_analyze >= 1000 AND n_mod_since_analyze * 10 >= n_live_tup",
                (list(_AUDIENCE_TABLES),),
            )
            for (table,) in rows:
                if table in _AUDIENCE_TABLES:  # a name from the list above: safe to quote
                    await tx.execute(f'ANALYZE "{table}"')

    async def audience_chunk(
        self, source: AudienceSource, resource_id: int, after_id: int, limit: int
    ) -> list[AudienceRow]:
        # The page's profiles are picked first (LIMIT inside), then joined to their
        # subscription: the join never runs for more than ``limit`` profiles, whatever
        # the planner believes of the tables.
        pick = pick_subscription(source.channel)
        if source.kind == "segment":
            sql = (
                f"SELECT {AUDIENCE_COLUMNS} FROM (SELECT profile_id FROM segment_members"
                "  WHERE segment_id = %s AND profile_id > %s ORDER BY profile_id LIMIT %s) g"
                f" JOIN profiles p ON p.id = g.profile_id {pick}"
                " ORDER BY p.id"
            )
            args: tuple[Any, ...] = (source.segment_id, after_id, limit, resource_id)
        else:
            sql = (
                f"SELECT {AUDIENCE_COLUMNS} FROM (SELECT id, fields FROM profiles"
                "  WHERE database_id = %s AND id > %s ORDER BY id LIMIT %s) p"
                f" {pick} ORDER BY p.id"
            )
            args = (source.database_id, after_id, limit, resource_id)
        return _rows(await self.db.fetchall(sql, args))

    async def audience_page(
        self, source: AudienceSource, resource_id: int, after_id: int, limit: int, now: float,
        *, condition: Condition | None = None,
    ) -> tuple[list[AudienceRow], int | None]:
        if source.kind == "segment":
            assert source.segment_id is not None
            segment = await self.segment_by_id(source.segment_id)
            if segment.kind == "dynamic" and condition is None:
                assert segment.condition is not None
                condition = _builtin_condition(segment.condition)
            return await self.segment_page(
                segment, condition if segment.kind == "dynamic" else None, resource_id,
                after_id, limit, now, channel=source.channel,
            )
        rows = await self.audience_chunk(source, resource_id, after_id, limit)
        return rows, (rows[-1][0] if rows else None)

    async def audience_rows(
        self, source: AudienceSource, resource_id: int, profile_ids: Sequence[int]
    ) -> list[AudienceRow]:
        if not profile_ids:
            return []
        return _rows(await self.db.fetchall(
            f"SELECT {AUDIENCE_COLUMNS} FROM profiles p {pick_subscription(source.channel)}"
            " WHERE p.id = ANY(%s::bigint[]) ORDER BY p.id",
            (resource_id, list(profile_ids)),
        ))

    async def lookup(
        self, run_id: int, phones: Sequence[str], maybe_seen: Sequence[str]
    ) -> tuple[set[str], set[str]]:
        suppressed: set[str] = set()
        seen: set[str] = set()
        if not phones and not maybe_seen:
            return suppressed, seen
        async with self.db.transaction() as tx:
            if await self._channel(tx, run_id) == "email":
                return await self._lookup_emails(tx, run_id, phones, maybe_seen)
            lists = await self._lists_for_run(tx, run_id) if phones else []
            # One round trip: the suppressed phones (0), and the accepted ones (1), which
            # ``reserve`` keeps in run_phones (journal.py) as integers.
            rows = await tx.fetchall(
                "SELECT 0, value FROM suppressions WHERE value = ANY(%s::text[])"
                " AND kind = 'phone' AND list_id = ANY(%s::bigint[])"
                " UNION ALL SELECT 1, '+' || phone FROM run_phones"
                " WHERE run_id = %s AND phone = ANY(%s::bigint[])",
                (list(phones) if lists else [], lists, run_id,
                 [int(p[1:]) for p in maybe_seen]),
            )
        for which, phone in rows:
            (seen if which else suppressed).add(phone)
        return suppressed, seen

    async def _lookup_emails(
        self, tx: Tx, run_id: int, addresses: Sequence[str], maybe_seen: Sequence[str]
    ) -> tuple[set[str], set[str]]:
        """``lookup`` of an email run: an address is suppressed by an ``email`` entry of
        itself or a ``domain`` entry of its domain on an applying list; the seen ones are
        in ``run_addresses``."""
        lists = await self._lists_for_run(tx, run_id) if addresses else []
        by_domain: dict[str, list[str]] = {}
        # a list holds its addresses lowercased (``engine.suppression.classify``): an
        # address is on it whatever the case of its local part
        lowered: dict[str, list[str]] = {}
        if lists:
            for address in addresses:
                lowered.setdefault(address.lower(), []).append(address)
                try:
                    by_domain.setdefault(email_domain(address), []).append(address)
                except InputError:
                    continue  # not an address: no domain of it is listed
        # One round trip: the suppressed addresses (0), the suppressed domains (2), and
        # the accepted addresses (1).
        rows = await tx.fetchall(
            "SELECT 0, value FROM suppressions WHERE value = ANY(%s::text[])"
            " AND kind = 'email' AND list_id = ANY(%s::bigint[])"
            " UNION ALL SELECT 2, value FROM suppressions WHERE value = ANY(%s::text[])"
            " AND kind = 'domain' AND list_id = ANY(%s::bigint[])"
            " UNION ALL SELECT 1, address FROM run_addresses"
            " WHERE run_id = %s AND address = ANY(%s::text[])",
            (list(lowered), lists, list(by_domain), lists, run_id, list(maybe_seen)),
        )
        suppressed: set[str] = set()
        seen: set[str] = set()
        for which, value in rows:
            if which == 2:
                suppressed.update(by_domain.get(value, ()))
            elif which == 0:
                suppressed.update(lowered.get(value, ()))
            else:
                seen.add(value)
        return suppressed, seen

    async def _lists_for_run(self, tx: Tx, run_id: int) -> list[int]:
        """The suppression lists that apply to a run: global ones, and those attached to
        its mailing or its mailing's database (cached; ``attach`` clears the cache)."""
        lists = self._run_lists.get(run_id)
        if lists is None:
            rows = await tx.fetchall(
                "SELECT l.id FROM suppression_lists l WHERE l.is_global OR l.id IN"
                " (SELECT a.list_id FROM suppression_attachments a JOIN runs r ON r.id = %s"
                "  JOIN mailings m ON m.id = r.mailing_id"
                "  WHERE a.mailing_id = m.id OR a.database_id = m.database_id)",
                (run_id,),
            )
            lists = self._run_lists[run_id] = [int(r[0]) for r in rows]
        return lists
