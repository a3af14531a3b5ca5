"""A launch outlives its process: each run's next step (the next wave, the next test, the
wait then the winner) is kept in the store, and whichever scheduler runs next takes it,
once. On a fake clock: a service stopped between waves, a multivariate launch stopped
after its first test, waves on a cluster, two schedulers and one step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from engine.mailing_log import MailingLog
from engine.mailings import Launch, MailingSpec, create_mailing, launch, resolve_time
from engine.pipeline import run_template
from engine.runner import Herald
from engine.scheduling import Scheduler
from engine.service import MailingService
from engine.store.models import Mailing, Run, RunSpec
from engine.testing import FakeGateway
from tests.test_local_time import DAY, add_profiles
from tests.test_multivariate import TEMPLATES, until
from tests.test_multivariate import add_profiles as add_plain_profiles
from tests.test_quiet_hours import QUIET
from tests.test_scheduling import FakeClock

pytestmark = pytest.mark.anyio

#: Wave 1 at 10:00 in Moscow (07:00Z); New York, at 02:00 there, waits for 09:00 (14:00Z).
ZONES: dict[str | None, int] = {"Europe/Moscow": 3, "America/New_York": 2}
CLUSTER = "\n[cluster]\nchunk_profiles = 100\nlease_ttl = 1\n"


def ten_in_moscow() -> float:
    return resolve_time(f"{DAY}T10:00", "Europe/Moscow")


def nine_in_new_york() -> float:
    return resolve_time(f"{DAY}T09:00", "America/New_York")


async def finished(herald: Herald, mailing_id: int, n: int) -> list[Run]:
    runs = await herald.store.mailing_runs(mailing_id)
    return runs if len(runs) == n and all(r.status == "finished" for r in runs) else []


async def test_a_service_stopped_between_waves_leaves_the_next_wave_to_the_next_one(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="GB", extra=QUIET) as herald:
        phones = await add_profiles(herald, ZONES)
        clock = FakeClock(ten_in_moscow())
        async with MailingService.running(herald, clock=clock, sleep=clock.sleep,
                                          schedule=False) as first:
            status = await first.create(MailingSpec(
                name="now", kind="broadcast", resource="news", template="Hi",
                database="main"))
            await first.start(status.id)

            async def armed() -> bool:  # wave 1 over; its launch sleeps to wave 2
                steps = await herald.store.pending_steps(clock.now + 86400)
                return bool(await finished(herald, status.id, 1)) and [
                    s.at for s in steps] == [nine_in_new_york()]

            await until(armed)
        # that process is gone; another one, later, on the same store
        assert len(gateway.texts) == 3
        async with MailingService.running(herald, clock=clock, sleep=clock.sleep) as second:
            await clock.settle(1)
            assert len(await herald.store.mailing_runs(status.id)) == 1  # not before 09:00
            clock.advance(nine_in_new_york() - clock.now)
            runs = await until(lambda: finished(herald, status.id, 2))
            logs = [await herald.log(r.id) for r in runs]
            assert second.scheduler.taken == [(status.id, nine_in_new_york())]
        steps = await herald.store.pending_steps(clock.now + 10 * 86400)
    assert [(log.wave, log.sent, log.later) for log in logs] == [(1, 3, 2), (2, 2, 0)]
    assert runs[1].spec.window == (ten_in_moscow(), nine_in_new_york())
    assert sorted(m.to for m in gateway.texts.values()) == sorted(phones)  # each once
    assert steps == []


async def test_a_multivariate_launch_stopped_after_its_first_test_is_carried_on(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        phones = await add_plain_profiles(herald, 90)
        mailing = await create_mailing(herald, MailingSpec(
            name="ab", kind="multivariate", resource="news", database="main",
            templates=TEMPLATES, test_share=30, winner="delivered", wait=60))
        clock = FakeClock()
        first_done = anyio.Event()

        async def then_stop(m: Mailing, run: Run) -> MailingLog:
            template = await herald.compile_async(run_template(m, run))
            log = await herald.execute(m, run, template=template)
            first_done.set()
            await anyio.sleep_forever()  # the process is stopped here
            return log

        async with anyio.create_task_group() as tg:  # ``herald mailing start``, killed
            tg.start_soon(lambda: launch(herald, mailing, execute=then_stop, clock=clock,
                                         sleep=clock.sleep))
            await first_done.wait()
            tg.cancel_scope.cancel()
        [test_1] = await herald.store.mailing_runs(mailing.id)
        [step] = await herald.store.pending_steps(clock.now)
        assert (step.kind, step.after_run, step.spec.variant) == ("run", test_1.id, 1)
        async with MailingService.running(herald, clock=clock, sleep=clock.sleep):
            await until(lambda: finished(herald, mailing.id, 3))  # tests 2 and 3

            async def waiting() -> bool:
                m = await herald.store.get_mailing(mailing.id)
                return m.state == "waiting" and m.next_launch == clock.now + 60

            await until(waiting)
            assert len(await herald.store.mailing_runs(mailing.id)) == 3
            clock.advance(60)
            runs = await until(lambda: finished(herald, mailing.id, 4))
        state = (await herald.store.get_mailing(mailing.id)).state
    assert [(r.spec.phase, r.spec.variant) for r in runs] == [
        ("test", 0), ("test", 1), ("test", 2), ("winner", 0)]
    assert state == "done"
    assert sorted(m.to for m in gateway.texts.values()) == sorted(phones)  # each once


async def test_on_a_cluster_each_wave_is_queued_at_its_time(
    open_herald: Callable[..., Any], pg_url: str,
) -> None:
    from engine.cluster.worker import Worker

    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="GB", database=pg_url,
                                 extra=QUIET + CLUSTER, shutdown_grace=0) as herald:
        phones = await add_profiles(herald, ZONES)
        clock = FakeClock(ten_in_moscow())
        async with MailingService.running(herald, clock=clock, sleep=clock.sleep,
                                          schedule=False) as service, \
                anyio.create_task_group() as tg:
            worker = Worker(herald, concurrency=2)
            tg.start_soon(worker.run)
            status = await service.create(MailingSpec(
                name="now", kind="broadcast", resource="news", template="Hi",
                database="main"))
            await service.start(status.id)
            await until(lambda: finished(herald, status.id, 1))

            async def armed() -> bool:  # the scheduler read wave 2's time from wave 1
                await service.scheduler.tick()
                steps = await herald.store.pending_steps(clock.now + 86400)
                return [s.at for s in steps] == [nine_in_new_york()]

            await until(armed)
            early = len(gateway.texts)
            clock.advance(nine_in_new_york() - 1 - clock.now)
            assert await service.scheduler.tick() == []  # a second early
            clock.advance(1)
            assert await service.scheduler.tick() == [(status.id, nine_in_new_york())]
            runs = await until(lambda: finished(herald, status.id, 2))
            assert await service.scheduler.tick() == []
            worker.stop()
        logs = [await herald.log(r.id) for r in runs]
    assert early == 3
    assert [r.spec.wave for r in runs] == [1, 2]
    assert runs[0].spec.window is not None and runs[0].spec.window[1] == ten_in_moscow()
    assert runs[1].spec.window == (ten_in_moscow(), nine_in_new_york())
    assert [(log.sent, log.later) for log in logs] == [(3, 2), (2, 0)]
    assert sorted(m.to for m in gateway.texts.values()) == sorted(phones)


async def test_of_two_schedulers_exactly_one_takes_a_step(
    open_herald: Callable[..., Any], pg_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HERALD_DATABASE", pg_url)
    async with await open_herald() as one, await open_herald() as two:
        await add_plain_profiles(one, 3)
        mailing = await create_mailing(one, MailingSpec(
            name="b", kind="broadcast", resource="news", template="Hi", database="main"))
        started: list[tuple[str, Launch]] = []

        def recorder(name: str) -> Callable[[Mailing, Launch], Any]:
            async def start(m: Mailing, what: Launch) -> None:
                started.append((name, what))
            return start

        clock = FakeClock()
        schedulers = [Scheduler(h, recorder(n), clock=clock, sleep=clock.sleep)
                      for h, n in ((one, "one"), (two, "two"))]
        for _ in range(5):
            await one.store.add_step(mailing.id, RunSpec(variant=0), at=clock.now)
        async with anyio.create_task_group() as tg:
            for scheduler in schedulers:
                tg.start_soon(scheduler.tick)
        assert await one.store.pending_steps(clock.now) == []
        for scheduler in schedulers:
            assert await scheduler.tick() == []
    assert len(started) == 5
    assert len({what.step.id for _, what in started if what.step is not None}) == 5
