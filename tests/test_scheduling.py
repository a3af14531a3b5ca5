"""Schedules on a fake clock: wall-clock times across daylight-saving changes, launches
due in whichever process is up (and only one of them), regular mailings' runs, missed
launches run once, cancelled and ended schedules."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest

from engine.demo import generate
from engine.mailings import Launch, MailingSpec, next_launch, resolve_time
from engine.runner import Herald
from engine.scheduling import catch_up
from engine.service import MailingService
from engine.store.models import Mailing, Schedule
from engine.testing import FakeGateway

pytestmark = pytest.mark.anyio

#: 2030-12-01T00:00:00Z: ahead of any machine's clock, so a real time never passes it.
T0 = datetime(2030, 12, 1, tzinfo=UTC).timestamp()


class FakeClock:
    """``clock()`` and ``sleep(d)`` for the scheduler: time moves only when the test says
    ``advance``, which wakes the sleepers whose time came."""

    def __init__(self, now: float = T0) -> None:
        self.now = now
        self._sleepers: list[tuple[float, anyio.Event]] = []
        self._slept = anyio.Event()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        if delay <= 0:
            await anyio.lowlevel.checkpoint()
            return
        entry = (self.now + delay, anyio.Event())
        self._sleepers.append(entry)
        self._slept.set()
        try:
            await entry[1].wait()
        finally:
            self._sleepers.remove(entry)

    def sleeping(self) -> int:
        return sum(1 for at, _ in self._sleepers if at > self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for at, event in self._sleepers:
            if at <= self.now:
                event.set()

    async def settle(self, sleepers: int) -> None:
        """Until ``sleepers`` tasks sleep on this clock again (each scheduler's nap)."""
        with anyio.fail_after(10):
            while self.sleeping() < sleepers:
                self._slept = anyio.Event()
                await self._slept.wait()


def local(text: str, zone: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def launches(schedule: Schedule, start: float, n: int) -> list[str]:
    """The next ``n`` launches after ``start``, as local times with their UTC offsets."""
    out, at = [], start
    zone = ZoneInfo(schedule.timezone)
    for _ in range(n):
        nxt = next_launch(schedule, at)
        assert nxt is not None
        out.append(datetime.fromtimestamp(nxt, zone).isoformat(timespec="minutes"))
        at = nxt
    return out


# -- wall-clock times ----------------------------------------------------------------------


@pytest.mark.parametrize("zone, spring, fall", [
    ("America/New_York", "2026-03-08", "2026-11-01"),
    ("Europe/Berlin", "2026-03-29", "2026-10-25"),
])
def test_a_daily_time_runs_once_a_day_across_both_dst_changes(
    zone: str, spring: str, fall: str,
) -> None:
    # 02:30 does not exist on the spring-forward day: it runs as the clock jumps past it
    # (an hour later), once; the next day is 02:30 again
    daily = Schedule(cron="30 2 * * *", timezone=zone)
    day_before = local(f"{spring}T00:00", zone) - 86400
    got = launches(daily, day_before, 3)
    assert [t[:10] for t in got] == sorted({t[:10] for t in got})  # one a day
    assert got[1].startswith(f"{spring}T03:30")
    assert got[0][11:16] == got[2][11:16] == "02:30"
    # the repeated hour of the fall-back day: a time in it runs at its first occurrence
    repeated = "30 1 * * *" if zone == "America/New_York" else "30 2 * * *"
    got = launches(Schedule(cron=repeated, timezone=zone), local(f"{fall}T00:00", zone), 2)
    assert got[0][:10] == fall and got[1][:10] > fall
    assert got[0][11:16] == got[1][11:16]


def test_an_hourly_schedule_neither_loses_nor_doubles_an_hour_over_fall_back() -> None:
    hourly = Schedule(cron="0 * * * *", timezone="America/New_York")
    got = launches(hourly, local("2026-10-31T23:30", "America/New_York"), 4)
    # 01:00 comes twice (EDT, then EST): it runs at the first; then 02:00 EST
    assert got == ["2026-11-01T00:00-04:00", "2026-11-01T01:00-04:00",
                   "2026-11-01T02:00-05:00", "2026-11-01T03:00-05:00"]


def test_at_and_until_are_wall_clock_times_of_the_mailings_zone() -> None:
    at = Schedule(at="2030-12-24T10:00", timezone="Europe/Moscow")
    assert next_launch(at, T0) == datetime(2030, 12, 24, 7, 0, tzinfo=UTC).timestamp()
    assert next_launch(at, next_launch(at, T0) or 0) is None  # once
    assert resolve_time("2030-12-24T10:00+01:00", "Europe/Moscow") == datetime(
        2030, 12, 24, 9, 0, tzinfo=UTC).timestamp()
    # the first Monday of each month, until February
    monthly = Schedule(cron="0 9 * * MON#1", timezone="Europe/Moscow", until="2031-02-10T00:00")
    got = launches(monthly, T0, 2)
    assert got == ["2030-12-02T09:00+03:00", "2031-01-06T09:00+03:00"]
    assert next_launch(monthly, local("2031-01-06T09:00", "Europe/Moscow")) == local(
        "2031-02-03T09:00", "Europe/Moscow")
    assert next_launch(monthly, local("2031-02-03T09:00", "Europe/Moscow")) is None
    # a schedule's zone falls back to the engine's default only when it has none
    plain = Schedule(cron="0 9 * * *", timezone="")
    assert next_launch(plain, T0 - 1, "Asia/Tokyo") == T0  # 09:00 there
    assert next_launch(plain, T0, "Asia/Tokyo") == T0 + 86400  # strictly after


def test_missed_launches_are_caught_up_as_one() -> None:
    minutely = Schedule(cron="* * * * *", timezone="UTC")
    due, missed, nxt = catch_up(minutely, T0 + 60, T0 + 5 * 60 + 30)
    assert (due, missed, nxt) == (T0 + 300, 4, T0 + 360)
    assert catch_up(minutely, T0 + 60, T0 + 60) == (T0 + 60, 0, T0 + 120)
    once = Schedule(at="2030-12-01T00:01", timezone="UTC")
    assert catch_up(once, T0 + 60, T0 + 3600) == (T0 + 60, 0, None)


# -- the scheduler -------------------------------------------------------------------------


async def wait_for(check: Callable[[], Any]) -> Any:
    with anyio.fail_after(20):
        while True:
            result = await check()
            if result:
                return result
            await anyio.sleep(0.01)


async def finished_runs(herald: Herald, mailing_id: int) -> list[Any]:
    runs = await herald.store.mailing_runs(mailing_id)
    return [r for r in runs if r.status == "finished"]


async def test_a_regular_mailing_runs_at_each_minute_each_run_with_its_own_log(
    open_herald: Callable[..., Any],
) -> None:
    clock, gateway = FakeClock(), FakeGateway()
    async with await open_herald(gateway, default_region="RU") as herald:
        plan = await generate(herald.store, profiles=50, database="main")
        async with MailingService.running(herald, clock=clock, sleep=clock.sleep,
                                          schedule=False) as service:
            m = await service.create(MailingSpec(
                name="daily", kind="regular", resource="news", template="Hi",
                database="main", schedule="* * * * *"))
            assert (m.state, m.next_launch) == ("scheduled", T0 + 60)
            assert await service.scheduler.tick() == []  # not due yet
            for minute in (1, 2):
                clock.advance(60)
                assert await service.scheduler.tick() == [(m.id, T0 + 60 * minute)]
                await wait_for(lambda n=minute: _count(finished_runs(herald, m.id), n))
            status = await service.status(m.id)
            runs = await service.runs(m.id)
            logs = [await herald.log(r.id) for r in runs]
    assert (status.state, status.next_launch) == ("scheduled", T0 + 180)
    assert [r.spec.due for r in runs] == [T0 + 60, T0 + 120]
    assert [log.sent for log in logs] == [plan.unique, plan.unique]
    assert len({log.run_id for log in logs}) == 2
    assert len(gateway.accepted) == 2 * plan.unique  # each launch sends to everyone


async def _count(runs: Any, n: int) -> bool:
    return len(await runs) >= n


async def test_missed_launches_run_once_and_the_run_says_so(
    open_herald: Callable[..., Any],
) -> None:
    clock, gateway = FakeClock(), FakeGateway()
    async with await open_herald(gateway, default_region="RU") as herald:
        plan = await generate(herald.store, profiles=20, database="main")
        async with MailingService.running(herald, clock=clock, sleep=clock.sleep,
                                          schedule=False) as service:
            m = await service.create(MailingSpec(
                name="r", kind="regular", resource="news", template="Hi", database="main",
                schedule="* * * * *"))
        # nothing ran for five and a half minutes
        clock.advance(5 * 60 + 30)
        async with MailingService.running(herald, clock=clock, sleep=clock.sleep,
                                          schedule=False) as service:
            assert await service.scheduler.tick() == [(m.id, T0 + 60)]
            [run] = await wait_for(lambda: finished_runs(herald, m.id))
            assert await service.scheduler.tick() == []
            log = await herald.log(run.id)
            status = await service.status(m.id)
    assert (run.spec.due, run.spec.missed) == (T0 + 300, 4)
    assert log.missed == 4 and log.sent == plan.unique
    assert status.next_launch == T0 + 360


async def test_a_cancelled_schedule_never_launches_and_an_ended_one_is_done(
    open_herald: Callable[..., Any],
) -> None:
    clock = FakeClock()
    async with await open_herald(FakeGateway(), default_region="RU") as herald:
        await generate(herald.store, profiles=5, database="main")
        async with MailingService.running(herald, clock=clock, sleep=clock.sleep,
                                          schedule=False) as service:
            at = await service.create(MailingSpec(
                name="once", kind="broadcast", resource="news", template="Hi",
                database="main", at="2030-12-01T00:10", timezone="UTC"))
            cancelled = await service.cancel(at.id)
            ending = await service.create(MailingSpec(
                name="twice", kind="regular", resource="news", template="Hi",
                database="main", schedule="*/5 * * * *", until="2030-12-01T00:07"))
            clock.advance(3600)
            assert await service.scheduler.tick() == [(ending.id, T0 + 300)]
            await wait_for(lambda: finished_runs(herald, ending.id))
            assert await service.scheduler.tick() == []
            done = await service.status(ending.id)
        assert await herald.store.mailing_runs(at.id) == []
    assert (cancelled.state, cancelled.next_launch) == ("cancelled", None)
    assert (done.state, done.next_launch) == ("done", None)


async def two_services_one_launch(heralds: list[Herald]) -> tuple[list[float], Mailing]:
    """Two services with a scheduler each on one store; a broadcast ``at`` two seconds
    ahead. The clock moves a tenth of a second at a time; the times its launch started."""
    clock = FakeClock()
    started: list[float] = []
    async with MailingService.running(heralds[0], clock=clock, sleep=clock.sleep) as one, \
            MailingService.running(heralds[1], clock=clock, sleep=clock.sleep) as two:
        for service in (one, two):
            start = service.scheduler.start

            async def recorded(m: Mailing, launch: Launch, start: Any = start) -> None:
                started.append(clock.now)
                await start(m, launch)

            service.scheduler.start = recorded
        await clock.settle(2)
        at = datetime.fromtimestamp(T0 + 2, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        status = await one.create(MailingSpec(
            name="soon", kind="broadcast", resource="news", template="Hi",
            database="main", at=at, timezone="UTC"))
        await clock.settle(2)
        for _ in range(40):  # four seconds
            clock.advance(0.1)
            await clock.settle(2)
        mailing = await heralds[0].store.get_mailing(status.id)
        await wait_for(lambda: finished_runs(heralds[0], status.id))
    return started, mailing


async def test_a_broadcast_at_a_time_starts_within_a_second_once_with_two_services(
    open_herald: Callable[..., Any], pg_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HERALD_DATABASE", pg_url)
    gateways = [FakeGateway(), FakeGateway()]
    async with await open_herald(gateways[0], default_region="RU") as first, \
            await open_herald(gateways[1], default_region="RU") as second:
        plan = await generate(first.store, profiles=30, database="main")
        started, mailing = await two_services_one_launch([first, second])
        runs = await first.store.mailing_runs(mailing.id)
    assert len(started) == 1 and T0 + 2 <= started[0] < T0 + 3
    assert len(runs) == 1 and runs[0].spec.due == T0 + 2
    assert (mailing.state, mailing.next_launch) == ("done", None)
    assert sum(len(g.accepted) for g in gateways) == plan.unique
