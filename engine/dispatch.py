"""Dispatch: reserved batches to gateways, at each sender's pace, with retries and failover.

Each sender has its own workers, stream of batches, GCRA rate limiter (in segments per
second, reserved per batch), in-flight window (in messages) and retry rules, so a slow or
failing sender never blocks another. One attempt of one batch::

    wait for room in the window ─▶ reserve segments on the GCRA, sleep the delay
      ─▶ driver.send_batch ─▶ Submission (sans-I/O) decides each message's outcome
      ─▶ health fed to the router; a throttling answer pushes the whole sender back

A batch whose gateway certainly did not take it (connection refused) may fail over to another
sender of its virtual sender, chosen by the router with the failing one excluded; its messages
keep their ids. One that may have been taken (a timeout) is retried on the same sender only,
where an idempotent gateway recognises the ids. A throttled one waits for its own sender:
moving a busy gateway's traffic onto the others would only overload them.

Once a batch is marked ``sending`` it must end recorded, even while the run is being
stopped: the attempt runs shielded, with the grace deadline ``stop()`` sets.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from engine.config import RetryRules, SenderConfig
from engine.core.histogram import Histogram
from engine.core.prepare import Message
from engine.core.ratelimit import Gcra, InFlightWindow
from engine.core.routing import VirtualSenderRouter
from engine.core.states import Outcome, State
from engine.core.submission import Submission
from engine.drivers import Driver
from engine.errors import GatewayError, TransientGatewayError
from engine.store.base import Store

__all__ = ["Batch", "Dispatcher", "SenderRuntime", "SenderStats"]


class Batch(NamedTuple):
    """Messages for one sender, journalled together; ``batch`` is the first seq."""

    batch: int
    sender: str
    messages: list[Message]
    #: Journalled messages already settled without sending (resume: profile deleted).
    settled: tuple[tuple[Message, Outcome], ...] = ()


class SenderStats(msgspec.Struct, frozen=True):
    name: str
    sent: int
    failed: int
    throttled: int
    in_flight: int
    queued_batches: int
    rate: float
    tokens: float
    paused_until: float


class SenderRuntime:
    """A sender's driver, pace, window, retry rules and stream of reserved batches."""

    def __init__(self, name: str, config: SenderConfig, driver: Driver) -> None:
        self.name = name
        self.caller_id = config.caller_id
        self.driver = driver
        self.concurrency = config.concurrency
        self.retry: RetryRules = config.retry
        self.max_batch = max(1, driver.capabilities.max_batch)
        self.gcra = Gcra(config.rate, config.burst)
        self.window = InFlightWindow(config.window)
        self._room = anyio.Event()
        send, receive = anyio.create_memory_object_stream[Batch](config.concurrency * 2)
        self.send: MemoryObjectSendStream[Batch] = send
        self.receive: MemoryObjectReceiveStream[Batch] = receive
        self.sent = self.failed = self.throttled = 0
        #: Seconds per gateway call.
        self.latency = Histogram()

    async def take_window(self, n: int) -> None:
        while not self.window.can_take(n):
            await self._room.wait()
        self.window.take(n)

    def release_window(self, n: int) -> None:
        self.window.release(n)
        self._room.set()
        self._room = anyio.Event()

    async def pace(self, segments: int, clock: Callable[[], float]) -> None:
        """Wait until ``segments`` may go out at this sender's rate."""
        delay = self.gcra.reserve(segments, clock())
        while delay > 0:
            await anyio.sleep(delay)
            # a throttling answer that came in meanwhile pushes everything back
            delay = self.gcra.paused_until - clock()

    def statistics(self, now: float) -> SenderStats:
        g = self.gcra.statistics(now)
        return SenderStats(
            name=self.name, sent=self.sent, failed=self.failed, throttled=self.throttled,
            in_flight=self.window.in_flight,
            queued_batches=self.receive.statistics().current_buffer_used,
            rate=g.rate, tokens=g.tokens, paused_until=g.paused_until,
        )


class Dispatcher:
    """Sends reserved batches and records their outcomes."""

    def __init__(
        self,
        *,
        store: Store,
        run_id: int,
        senders: dict[str, SenderRuntime],
        router: VirtualSenderRouter,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.senders = senders
        self.router = router
        self.clock = clock
        self.rng = rng or random.Random()
        self.results = {"sent": 0, "failed": 0, "unknown": 0}
        self.in_flight = 0
        self.busy = {"dispatch": 0.0, "record": 0.0}
        self.stopping = False
        self._deadline = math.inf
        self._sending_scopes: set[anyio.CancelScope] = set()
        self._room = anyio.Event()

    def stop(self, deadline: float) -> None:
        """Start no new batch; attempts under way must end by ``deadline``."""
        self.stopping = True
        self._deadline = min(self._deadline, deadline)
        for scope in self._sending_scopes:
            scope.deadline = min(scope.deadline, self._deadline)

    async def worker(
        self, sender: SenderRuntime, batches: MemoryObjectReceiveStream[Batch]
    ) -> None:
        async with batches:
            async for batch in batches:
                self._took_one()
                if self.stopping:
                    return  # it stays reserved in the journal
                await self.dispatch(batch)

    @property
    def room(self) -> anyio.Event:
        """Set the next time a worker takes a batch off a queue (there is room again)."""
        return self._room

    def _took_one(self) -> None:
        self._room.set()
        self._room = anyio.Event()

    async def dispatch(self, batch: Batch) -> None:
        n = len(batch.messages)
        self.in_flight += n
        try:
            with anyio.CancelScope(shield=True, deadline=self._deadline) as scope:
                self._sending_scopes.add(scope)
                try:
                    await self.store.mark_sending(self.run_id, batch.batch)
                    sender, outcomes = await self._send(batch)
                finally:
                    self._sending_scopes.discard(scope)
                if scope.cancelled_caught:
                    return  # grace ran out: the journal says 'sending'; resume settles it
                await self.record(batch._replace(sender=sender), outcomes)
        finally:
            self.in_flight -= n

    async def _send(self, batch: Batch) -> tuple[str, list[Outcome]]:
        """Attempts until every message is settled; returns the sender that ended with it."""
        messages = batch.messages
        if not messages:
            return batch.sender, []
        sender = self.senders[batch.sender]
        sub = Submission(messages, sender.caller_id)
        segments = sum(m.segments for m in messages)
        first_try = self.clock()
        tried = {sender.name}
        while True:
            taken = len(sub.pending)
            await sender.take_window(taken)
            try:
                await sender.pace(segments, self.clock)
                t0 = time.perf_counter()
                error: BaseException | None = None
                try:
                    results = await sender.driver.send_batch(sub.next_attempt())
                except Exception as err:
                    error = err
                    sub.failed(err)
                else:
                    sub.answered(results)
                elapsed = time.perf_counter() - t0
                self.busy["dispatch"] += elapsed
                sender.latency.observe(elapsed)
            finally:
                sender.release_window(taken)
            now = self.clock()
            self._feed_health(sender, error, sub, now)
            if sub.done:
                return sender.name, sub.results()
            policy = sender.retry.for_answer(error, sub)
            delay = policy.next_delay(sub.attempt, first_try, now, self.rng, sub.retry_after)
            if isinstance(error, TransientGatewayError) and error.unsent and not sub.throttled:
                other = self.router.choose(messages[0].phone, now, exclude=tried)
                if other not in tried:
                    # the gateway certainly did not take it: another sender may (same ids)
                    tried.add(other)
                    sender = self.senders[other]
                    sub.switch(sender.caller_id)
                    await self.store.move_batch(self.run_id, batch.batch, other)
                    continue
            if delay is None:
                sub.give_up()
                return sender.name, sub.results()
            await anyio.sleep(delay)

    def _feed_health(
        self, sender: SenderRuntime, error: BaseException | None, sub: Submission, now: float
    ) -> None:
        """Gateway faults count against a sender's health; throttling slows the sender down
        instead, and content rejections count for nothing."""
        if sub.throttled:
            sender.throttled += 1
            sender.gcra.penalize(sub.retry_after or 1.0, now)  # the whole sender waits
        elif error is None:
            self.router.record_result(sender.name, True, now)
        elif isinstance(error, TransientGatewayError) and error.unsent:
            self.router.mark_unreachable(sender.name, now)
        elif isinstance(error, GatewayError):
            self.router.record_result(sender.name, False, now)

    async def record(self, batch: Batch, outcomes: Sequence[Outcome]) -> None:
        t0 = time.perf_counter()
        messages = batch.messages
        if batch.settled:
            messages = messages + [m for m, _ in batch.settled]
            outcomes = list(outcomes) + [o for _, o in batch.settled]
        await self.store.record(self.run_id, batch.batch, batch.sender, messages, outcomes)
        sent = failed = 0
        for o in outcomes:
            if o.state == State.SENT:
                sent += 1
            elif o.state == State.FAILED:
                failed += 1
        results = self.results
        results["sent"] += sent
        results["failed"] += failed
        results["unknown"] += len(outcomes) - sent - failed
        sender = self.senders.get(batch.sender)
        if sender is not None:
            sender.sent += sent
            sender.failed += failed
        self.busy["record"] += time.perf_counter() - t0
