"""Sending policies: how many messages a profile (or a phone) may get in a period.

Sans-I/O: the store counts what was sent in the window for a chunk's recipients (one query
per chunk); ``over_limit`` decides per message with a dict lookup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

__all__ = ["Policy", "first_day", "over_limit", "utc_day"]

SECONDS_PER_DAY = 86_400


class Policy(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A sending policy (Altcraft's): at most ``max_messages`` per ``period_days`` days.

    ``scope``: what is counted. ``profile``: every message to the profile, all resources
    and channels; ``profile_resource``: those of this mailing's resource;
    ``profile_channel``: those of this mailing's channel (the resources of its channel, SMS
    or email, as configured); ``contact``: every message to the same phone (or email
    address), whichever profile it belongs to. Days are UTC calendar days, today
    included. The most specific policy wins: a mailing's, else its resource's, else
    ``[engine.policy]``.
    """

    max_messages: Annotated[int, Meta(ge=1, le=15)]
    period_days: Annotated[int, Meta(ge=1, le=16)]
    scope: Literal["profile", "profile_resource", "profile_channel", "contact"] = "profile"

    @property
    def key(self) -> Literal["profile", "phone"]:
        """What the counts are keyed by."""
        return "phone" if self.scope == "contact" else "profile"


def utc_day(now: float) -> int:
    """The UTC calendar day of a Unix time, as a day number."""
    return int(now // SECONDS_PER_DAY)


def first_day(policy: Policy, now: float) -> int:
    """The first day of the policy's window that ends today."""
    return utc_day(now) - policy.period_days + 1


def over_limit(policy: Policy, counts: Mapping[int | str, int], key: int | str) -> bool:
    """True when ``key`` already got ``max_messages`` in the window."""
    return counts.get(key, 0) >= policy.max_messages
