"""What a report covers, from what a person types: ``--since``/``--until`` (or the API's
``since``/``until``) as dates or ISO datetimes, mailing ids, a resource and a channel
(``sms`` or ``email``: the mailings'), into the store's ``ReportFilter``.

A date is midnight UTC; a datetime without an offset is UTC. ``until`` is exclusive: the
report counts events at ``since <= at < until``, so ``--since 2024-05-01 --until
2024-05-02`` is the 1st of May. The store keeps its counters by the UTC hour, so it counts
every hour with a part in the range: exact for dates and whole hours. The parsers raise
``ValueError`` with a message for a person; each front end names its own option or
parameter around it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

from engine.errors import NotFound
from engine.store.base import ReportFilter, Store
from engine.store.counters import Grouping

__all__ = ["CHANNELS", "GROUPINGS", "Channel", "Grouping", "is_email", "parse_time",
           "report_filter", "unknown_name"]

#: How the channel report can group its counts (the store's ``report_channel(by=...)``).
GROUPINGS: Final[tuple[str, ...]] = get_args(Grouping)
#: The channels a report may be of.
Channel = Literal["sms", "email"]
CHANNELS: Final[tuple[str, ...]] = get_args(Channel)

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_time(text: str) -> float:
    """Seconds since the epoch of ``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 datetime
    (``2024-05-01T12:00``, UTC when it has no offset; ``...+03:00``, ``...Z``)."""
    raw = text.strip()
    try:
        if _DATE.fullmatch(raw):
            when = datetime.strptime(raw, "%Y-%m-%d")
        elif "T" in raw or " " in raw:
            when = datetime.fromisoformat(raw)
        else:
            raise ValueError
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    except (ValueError, OverflowError):
        raise ValueError(f"not a date (YYYY-MM-DD) or an ISO datetime"
                         f" (YYYY-MM-DDTHH:MM[:SS][+HH:MM]): {text!r}") from None


def report_filter(
    *, mailings: Iterable[int] = (), resource: str | None = None,
    since: float | None = None, until: float | None = None, channel: str | None = None,
) -> ReportFilter:
    """The store's filter; ``ValueError`` when ``until`` is not after ``since`` (a range
    that can hold nothing is a mistake, not an empty report)."""
    if since is not None and until is not None and until <= since:
        raise ValueError("must be later than since (until is exclusive)")
    return ReportFilter(mailings=tuple(sorted(set(mailings))), resource=resource,
                        since=since, until=until, channel=channel)


def is_email(where: ReportFilter, resources: Mapping[str, Any]) -> bool:
    """Whether a report of ``where`` is of the email channel (and shows its counts): its
    ``channel`` says so, or, without one, its resource (of ``resources``, the config's)
    is an email resource."""
    if where.channel is not None:
        return where.channel == "email"
    resource = resources.get(where.resource) if where.resource is not None else None
    return getattr(resource, "channel", "sms") == "email"


async def unknown_name(
    store: Store, resources: Collection[str], where: ReportFilter
) -> tuple[str, str] | None:
    """(``mailing``, ``resource`` or ``channel``, why) when ``where`` names a mailing the
    store does not have, a resource not in ``resources`` (the config's) or a channel that
    is none: a typo should not read as a report of zeros."""
    if where.resource is not None and where.resource not in resources:
        return "resource", f"no resource {where.resource!r} in the config"
    if where.channel is not None and where.channel not in CHANNELS:
        return "channel", f"no channel {where.channel!r}: sms or email"
    for mailing_id in where.mailings:
        try:
            await store.get_mailing(mailing_id)
        except NotFound:
            return "mailing", f"no mailing {mailing_id}"
    return None
