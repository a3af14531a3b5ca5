"""The report counters and the event record, as both stores keep them (``ReportStore``,
``EventStore``): what one transaction adds (``Tally``), and how a report's filter and
grouping map onto the hours the counters are kept by.

Counters are kept per (run, sender, UTC hour since the epoch): ``report_counts`` the
channel report's counts (``COUNTS``, in that order), ``report_reasons`` undeliveries by
normalised reason, ``report_urls`` people's clicks by URL. Every write that makes an event
adds to them in the same transaction, so a report reads a few rows per (run, sender,
hour) whatever the size of its mailings.

Because they are kept by the hour, a report's time filter is applied to whole hours: an
hour counts when any of it lies in ``since <= at < until`` (``hours``). A filter on whole
hours (dates, ``12:00``) is exact.

A test send's run (``RunSpec.is_test``: ``mailing test``) is in no report: every report
query leaves its counters out (``where_sql``), so its messages, receipts and clicks
count for nothing, whatever the filter.

Each counted thing counts once, when it happens: a recipient when its message is
recorded (any state but ``skipped``), a receipt when it moves its recipient (so a late
delivery after an undelivery counts under both, as its two events do), a person's click
and its recipient's first click on that link, an unsubscribe that changed anything. A
bot's click is kept but never counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from engine.core.events import (
    CLICK,
    COMPLAINT,
    HARD_BOUNCE,
    OPEN,
    SOFT_BOUNCE,
    UNIQUE_CLICK,
    UNIQUE_OPEN,
    kind_for,
    normalise_reason,
)
from engine.core.events import DELIVERED as DELIVERED_EVENT
from engine.core.events import UNDELIVERED as UNDELIVERED_EVENT
from engine.store.base import ChannelRow, Click, Grouping, LinkStat, Open, ReportFilter

__all__ = [
    "BOUNCE_EVENTS",
    "BOUNCE_KEEPS",
    "BOUNCE_STATUS",
    "CLICKS",
    "COMPLAINTS",
    "COMPLAINTS_LIST",
    "CONTROL",
    "COUNTS",
    "DELIVERED",
    "EMAIL_COUNTS",
    "FAILED",
    "GROUP_KEYS",
    "HARD_BOUNCED",
    "OPENS",
    "RECIPIENTS",
    "SEGMENTS",
    "SENT",
    "SOFT_BOUNCED",
    "SUMS",
    "UNDELIVERED",
    "UNIQUE_CLICKS",
    "UNIQUE_OPENS",
    "UNKNOWN",
    "UNSUBSCRIBED",
    "BounceTarget",
    "Grouping",
    "Tally",
    "channel_rows",
    "count_clicks",
    "count_opens",
    "count_receipt",
    "group_keys",
    "hour_of",
    "hours",
    "link_stats",
    "on_channels",
    "tally_bounce",
    "undeliveries",
    "where_sql",
]



#: The channel report's counts: ``report_counts``'s columns and ``ChannelRow``'s fields.
COUNTS: Final = ("recipients", "sent", "delivered", "undelivered", "failed", "unknown",
                 "segments", "clicks", "unique_clicks", "unsubscribed", "control",
                 "opens", "unique_opens", "hard_bounced", "soft_bounced", "complaints")
(RECIPIENTS, SENT, DELIVERED, UNDELIVERED, FAILED, UNKNOWN, SEGMENTS, CLICKS,
 UNIQUE_CLICKS, UNSUBSCRIBED, CONTROL, OPENS, UNIQUE_OPENS, HARD_BOUNCED, SOFT_BOUNCED,
 COMPLAINTS) = range(len(COUNTS))
#: ``control`` counts profiles held out in a control group: skipped, no recipients; under
#: sender "" (they were routed to none). The last five are email's: people's opens and
#: first opens (``add_opens``), hard and soft bounces and complaints (``apply_bounces``):
#: ``EMAIL_COUNTS``, the columns the email channel's migration adds to ``report_counts``.
EMAIL_COUNTS: Final = COUNTS[OPENS:]

#: An email bounce's kind (``engine.drivers.Bounce.kind``) -> its event and its counter.
BOUNCE_EVENTS: Final = {"hard": (HARD_BOUNCE, HARD_BOUNCED), "soft": (SOFT_BOUNCE, SOFT_BOUNCED),
                        "complaint": (COMPLAINT, COMPLAINTS)}
#: The subscription status each bounce kind sets (a soft bounce sets none), and the
#: statuses it leaves alone: a complaint is never turned into a hard bounce.
BOUNCE_STATUS: Final = {"hard": "hardbounced", "complaint": "complainer"}
BOUNCE_KEEPS: Final = {"hard": ("hardbounced", "complainer"), "complaint": ("complainer",)}
#: The global suppression list a complainer's address joins (kind ``email``).
COMPLAINTS_LIST: Final = "complaints"

#: The message a bounce is credited to: (run id, seq, profile id, address, sender).
BounceTarget = tuple[int, int, int, str, str | None]


def tally_bounce(tally: Tally, kind: str, error: str | None, address: str,
                 target: BounceTarget | None, profiles: Sequence[int], at: float) -> None:
    """A bounce's event and count: its message's (counted under its run and sender), or,
    with no message found, an event per subscriber of the address, credited to none and
    counted nowhere. Both stores' ``apply_bounces`` call this."""
    event, column = BOUNCE_EVENTS[kind]
    if target is not None:
        run_id, seq, profile_id, phone, sender = target
        tally.event(event, at, run_id, seq, profile_id, phone, sender, error)
        tally.count(run_id, sender or "", at, column)
        return
    for profile_id in profiles:
        tally.event(event, at, None, None, profile_id, address, None, error)

#: The event record's columns, in the order ``Tally.events`` holds them.
EVENT_COLUMNS: Final = ("kind", "at", "run_id", "seq", "profile_id", "phone", "sender",
                        "error", "url")


def hour_of(at: float) -> int:
    """The UTC hour since the epoch that ``at`` lies in: the counters' time key."""
    return int(at // 3600)


def hours(where: ReportFilter) -> tuple[int | None, int | None]:
    """The hours ``[lo, hi)`` a filter's ``since``/``until`` cover (each None if open):
    every hour with any part in the range."""
    lo = None if where.since is None else hour_of(where.since)
    hi = None if where.until is None else math.ceil(where.until / 3600)
    return lo, hi


class Tally:
    """What one transaction adds to the event record and to the counters, summed by key
    so that each counter row is written once (in key order, so that concurrent writers
    lock rows in one order)."""

    __slots__ = ("counts", "events", "reasons", "urls")

    def __init__(self) -> None:
        #: Rows of the event record (``EVENT_COLUMNS``), in the order they happened.
        self.events: list[tuple[Any, ...]] = []
        #: (run, sender, hour) -> the ``COUNTS``.
        self.counts: dict[tuple[int, str, int], list[int]] = {}
        #: (run, sender, hour, reason) -> undeliveries.
        self.reasons: dict[tuple[int, str, int, str], int] = {}
        #: (run, url, hour) -> [clicks, unique clicks].
        self.urls: dict[tuple[int, str, int], list[int]] = {}

    def __bool__(self) -> bool:
        return bool(self.events or self.counts)

    def event(
        self, kind: str, at: float, run_id: int | None, seq: int | None,
        profile_id: int | None, phone: str, sender: str | None,
        error: str | None = None, url: str | None = None,
    ) -> None:
        self.events.append((kind, at, run_id, seq, profile_id, phone, sender, error, url))

    def count(self, run_id: int, sender: str, at: float, column: int, n: int = 1) -> None:
        key = (run_id, sender, hour_of(at))
        row = self.counts.get(key)
        if row is None:
            row = self.counts[key] = [0] * len(COUNTS)
        row[column] += n

    def undelivered(self, run_id: int, sender: str, at: float, error: str | None) -> None:
        """An undelivery: counted, and under its normalised reason."""
        self.count(run_id, sender, at, UNDELIVERED)
        key = (run_id, sender, hour_of(at), normalise_reason(error))
        self.reasons[key] = self.reasons.get(key, 0) + 1

    def click(self, run_id: int, sender: str, url: str, at: float, unique: bool) -> None:
        """A person's click on ``url`` (``unique``: its recipient's first on the link)."""
        self.count(run_id, sender, at, CLICKS)
        if unique:
            self.count(run_id, sender, at, UNIQUE_CLICKS)
        key = (run_id, url, hour_of(at))
        row = self.urls.get(key)
        if row is None:
            row = self.urls[key] = [0, 0]
        row[0] += 1
        row[1] += unique

    def count_rows(self) -> list[tuple[Any, ...]]:
        """(run, sender, hour, *COUNTS) in key order."""
        return [(*k, *v) for k, v in sorted(self.counts.items())]

    def reason_rows(self) -> list[tuple[Any, ...]]:
        """(run, sender, hour, reason, n) in key order."""
        return [(*k, v) for k, v in sorted(self.reasons.items())]

    def url_rows(self) -> list[tuple[Any, ...]]:
        """(run, url, hour, clicks, unique clicks) in key order."""
        return [(*k, *v) for k, v in sorted(self.urls.items())]


def count_receipt(
    tally: Tally, run_id: int, seq: int, profile_id: int, phone: str, sender: str,
    status: str, error: str | None, now: float,
) -> None:
    """A receipt moved a recipient to ``status`` (delivered or undelivered, with the
    provider's ``error``): its event and its count, at ``now``, when it is applied."""
    if status == "delivered":
        tally.event(DELIVERED_EVENT, now, run_id, seq, profile_id, phone, sender)
        tally.count(run_id, sender, now, DELIVERED)
    else:
        tally.event(UNDELIVERED_EVENT, now, run_id, seq, profile_id, phone, sender, error)
        tally.undelivered(run_id, sender, now, error)


def count_clicks(
    kept: Sequence[Click], found: Mapping[tuple[int, int], Sequence[Any]]
) -> tuple[Tally, list[tuple[int, int]]]:
    """The events and counts of the people's clicks among ``kept`` (a bot's counts for
    nothing), in the order they happened, and the (link, seq) pairs that a person clicked
    for the first time. ``found``: (link, seq) -> [run id, url, profile id, phone, sender,
    whether a person clicked it before]."""
    tally = Tally()
    firsts: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for k in sorted((k for k in kept if not k.bot), key=lambda k: k.at):
        pair = (k.link_id, k.seq)
        run_id, url, profile_id, phone, sender, before = found[pair]
        unique = not before and pair not in seen
        seen.add(pair)
        tally.event(CLICK, k.at, run_id, k.seq, profile_id, phone, sender, url=url)
        if unique:
            firsts.append(pair)
            tally.event(UNIQUE_CLICK, k.at, run_id, k.seq, profile_id, phone, sender, url=url)
        tally.click(run_id, sender, url, k.at, unique)
    return tally, firsts


def count_opens(
    kept: Sequence[Open], found: Mapping[tuple[int, int], Sequence[Any]]
) -> tuple[Tally, list[tuple[int, int]]]:
    """The events and counts of the people's opens among ``kept`` (a bot's or a privacy
    proxy's prefetch counts for nothing), in the order they happened, and the (run, seq)
    pairs a person opened for the first time. ``found``: (run, seq) -> [profile id,
    phone, sender, whether a person opened it before]."""
    tally = Tally()
    firsts: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for o in sorted((o for o in kept if not (o.bot or o.prefetch)), key=lambda o: o.at):
        pair = (o.run_id, o.seq)
        profile_id, phone, sender, before = found[pair]
        unique = not before and pair not in seen
        seen.add(pair)
        tally.event(OPEN, o.at, o.run_id, o.seq, profile_id, phone, sender)
        tally.count(o.run_id, sender, o.at, OPENS)
        if unique:
            firsts.append(pair)
            tally.event(UNIQUE_OPEN, o.at, o.run_id, o.seq, profile_id, phone, sender)
            tally.count(o.run_id, sender, o.at, UNIQUE_OPENS)
    return tally, firsts


def on_channels(tally: Tally, channel_of: Callable[[int], str]) -> None:
    """Give the tally's events of each run the kinds of its channel (``kind_for``: an
    email run's ``deliv_sms`` is ``deliv``...). ``channel_of``: a run id's channel (asked
    once per run). Events of no run keep their kind."""
    channels: dict[int, str] = {}
    for i, event in enumerate(tally.events):
        run_id = event[2]
        if run_id is None:
            continue
        channel = channels.get(run_id)
        if channel is None:
            channel = channels[run_id] = channel_of(run_id)
        if channel != "sms":
            tally.events[i] = (kind_for(event[0], channel), *event[1:])


#: The SQL of each grouping's raw key (``channel_rows`` turns it into the row's key), over
#: a counters table ``c``, its runs ``ru`` and mailings ``m``; the same on both stores but
#: ``variant``, which reads the run's spec (JSON) in the store's dialect (``group_keys``).
GROUP_KEYS: Final[Mapping[Grouping | None, str]] = {
    "day": "c.hour / 24", "hour": "c.hour", "mailing": "ru.mailing_id",
    "resource": "m.resource", "sender": "c.sender", None: "0",
}


def group_keys(variant: str) -> dict[Grouping | None, str]:
    """``GROUP_KEYS`` with ``variant``: a store's SQL of ``ru.spec``'s 0-based variant."""
    return {**GROUP_KEYS, "variant": variant}
#: The channel report's sums over ``c``, in ``COUNTS`` order.
SUMS: Final = ", ".join(f"sum(c.{column})" for column in COUNTS)


def where_sql(
    table: str, where: ReportFilter, *, placeholder: str, mailings_in: str,
    mailings_arg: Callable[[tuple[int, ...]], Any], not_test: str,
) -> tuple[str, list[Any]]:
    """FROM and WHERE over counters ``table`` (as ``c``), its runs (``ru``) and mailings
    (``m``), for ``where``, in a store's dialect: its ``placeholder``, how it tests
    ``ru.mailing_id`` against a list (``mailings_in``, bound to ``mailings_arg(ids)``)
    and that a run is not a test send (``not_test``, over ``ru.spec``)."""
    sql = (f" FROM {table} c JOIN runs ru ON ru.id = c.run_id"
           f" JOIN mailings m ON m.id = ru.mailing_id WHERE {not_test}")
    args: list[Any] = []
    if where.mailings:
        sql += f" AND ru.mailing_id {mailings_in}"
        args.append(mailings_arg(where.mailings))
    if where.resource is not None:
        sql += f" AND m.resource = {placeholder}"
        args.append(where.resource)
    if where.channel is not None:
        sql += f" AND m.channel = {placeholder}"
        args.append(where.channel)
    lo, hi = hours(where)
    if lo is not None:
        sql += f" AND c.hour >= {placeholder}"
        args.append(lo)
    if hi is not None:
        sql += f" AND c.hour < {placeholder}"
        args.append(hi)
    return sql, args


def _key(by: Grouping | None, raw: Any) -> str | int | None:
    if by == "day":
        return datetime.fromtimestamp(int(raw) * 86400, UTC).strftime("%Y-%m-%d")
    if by == "hour":
        return datetime.fromtimestamp(int(raw) * 3600, UTC).strftime("%Y-%m-%dT%H:00Z")
    if by == "mailing":
        return int(raw)
    if by == "variant":
        return int(raw or 0) + 1
    if by is None:
        return None
    return str(raw)


def channel_rows(by: Grouping | None, rows: Iterable[Sequence[Any]]) -> list[ChannelRow]:
    """The channel report from rows of (raw key, *COUNTS sums), in key order; the raw key
    of ``day`` is the UTC day since the epoch, of ``hour`` the hour."""
    out = [ChannelRow(_key(by, r[0]), *(int(n or 0) for n in r[1:])) for r in rows]
    if by in ("day", "hour", "mailing", "variant"):
        return out  # the raw keys sort as the keys do; the store sorted them
    return sorted(out, key=lambda row: "" if row.key is None else str(row.key))


def undeliveries(rows: Iterable[Sequence[Any]]) -> list[tuple[str, int]]:
    """(reason, n) rows, most first, then by reason."""
    return sorted(((str(r), int(n)) for r, n in rows), key=lambda x: (-x[1], x[0]))


def link_stats(rows: Iterable[Sequence[Any]]) -> list[LinkStat]:
    """(url, clicks, unique) rows, most unique clicks first, then by URL."""
    stats = [LinkStat(str(u), int(c), int(n)) for u, c, n in rows]
    return sorted(stats, key=lambda s: (-s.unique_clicks, s.url))
