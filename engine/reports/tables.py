"""The three reports as rows: the store's counters with their group key named, the rates
worked out, in the contract's field order.

Every report is a ``Report``: its name, its columns (so an empty report still has a CSV
header) and its rows, plain dicts keyed by column. A rate whose divisor is zero is None
(no messages delivered is not a click-through rate of 0%); rates are rounded to 4 places.

- channel: per key, ``recipients``, ``sent``, ``delivered``, ``undelivered``, ``failed``,
  ``unknown``, ``segments``, ``clicks``, ``unique_clicks``, ``unsubscribed``,
  ``delivery_rate`` (delivered / sent) and ``ctr`` (unique clicks / delivered). The key
  comes first under its own name: ``day``, ``hour``, ``mailing_id`` and ``mailing`` (its
  name), ``resource``, ``sender``, ``variant`` (a multivariate mailing's template, 1-based:
  the variant its runs sent); none without a grouping.

Test sends (``mailing test``) are in none of them.
- undeliveries: ``reason`` (the provider's, normalised; ``undefined`` when it gave none),
  ``count``, ``share`` (of all undeliveries in the report).
- clicks: ``url``, ``clicks``, ``unique_clicks``, ``share`` (unique clickers / recipients
  of the same filter).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from engine.errors import NotFound
from engine.reports.query import Grouping
from engine.store.base import ChannelRow, LinkStat, ReportFilter, Store

__all__ = [
    "CHANNEL_COUNTS",
    "CLICK_COLUMNS",
    "KEY_COLUMNS",
    "UNDELIVERY_COLUMNS",
    "Report",
    "Row",
    "channel_report",
    "channel_rows",
    "click_rows",
    "clicks_report",
    "rate",
    "undeliveries_report",
    "undelivery_rows",
]

#: A row of a report: column -> value (str, int, float or None).
Row = dict[str, Any]

CHANNEL_COUNTS: Final = ("recipients", "sent", "delivered", "undelivered", "failed",
                         "unknown", "segments", "clicks", "unique_clicks", "unsubscribed",
                         "control")
CHANNEL_RATES: Final = ("delivery_rate", "ctr")
#: The columns a grouping puts before the counts.
KEY_COLUMNS: Final[Mapping[Grouping | None, tuple[str, ...]]] = {
    None: (), "day": ("day",), "hour": ("hour",), "mailing": ("mailing_id", "mailing"),
    "resource": ("resource",), "sender": ("sender",), "variant": ("variant",),
}
UNDELIVERY_COLUMNS: Final = ("reason", "count", "share")
CLICK_COLUMNS: Final = ("url", "clicks", "unique_clicks", "share")
#: Columns holding a fraction (shown as a percentage in a table).
RATE_COLUMNS: Final = frozenset({*CHANNEL_RATES, "share"})

PLACES = 4


class Report(NamedTuple):
    #: ``channel``, ``undeliveries`` or ``clicks``.
    name: str
    columns: tuple[str, ...]
    rows: list[Row]


def rate(part: int, whole: int) -> float | None:
    """``part / whole`` to 4 places; None when ``whole`` is 0."""
    return round(part / whole, PLACES) if whole else None


def channel_rows(
    rows: Sequence[ChannelRow], by: Grouping | None,
    names: Mapping[int, str | None] | None = None,
) -> list[Row]:
    """The store's rows with their key named and rates added; ``names``: mailing id ->
    name (``by="mailing"``; None for a mailing no longer there)."""
    names = names or {}
    out = []
    for row in rows:
        item: Row = {}
        if by == "mailing":
            item["mailing_id"] = row.key
            item["mailing"] = names.get(row.key) if isinstance(row.key, int) else None
        elif by is not None:
            item[by] = row.key
        for column in CHANNEL_COUNTS:
            item[column] = getattr(row, column)
        item["delivery_rate"] = rate(row.delivered, row.sent)
        item["ctr"] = rate(row.unique_clicks, row.delivered)
        out.append(item)
    return out


def undelivery_rows(reasons: Sequence[tuple[str, int]]) -> list[Row]:
    """(reason, count) pairs with each one's share of them all."""
    total = sum(count for _, count in reasons)
    return [{"reason": reason, "count": count, "share": rate(count, total)}
            for reason, count in reasons]


def click_rows(stats: Sequence[LinkStat], recipients: int) -> list[Row]:
    """Per URL, its clicks and the share of ``recipients`` who clicked it."""
    return [{"url": s.url, "clicks": s.clicks, "unique_clicks": s.unique_clicks,
             "share": rate(s.unique_clicks, recipients)} for s in stats]


async def _mailing_names(store: Store, rows: Sequence[ChannelRow]) -> dict[int, str | None]:
    names: dict[int, str | None] = {}
    for row in rows:
        if isinstance(row.key, int) and row.key not in names:
            try:
                names[row.key] = (await store.get_mailing(row.key)).name
            except NotFound:
                names[row.key] = None
    return names


async def channel_report(store: Store, where: ReportFilter,
                         by: Grouping | None = None) -> Report:
    """The channel report of ``where``, grouped ``by``."""
    rows = await store.report_channel(where, by)
    names = await _mailing_names(store, rows) if by == "mailing" else {}
    return Report("channel", (*KEY_COLUMNS[by], *CHANNEL_COUNTS, *CHANNEL_RATES),
                  channel_rows(rows, by, names))


async def undeliveries_report(store: Store, where: ReportFilter) -> Report:
    """Undeliveries of ``where`` by reason, most first."""
    return Report("undeliveries", UNDELIVERY_COLUMNS,
                  undelivery_rows(await store.report_undeliveries(where)))


async def clicks_report(store: Store, where: ReportFilter) -> Report:
    """The click map of ``where``: people's clicks per URL, most unique clicks first."""
    stats = await store.report_clicks(where)
    if not stats:
        return Report("clicks", CLICK_COLUMNS, [])
    totals = await store.report_channel(where, None)
    recipients = sum(row.recipients for row in totals)
    return Report("clicks", CLICK_COLUMNS, click_rows(stats, recipients))
