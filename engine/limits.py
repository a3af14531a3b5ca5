"""Sender limits shared by every run: one pace (GCRA) and one in-flight window per sender.

A sender's ``rate`` is a promise to its gateway, not to one mailing: two broadcasts and a
trigger mailing on one sender share its segments per second. So the limiter lives here,
outside any run, and every run of a process asks the same ``SenderLimits`` for it::

    limits = SenderLimits()
    limit = limits.get("acme", config.senders["acme"])
    await limit.take_window(len(part))        # room in the window (messages)
    try:
        await limit.acquire(segments)         # the pace (segments), sleeps as needed
        ...                                   # hand the part to the gateway
    finally:
        limit.release_window(len(part))

``SenderLimit`` is the small interface the dispatcher uses; ``LocalSenderLimit`` keeps it
in this process's memory. The cluster keeps it in Redis behind the same interface.

``acquire`` may be cancelled at any point (a run stopping): it takes segments only at the
moment it returns, so a cancelled wait costs nobody anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import anyio

from engine.config import SenderConfig
from engine.core.ratelimit import Gcra, GcraStats, InFlightWindow

__all__ = ["SEND_SLACK", "LocalSenderLimit", "SenderLimit", "SenderLimits", "WindowedLimit"]

#: Seconds a part may take from its grant to the gateway. ``engine.dispatch`` writes the
#: journal's ``sending`` mark before it takes the turn, so only the driver's own work lies in
#: between; the cluster's pace keeps this much of the rate back from the burst
#: (``engine.cluster.limits``), so parts reach the gateway within rate + burst in any window.
SEND_SLACK = 0.01

#: Shortest sleep between two looks at the bucket (a float-rounding delay of 1e-12 s would
#: otherwise spin).
_MIN_SLEEP = 0.0001


class SenderLimit(Protocol):
    """The pace and window of one sender, whoever sends through it."""

    @property
    def rate(self) -> float:
        """Segments per second; 0 means unlimited."""
        ...

    @property
    def burst(self) -> int:
        """Segments that may go at once above the rate."""
        ...

    @property
    def in_flight(self) -> int:
        """Messages handed to the gateway and not answered yet."""
        ...

    async def take_window(self, n: int) -> None:
        """Wait for room for ``n`` messages in flight, and take it."""
        ...

    def release_window(self, n: int) -> None:
        """``n`` messages were answered (or never sent after all)."""
        ...

    async def acquire(self, segments: int) -> None:
        """Wait until ``segments`` may go out at the sender's rate."""
        ...

    def penalize(self, retry_after: float) -> None:
        """The gateway throttled us: nobody sends on this sender for ``retry_after`` s."""
        ...

    def statistics(self) -> GcraStats:
        """A snapshot of the pace."""
        ...


class WindowedLimit:
    """The in-flight window part of a ``SenderLimit``, the same for every kind of pace: a
    window of messages this process has at its gateway, and waiters woken as room frees."""

    window: InFlightWindow
    _room: anyio.Event | None = None

    @property
    def in_flight(self) -> int:
        return self.window.in_flight

    async def take_window(self, n: int) -> None:
        while not self.window.can_take(n):
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()
        self.window.take(n)

    def release_window(self, n: int) -> None:
        self.window.release(n)
        room, self._room = self._room, None
        if room is not None:
            room.set()


class LocalSenderLimit(WindowedLimit):
    """A ``SenderLimit`` in this process's memory (every run of the process shares it).

    ``clock`` is monotonic seconds; tests may pass a fake one.
    """

    def __init__(
        self, rate: float, burst: int, window: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gcra = Gcra(rate, burst)
        self.window = InFlightWindow(window)
        self._clock = clock
        self._lock = anyio.Lock(fast_acquire=True)

    @property
    def rate(self) -> float:
        return self.gcra.rate

    @property
    def burst(self) -> int:
        return self.gcra.burst

    async def acquire(self, segments: int) -> None:
        # Waiters queue in order (the lock is FIFO) and the one at the head takes its
        # segments only when they conform at the moment it actually goes, not at a slot
        # reserved in advance: a sleep that wakes late (a busy event loop) then delays the
        # parts after it instead of bunching them up at the gateway.
        gcra, clock = self.gcra, self._clock
        if not self._lock.locked() and gcra.try_acquire(segments, clock()):
            return
        async with self._lock:
            while True:
                now = clock()
                if gcra.try_acquire(segments, now):
                    return
                await anyio.sleep(max(gcra.delay(segments, now), _MIN_SLEEP))

    def penalize(self, retry_after: float) -> None:
        self.gcra.penalize(retry_after, self._clock())

    def statistics(self) -> GcraStats:
        return self.gcra.statistics(self._clock())


class SenderLimits:
    """The ``SenderLimit`` of each sender, made on first use and shared from then on.

    A sender whose ``rate``, ``burst`` or ``window`` changed (a reloaded config) gets a
    fresh limit; runs still holding the old one keep it until they end.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._limits: dict[str, tuple[tuple[float, int, int], SenderLimit]] = {}

    def get(self, name: str, config: SenderConfig) -> SenderLimit:
        key = (config.rate, config.burst, config.window)
        found = self._limits.get(name)
        if found is not None and found[0] == key:
            return found[1]
        limit = self.make(name, config)
        self._limits[name] = (key, limit)
        return limit

    def make(self, name: str, config: SenderConfig) -> SenderLimit:
        """A fresh limit for sender ``name`` (the factory hook: a subclass such as
        ``engine.cluster.limits.RedisSenderLimits`` makes limits kept elsewhere)."""
        return LocalSenderLimit(config.rate, config.burst, config.window, self._clock)
