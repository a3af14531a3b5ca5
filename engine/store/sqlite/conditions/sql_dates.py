"""SQL verdicts of the date helpers (``dates.py`` says what they mean).

SQL judges ISO dates ``YYYY-MM-DD`` and datetimes ``YYYY-MM-DD[T ]HH:MM:SS`` with ``Z``, an
offset ``+HH:MM`` or no zone (UTC), checked to be real dates and times, and whole Unix
timestamps from 1970 to 9999. Other shapes (fractions of seconds, ``20260110``, negative or
real timestamps) are left to Python. Bounds that depend on ``now`` are parameters computed
when the condition is bound (:class:`~.fragments.Late`), in whole seconds, so SQLite
compares integers with integers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from engine.core.templates.nodes import Call, Const, Var
from engine.segments import dates
from engine.store.sqlite.conditions.fragments import (
    FALSE,
    UNKNOWN,
    Fragment,
    Late,
    SqlValue,
    by_type,
    guard,
    param,
    q,
    sql_value,
)

__all__ = ["date_verdict"]

_DATE_GLOB: Final = "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]"
_DATETIME_GLOBS: Final = tuple(
    _DATE_GLOB + "[T ][0-9][0-9]:[0-9][0-9]:[0-9][0-9]" + zone
    for zone in ("", "Z", "[+-][0-9][0-9]:[0-9][0-9]")
)
LAST_TIMESTAMP: Final = 253_402_300_799  # 9999-12-31T23:59:59Z


def _date_text(x: str, on_date: Fragment, on_datetime: Fragment) -> Fragment:
    """Text ``x``: ``on_date`` for a valid ``YYYY-MM-DD``, ``on_datetime`` for a valid
    ``YYYY-MM-DD[T ]HH:MM:SS[Z|+HH:MM]``, unknown for any other text."""
    day = f"substr({x}, 1, 10)"
    valid_day = f"substr({x}, 1, 4) >= '0001' AND date({day}, '+0 days') = {day}"
    shapes = " OR ".join(f"{x} GLOB '{g}'" for g in _DATETIME_GLOBS)
    valid_time = (f"substr({x}, 12, 2) < '24' AND substr({x}, 15, 2) < '60'"
                  f" AND substr({x}, 18, 2) < '60' AND (length({x}) < 25"
                  f" OR (substr({x}, 21, 2) < '24' AND substr({x}, 24, 2) < '60'))")
    return q(
        f"(CASE WHEN {x} GLOB '{_DATE_GLOB}' AND {valid_day} THEN {{}}"
        f" WHEN ({shapes}) AND {valid_day} AND {valid_time} THEN {{}} END)",
        on_date, on_datetime, exact=False,
    )


def _seconds(at: datetime) -> tuple[int, int]:
    """The whole seconds just at or after ``at``, and just at or before it."""
    micros = (at - dates.EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1_000_000), micros // 1_000_000


def _timestamps(src: SqlValue, on_seconds: Callable[[str], Fragment],
                on_date: Fragment | None = None) -> Fragment:
    """A date helper over ``src``: ``on_seconds(sql)`` judges whole Unix seconds (a text
    date or datetime, or an integer timestamp); ``on_date`` judges a text date itself."""
    x = src.value
    text = _date_text(x, on_date or on_seconds(f"unixepoch({x})"), on_seconds(f"unixepoch({x})"))
    return by_type(src, {
        "null": FALSE, "true": FALSE, "false": FALSE, "array": FALSE, "object": FALSE,
        "real": UNKNOWN,
        "integer": q(f"(CASE WHEN {x} BETWEEN 0 AND {LAST_TIMESTAMP} THEN {{}} END)",
                     on_seconds(x), exact=False),
        "text": guard(src, text),
    })


def _within_days(src: SqlValue, days: int) -> Fragment:
    first_day = Late(lambda now: (now.date() - timedelta(days=days)).isoformat())
    last_day = Late(lambda now: now.date().isoformat())
    first = Late(lambda now: _seconds(now - timedelta(days=days))[0])
    last = Late(lambda now: _seconds(now)[1])
    return _timestamps(
        src,
        lambda s: q(f"{s} BETWEEN {{}} AND {{}}", param(first), param(last)),
        on_date=q(f"{src.value} BETWEEN {{}} AND {{}}", param(first_day), param(last_day)),
    )


def _before_after(src: SqlValue, bound: datetime, is_before: bool) -> Fragment:
    ceiling, floor = _seconds(bound)
    if is_before:
        return _timestamps(src, lambda s: q(f"{s} < {{}}", param(ceiling)))
    return _timestamps(src, lambda s: q(f"{s} > {{}}", param(floor)))


def _birthday_within(src: SqlValue, days: int) -> Fragment:
    window = Late(lambda now: json.dumps(sorted(dates.birthday_window(now.date(), days))))
    member = "IN (SELECT value FROM json_each({}))"
    x = src.value
    text = q(f"substr({x}, 6, 5) {member}", param(window))
    return by_type(src, {
        "null": FALSE, "true": FALSE, "false": FALSE, "array": FALSE, "object": FALSE,
        "real": UNKNOWN,
        "integer": q(
            f"(CASE WHEN typeof({x}) = 'integer' AND {x} BETWEEN 0 AND {LAST_TIMESTAMP}"
            f" THEN strftime('%m-%d', {x}, 'unixepoch') {member} END)",
            param(window), exact=False),
        "text": guard(src, _date_text(x, text, text)),
    })


def date_verdict(call: Call) -> Fragment | None:
    """The verdict of a date helper called on a field with a literal, else None."""
    function = call.function
    if len(call.args) != 2 or not isinstance(call.args[0], Var):
        return None
    src, literal = sql_value(call.args[0]), call.args[1]
    if src is None or not isinstance(literal, Const):
        return None
    if function is dates.within_days or function is dates.birthday_within:
        days = dates.whole_days(literal.value)
        if days is None:
            return FALSE
        if function is dates.within_days:
            return _within_days(src, days)
        return _birthday_within(src, days)
    if function is dates.before or function is dates.after:
        try:
            bound = dates.moment(literal.value)
        except (ValueError, OverflowError, OSError):
            bound = None
        if bound is None or isinstance(literal.value, bool):
            return FALSE
        instant = bound if isinstance(bound, datetime) else datetime(
            bound.year, bound.month, bound.day, tzinfo=dates.EPOCH.tzinfo)
        return _before_after(src, instant, function is dates.before)
    return None
