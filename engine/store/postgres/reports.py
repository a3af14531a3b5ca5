"""Reports from the counters kept as events arrive (ReportStore; ``engine.store.counters``,
tables in ``events.py``): each sums a few rows per (run, sender, hour, part) of the
mailings it covers, whatever their size. Time filters apply to whole hours
(``counters.hours``)."""

from __future__ import annotations

from typing import Any

from engine.store import counters
from engine.store.base import ChannelRow, LinkStat, ReportFilter
from engine.store.counters import SUMS, Grouping
from engine.store.postgres.connection import PgBase

__all__ = ["PgReports"]

def _where(table: str, where: ReportFilter) -> tuple[str, list[Any]]:
    return counters.where_sql(
        table, where, placeholder="%s", mailings_in="= ANY(%s::bigint[])",
        mailings_arg=lambda ids: [i for i in ids if -(2**63) <= i < 2**63],
        not_test=_NOT_TEST)


#: A run that is not a test send (``RunSpec.is_test``; the spec is JSONB, ``{}`` for a
#: plain launch), and the run's 0-based variant.
_NOT_TEST = "coalesce((ru.spec->>'is_test')::boolean, false) = false"
_GROUP_KEYS = counters.group_keys("coalesce((ru.spec->>'variant')::int, 0)")


class PgReports(PgBase):
    async def report_channel(
        self, where: ReportFilter, by: Grouping | None = None,
    ) -> list[ChannelRow]:
        tail, args = _where("report_counts", where)
        rows = await self.db.fetchall(
            f"SELECT {_GROUP_KEYS[by]}, {SUMS}{tail} GROUP BY 1 ORDER BY 1", args)
        return counters.channel_rows(by, rows)

    async def report_undeliveries(self, where: ReportFilter) -> list[tuple[str, int]]:
        tail, args = _where("report_reasons", where)
        return counters.undeliveries(await self.db.fetchall(
            f"SELECT c.reason, sum(c.n){tail} GROUP BY c.reason", args))

    async def report_clicks(self, where: ReportFilter) -> list[LinkStat]:
        tail, args = _where("report_urls", where)
        return counters.link_stats(await self.db.fetchall(
            f"SELECT c.url, sum(c.clicks), sum(c.unique_clicks){tail} GROUP BY c.url", args))
