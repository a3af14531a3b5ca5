"""When each recipient of a launch gets it: the recipient's local time and quiet hours.

A launch due at S (seconds since the epoch) whose schedule has ``local_time`` sends each
profile at the launch's wall-clock time in the profile's own zone (its ``_tz`` field, an
IANA name; missing or unknown: the mailing's zone)::

    (D, T) = S as a wall-clock date and time in the mailing's zone
    I      = D T in the profile's zone
    I <  S → late: ``now`` sends at S, ``next`` at D+1 T there (a day more while that
             is still not after S: zones up to 26 hours apart); I = S is on time (the
             mailing's own zone)

Quiet hours (``[resources.X] quiet_hours = "21:00-09:00"``, in the recipient's zone; a
window may wrap midnight, its start is quiet, its end is not) move a send time that falls
inside them to the window's end. Without ``local_time`` every send time starts as S.

Wall-clock times are resolved as ``engine.mailings.next_launch`` resolves them (zoneinfo,
``fold=0``): a repeated time (a fall-back day) takes its first occurrence, a time a
spring-forward day skips moves forward past the jump (02:30 of a 02:00→03:00 day is 03:30).

A launch runs in waves (``RunSpec.window``): a wave takes the profiles whose send time is in
``(after, until]``; the first ends at S, each next one at the earliest send time left. Per
profile this is one dict lookup: ``SendTimes`` works each zone's time out once per run. No
clock is read here: every instant comes in as an argument.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

__all__ = [
    "EARLIER",
    "EARLIEST",
    "LATER",
    "QuietHours",
    "SendTimes",
    "later_key",
    "later_times",
    "local_send_time",
    "next_wave",
    "parse_quiet_hours",
    "profile_zone",
    "quiet_end",
    "wall_instant",
    "zone",
]

#: The first wave's lower bound: before any send time (JSON has no infinity).
EARLIEST = -1.0e18
#: The count of a run's profiles left to later waves, and the prefix of the counts of
#: them by send time (``later@<seconds since the epoch>``), from which the next wave's
#: time is read (counts add up across chunks and resumes; a minimum would not).
LATER = "later"
#: The count of a wave's profiles an earlier wave of the launch took.
EARLIER = "earlier"
_LATER_AT = "later@"

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class QuietHours(NamedTuple):
    """A daily window ``[start, end)`` of wall-clock time; ``start > end`` wraps midnight."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def parse_quiet_hours(text: str) -> QuietHours:
    """``"21:00-09:00"`` as a window; ValueError saying what is wrong otherwise."""
    parts = text.split("-")
    if len(parts) != 2:
        raise ValueError(f"expected HH:MM-HH:MM such as '21:00-09:00', got {text!r}")
    bounds: list[time] = []
    for part in parts:
        m = _HHMM.match(part.strip())
        if m is None:
            raise ValueError(f"expected HH:MM-HH:MM such as '21:00-09:00' (hours 00-23),"
                             f" got {text!r}")
        bounds.append(time(int(m.group(1)), int(m.group(2))))
    if bounds[0] == bounds[1]:
        raise ValueError(f"an empty window: {text!r} starts where it ends")
    return QuietHours(bounds[0], bounds[1])


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo | None:
    """The IANA zone ``name``, or None when this machine knows no such zone."""
    if not name or len(name) > 64:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


class _Fields(msgspec.Struct):
    tz: str | None = msgspec.field(default=None, name="_tz")


_decode_fields = msgspec.json.Decoder(_Fields).decode


def profile_zone(fields: bytes | str | None) -> str | None:
    """A profile's ``_tz`` from its fields (JSON), None when it has none (or the fields
    are not an object, or ``_tz`` is not a string). Only ``_tz`` is decoded."""
    if not fields:
        return None
    try:
        return _decode_fields(fields).tz
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def wall_instant(wall: datetime, tz: ZoneInfo) -> float:
    """The instant of a naive wall-clock time in ``tz`` (see the module docstring)."""
    return wall.replace(tzinfo=tz, fold=0).timestamp()


def local_send_time(due: float, mailing_zone: ZoneInfo, tz: ZoneInfo, late: str) -> float:
    """When a launch due at ``due`` in ``mailing_zone`` goes to a recipient in ``tz``:
    the launch's wall-clock time there, or for the late ``due`` (``late = "now"``) or
    the next day's (``"next"``)."""
    wall = datetime.fromtimestamp(due, mailing_zone).replace(tzinfo=None)
    at = wall_instant(wall, tz)
    if at >= due:  # the mailing's own zone (and any in step with it) is on time
        return at
    if late != "next":
        return due
    for days in range(1, 4):
        at = wall_instant(wall + timedelta(days=days), tz)
        if at > due:
            return at
    return due  # not reached: zones are less than 27 hours apart


def quiet_end(at: float, tz: ZoneInfo, quiet: QuietHours) -> float:
    """``at`` moved to the end of the quiet hours in ``tz`` if it falls inside them."""
    local = datetime.fromtimestamp(at, tz).replace(tzinfo=None)
    now, start, end = local.time(), quiet.start, quiet.end
    if start < end:
        if not start <= now < end:
            return at
        day = local.date()
    elif now >= start:
        day = local.date() + timedelta(days=1)
    elif now < end:
        day = local.date()
    else:
        return at
    moved = wall_instant(datetime.combine(day, end), tz)
    return moved if moved > at else at


class SendTimes:
    """One run's send time per recipient zone, each worked out once.

    ``local``: the schedule's ``local_time`` (else every send time starts at ``due``);
    ``quiet``: the resource's quiet hours for this mailing (None: none)."""

    __slots__ = ("_by_zone", "due", "late", "local", "mailing_zone", "quiet")

    def __init__(
        self, due: float, mailing_zone: str, *, local: bool, late: str = "now",
        quiet: QuietHours | None = None,
    ) -> None:
        self.due = due
        self.mailing_zone = zone(mailing_zone) or ZoneInfo("UTC")
        self.local = local
        self.late = late
        self.quiet = quiet
        self._by_zone: dict[str | None, float] = {}

    def of(self, tz_name: str | None) -> float:
        """The send time of a recipient whose ``_tz`` is ``tz_name``."""
        at = self._by_zone.get(tz_name)
        if at is None:
            at = self._by_zone[tz_name] = self._compute(tz_name)
        return at

    def _compute(self, tz_name: str | None) -> float:
        tz = (zone(tz_name) if tz_name is not None else None) or self.mailing_zone
        at = local_send_time(self.due, self.mailing_zone, tz, self.late) if self.local \
            else self.due
        if self.quiet is not None:
            at = quiet_end(at, tz, self.quiet)
        return at


def later_key(at: float) -> str:
    """The counts key of profiles left for a wave at ``at`` (whole seconds, up: the wave
    that ends there takes them)."""
    whole = int(at)
    return f"{_LATER_AT}{whole if whole >= at else whole + 1}"


def later_times(counts: dict[str, int]) -> dict[float, int]:
    """A run's profiles left for later waves, by send time (from its counts)."""
    out: dict[float, int] = {}
    for key, n in counts.items():
        if key.startswith(_LATER_AT) and n:
            try:
                out[float(key[len(_LATER_AT):])] = n
            except ValueError:
                continue
    return out


def next_wave(counts: dict[str, int]) -> float | None:
    """The earliest send time a run left for later, None when it left nobody."""
    times = later_times(counts)
    return min(times) if times else None
