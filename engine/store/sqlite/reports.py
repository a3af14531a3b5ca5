"""Reports from the counters kept as events arrive (ReportStore; ``engine.store.counters``):
each sums a few rows per (run, sender, hour) of the mailings it covers, whatever their
size. Time filters apply to whole hours (``counters.hours``)."""

from __future__ import annotations

from typing import Any

from engine.store import counters
from engine.store.base import ChannelRow, LinkStat, ReportFilter
from engine.store.counters import COUNTS, Grouping
from engine.store.sqlite.connection import SQLiteBase, json

__all__ = ["SQLiteReports"]

#: The SQL of each grouping's raw key (``counters.channel_rows``).
_KEYS: dict[Grouping | None, str] = {
    "day": "c.hour / 24", "hour": "c.hour", "mailing": "ru.mailing_id",
    "resource": "m.resource", "sender": "c.sender", None: "0",
}
_SUMS = ", ".join(f"sum(c.{column})" for column in COUNTS)


def _where(table: str, where: ReportFilter) -> tuple[str, list[Any]]:
    """FROM and WHERE over counters ``table`` (as ``c``), its runs (``ru``) and mailings
    (``m``), for ``where``."""
    sql = (f" FROM {table} c JOIN runs ru ON ru.id = c.run_id"
           " JOIN mailings m ON m.id = ru.mailing_id WHERE true")
    args: list[Any] = []
    if where.mailings:
        sql += " AND ru.mailing_id IN (SELECT value FROM json_each(?))"
        args.append(json.encode(list(where.mailings)))
    if where.resource is not None:
        sql += " AND m.resource = ?"
        args.append(where.resource)
    lo, hi = counters.hours(where)
    if lo is not None:
        sql += " AND c.hour >= ?"
        args.append(lo)
    if hi is not None:
        sql += " AND c.hour < ?"
        args.append(hi)
    return sql, args


class SQLiteReports(SQLiteBase):
    async def report_channel(
        self, where: ReportFilter, by: Grouping | None = None,
    ) -> list[ChannelRow]:
        tail, args = _where("report_counts", where)
        rows = self.conn.execute(
            f"SELECT {_KEYS[by]}, {_SUMS}{tail} GROUP BY 1 ORDER BY 1", args).fetchall()
        return counters.channel_rows(by, rows)

    async def report_undeliveries(self, where: ReportFilter) -> list[tuple[str, int]]:
        tail, args = _where("report_reasons", where)
        return counters.undeliveries(self.conn.execute(
            f"SELECT c.reason, sum(c.n){tail} GROUP BY c.reason", args))

    async def report_clicks(self, where: ReportFilter) -> list[LinkStat]:
        tail, args = _where("report_urls", where)
        return counters.link_stats(self.conn.execute(
            f"SELECT c.url, sum(c.clicks), sum(c.unique_clicks){tail} GROUP BY c.url", args))
