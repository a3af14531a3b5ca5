"""Rate-limit arithmetic for one sender: a GCRA for segments per second, a window for in-flight.

Sans-I/O: every method takes ``now`` (monotonic seconds) from the caller and answers at once;
nothing here reads a clock, sleeps or awaits. The async shell turns a returned delay into a
sleep and wraps ``InFlightWindow`` in anyio primitives.

GCRA (Generic Cell Rate Algorithm) keeps one number, the theoretical arrival time ``tat``: the
moment the bucket would be full again if nothing else were sent. With ``T = 1 / rate`` and a
bucket of ``burst`` units, a batch of ``cost`` units may go at

    send = max(now, tat - (burst - min(cost, burst)) * T)

after which ``tat = max(tat, send) + cost * T``. From this follows the guarantee the tests
check: in any interval of length ``L`` at most ``rate * L + max(burst, largest cost)`` units go
out (``rate * L + burst`` when no batch costs more than ``burst``), and a sender that always
has work achieves exactly ``rate`` over a long run. A batch costing more than ``burst`` is
still admitted, as soon as the bucket is full, and its excess is paid for by the batches after
it, so nothing ever waits forever. Shells should size batches to at most ``burst`` segments to
keep the sharper bound.
"""

from __future__ import annotations

import math

import msgspec

__all__ = ["Gcra", "GcraStats", "InFlightWindow", "WindowStats"]


class GcraStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a ``Gcra``.

    ``tat``: when the bucket is full again (``now`` if it already is). ``tokens``: units that
    could go out right now, between 0 and ``burst``. ``paused_until``: the end of the last
    throttle (``0.0`` if never throttled). ``rate == 0`` means unlimited.
    """

    rate: float
    burst: int
    tat: float
    tokens: float
    paused_until: float


class Gcra:
    """A GCRA limiter of ``rate`` units per second with a bucket of ``burst`` units.

    ``rate == 0`` means unlimited: no delay except a throttle (``throttle``/``penalize``).
    Reservations are committed: concurrent callers each get their own, later slot, so batches
    queue up in the order they reserved.
    """

    __slots__ = ("_burst", "_interval", "_paused_until", "_rate", "_tat", "_unlimited")

    def __init__(self, rate: float, burst: int) -> None:
        if not rate >= 0 or math.isinf(rate):
            raise ValueError(f"rate must be a finite number >= 0 (0 = unlimited), not {rate!r}")
        if burst < 0:
            raise ValueError(f"burst must be >= 0, not {burst!r}")
        self._rate = float(rate)
        self._burst = int(burst)
        self._unlimited = rate == 0
        self._interval = 0.0 if self._unlimited else 1.0 / rate
        self._tat = -math.inf
        self._paused_until = 0.0

    @property
    def rate(self) -> float:
        """Units per second; 0 means unlimited."""
        return self._rate

    @property
    def burst(self) -> int:
        """Units that may go out at once after an idle spell."""
        return self._burst

    @property
    def paused_until(self) -> float:
        """No reservation made now is served before this time (set by ``throttle``).

        A shell that slept on a delay handed out before a 429 arrived should look here after
        waking and wait for the remainder: reservations already handed out are not recalled.
        """
        return self._paused_until

    def _send_time(self, cost: int, now: float) -> float:
        burst = self._burst
        if cost <= burst:
            send = self._tat - (burst - cost) * self._interval
        else:
            send = self._tat
        if send < now:
            send = now
        if send < self._paused_until:
            send = self._paused_until
        return send

    def reserve(self, cost: int, now: float) -> float:
        """Reserve ``cost`` units for one batch; return the seconds to wait before sending it.

        ``0.0`` means send now. The reservation is committed whatever the delay: the caller
        must send after waiting (or the units are lost for everyone).
        """
        if cost < 0:
            raise ValueError(f"cost must be >= 0, not {cost!r}")
        if self._unlimited:
            paused = self._paused_until
            return paused - now if paused > now else 0.0
        # _send_time inlined: this is the per-batch hot path.
        tat = self._tat
        interval = self._interval
        burst = self._burst
        send = tat - (burst - cost) * interval if cost <= burst else tat
        if send < now:
            send = now
        if send < self._paused_until:
            send = self._paused_until
        self._tat = (tat if tat > send else send) + cost * interval
        return send - now

    def try_acquire(self, cost: int, now: float) -> bool:
        """Take ``cost`` units if they may go out now; commit nothing and return False if not."""
        if cost < 0:
            raise ValueError(f"cost must be >= 0, not {cost!r}")
        if self._unlimited:
            return self._paused_until <= now
        send = self._send_time(cost, now)
        if send > now:
            return False
        tat = self._tat
        self._tat = (tat if tat > now else now) + cost * self._interval
        return True

    def delay(self, cost: int, now: float) -> float:
        """The delay ``reserve(cost, now)`` would return, without reserving anything."""
        if self._unlimited:
            paused = self._paused_until
            return paused - now if paused > now else 0.0
        return self._send_time(cost, now) - now

    def throttle(self, until: float) -> None:
        """Send nothing before ``until``, then resume at ``rate`` with an empty bucket.

        The bucket is emptied so the sender does not fire a full burst at the gateway the
        moment its Retry-After expires. An earlier ``until`` than a pause in force is ignored.
        """
        if until > self._paused_until:
            self._paused_until = until
        if not self._unlimited:
            empty_at = until + self._burst * self._interval
            if empty_at > self._tat:
                self._tat = empty_at

    def penalize(self, retry_after: float, now: float) -> None:
        """The gateway answered "throttled, retry after ``retry_after`` seconds" at ``now``."""
        self.throttle(now + max(retry_after, 0.0))

    def statistics(self, now: float) -> GcraStats:
        """An immutable snapshot at ``now``."""
        if self._unlimited:
            tokens = math.inf if self._paused_until <= now else 0.0
            tat = now
        else:
            tat = max(self._tat, now)
            full_in = (tat - now) / self._interval
            tokens = min(max(self._burst - full_in, 0.0), float(self._burst))
            if self._paused_until > now:
                tokens = 0.0
        return GcraStats(
            rate=self._rate,
            burst=self._burst,
            tat=tat,
            tokens=tokens,
            paused_until=self._paused_until,
        )

    def __repr__(self) -> str:
        return f"Gcra(rate={self._rate!r}, burst={self._burst!r})"


class WindowStats(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of an ``InFlightWindow``. ``limit == 0`` means unlimited (``free`` is -1)."""

    limit: int
    in_flight: int
    free: int
    peak: int


class InFlightWindow:
    """Counts messages in flight against ``limit`` (0 = unlimited).

    A request for more than ``limit`` at once is admitted when nothing else is in flight,
    so an oversized batch waits for the window to drain instead of waiting forever.
    """

    __slots__ = ("_in_flight", "_limit", "_peak")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError(f"window limit must be >= 0 (0 = unlimited), not {limit!r}")
        self._limit = limit
        self._in_flight = 0
        self._peak = 0

    @property
    def limit(self) -> int:
        """The most messages in flight at once; 0 means unlimited."""
        return self._limit

    @property
    def in_flight(self) -> int:
        """Messages taken and not yet released."""
        return self._in_flight

    @property
    def free(self) -> int:
        """Messages that may be taken now; -1 when unlimited."""
        if self._limit == 0:
            return -1
        return max(self._limit - self._in_flight, 0)

    def can_take(self, n: int = 1) -> bool:
        """Whether ``n`` messages may go in flight now."""
        limit = self._limit
        return limit == 0 or self._in_flight + n <= limit or self._in_flight == 0

    def take(self, n: int = 1) -> None:
        """Put ``n`` messages in flight. Raises ``RuntimeError`` if ``can_take(n)`` is False."""
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n!r}")
        if not self.can_take(n):
            raise RuntimeError(
                f"window full: {self._in_flight} of {self._limit} in flight, asked for {n}"
            )
        self._in_flight += n
        if self._in_flight > self._peak:
            self._peak = self._in_flight

    def release(self, n: int = 1) -> None:
        """Mark ``n`` messages as answered. Raises ``RuntimeError`` on releasing too many."""
        if n < 0 or n > self._in_flight:
            raise RuntimeError(f"cannot release {n}: only {self._in_flight} in flight")
        self._in_flight -= n

    def statistics(self) -> WindowStats:
        """An immutable snapshot."""
        return WindowStats(
            limit=self._limit, in_flight=self._in_flight, free=self.free, peak=self._peak
        )

    def __repr__(self) -> str:
        return f"InFlightWindow(limit={self._limit!r}, in_flight={self._in_flight!r})"
