"""The scheduler: launches mailings when they are due, in whichever long-running process
is up (``herald serve``'s MailingService, ``herald worker``), exactly one of them each time.

::

    loop:  wait until store.next_due() (at most POLL seconds; woken early by wake())
           each due mailing:
             scheduled → catch_up (the latest due time passed, how many before it missed,
                         the next one) → set_launch(expect=its next launch, next, state)
                         → the process whose set_launch won hands it to ``start``
             waiting   → a multivariate mailing whose wait ended: once its test runs are
                         over (re-armed a second later while one still runs, on a
                         cluster), set_launch(..., state done) → ``start`` the winner
           each pending step of a launch under way (store.pending_steps: its run over,
           its time come): the next test, the next wave, the end of the tests
             run       → take_step → ``start`` it (Launch(step=...)): carried on there
             wave      → its time read from the finished wave's counts: not yet → kept
                         again with that time; come → take_step → ``start``; nobody
                         left → the phase's end
             wait      → take_step → the tests' end (``end_tests``): the wait begins,
                         which the ``waiting`` case above ends

``start`` runs the launch elsewhere (in the background of the service; on a cluster,
``queue_launch`` hands its runs to the workers as chunks) and returns at once, so one
long launch never delays the next. Time comes from an injected clock and sleep: tests run
on a fake one.

The steps are what makes a launch outlast its process: each run of a launch, as it
starts, keeps the step that follows it in the store (``engine.mailings.run_steps``); the
process running it takes it when it comes due, and if that process is gone, whichever
scheduler runs next does (``take_step``: exactly one). On a cluster every step is a
scheduler's: ``queue_launch`` queues a wave's runs and keeps the next wave's step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio
import msgspec

from engine.cluster.control import notify
from engine.mailings import (
    Clock,
    Launch,
    Sleep,
    default_timezone,
    end_tests,
    first_wave,
    next_launch,
    next_window,
    phase_end,
    test_specs,
    wave_end,
    wave_time,
    winner_spec,
)
from engine.pipeline import send_times
from engine.runner import Herald
from engine.store.models import Mailing, MailingState, Run, RunSpec, Schedule, Step

__all__ = ["POLL", "Scheduler", "Start", "catch_up", "queue_launch", "queue_phase",
           "queue_run"]

logger = logging.getLogger(__name__)

#: Longest sleep between looks at the store (a launch made by another process is seen
#: within this).
POLL = 1.0
#: Seconds before looking again at a waiting mailing whose test runs are still going on.
RECHECK = 1.0
#: Missed launches counted at most (a minutely schedule left for a year stops there).
MAX_MISSED = 10_000

#: Runs a launch the scheduler took (returns once it is under way).
Start = Callable[[Mailing, Launch], Awaitable[None]]


def catch_up(
    schedule: Schedule | None, due: float, now: float, default_timezone: str = "UTC"
) -> tuple[float, int, float | None]:
    """A launch due at ``due``, looked at ``now``: (the latest due time at or before now,
    the due times before it that were missed, the next launch after now or None). Missed
    launches run once, as the latest."""
    if schedule is None:
        return due, 0, None
    missed = 0
    nxt = next_launch(schedule, due, default_timezone)
    while nxt is not None and nxt <= now and missed < MAX_MISSED:
        due, missed = nxt, missed + 1
        nxt = next_launch(schedule, due, default_timezone)
    if nxt is not None and nxt <= now:  # past MAX_MISSED: skip to now
        nxt = next_launch(schedule, now, default_timezone)
    return due, missed, nxt


class Scheduler:
    """Takes due launches from the store and hands each one this process won to
    ``start``; see the module docstring."""

    def __init__(
        self, herald: Herald, start: Start, *, clock: Clock = time.time,
        sleep: Sleep = anyio.sleep, poll: float = POLL,
    ) -> None:
        self.herald = herald
        self.start = start
        self.clock = clock
        self.sleep = sleep
        self.poll = poll
        self._wake = anyio.Event()
        #: Launches this scheduler took: (mailing id, due time or None for a winner).
        self.taken: list[tuple[int, float | None]] = []

    def wake(self) -> None:
        """Look at the store now: a mailing was created or changed in this process."""
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            self._wake = anyio.Event()  # a wake() during the tick cuts the nap short
            try:
                await self.tick()
                soonest = await self.herald.store.next_due()
            except Exception:  # the store away for a moment: look again after the nap
                logger.exception("scheduler: could not look at due mailings")
                soonest = None
            now = self.clock()
            delay = self.poll if soonest is None or soonest <= now else min(
                self.poll, soonest - now)
            await self._nap(delay)

    async def _nap(self, delay: float) -> None:
        if self._wake.is_set():
            return
        async with anyio.create_task_group() as tg:
            async def sleeper() -> None:
                await self.sleep(delay)
                tg.cancel_scope.cancel()

            async def waker() -> None:
                await self._wake.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(sleeper)
            tg.start_soon(waker)

    async def tick(self) -> list[tuple[int, float | None]]:
        """Take every launch and launch step due now; the ones this process took
        (mailing id, due time; None for a multivariate mailing's winner; a step's time,
        None if it had none)."""
        store, now = self.herald.store, self.clock()
        taken: list[tuple[int, float | None]] = []
        for mailing in await store.due_mailings(now):
            if mailing.resource not in self.herald.config.resources:
                continue  # its resource left this process's config: another may run it
            try:
                if mailing.state == "waiting":
                    if await self._end_wait(mailing, now):
                        taken.append((mailing.id, None))
                elif await self._take(mailing, now):
                    taken.append((mailing.id, mailing.next_launch))
            except Exception:
                logger.exception("scheduler: mailing %s could not be launched", mailing.id)
        for step in await store.pending_steps(now):
            try:
                if await self._take_step(step, now):
                    taken.append((step.mailing_id, step.at))
            except Exception:
                logger.exception("scheduler: mailing %s's next step could not be taken",
                                 step.mailing_id)
        self.taken += taken
        return taken

    async def _take_step(self, step: Step, now: float) -> bool:
        """Take a pending step of a launch under way and do it; whether this process
        did (another may have taken it, or a next wave's time has not come)."""
        store = self.herald.store
        mailing = await store.get_mailing(step.mailing_id)
        if mailing.resource not in self.herald.config.resources:
            return False  # its resource left this process's config: another may run it
        if mailing.state == "cancelled":
            await store.drop_steps(mailing.id)
            return False
        kind = step.kind
        if kind == "wave":
            state, soonest = await wave_time(self.herald, mailing, step.spec)
            if state == "ended":  # a run of the wave was cancelled or failed
                await store.drop_steps(mailing.id)
                return False
            if state == "going":  # on a cluster: another run of the wave still goes on
                return False
            if soonest is not None and soonest > now:
                # its time is known now: kept again with it (taken first: only one does)
                if await store.take_step(step.id):
                    await store.add_step(mailing.id, step.spec, after_run=step.after_run,
                                         at=soonest, kind="wave")
                return False
            if soonest is None:  # nobody left: the phase is over
                if not await store.take_step(step.id):
                    return False
                if phase_end(mailing, step.spec) is None:
                    return False  # the launch is over: nothing to do
                await end_tests(self.herald, mailing, now)
                return True
        if not await store.take_step(step.id):
            return False  # another process took it
        if kind == "wait":
            await end_tests(self.herald, mailing, now)
            return True
        await self.start(mailing, Launch(step=step))
        return True

    async def _take(self, mailing: Mailing, now: float) -> bool:
        expect = mailing.next_launch
        assert expect is not None
        due, missed, nxt = catch_up(mailing.options.schedule, expect, now,
                                    default_timezone(self.herald))
        state: MailingState = "scheduled" if nxt is not None else (
            "waiting" if mailing.kind == "multivariate" else "done")
        if not await self.herald.store.set_launch(mailing.id, expect=expect,
                                                  next_launch=nxt, state=state):
            return False  # another process took it
        if missed:
            logger.warning("mailing %s: %d launch(es) missed while nothing ran; running"
                           " the latest once", mailing.id, missed)
        await self.start(mailing, Launch(due=due, missed=missed))
        return True

    async def _end_wait(self, mailing: Mailing, now: float) -> bool:
        """A multivariate mailing's wait ended: take its winner phase, once its tests are
        over and ``wait`` seconds have passed since the last ended."""
        store, expect = self.herald.store, mailing.next_launch
        tests = [r for r in await store.mailing_runs(mailing.id) if r.spec.phase == "test"]
        if any(r.status in ("running", "interrupted") for r in tests) or not tests:
            await store.set_launch(mailing.id, expect=expect, next_launch=now + RECHECK)
            return False
        if self.herald.config.cluster is not None:
            # the workers' tests: the wait counts from the last one's end (what
            # queue_launch set was a lower bound); in one process launch() set it so
            ended = max(r.finished_at or r.started_at for r in tests)
            at = ended + (mailing.options.wait or 0.0)
            if expect is not None and at > expect and at > now:
                await store.set_launch(mailing.id, expect=expect, next_launch=at)
                return False
        if not await store.set_launch(mailing.id, expect=expect, next_launch=None,
                                      state="done"):
            return False
        await self.start(mailing, Launch(winner=True))
        return True


async def queue_launch(
    herald: Herald, mailing: Mailing, launch: Launch, *, now: float | None = None,
) -> list[Run]:
    """A launch on a cluster: its runs made and cut into chunks for the workers (each
    notified), not run here. A multivariate mailing's test runs are queued together;
    its wait then ends in whichever scheduler sees its tests over (``Scheduler``). In
    waves (local time, quiet hours), each wave's runs are queued together and the next
    wave kept as a step (``queue_phase``); ``launch.step``: such a step, taken."""
    store = herald.store
    now = time.time() if now is None else now
    step = launch.step
    if step is not None:
        spec = step.spec
        if step.kind == "wave":
            _, soonest = await wave_time(herald, mailing, spec)
            spec = next_window(spec, soonest if soonest is not None else now, now)
        # the whole wave: a multivariate mailing's every variant
        specs = [msgspec.structs.replace(s, window=spec.window, wave=spec.wave)
                 for s in test_specs(mailing, spec.due, spec.missed)] \
            if spec.phase == "test" else [spec]
        return await queue_phase(herald, mailing, specs, now=now)
    if launch.winner:
        specs = [await winner_spec(herald, mailing)]
    elif mailing.kind == "multivariate":
        specs = test_specs(mailing, launch.due, launch.missed)
    else:
        specs = [RunSpec(due=launch.due, missed=launch.missed)]
    runs = await queue_phase(herald, mailing, specs, now=now)
    if mailing.kind == "multivariate" and not launch.winner \
            and send_times(herald.config, mailing, 0.0) is None:
        options = mailing.options
        if options.test_share == 100:
            await store.set_mailing_state(mailing.id, "done")
        elif options.winner != "manual":  # a lower bound: the tests' end counts
            await store.set_launch(mailing.id, expect=None, state="waiting",
                                   next_launch=time.time() + (options.wait or 0.0))
    return runs


async def queue_phase(
    herald: Herald, mailing: Mailing, specs: list[RunSpec], *, now: float | None = None,
) -> list[Run]:
    """Queue one wave of a phase on a cluster (``specs``; not yet in waves: its first,
    where the mailing has local time or quiet hours) and keep the step that follows it:
    the next wave, or the tests' end, due once its runs are over (``Scheduler``)."""
    now = time.time() if now is None else now
    in_waves = send_times(herald.config, mailing, 0.0) is not None
    if in_waves and specs and specs[0].window is None:
        specs = first_wave(specs, now)
    runs = [await queue_run(herald, mailing, spec) for spec in specs]
    if in_waves and runs:
        nxt = wave_end(mailing, specs[-1])
        if nxt is not None:
            await herald.store.add_step(mailing.id, nxt[1], after_run=runs[-1].id,
                                        kind=nxt[0])
    return runs


async def queue_run(herald: Herald, mailing: Mailing, spec: RunSpec) -> Run:
    """A new run of the mailing, in chunks for the cluster's workers, who are told."""
    cluster = herald.config.cluster
    assert cluster is not None
    store = herald.store
    run = await store.start_run(mailing.id, spec)
    chunks = await store.create_chunks(run.id, mailing.source, size=cluster.chunk_profiles)
    if chunks == 0:  # nothing to read: no worker would ever finish it
        await store.set_run_status(run.id, "finished")
    else:
        await notify(store, run.id, "start")
    return run
