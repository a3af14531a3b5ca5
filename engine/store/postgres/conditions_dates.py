"""PostgreSQL verdicts of the date helpers (``engine.segments.dates`` says what they mean).

SQL judges ISO dates ``YYYY-MM-DD`` and datetimes ``YYYY-MM-DD[T ]HH:MM:SS`` with ``Z``, an
offset ``+HH:MM`` or no zone (UTC), checked to be real dates and times, and whole Unix
timestamps from 1970 to 9999. Other shapes (fractions of seconds, ``20260110``, invalid
dates, negative or fractional timestamps) are left to Python. Seconds since the epoch are
computed by arithmetic on the digits, never by the session's time zone. Bounds that depend
on ``now`` are parameters computed when the verdict is bound, in whole seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

from engine.core.templates.nodes import Call, Const, Var
from engine.segments import dates
from engine.store.postgres.conditions import (
    FALSE,
    UNKNOWN,
    Fragment,
    Late,
    Source,
    by_type,
    param,
    q,
    source,
)

__all__ = ["date_verdict"]

LAST_TIMESTAMP: Final = 253_402_300_799  # 9999-12-31T23:59:59Z
_DATE: Final = "'^[0-9]{4}-[0-9]{2}-[0-9]{2}$'"
_DATETIME: Final = (
    "'^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(Z|[+-][0-9]{2}:[0-9]{2})?$'"
)
#: Past any bound: what a bound that overflows the calendar becomes (nothing matches).
_NEVER_DAY: Final = "9999-99-99"
_NEVER: Final = 2**62


def _digits(x: str, start: int, length: int) -> str:
    return f"substr({x}, {start}, {length})::int"


def _valid_day(x: str) -> str:
    """``x`` (shaped like a date) names a real day of years 1 to 9999."""
    y, m, d = _digits(x, 1, 4), _digits(x, 6, 2), _digits(x, 9, 2)
    leap = f"(mod({y}, 4) = 0 AND (mod({y}, 100) <> 0 OR mod({y}, 400) = 0))"
    last = (f"(CASE WHEN {m} IN (4, 6, 9, 11) THEN 30 WHEN {m} = 2 THEN"
            f" (CASE WHEN {leap} THEN 29 ELSE 28 END) ELSE 31 END)")
    return f"({y} >= 1 AND {m} BETWEEN 1 AND 12 AND {d} BETWEEN 1 AND {last})"


def _valid_time(x: str) -> str:
    """``x`` (shaped like a datetime) has a real time of day, and offset if any."""
    time = (f"{_digits(x, 12, 2)} < 24 AND {_digits(x, 15, 2)} < 60"
            f" AND {_digits(x, 18, 2)} < 60")
    offset = (f"(length({x}) < 25 OR ({_digits(x, 21, 2)} < 24"
              f" AND {_digits(x, 24, 2)} < 60))")
    return f"({time} AND {offset})"


def _day_seconds(x: str) -> str:
    """The epoch seconds of the midnight (UTC) of the valid date ``x`` starts with."""
    return f"((substr({x}, 1, 10)::date - DATE '1970-01-01')::bigint * 86400)"


def _datetime_seconds(x: str) -> str:
    """The epoch seconds of the valid datetime ``x``."""
    clock = (f"{_digits(x, 12, 2)} * 3600 + {_digits(x, 15, 2)} * 60"
             f" + {_digits(x, 18, 2)}")
    offset = (f"(CASE WHEN length({x}) = 25 THEN"
              f" (CASE WHEN substr({x}, 20, 1) = '-' THEN -1 ELSE 1 END)"
              f" * ({_digits(x, 21, 2)} * 3600 + {_digits(x, 24, 2)} * 60) ELSE 0 END)")
    return f"({_day_seconds(x)} + {clock} - {offset})"


def _date_text(x: str, on_date: Fragment, on_datetime: Fragment) -> Fragment:
    """Text ``x``: ``on_date`` for a valid ``YYYY-MM-DD``, ``on_datetime`` for a valid
    ``YYYY-MM-DD[T ]HH:MM:SS[Z|±HH:MM]``, unknown for any other text. Nested CASEs: a
    cast only runs on text the test before it checked (AND has no order)."""
    return q(
        f"(CASE WHEN {x} ~ {_DATE} THEN (CASE WHEN {_valid_day(x)} THEN {{}} END)"
        f" WHEN {x} ~ {_DATETIME} THEN"
        f" (CASE WHEN {_valid_day(x)} AND {_valid_time(x)} THEN {{}} END) END)",
        on_date, on_datetime, exact=False,
    )


def _seconds(at: datetime) -> tuple[int, int]:
    """The whole seconds just at or after ``at``, and just at or before it."""
    micros = (at - dates.EPOCH) // timedelta(microseconds=1)
    return -(-micros // 1_000_000), micros // 1_000_000


def _timestamps(src: Source, on_seconds: Callable[[str], Fragment],
                on_date: Fragment | None = None) -> Fragment:
    """A date helper over ``src``: ``on_seconds(sql)`` judges whole epoch seconds (of a
    text date or datetime, or an integer timestamp); ``on_date`` a text date itself."""
    x = src.text
    text = _date_text(x, on_date or on_seconds(_day_seconds(x)),
                      on_seconds(_datetime_seconds(x)))
    n = src.number
    return by_type(src, {
        "null": FALSE, "true": FALSE, "false": FALSE, "array": FALSE, "object": FALSE,
        "real": UNKNOWN,
        "integer": q(f"(CASE WHEN {n} BETWEEN 0 AND {LAST_TIMESTAMP} THEN {{}} END)",
                     on_seconds(n), exact=False),
        "text": text,
    })


def _late_day(now: datetime, days: int) -> str:
    try:
        return (now.date() - timedelta(days=days)).isoformat()
    except OverflowError:
        return _NEVER_DAY


def _late_first(now: datetime, days: int) -> int:
    try:
        return _seconds(now - timedelta(days=days))[0]
    except OverflowError:
        return _NEVER


def _within_days(src: Source, days: int) -> Fragment:
    first_day = Late(lambda now: _late_day(now, days))
    last_day = Late(lambda now: now.date().isoformat())
    first = Late(lambda now: _late_first(now, days))
    last = Late(lambda now: _seconds(now)[1])
    return _timestamps(
        src,
        lambda s: q(f"{s} BETWEEN {{}} AND {{}}", param(first, "bigint"),
                    param(last, "bigint")),
        on_date=q(f'({src.text} COLLATE "C") BETWEEN {{}} AND {{}}',
                  param(first_day, "text"), param(last_day, "text")),
    )


def _before_after(src: Source, bound: datetime, is_before: bool) -> Fragment:
    ceiling, floor = _seconds(bound)
    if is_before:
        return _timestamps(src, lambda s: q(f"{s} < {{}}", param(ceiling, "bigint")))
    return _timestamps(src, lambda s: q(f"{s} > {{}}", param(floor, "bigint")))


def _birthday_within(src: Source, days: int) -> Fragment:
    window = Late(lambda now: sorted(dates.birthday_window(now.date(), days)))
    x, n = src.text, src.number
    text = q(f"substr({x}, 6, 5) = ANY({{}})", param(window, "text[]"))
    day = f"to_char(DATE '1970-01-01' + div({n}, 86400)::int, 'MM-DD')"
    return by_type(src, {
        "null": FALSE, "true": FALSE, "false": FALSE, "array": FALSE, "object": FALSE,
        "real": UNKNOWN,
        "integer": q(f"(CASE WHEN {n} BETWEEN 0 AND {LAST_TIMESTAMP}"
                     f" THEN {day} = ANY({{}}) END)", param(window, "text[]"), exact=False),
        "text": _date_text(x, text, text),
    })


def date_verdict(call: Call) -> Fragment | None:
    """The verdict of a date helper called on a field with a literal, else None."""
    function = call.function
    if len(call.args) != 2 or not isinstance(call.args[0], Var):
        return None
    src, literal = source(call.args[0]), call.args[1]
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
