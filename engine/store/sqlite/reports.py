"""Reports from the counters kept as events arrive (ReportStore; ``engine.store.counters``):
each sums a few rows per (run, sender, hour) of the mailings it covers, whatever their
size. Time filters apply to whole hours (``counters.hours``)."""

from __future__ import annotations

from typing import Any

from engine.store import counters
from engine.store.base import ChannelRow, LinkStat, ReportFilter
from engine.store.counters import SUMS, Grouping
from engine.store.sqlite.connection import SQLiteBase, json

__all__ = ["SQLiteReports"]

def _where(table: str, where: ReportFilter) -> tuple[str, list[Any]]:
    return counters.where_sql(
        table, where, placeholder="?", mailings_in="IN (SELECT value FROM json_each(?))",
        mailings_arg=lambda ids: json.encode(list(ids)), not_test=_NOT_TEST)


#: A run that is not a test send (``RunSpec.is_test``; the spec is JSON text, ``{}`` for
#: a plain launch), and the run's 0-based variant.
_NOT_TEST = "coalesce(json_extract(ru.spec, '$.is_test'), 0) = 0"
_GROUP_KEYS = counters.group_keys("coalesce(json_extract(ru.spec, '$.variant'), 0)")


class SQLiteReports(SQLiteBase):
    async def report_channel(
        self, where: ReportFilter, by: Grouping | None = None,
    ) -> list[ChannelRow]:
        tail, args = _where("report_counts", where)
        rows = self.conn.execute(
            f"SELECT {_GROUP_KEYS[by]}, {SUMS}{tail} GROUP BY 1 ORDER BY 1", args).fetchall()
        return counters.channel_rows(by, rows)

    async def report_undeliveries(self, where: ReportFilter) -> list[tuple[str, int]]:
        tail, args = _where("report_reasons", where)
        return counters.undeliveries(self.conn.execute(
            f"SELECT c.reason, sum(c.n){tail} GROUP BY c.reason", args))

    async def report_clicks(self, where: ReportFilter) -> list[LinkStat]:
        tail, args = _where("report_urls", where)
        return counters.link_stats(self.conn.execute(
            f"SELECT c.url, sum(c.clicks), sum(c.unique_clicks){tail} GROUP BY c.url", args))
