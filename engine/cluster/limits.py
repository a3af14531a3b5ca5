"""Sender limits shared by every worker of a cluster: each sender's pace (GCRA) in Redis.

``RedisSenderLimits`` is the cluster's ``SenderLimits``: the same ``get(name, config)``, but
each sender's GCRA state lives in one Redis (or Valkey) hash, ``herald:gcra:PREFIX:SENDER``
(fields ``tat`` and ``paused``, in microseconds of the *server's* clock), and one Lua script
run on the server (``EVALSHA``) reserves a whole part's segments at once::

    async with RedisSenderLimits("redis://127.0.0.1:6379/0") as limits:
        limit = limits.get("acme", config.senders["acme"])
        await limit.take_window(len(part))       # this worker's window (see below)
        try:
            await limit.acquire(segments)        # the cluster-wide pace
            ...
        finally:
            limit.release_window(len(part))

The script answers 0 (taken) or the microseconds to wait; the arithmetic, burst included,
is ``engine.core.ratelimit.Gcra``'s, with the server's ``TIME`` as ``now``, so workers on
machines whose clocks disagree still share one pace. Within a process the waiters of a
sender queue in order (one at the head asks Redis, sleeps for the wait it was given and
asks again), as in ``LocalSenderLimit``. ``rate = 0`` (unlimited) makes no Redis call.
A part is taken only when it may go, never in advance: taking slots ahead (measured) kept
the average exactly at the rate but let parts whose worker woke late (an event loop busy
preparing a chunk) bunch up with the next at the gateway, past rate + burst.
``SEND_SLACK`` keeps a little of the burst back for the way from the grant to the
gateway.

``penalize`` (a gateway's "throttled, retry after") pauses this process at once and is
pushed to the sender's hash by the next call of this process (the waiter at the head is
woken for it), after which every worker's script answers "wait" until the pause is over.
An unlimited sender makes no Redis call, so its penalties stay in the process.

**The in-flight window is per worker**: each process keeps its own ``InFlightWindow`` of the
sender's ``window`` messages, as ``LocalSenderLimit`` does. A cluster of N workers may thus
have up to N × ``window`` messages in flight at one gateway; size ``window`` per worker.
(The pace, which is what gateways contract for, is cluster-wide.)

**Fail closed.** While Redis cannot be reached (connection refused or reset, a call taking
longer than ``CALL_TIMEOUT``, a server still loading), ``acquire`` grants nothing: it waits
and asks again, backing off from 0.05 to 1 s. ``unreachable_since`` (on the registry, on
each limit and in ``statistics()``) says since when; the logger ``herald.cluster`` warns
once when Redis goes and once when it comes back. A Redis restarted without persistence
has forgotten every ``tat``, so a sender may send one ``burst`` more at that moment.

The key prefix is ``prefix=`` if given, else ``$HERALD_REDIS_PREFIX``, else ``herald``: so
several clusters (or tests) may share one Redis, each under keys of its own.

A wait cancelled while its call is at the server may leave that call's segments taken and
unused: the sender then goes a little slower, never faster.

The coredis client belongs to the ``async with`` block (coredis 6 runs each connection's
reader in a task group the pool owns, which a parent task must enter), so the registry is
entered once per event loop, by the task that owns the worker; its connections are made
on first use. ``close()`` drops the client; the registry may be entered again afterwards
(a new event loop, a new client).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import anyio
import coredis
from coredis.exceptions import ClusterDownError, NoScriptError, ReadOnlyError, TryAgainError
from coredis.exceptions import ConnectionError as RedisConnectionError

from engine.config import SenderConfig
from engine.core.ratelimit import Gcra, GcraStats, InFlightWindow
from engine.limits import SEND_SLACK, SenderLimit, SenderLimits, WindowedLimit

__all__ = ["CALL_TIMEOUT", "RedisGcraStats", "RedisSenderLimit", "RedisSenderLimits"]

logger = logging.getLogger("herald.cluster")

#: Seconds one call to Redis may take before it counts as "unreachable".
CALL_TIMEOUT = 1.0
#: The backoff between two calls while Redis is unreachable (doubling from the first).
BACKOFF = (0.05, 1.0)
#: Shortest sleep between two looks at the bucket.
_MIN_SLEEP = 0.0001

#: Errors that mean "Redis is not there just now" (fail closed and retry); any other
#: error is a bug or a misconfiguration and propagates.
_UNREACHABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError, OSError, ReadOnlyError, ClusterDownError, TryAgainError,
)


#: KEYS[1]: the sender's hash. ARGV: microseconds per segment, burst (segments), cost
#: (segments; -1: only push the pause), pause to push (microseconds from now; 0: none).
#: Returns {wait, tat - now, paused - now, 1 if ever paused else 0} in microseconds (times
#: relative to the server's now); wait 0 means taken.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local push = tonumber(ARGV[4])
local got = redis.call('HMGET', KEYS[1], 'tat', 'paused')
local tat = tonumber(got[1]) or 0
local paused = tonumber(got[2]) or 0
local dirty = false
if push > 0 then
  local till = now + push
  if till > paused then paused = till; dirty = true end
  local empty = till + burst * interval
  if empty > tat then tat = empty; dirty = true end
end
local wait = 0
if cost >= 0 then
  local send = tat
  if cost <= burst then send = tat - (burst - cost) * interval end
  if send < now then send = now end
  if send < paused then send = paused end
  if send > now then
    wait = math.max(1, math.ceil(send - now))
  else
    if tat < now then tat = now end
    tat = tat + cost * interval
    dirty = true
  end
end
if dirty then
  redis.call('HSET', KEYS[1], 'tat', string.format('%.3f', tat),
             'paused', string.format('%.0f', paused))
  local last = math.max(tat, paused)
  redis.call('PEXPIRE', KEYS[1], math.max(math.ceil((last - now) / 1000), 0) + 1000)
end
local since = 0
if paused > 0 then since = math.floor(paused - now) end
return {wait, math.floor(math.max(tat - now, 0)), since, paused > 0 and 1 or 0}
"""


class RedisGcraStats(GcraStats, frozen=True, kw_only=True):
    """``GcraStats`` of a pace kept in Redis, as last seen by this process.

    ``unreachable_since``: when (epoch seconds) Redis stopped answering, ``None`` while it
    answers; while it is set, the sender sends nothing from this process.
    """

    unreachable_since: float | None = None


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class _Link:
    """One entered coredis client and whether the server answers."""

    def __init__(self, client: coredis.Redis[bytes], url: str) -> None:
        self.client = client
        self.sha = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()
        self.url = url
        self.down_since: float | None = None
        self.calls = 0

    async def call(self, key: str, args: list[int | float]) -> list[int] | None:
        """The script's answer, or None (Redis unreachable; logged once per outage)."""
        try:
            with anyio.fail_after(CALL_TIMEOUT):
                try:
                    reply: Any = await self.client.evalsha(self.sha, keys=[key], args=args)
                except NoScriptError:  # a new or restarted server: load it, once
                    await self.client.script_load(GCRA_SCRIPT)
                    reply = await self.client.evalsha(self.sha, keys=[key], args=args)
        except _UNREACHABLE as error:
            if self.down_since is None:
                self.down_since = time.time()
                logger.warning(
                    "Redis at %s is unreachable (%s: %s): senders paced there send nothing "
                    "until it answers again", _redacted(self.url), type(error).__name__, error)
            return None
        self.calls += 1
        if self.down_since is not None:
            logger.warning("Redis at %s answers again after %.1f s of outage",
                           _redacted(self.url), time.time() - self.down_since)
            self.down_since = None
        return [int(v) for v in reply]


class RedisSenderLimit(WindowedLimit):
    """A ``SenderLimit`` whose pace lives in Redis (shared by every worker) and whose
    in-flight window is this process's own (see the module docstring)."""

    def __init__(
        self, owner: RedisSenderLimits, name: str, rate: float, burst: int, window: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._local = Gcra(rate, burst)  # validates; keeps this process's pauses
        self.window = InFlightWindow(window)
        self.name = name
        self.key = f"herald:gcra:{owner.prefix}:{name}"
        self._owner = owner
        self._clock = clock
        self._unlimited = rate == 0
        self._interval_us = 0.0 if self._unlimited else 1e6 / rate
        #: The burst granted on Redis's clock: the sender's, less what ``SEND_SLACK`` of
        #: its rate comes to. A part reaches the gateway a little after its grant, and
        #: parts of several workers delayed by different amounts bunch up there; the
        #: margin keeps what the gateway sees in any window within rate + burst.
        self._grant_burst = max(0, burst - math.ceil(rate * SEND_SLACK))
        self._paused_until = 0.0  # this process's pause (monotonic)
        self._push_until = 0.0    # a pause not yet pushed to Redis (monotonic)
        #: the last answer: (when, tat - now, paused - now or None if never paused)
        self._seen: tuple[float, int, int | None] | None = None
        self._lock = anyio.Lock(fast_acquire=True)
        self._nap: anyio.CancelScope | None = None

    @property
    def rate(self) -> float:
        return self._local.rate

    @property
    def burst(self) -> int:
        return self._local.burst

    @property
    def unreachable_since(self) -> float | None:
        """When Redis stopped answering (epoch seconds), None while it answers."""
        return self._owner.unreachable_since

    @property
    def unreachable(self) -> bool:
        return self._owner.unreachable_since is not None

    async def acquire(self, segments: int) -> None:
        if segments < 0:
            raise ValueError(f"segments must be >= 0, not {segments!r}")
        clock = self._clock
        async with self._lock:
            backoff = BACKOFF[0]
            while True:
                now = clock()
                push_until = self._push_until
                if self._unlimited or push_until <= now:
                    pause = self._paused_until - now
                    if pause > 0:
                        await self._sleep(pause)
                        continue
                    if self._unlimited:
                        return
                push_us = math.ceil((push_until - now) * 1e6) if push_until > now else 0
                reply = await self._owner._call(
                    self.key, [self._interval_us, self._grant_burst, segments, push_us])
                if reply is None:
                    await self._sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF[1])
                    continue
                backoff = BACKOFF[0]
                if push_us and self._push_until == push_until:
                    self._push_until = 0.0
                wait, tat_us, paused_us, ever_paused = reply
                self._seen = (clock(), tat_us, paused_us if ever_paused else None)
                if wait == 0:
                    return
                await self._sleep(max(wait / 1e6, _MIN_SLEEP))

    async def _sleep(self, seconds: float) -> None:
        """Sleep at the head of the queue; ``penalize`` cuts it short."""
        with anyio.CancelScope() as scope:
            self._nap = scope
            try:
                await anyio.sleep(seconds)
            finally:
                self._nap = None

    def penalize(self, retry_after: float) -> None:
        now = self._clock()
        self._local.penalize(retry_after, now)
        until = now + max(retry_after, 0.0)
        if until > self._paused_until:
            self._paused_until = until
        if not self._unlimited and until > self._push_until:
            self._push_until = until
            if self._nap is not None:
                self._nap.cancel()  # the head pushes it now rather than after its sleep

    def statistics(self) -> RedisGcraStats:
        now = self._clock()
        down = self._owner.unreachable_since
        if self._unlimited or self._seen is None:
            s = self._local.statistics(now)
            tokens = 0.0 if down is not None and not self._unlimited else s.tokens
            return RedisGcraStats(rate=s.rate, burst=s.burst, tat=s.tat, tokens=tokens,
                                  paused_until=s.paused_until, unreachable_since=down)
        seen, tat_us, paused_us = self._seen
        tat = max(seen + tat_us / 1e6, now)
        paused = max(seen + paused_us / 1e6 if paused_us is not None else 0.0,
                     self._paused_until)
        tokens = min(max(self.burst - (tat - now) * self.rate, 0.0), float(self.burst))
        if paused > now or down is not None:
            tokens = 0.0
        return RedisGcraStats(rate=self.rate, burst=self.burst, tat=tat, tokens=tokens,
                              paused_until=paused, unreachable_since=down)

    @property
    def grant_burst(self) -> int:
        """The burst Redis grants: ``burst`` less ``SEND_SLACK`` of the rate."""
        return self._grant_burst

    def __repr__(self) -> str:
        return f"RedisSenderLimit({self.key!r}, rate={self.rate!r}, burst={self.burst!r})"


class RedisSenderLimits(SenderLimits):
    """The cluster's registry of sender limits: each sender's pace in Redis at ``url``,
    under keys ``herald:gcra:PREFIX:SENDER``; same ``get(name, config)`` as ``SenderLimits``.

    Enter it (``async with limits:``) in the task that owns the worker before any limit
    is used; it holds one coredis client for that event loop, whose connections are made
    on first use, and ``close()`` (or leaving the block) drops it.

    The window stays per worker: each process admits ``window`` messages in flight for a
    sender, so N workers may have N × ``window`` in flight at one gateway between them.
    """

    def __init__(
        self, url: str, *, prefix: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(clock)
        self.url = url
        #: ``prefix=``, else ``$HERALD_REDIS_PREFIX``, else ``herald`` (see the module doc)
        self.prefix = prefix or os.environ.get("HERALD_REDIS_PREFIX") or "herald"
        self._link: _Link | None = None

    def make(self, name: str, config: SenderConfig) -> SenderLimit:
        return RedisSenderLimit(self, name, config.rate, config.burst, config.window,
                                self._clock)

    @property
    def unreachable_since(self) -> float | None:
        """When Redis stopped answering (epoch seconds); None while it answers."""
        return self._link.down_since if self._link is not None else None

    @property
    def unreachable(self) -> bool:
        return self.unreachable_since is not None

    @property
    def calls(self) -> int:
        """Script calls answered since the client was made."""
        return self._link.calls if self._link is not None else 0

    async def _call(self, key: str, args: list[int | float]) -> list[int] | None:
        if self._link is None:
            raise RuntimeError(
                "RedisSenderLimits is not open: enter it (`async with limits:`) first")
        return await self._link.call(key, args)

    async def __aenter__(self) -> Self:
        if self._link is not None:
            raise RuntimeError("RedisSenderLimits is already open")
        client: coredis.Redis[bytes] = coredis.Redis.from_url(
            self.url, connect_timeout=CALL_TIMEOUT, stream_timeout=CALL_TIMEOUT)
        await client.__aenter__()
        self._link = _Link(client, self.url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Drop the client (its connections close); the limits made so far stay usable
        once the registry is entered again."""
        link, self._link = self._link, None
        if link is not None:
            # no cancel scope of ours around it: the pool's task group exits in the scope
            # it was entered in
            await link.client.__aexit__(None, None, None)
