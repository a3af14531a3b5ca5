"""How long to wait before trying a message again, and when to give up.

Sans-I/O: ``next_delay`` takes ``now`` and a ``random.Random`` from the caller, so a seeded
generator and a fake clock make every schedule reproducible.
"""

from __future__ import annotations

import math
import random
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

__all__ = ["RetryPolicy"]

# 2**60 seconds outlasts any max_delay; the cap only keeps float arithmetic finite.
_MAX_DOUBLINGS = 60


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Retry rules for one class of error. Times are in seconds.

    ``attempts``: tries in all, the first send included (1 = never retry).
    ``backoff``: ``"fixed"`` waits ``base`` every time; ``"exponential"`` waits
    ``base * 2**(attempt - 1)``, capped at ``max_delay`` (0 = no cap).
    ``jitter``: exponential uses AWS's "full jitter", a uniform draw in ``[0, delay]``, which
    spreads a crowd of retries best; fixed draws from ``[base/2, 3*base/2]`` so its mean stays
    ``base``. ``max_age``: give up on a message whose retry would leave more than ``max_age``
    after its first try (0 = no age limit).
    """

    attempts: Annotated[int, Meta(ge=1)] = 5
    backoff: Literal["fixed", "exponential"] = "exponential"
    base: Annotated[float, Meta(ge=0)] = 1.0
    max_delay: Annotated[float, Meta(ge=0)] = 300.0
    jitter: bool = True
    max_age: Annotated[float, Meta(ge=0)] = 0.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1 (the first try counts)")
        for key in ("base", "max_delay", "max_age"):
            value = getattr(self, key)
            if not 0 <= value < math.inf:
                raise ValueError(f"{key} must be a finite number >= 0, not {value!r}")

    def next_delay(
        self,
        attempt: int,
        first_try_at: float,
        now: float,
        rng: random.Random,
        retry_after: float | None = None,
    ) -> float | None:
        """Seconds to wait before the next try, after try number ``attempt`` (1-based) failed
        at ``now``; ``None`` means give up (tries used up, or the message would be too old).

        ``retry_after`` (a gateway's Retry-After) wins when it is longer than the backoff,
        even past ``max_delay``: retrying sooner would only be refused again.
        """
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, not {attempt!r}")
        if attempt >= self.attempts:
            return None
        if self.backoff == "exponential":
            delay = self.base * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS)
            if self.max_delay:
                delay = min(delay, self.max_delay)
            if self.jitter:
                delay = rng.uniform(0.0, delay)
        else:
            delay = self.base
            if self.jitter:
                delay = rng.uniform(0.5 * delay, 1.5 * delay)
            if self.max_delay:
                delay = min(delay, self.max_delay)
        if retry_after is not None and retry_after > delay:
            delay = retry_after
        if self.max_age and now + delay - first_try_at > self.max_age:
            return None
        return delay
