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
  the variant its runs sent); none without a grouping. The email channel's report (of
  ``--channel email``, or of an email resource) also has ``opens`` and ``unique_opens``
  (people's: Apple Mail Privacy Protection's prefetches and bots are left out),
  ``hard_bounced``, ``soft_bounced`` and ``complaints`` after the counts, and
  ``open_rate`` (unique opens / delivered) and ``ctor`` (unique clicks / unique opens)
  after ``ctr``. Email's "delivered" in its rates is what the gateway's receipts say, or,
  with none (an SMTP relay), the sent messages that did not bounce hard.

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
    "EMAIL_COUNTS",
    "EMAIL_RATES",
    "KEY_COLUMNS",
    "UNDELIVERY_COLUMNS",
    "Report",
    "Row",
    "channel_columns",
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
#: The email channel's counts and rates, after the others.
EMAIL_COUNTS: Final = ("opens", "unique_opens", "hard_bounced", "soft_bounced", "complaints")
EMAIL_RATES: Final = ("open_rate", "ctor")
#: The columns a grouping puts before the counts.
KEY_COLUMNS: Final[Mapping[Grouping | None, tuple[str, ...]]] = {
    None: (), "day": ("day",), "hour": ("hour",), "mailing": ("mailing_id", "mailing"),
    "resource": ("resource",), "sender": ("sender",), "variant": ("variant",),
}
UNDELIVERY_COLUMNS: Final = ("reason", "count", "share")
CLICK_COLUMNS: Final = ("url", "clicks", "unique_clicks", "share")
#: Columns holding a fraction (shown as a percentage in a table).
RATE_COLUMNS: Final = frozenset({*CHANNEL_RATES, *EMAIL_RATES, "share"})

PLACES = 4


class Report(NamedTuple):
    #: ``channel``, ``undeliveries`` or ``clicks``.
    name: str
    columns: tuple[str, ...]
    rows: list[Row]


def rate(part: int, whole: int) -> float | None:
    """``part / whole`` to 4 places; None when ``whole`` is 0."""
    return round(part / whole, PLACES) if whole else None


def _reached(row: ChannelRow) -> int:
    """The email messages that reached their mailbox: the delivered ones where the
    gateway says (Mailgun's webhooks), else the sent ones that did not bounce hard (an
    SMTP relay tells nothing but bounces)."""
    return row.delivered or max(row.sent - row.hard_bounced, 0)


def channel_columns(by: Grouping | None, *, email: bool = False) -> tuple[str, ...]:
    """The channel report's columns: the key's, the counts, the rates (``email``: with
    the email channel's)."""
    if email:
        return (*KEY_COLUMNS[by], *CHANNEL_COUNTS, *EMAIL_COUNTS, *CHANNEL_RATES, *EMAIL_RATES)
    return (*KEY_COLUMNS[by], *CHANNEL_COUNTS, *CHANNEL_RATES)


def channel_rows(
    rows: Sequence[ChannelRow], by: Grouping | None,
    names: Mapping[int, str | None] | None = None, *, email: bool = False,
) -> list[Row]:
    """The store's rows with their key named and rates added; ``names``: mailing id ->
    name (``by="mailing"``; None for a mailing no longer there); ``email``: with the
    email channel's counts and rates."""
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
        if email:
            for column in EMAIL_COUNTS:
                item[column] = getattr(row, column)
        reached = _reached(row) if email else row.delivered
        item["delivery_rate"] = rate(reached, row.sent)
        item["ctr"] = rate(row.unique_clicks, reached)
        if email:
            item["open_rate"] = rate(row.unique_opens, reached)
            item["ctor"] = rate(row.unique_clicks, row.unique_opens)
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
                         by: Grouping | None = None, *, email: bool | None = None) -> Report:
    """The channel report of ``where``, grouped ``by``; with the email channel's columns
    when ``email`` (None: when ``where.channel`` is ``email``)."""
    if email is None:
        email = where.channel == "email"
    rows = await store.report_channel(where, by)
    names = await _mailing_names(store, rows) if by == "mailing" else {}
    return Report("channel", channel_columns(by, email=email),
                  channel_rows(rows, by, names, email=email))


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
