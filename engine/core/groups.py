"""Stable groups of profiles: a multivariate mailing's shares and the control groups.

Every profile gets a point in [0, 1) per mailing (``share_point``); a run with a share
``[lo, hi)`` takes the profiles whose point lies in it. A multivariate mailing's test runs
and its winner run have shares that tile [0, 1), so each profile is in exactly one of its
runs. A control group holds out the profiles whose point in a key space of its own falls
under its percent (``in_control``): a mailing's own group is keyed by the mailing id, a
database's global group by ``global_key(database_id)``, so it is the same profiles in
every mailing of that database.

The points come from a fixed integer mix (splitmix64's finaliser), never Python's
``hash()``: the same profile lands in the same group in every process, on every machine,
in every version of Herald, and a resumed run takes the same profiles as the run it
resumes. Each key space has its own salt, so a mailing's control group is independent of
its shares (a control group is not "the first variant's test share").

Per message this is a few integer operations; the preparer builds the seeds once per run
(``Groups``) and calls ``Groups.share_point_of`` / ``Groups.controlled`` per profile.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

from engine.core.states import Skip

__all__ = [
    "CONTROL",
    "GLOBAL_KEYS",
    "Groups",
    "global_key",
    "in_control",
    "share_point",
]

#: The skip reason of a profile held out by a control group.
CONTROL: Final = Skip.CONTROL

_M64: Final = (1 << 64) - 1
_GAMMA: Final = 0x9E3779B97F4A7C15
#: One salt per key space: the same number as a mailing id and as a database key gives
#: unrelated points.
_SHARE_SALT: Final = 0x5348_4152_4553_0001  # "SHARES"
_CONTROL_SALT: Final = 0x434F_4E54_524F_4C01  # "CONTROL"
#: ``global_key(database_id)``: a database's key space for its global control group, apart
#: from every mailing id (mailing ids stay far below 2**62).
GLOBAL_KEYS: Final = 1 << 62
#: Points are the top 53 bits of the mix, so that they are exact floats in [0, 1).
_UNIT: Final = 2.0**-53


def _mix(z: int) -> int:
    """splitmix64's output function of ``z`` (any int; taken modulo 2**64)."""
    z = (z + _GAMMA) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


@lru_cache(maxsize=1024)
def _seed(key: int, salt: int) -> int:
    return _mix((key ^ salt) & _M64)


def _point(profile_id: int, seed: int) -> int:
    """The profile's 53-bit point under ``seed``: ``_mix(profile_id ^ seed) >> 11``,
    written out (this runs per message; a call less is a third of its cost)."""
    z = ((profile_id ^ seed) + _GAMMA) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return (z ^ (z >> 31)) >> 11


def _threshold(percent: float) -> int:
    """The 53-bit point under which a profile is in a group of ``percent``."""
    if not 0 <= percent <= 100:
        raise ValueError(f"a percent is 0 to 100, not {percent!r}")
    return int(percent / 100 * (1 << 53))


def share_point(profile_id: int, mailing_id: int) -> float:
    """The profile's point in [0, 1) for the shares of ``mailing_id``'s runs."""
    return _point(profile_id, _seed(mailing_id, _SHARE_SALT)) * _UNIT


def in_control(profile_id: int, key: int, percent: float) -> bool:
    """Whether the profile is among the ``percent`` (0 to 100, fractions allowed) of
    control group ``key`` (a mailing id, or ``global_key(database_id)``)."""
    return _point(profile_id, _seed(key, _CONTROL_SALT)) < _threshold(percent)


def global_key(database_id: int) -> int:
    """The control-group key of a database's global group."""
    return GLOBAL_KEYS | database_id


class Groups:
    """One run's groups, its seeds worked out once: the run's share of its mailing
    (None: every profile) and the control groups that hold profiles out of it, as
    ``(key, percent)`` (a percent of 0 holds nobody out)."""

    __slots__ = ("_controls", "_hi", "_lo", "_share_seed", "hi", "lo")

    def __init__(
        self, mailing_id: int, share: tuple[float, float] | None = None,
        controls: tuple[tuple[int, float], ...] = (),
    ) -> None:
        self._share_seed = _seed(mailing_id, _SHARE_SALT)
        self.lo, self.hi = share if share is not None else (0.0, 1.0)
        # the share in 53-bit points: a point p is in it when lo <= p * 2**-53 < hi,
        # that is when _lo <= p < _hi (p * 2**-53 is exact)
        self._lo = _ceil_point(self.lo)
        self._hi = _ceil_point(self.hi)
        self._controls = tuple((_seed(key, _CONTROL_SALT), _threshold(percent))
                               for key, percent in controls if percent > 0)

    @property
    def shared(self) -> bool:
        """Whether the run takes only a share of the audience."""
        return self.lo > 0.0 or self.hi < 1.0

    @property
    def controls(self) -> bool:
        """Whether any control group holds profiles out of the run."""
        return bool(self._controls)

    def share_point_of(self, profile_id: int) -> float:
        """``share_point(profile_id, mailing_id)``."""
        return _point(profile_id, self._share_seed) * _UNIT

    def in_share(self, profile_id: int) -> bool:
        """Whether the profile's point lies in the run's share ``[lo, hi)``."""
        z = ((profile_id ^ self._share_seed) + _GAMMA) & _M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
        return self._lo <= (z ^ (z >> 31)) >> 11 < self._hi

    def controlled(self, profile_id: int) -> bool:
        """Whether a control group of the run holds the profile out."""
        for seed, threshold in self._controls:
            z = ((profile_id ^ seed) + _GAMMA) & _M64
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
            if (z ^ (z >> 31)) >> 11 < threshold:
                return True
        return False


def _ceil_point(x: float) -> int:
    """The least 53-bit point p with ``p * 2**-53 >= x`` (x in [0, 1])."""
    n = x * (1 << 53)  # exact: a power-of-two scaling
    p = int(n)
    return p if p == n else p + 1
