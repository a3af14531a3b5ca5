"""Dispatch: reserved batches to gateways, at each sender's pace, with retries and failover.

Each sender has its own workers, stream of batches and retry rules, so a slow or failing
sender never blocks another; its pace (a GCRA in segments per second) and in-flight window
(in messages) are its ``SenderLimit``, shared with every other run on the sender. A batch
goes in parts of at most half its sender's ``burst`` in segments; one attempt of one
part::

    wait for room in the window ─▶ wait for the pace           (a stop here: still reserved)
      ─▶ journal 'sending' ─▶ driver.send_batch                (shielded, within the grace)
      ─▶ Submission (sans-I/O) decides each message's outcome
      ─▶ health fed to the router; a throttling answer pushes the whole sender back
      ─▶ settled: the part's recipients recorded, the rest of the batch stays journalled

So the journal says ``sending`` only while a request is, or may be, at a gateway: a run
stopped (Ctrl-C, SIGTERM, pause) while its batches wait for the pace leaves them reserved,
for ``resume`` to send or ``cancel`` to record ``cancelled``. A gateway that answered "not
taken" for everything pending takes the batch back to reserved while it waits to retry.

An attempt whose gateway certainly did not take it (connection refused) may fail over to
another sender of its virtual sender, chosen by the router with the failing one excluded;
its messages keep their ids. One that may have been taken (a timeout after the request was
written, a connection lost before the answer) is retried on the same sender, under the same
ids, only where the sender's ``on_ambiguous`` is "retry" (by default: where its driver
declares idempotent submission); otherwise its messages end ``unknown`` with the reason.
A throttled one waits for its own sender: moving a busy gateway's traffic onto the others
would only overload them.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from engine.config import RetryRules, SenderConfig
from engine.core.histogram import Histogram
from engine.core.prepare import Message
from engine.core.routing import VirtualSenderRouter
from engine.core.states import Outcome, State
from engine.core.submission import Compose, Submission
from engine.drivers import Driver
from engine.errors import GatewayError, TransientGatewayError
from engine.limits import LocalSenderLimit, SenderLimit
from engine.store.base import Store

__all__ = ["LAST_ERRORS", "Batch", "Dispatcher", "SenderRuntime", "SenderStats", "split_parts"]

#: Gateway errors a sender keeps, the newest, for the console's senders page.
LAST_ERRORS = 5


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
    """A sender as one run sees it: its driver, retry rules, stream of reserved batches and
    counters, and the pace and window it shares with every other run (``limit``)."""

    def __init__(
        self, name: str, config: SenderConfig, driver: Driver, limit: SenderLimit | None = None
    ) -> None:
        self.name = name
        #: An SMS sender's caller id; an email sender's envelope sender.
        self.caller_id = config.caller_id or ""
        #: An email sender's message builder (``engine.core.email_message.Composer``),
        #: set by an email run; None for SMS.
        self.compose: Compose | None = None
        self.driver = driver
        self.concurrency = config.concurrency
        self.retry: RetryRules = config.retry
        self.max_batch = max(1, driver.capabilities.max_batch)
        self.limit: SenderLimit = limit or LocalSenderLimit(
            config.rate, config.burst, config.window)
        #: Attempts that may have reached the gateway are retried (same ids), not recorded
        #: unknown: the sender's on_ambiguous, by default whether the driver is idempotent.
        self.retry_ambiguous = (
            config.on_ambiguous == "retry" if config.on_ambiguous is not None
            else driver.capabilities.idempotent
        )
        #: The most segments one part of a batch may cost (None: the rate is unlimited). A
        #: batch is paced in parts of at most half the ``burst`` (one message at least), so
        #: that no window sees more than rate + burst, and a part that went out late (a
        #: busy event loop) is caught up by the next ones from the other half.
        self.part_segments: int | None = (
            max(config.burst // 2, 1) if config.rate > 0 else None)
        send, receive = anyio.create_memory_object_stream[Batch](config.concurrency * 2)
        self.send: MemoryObjectSendStream[Batch] = send
        self.receive: MemoryObjectReceiveStream[Batch] = receive
        self.sent = self.failed = self.throttled = 0
        #: Seconds per gateway call.
        self.latency = Histogram()
        #: The newest gateway errors: (seconds since the epoch, what the gateway said).
        self.errors: deque[tuple[float, str]] = deque(maxlen=LAST_ERRORS)

    def statistics(self, now: float) -> SenderStats:
        g = self.limit.statistics()
        return SenderStats(
            name=self.name, sent=self.sent, failed=self.failed, throttled=self.throttled,
            in_flight=self.limit.in_flight,
            queued_batches=self.receive.statistics().current_buffer_used,
            rate=g.rate, tokens=g.tokens, paused_until=g.paused_until,
        )


def split_parts(messages: Sequence[Message], budget: int | None) -> list[list[Message]]:
    """Cut a batch into parts of at most ``budget`` segments (one message at least each)."""
    if budget is None or sum(m.segments for m in messages) <= budget:
        return [list(messages)]
    parts: list[list[Message]] = []
    part: list[Message] = []
    cost = 0
    for m in messages:
        if part and cost + m.segments > budget:
            parts.append(part)
            part, cost = [], 0
        part.append(m)
        cost += m.segments
    if part:
        parts.append(part)
    return parts


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
        #: When the first batch was handed to a driver (``time.perf_counter()``; None:
        #: none yet): the mailing log's ``first_submit_ms``.
        self.first_submit: float | None = None
        self.stopping = False
        self._deadline = math.inf
        self._sending_scopes: set[anyio.CancelScope] = set()
        self._waiting_scopes: set[anyio.CancelScope] = set()
        self._room = anyio.Event()

    def stop(self, deadline: float) -> None:
        """Start no new batch and stop waiting (for a window, the pace or a retry): what
        waits stays reserved. Attempts already handed to a gateway must end by
        ``deadline``."""
        self.stopping = True
        self._deadline = min(self._deadline, deadline)
        for scope in self._sending_scopes:
            scope.deadline = min(scope.deadline, self._deadline)
        for scope in self._waiting_scopes:
            scope.cancel()

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
        """Send a reserved batch, part by part (each at most its sender's burst), and record
        each part as it settles. Stopped, it leaves what no gateway has reserved."""
        n = len(batch.messages)
        self.in_flight += n
        try:
            if not batch.messages:
                await self.record(batch, [])
                return
            remaining = batch.messages
            settled = batch.settled
            while remaining:
                sender = self.senders[batch.sender]
                part, *rest = split_parts(remaining, sender.part_segments)
                remaining = [m for p in rest for m in p]
                after = await self._send_part(batch, part, remaining, settled)
                if after is None:
                    return  # stopped: the rest stays in the journal
                batch, settled = after, ()
        finally:
            self.in_flight -= n

    async def _send_part(
        self, batch: Batch, part: list[Message], remaining: list[Message],
        settled: tuple[tuple[Message, Outcome], ...],
    ) -> Batch | None:
        """Attempts until every message of ``part`` is settled, then record them (the
        batch's journal entry keeps ``remaining``). Returns the batch as it now stands (its
        sender may have changed); None when the run was stopped."""
        sender = self.senders[batch.sender]
        sub = Submission(part, sender.caller_id, retry_ambiguous=sender.retry_ambiguous,
                         compose=sender.compose, now=time.time())
        first_try = self.clock()
        tried = {sender.name}
        marked = False
        if sub.done:  # not one message could be written (an email's From or address)
            await self.record(batch._replace(sender=sender.name, messages=part,
                                             settled=settled), sub.results(), keep=remaining)
            return batch._replace(sender=sender.name)
        while True:
            taken = len(sub.pending)
            segments = sum(part[i].segments for i in sub.pending)
            # Room in the window, then the journal's mark, then the pace: the mark is
            # written before the turn is taken, so nothing is awaited between the grant and
            # the hand-over (a commit that stalls delays the part, it does not waste a turn).
            # A stop before the hand-over hands nothing over: the mark is taken back.
            if not await self._wait_room(sender, taken):
                await self._stopped(batch, sender, part, remaining, settled, sub)
                return None
            if not marked:
                with anyio.CancelScope(shield=True):
                    await self.store.mark_sending(self.run_id, batch.batch)
                marked = True
            if not await self._wait_pace(sender, segments):
                sender.limit.release_window(taken)
                await self._stopped(batch, sender, part, remaining, settled, sub)
                return None
            # Handing over: shielded, so what a gateway may have gets recorded, within the
            # grace a stop sets.
            error: BaseException | None = None
            with anyio.CancelScope(shield=True, deadline=self._deadline) as scope:
                self._sending_scopes.add(scope)
                try:
                    t0 = time.perf_counter()
                    if self.first_submit is None:
                        self.first_submit = t0
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
                    self._sending_scopes.discard(scope)
                    sender.limit.release_window(taken)
            if scope.cancelled_caught:  # the grace ran out before the gateway answered
                sub.interrupted()
                await self._stopped(batch, sender, part, remaining, settled, sub)
                return None
            now = self.clock()
            self._feed_health(sender, error, sub, now)
            if sub.done:
                await self.record(batch._replace(sender=sender.name, messages=part,
                                                 settled=settled),
                                  sub.results(), keep=remaining)
                return batch._replace(sender=sender.name)
            if not sub.maybe_taken:
                # the gateway answered "not taken" for everything pending: back to reserved
                await self.store.unmark_sending(self.run_id, batch.batch)
                marked = False
            policy = sender.retry.for_answer(error, sub)
            delay = policy.next_delay(sub.attempt, first_try, now, self.rng, sub.retry_after)
            if (isinstance(error, TransientGatewayError) and error.unsent
                    and not sub.throttled and not sub.maybe_taken):
                other = self.router.choose(part[0].phone, now, exclude=tried)
                if other not in tried:
                    # the gateway certainly did not take it: another sender may (same ids)
                    tried.add(other)
                    sender = self.senders[other]
                    sub.switch(sender.caller_id, sender.compose)
                    await self.store.move_batch(self.run_id, batch.batch, other)
                    batch = batch._replace(sender=other)
                    continue
            if delay is None:
                sub.give_up()
                await self.record(batch._replace(sender=sender.name, messages=part,
                                                 settled=settled),
                                  sub.results(), keep=remaining)
                return batch._replace(sender=sender.name)
            if not await self._wait(delay):
                await self._stopped(batch, sender, part, remaining, settled, sub)
                return None

    async def _wait_room(self, sender: SenderRuntime, n: int) -> bool:
        """Take room in the sender's window for ``n`` messages; False (and nothing taken)
        when the run stops meanwhile."""
        if self.stopping:
            return False
        with anyio.CancelScope() as scope:
            self._waiting_scopes.add(scope)
            try:
                await sender.limit.take_window(n)
            finally:
                self._waiting_scopes.discard(scope)
        return not scope.cancelled_caught

    async def _wait_pace(self, sender: SenderRuntime, segments: int) -> bool:
        """Wait until ``segments`` may go at the sender's pace, and take them; False (and
        nothing taken) when the run stops meanwhile."""
        if self.stopping:
            return False
        with anyio.CancelScope() as scope:
            self._waiting_scopes.add(scope)
            try:
                await sender.limit.acquire(segments)
            finally:
                self._waiting_scopes.discard(scope)
        return not scope.cancelled_caught

    async def _wait(self, delay: float) -> bool:
        """Sleep before a retry; False when the run stops meanwhile."""
        if self.stopping:
            return False
        with anyio.CancelScope() as scope:
            self._waiting_scopes.add(scope)
            try:
                await anyio.sleep(delay)
            finally:
                self._waiting_scopes.discard(scope)
        return not scope.cancelled_caught

    async def _stopped(
        self, batch: Batch, sender: SenderRuntime, part: list[Message],
        remaining: list[Message], settled: tuple[tuple[Message, Outcome], ...],
        sub: Submission,
    ) -> None:
        """The run stopped with ``part`` not settled: record what is, keep the rest in the
        journal, ``sending`` only if a gateway may have some of it."""
        done = sub.settled()
        keep = [part[i] for i in sub.pending] + remaining
        if not done and not settled and not sub.maybe_taken:
            # nothing to write but the mark: the batch is as it was reserved
            with anyio.CancelScope(shield=True):
                await self.store.unmark_sending(self.run_id, batch.batch)
            return
        outcomes = [o for o in sub.outcomes if o is not None]
        with anyio.CancelScope(shield=True):
            # one transaction: a kill between recording and re-marking must not leave
            # what a gateway may have looking merely reserved
            await self.record(
                batch._replace(sender=sender.name, messages=[part[i] for i in done],
                               settled=settled),
                outcomes, keep=keep, keep_sending=sub.maybe_taken,
            )

    def _feed_health(
        self, sender: SenderRuntime, error: BaseException | None, sub: Submission, now: float
    ) -> None:
        """Gateway faults count against a sender's health; throttling slows the sender down
        instead, and content rejections count for nothing."""
        if error is not None:
            sender.errors.append((time.time(), str(error) or type(error).__name__))
        if sub.throttled:
            sender.throttled += 1
            sender.limit.penalize(sub.retry_after or 1.0)  # the whole sender waits
        elif error is None:
            self.router.record_result(sender.name, True, now)
        elif isinstance(error, TransientGatewayError) and error.unsent:
            self.router.mark_unreachable(sender.name, now)
        elif isinstance(error, GatewayError):
            self.router.record_result(sender.name, False, now)

    async def record(
        self, batch: Batch, outcomes: Sequence[Outcome], *, keep: Sequence[Message] = (),
        keep_sending: bool = False,
    ) -> None:
        """Write the recipients of ``batch``; ``keep``: its messages left in the journal
        (still marked ``sending`` with ``keep_sending``)."""
        t0 = time.perf_counter()
        messages = batch.messages
        if batch.settled:
            messages = messages + [m for m, _ in batch.settled]
            outcomes = list(outcomes) + [o for _, o in batch.settled]
        await self.store.record(self.run_id, batch.batch, batch.sender, messages, outcomes,
                                keep=keep, keep_sending=keep_sending)
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
