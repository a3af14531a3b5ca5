"""A fixed-bucket histogram (Prometheus style), for gateway latencies."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

__all__ = ["DEFAULT_BOUNDS", "Histogram"]

#: Seconds: from a loopback answer to a gateway that takes its time.
DEFAULT_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                  10.0, float("inf"))


class Histogram:
    """Counts of observations per bucket (upper bounds, the last one +Inf), and their sum."""

    __slots__ = ("_counts", "bounds", "count", "total")

    def __init__(self, bounds: Sequence[float] = DEFAULT_BOUNDS) -> None:
        if not bounds or bounds[-1] != float("inf") or list(bounds) != sorted(bounds):
            raise ValueError("bounds must be increasing and end with inf")
        self.bounds = tuple(bounds)
        self._counts = [0] * len(self.bounds)
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.total += value

    def cumulative(self) -> list[int]:
        """Observations <= each bound (what Prometheus calls ``le``)."""
        out, running = [], 0
        for n in self._counts:
            running += n
            out.append(running)
        return out
