"""The outbox of action hooks: one deliverer per ``[hooks.NAME]``, reading the event record
through the hook's cursor (``HookStore``) and handing batches to its transport.

A deliverer holds its hook's lease (``claim_hook``, renewed every third of its ttl) so that
one process of all those running (``herald serve`` instances, ``herald worker``s) delivers
each hook. It reads the events after its cursor, keeps those the hook's filters take,
and sends them as a batch when ``batch_size`` have accumulated or the oldest has waited
``flush_interval`` seconds. Only after the transport took the batch does it move the
cursor (``advance_hook``): a process that dies in between sends the batch again, so
delivery is at least once, in event order, and consumers dedupe on ``event_id``.

A batch that fails is sent again after a pause drawn at random between 0 and an exponential
ceiling (``retry_initial``, doubling, at most ``retry_max``: "full jitter"), for up to
``max_age`` seconds since it first failed; then it goes to the dead letters
(``dead_letter``, shown by ``herald hooks status``, sent again by ``herald hooks replay``)
and the hook goes on. Each hook is a task of its own, with its own transport: one whose
endpoint is down holds up no other, and never the sending pipeline. A deliverer that
finds its lease lost (``advance_hook`` or a renewal says so) writes nothing more and goes
back to waiting for the lease. Memory is bounded: one batch per hook.

Time comes from an injected ``clock`` and ``sleep`` (tests use a fake pair).
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import anyio

from engine.config import Config, HookConfig
from engine.errors import InputError
from engine.events.messages import HookFilter, MessageEncoder
from engine.events.transports import make_transport
from engine.events.transports.base import Transport
from engine.mailings import Clock, Sleep
from engine.store.base import DeadLetter, EventPosition, HookState, HookStore

__all__ = [
    "CLAIM_RETRY", "LEASE_TTL", "POLL", "Deliverer", "DelivererStats", "Outbox", "Replayed",
    "backoff", "describe_error", "hook_owner", "replay",
]

logger = logging.getLogger(__name__)

#: Seconds a hook's lease lasts without renewal, renewed every third of it: after a
#: crash, another process takes the hook over within this. A hook whose sends may take
#: longer gets more (``Deliverer.ttl``), so that a send never outlasts the lease.
LEASE_TTL = 30.0
#: Seconds between reads of the record while there is nothing to send.
POLL = 0.25
#: Seconds between tries for a lease another process holds.
CLAIM_RETRY = 1.0
#: Seconds to wait after the store failed (the database away for a moment).
STORE_RETRY = 1.0
#: A deliverer whose filters drop every event moves its cursor past them at least every
#: this many batches' worth of events read.
_SKIP_BATCHES = 10
#: Seconds a send may overrun the transport's own ``timeout`` before it is cut off.
_SEND_SLACK = 5.0


def hook_owner() -> str:
    """This process's name in hooks' leases: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def backoff(attempt: int, initial: float, ceiling: float, draw: float) -> float:
    """Seconds to wait after the ``attempt``-th failure in a row (1, 2...): full jitter,
    ``draw`` (in [0, 1)) times ``initial * 2**(attempt-1)``, capped at ``ceiling``."""
    return draw * min(ceiling, initial * 2.0 ** min(attempt - 1, 64))


def describe_error(err: BaseException) -> str:
    """A failure's text for ``hooks status``: a ``DeliveryError``'s message, any other
    exception (a transport's bug) with its type."""
    from engine.events.transports.base import DeliveryError

    if isinstance(err, DeliveryError):
        return str(err) or "delivery failed"
    return f"{type(err).__name__}: {err}"


class DelivererStats(NamedTuple):
    """A snapshot of one deliverer."""

    hook: str
    #: This process holds the hook's lease.
    holding: bool
    #: The cursor as this process last wrote or read it (None before the first claim).
    cursor: EventPosition | None
    #: Messages waiting for the next send.
    pending: int
    #: Events and batches this process delivered, and dead letters it wrote.
    delivered: int
    batches: int
    dead_letters: int
    #: Failed sends in a row, the last one's text, and when the failing batch first failed.
    failures: int
    last_error: str
    failing_since: float | None


class _LeaseLost(Exception):
    """The hook's lease went to another process: write nothing more."""


class Deliverer:
    """Delivers hook ``name`` (``config``) from ``store`` through ``transport``, as
    ``owner``, until cancelled; see the module docstring.

    ``random`` draws the jitter; ``ttl``, ``poll`` and ``claim_retry`` are seconds."""

    def __init__(
        self, name: str, config: HookConfig, store: HookStore, transport: Transport, *,
        account_id: int, owner: str, clock: Clock = time.time, sleep: Sleep = anyio.sleep,
        random: Callable[[], float] = random.random, ttl: float = LEASE_TTL,
        poll: float = POLL, claim_retry: float = CLAIM_RETRY,
    ) -> None:
        self.name = name
        self.config = config
        self.store = store
        self.transport = transport
        self.owner = owner
        self._clock, self._sleep, self._random = clock, sleep, random
        # a send starting just before a renewal falls due ends before 2/3 of the ttl
        self.ttl = max(ttl, 2 * (config.timeout + _SEND_SLACK))
        self.poll = poll
        self.claim_retry = claim_retry
        self._filter = HookFilter(config)
        self._encoder = MessageEncoder(account_id)
        self._holding = False
        self._renew_at = 0.0
        self._cursor: EventPosition | None = None
        self._pending = 0
        self._delivered = self._batches = self._dead = 0
        self._failures = 0
        self._last_error = ""
        self._failing_since: float | None = None

    def statistics(self) -> DelivererStats:
        return DelivererStats(
            hook=self.name, holding=self._holding, cursor=self._cursor,
            pending=self._pending, delivered=self._delivered, batches=self._batches,
            dead_letters=self._dead, failures=self._failures, last_error=self._last_error,
            failing_since=self._failing_since)

    async def run(self) -> None:
        """Deliver until cancelled; then give the lease up and close the transport."""
        try:
            while True:
                try:
                    state = await self.store.claim_hook(self.name, self.owner, self.ttl)
                    if state is None:
                        self._holding = False
                        await self._sleep(self.claim_retry)
                        continue
                    self._holding = True
                    self._renew_at = self._clock() + self.ttl / 3
                    await self._deliver(state)
                except _LeaseLost:
                    logger.warning("hook %s: the lease went to another process", self.name)
                    self._holding = False
                except Exception as err:  # the store away: say so, claim again shortly
                    logger.warning("hook %s: %s", self.name, describe_error(err))
                    await self._sleep(STORE_RETRY)
        finally:
            with anyio.CancelScope(shield=True):
                if self._holding:
                    try:
                        await self.store.release_hook(self.name, self.owner)
                    except Exception as err:  # the store is going away too
                        logger.warning("hook %s: release: %s", self.name, err)
                    self._holding = False
                await self.transport.aclose()

    # -- delivering ----------------------------------------------------------------------

    async def _renew(self) -> None:
        """Renew the lease when a third of its ttl has passed; ``_LeaseLost`` if it went
        (or the cursor moved under us: another process had it meanwhile)."""
        now = self._clock()
        if now < self._renew_at:
            return
        state = await self.store.claim_hook(self.name, self.owner, self.ttl)
        if state is None or state.cursor != self._cursor:
            raise _LeaseLost
        self._renew_at = now + self.ttl / 3

    async def _deliver(self, state: HookState) -> None:
        """Deliver from ``state``'s cursor on, for as long as the lease is ours."""
        config, store, name, owner = self.config, self.store, self.name, self.owner
        size = config.batch_size
        cursor = read = self._cursor = state.cursor
        #: The batch: messages of the events in (cursor, read].
        pending: list[bytes] = []
        pending_since = 0.0
        #: A failure of the batch at the cursor, noted by an earlier owner.
        first_failed = state.failing_since
        skipped = 0
        while True:
            await self._renew()
            caught_up = True
            if len(pending) < size:
                limit = size - len(pending)
                events = await store.hook_events(read, limit)
                caught_up = len(events) < limit
                if events:
                    chosen = self._filter.select(events)
                    if chosen:
                        if not pending:
                            pending_since = self._clock()
                        pending += self._encoder.encode_all(chosen)
                        self._pending = len(pending)
                    skipped += len(events) - len(chosen)
                    read = events[-1].position
            now = self._clock()
            if pending and (len(pending) >= size or now - pending_since >= config.flush_interval):
                await self._send(pending, cursor, read, first_failed)
                cursor = self._cursor = read
                pending, skipped, first_failed = [], 0, None
                self._pending = 0
                continue
            if not pending and read != cursor and (caught_up or skipped >= _SKIP_BATCHES * size):
                # nothing the hook takes among them: move past, so a restart reads less
                if not await store.advance_hook(name, owner, read, 0):
                    raise _LeaseLost
                cursor = self._cursor = read
                skipped = 0
            if caught_up:
                wait = self.poll
                if pending:
                    wait = min(wait, pending_since + config.flush_interval - now)
                await self._sleep(max(wait, 0.0))

    async def _send(
        self, messages: list[bytes], after: EventPosition, upto: EventPosition,
        first_failed: float | None,
    ) -> None:
        """Deliver the batch of events (after, upto], retrying with backoff; after
        ``max_age`` of failures, dead-letter it. Either way the cursor ends at ``upto``."""
        config, store, name, owner = self.config, self.store, self.name, self.owner
        attempt = 0
        while True:
            try:
                with anyio.fail_after(config.timeout + _SEND_SLACK):
                    await self.transport.send(messages)
            except Exception as err:  # DeliveryError, a timeout, or a transport's bug
                error = ("no answer within"
                         f" {config.timeout + _SEND_SLACK:g} s" if isinstance(err, TimeoutError)
                         else describe_error(err))
            else:
                if not await store.advance_hook(name, owner, upto, len(messages)):
                    raise _LeaseLost
                if self._failures:
                    logger.warning("hook %s: delivering again after %d failure(s)", name,
                                   self._failures)
                self._delivered += len(messages)
                self._batches += 1
                self._failures, self._last_error, self._failing_since = 0, "", None
                return
            now = self._clock()
            if first_failed is None:
                first_failed = now
            attempt += 1
            self._failures += 1
            self._last_error, self._failing_since = error, first_failed
            if now - first_failed >= config.max_age:
                letter = DeadLetter(0, name, after, upto, len(messages), error, first_failed,
                                    now)
                if not await store.dead_letter(name, owner, letter):
                    raise _LeaseLost
                logger.warning("hook %s: gave up on %d event(s) after %g s of failures: %s",
                               name, len(messages), now - first_failed, error)
                self._dead += 1
                self._failures, self._last_error, self._failing_since = 0, "", None
                return
            if attempt == 1:
                logger.warning("hook %s: %s (retrying)", name, error)
            if not await store.fail_hook(name, owner, error, first_failed):
                raise _LeaseLost
            await self._pause(backoff(attempt, config.retry_initial, config.retry_max,
                                      self._random()))

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, renewing the lease on the way."""
        end = self._clock() + seconds
        while True:
            await self._renew()
            left = end - self._clock()
            if left <= 0:
                return
            await self._sleep(min(left, self.ttl / 3))


class Outbox:
    """A deliverer for each hook of ``config`` (``[hooks.NAME]``) on ``store``, all run
    by ``run`` until it is cancelled.

    ``transports``: how a hook's transport is made (``make_transport`` unless a test
    hands fakes); ``clock``, ``sleep`` as ``Deliverer``'s."""

    def __init__(
        self, store: HookStore, config: Config, *, owner: str | None = None,
        transports: Callable[[str, HookConfig], Transport] = make_transport,
        clock: Clock = time.time, sleep: Sleep = anyio.sleep,
        hooks: Mapping[str, HookConfig] | None = None,
    ) -> None:
        self.owner = owner or hook_owner()
        self.deliverers: dict[str, Deliverer] = {}
        for name, hook in (config.hooks if hooks is None else hooks).items():
            try:
                transport = transports(name, hook)
            except ValueError as err:  # a url or header the transport cannot take
                raise InputError(f"hooks.{name}: {err}") from err
            self.deliverers[name] = Deliverer(
                name, hook, store, transport, account_id=config.engine.account_id,
                owner=self.owner, clock=clock, sleep=sleep)

    def statistics(self) -> list[DelivererStats]:
        return [d.statistics() for d in self.deliverers.values()]

    async def run(self) -> None:
        """Every hook's deliverer, each in a task of its own, until cancelled."""
        async with anyio.create_task_group() as tg:
            for deliverer in self.deliverers.values():
                tg.start_soon(deliverer.run, name=f"hook {deliverer.name}")


class Replayed(NamedTuple):
    """What ``replay`` sent again."""

    #: Dead letters delivered (and dropped), and their events.
    letters: int
    letter_events: int
    #: Events of the record since ``since`` delivered again.
    since_events: int


async def replay(
    name: str, config: HookConfig, store: HookStore, transport: Transport, *,
    account_id: int, since: float | None = None,
    progress: Callable[[Replayed], None] | None = None,
) -> Replayed:
    """Send hook ``name``'s dead letters again through ``transport``, dropping each once
    delivered; with ``since`` (seconds since the epoch), then every event the hook takes
    from that time up to its cursor (what it delivered or gave up on: the events after
    it are its deliverer's to send). The hook's filters apply as configured now; batches
    of ``batch_size``. A failure raises ``DeliveryError`` with the letters not yet
    delivered kept."""
    select, encode = HookFilter(config).select, MessageEncoder(account_id).encode_all
    letters = events = again = 0

    async def deliver(after: EventPosition, upto: EventPosition | None) -> int:
        sent = 0
        while True:
            page = await store.hook_events(after, config.batch_size, upto=upto)
            if not page:
                return sent
            chosen = select(page)
            if chosen:
                await transport.send(encode(chosen))
                sent += len(chosen)
            after = page[-1].position

    for letter in await store.dead_letters(name):
        events += await deliver(letter.after, letter.upto)
        await store.drop_dead_letters([letter.id])
        letters += 1
        if progress is not None:
            progress(Replayed(letters, events, 0))
    if since is not None:
        state = next((s for s in await store.hook_states() if s.name == name), None)
        upto = state.cursor if state is not None else await store.events_at(time.time() + 1)
        start = await store.events_at(since)
        if start < upto:
            again = await deliver(start, upto)
    return Replayed(letters, events, again)
