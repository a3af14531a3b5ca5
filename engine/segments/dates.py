"""Date helpers for segment conditions: ``within_days``, ``before``, ``after``,
``birthday_within``. Plain functions of their arguments and ``now``; no clock is read here.

A value is a date when it is an ISO-8601 date (``"2026-01-10"``), a datetime when it is an
ISO-8601 / RFC 3339 datetime (``"2026-01-10T09:30:00+03:00"``; without a zone it is UTC) or a
Unix timestamp (a number, UTC), as the template function ``date()`` reads them. Anything
else (missing, ``"soon"``, ``"2026-02-30"``) makes a helper false.

- ``within_days(x N)``: ``x`` lies in the last ``N`` days up to now: a datetime in
  ``[now - N days, now]``, a date in ``[today - N, today]`` where today is ``now``'s date
  (in ``now``'s time zone, UTC for a timestamp).
- ``before(x "2026-01-01")``, ``after(x ...)``: ``x`` is strictly earlier (later) than the
  bound; a date counts as its midnight UTC.
- ``birthday_within(x N)``: the anniversary of ``x`` (its month and day as written) falls
  in the next ``N`` days, today included; a 29 February is celebrated on the 28th in other
  years.

Days are whole numbers from 0 to :data:`MAX_DAYS`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

from engine.core.templates.functions import NOT_LITERAL, context_function
from engine.core.templates.runtime import numeric, render_value

__all__ = [
    "DATE_FUNCTIONS",
    "EPOCH",
    "MAX_DAYS",
    "NOW",
    "Now",
    "after",
    "as_now",
    "before",
    "birthday_window",
    "birthday_within",
    "moment",
    "whole_days",
    "within_days",
]

Now = datetime | float
"""What callers pass as "now": an aware datetime (naive means UTC) or a Unix timestamp."""

NOW: Final = "now"
"""The context name under which the date helpers receive ``now``."""
MAX_DAYS: Final = 36_500
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_BAD_VALUE = (ValueError, OverflowError, OSError, TypeError)


def as_now(now: Now) -> datetime:
    """``now`` as an aware datetime."""
    if isinstance(now, datetime):
        return now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    return datetime.fromtimestamp(now, UTC)


def moment(value: Any) -> date | datetime | None:
    """A date (for date-only values), an aware datetime, or None when ``value`` is neither.

    Raises ValueError (or OverflowError, OSError) for text or numbers that look like
    neither; the helpers turn that into false.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None


def _instant(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime(value.year, value.month, value.day, tzinfo=UTC)


def whole_days(value: Any) -> int | None:
    """``value`` as a count of days (0 to MAX_DAYS), else None."""
    n = numeric(value)
    if n is None or n != n or not 0 <= n <= MAX_DAYS or n != int(n):
        return None
    return int(n)


@context_function(NOW)
def within_days(now: Any, value: Any, days: Any) -> bool:
    """``value`` lies within the last ``days`` days, up to ``now`` (see the module doc)."""
    n = whole_days(days)
    try:
        at = moment(value)
        if at is None or n is None:
            return False
        current = as_now(now)
        if isinstance(at, datetime):
            return current - timedelta(days=n) <= at <= current
        today = current.date()
        return today - timedelta(days=n) <= at <= today
    except _BAD_VALUE:
        return False


def before(value: Any, bound: Any) -> bool:
    """``value`` is strictly earlier than ``bound`` (a date counts as midnight UTC)."""
    try:
        at, limit = moment(value), moment(bound)
        return at is not None and limit is not None and _instant(at) < _instant(limit)
    except _BAD_VALUE:
        return False


def after(value: Any, bound: Any) -> bool:
    """``value`` is strictly later than ``bound`` (a date counts as midnight UTC)."""
    try:
        at, limit = moment(value), moment(bound)
        return at is not None and limit is not None and _instant(at) > _instant(limit)
    except _BAD_VALUE:
        return False


@functools.lru_cache(maxsize=64)
def birthday_window(today: date, days: int) -> frozenset[str]:
    """The ``"MM-DD"`` anniversaries that fall within ``days`` days from ``today``."""
    found: set[str] = set()
    for i in range(min(days, 366) + 1):
        try:
            day = today + timedelta(days=i)
        except OverflowError:
            break
        found.add(f"{day.month:02d}-{day.day:02d}")
        if day.month == 2 and day.day == 28 and not _leap(day.year):
            found.add("02-29")
    return frozenset(found)


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


@context_function(NOW)
def birthday_within(now: Any, value: Any, days: Any) -> bool:
    """The anniversary of ``value`` falls within the next ``days`` days, today included."""
    n = whole_days(days)
    try:
        at = moment(value)
        if at is None or n is None:
            return False
        day = at.date() if isinstance(at, datetime) else at
        return f"{day.month:02d}-{day.day:02d}" in birthday_window(as_now(now).date(), n)
    except _BAD_VALUE:
        return False


# -- compile-time checks of literal arguments ------------------------------------------------


def _check_days(args: tuple[Any, ...]) -> tuple[int, str] | None:
    days = args[1] if len(args) > 1 else NOT_LITERAL
    if days is not NOT_LITERAL and whole_days(days) is None:
        return 1, f"days must be a whole number from 0 to {MAX_DAYS}, not {render_value(days)!r}"
    return None


def _check_bound(args: tuple[Any, ...]) -> tuple[int, str] | None:
    bound = args[1] if len(args) > 1 else NOT_LITERAL
    if bound is NOT_LITERAL:
        return None
    try:
        ok = isinstance(bound, str) and moment(bound) is not None
    except _BAD_VALUE:
        ok = False
    if not ok:
        return 1, (f'expected a date like "2026-01-31" or "2026-01-31T09:00:00Z",'
                   f" not {render_value(bound)!r}")
    return None


within_days.herald_check = _check_days  # type: ignore[attr-defined]
birthday_within.herald_check = _check_days  # type: ignore[attr-defined]
before.herald_check = _check_bound  # type: ignore[attr-defined]
after.herald_check = _check_bound  # type: ignore[attr-defined]

DATE_FUNCTIONS: Final[Mapping[str, Callable[..., Any]]] = MappingProxyType(
    {
        "after": after,
        "before": before,
        "birthday_within": birthday_within,
        "within_days": within_days,
    }
)
"""The functions segment conditions add to the template built-ins, by name."""
