"""``[resources.X] quiet_hours``: a broadcast's message due inside the window, in the
recipient's time, waits for the window's end (on a fake clock); windows that wrap
midnight; what the config and a trigger mailing are refused for."""

from __future__ import annotations

from collections.abc import Callable
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest

from engine.config import load_config
from engine.core.localtime import QuietHours, parse_quiet_hours, quiet_end
from engine.errors import ConfigError
from engine.mailings import MailingSpec, create_mailing, launch, resolve_time
from engine.service import MailingService
from engine.testing import FakeGateway, write_config
from tests.test_local_time import DAY, JumpClock, Recorder, add_profiles, utc

pytestmark = pytest.mark.anyio

QUIET = 'quiet_hours = "21:00-09:00"\n'


def test_a_time_inside_the_window_moves_to_its_end_wrapping_midnight() -> None:
    quiet, ny = parse_quiet_hours("21:00-09:00"), ZoneInfo("America/New_York")
    assert quiet == QuietHours(time(21), time(9)) and str(quiet) == "21:00-09:00"
    # 02:00 in New York → 09:00 the same day; 22:30 → 09:00 the next; 12:00 stays
    assert quiet_end(utc(f"{DAY}T07:00"), ny, quiet) == utc(f"{DAY}T14:00")
    assert quiet_end(utc("2030-12-03T03:30"), ny, quiet) == utc("2030-12-03T14:00")
    assert quiet_end(utc(f"{DAY}T17:00"), ny, quiet) == utc(f"{DAY}T17:00")
    # the end is not quiet, the start is
    assert quiet_end(utc(f"{DAY}T14:00"), ny, quiet) == utc(f"{DAY}T14:00")
    assert quiet_end(utc("2030-12-03T02:00"), ny, quiet) == utc("2030-12-03T14:00")
    lunch = parse_quiet_hours("12:00-13:30")
    assert quiet_end(utc(f"{DAY}T17:10"), ny, lunch) == utc(f"{DAY}T18:30")
    assert quiet_end(utc(f"{DAY}T18:30"), ny, lunch) == utc(f"{DAY}T18:30")


@pytest.mark.parametrize("text", ["21:00", "21-09", "25:00-09:00", "9:00-21:00x",
                                  "21:00-21:00", "21:00-09:00-10:00"])
def test_a_bad_window_is_refused_naming_its_key(tmp_path: Path, text: str) -> None:
    config = write_config(tmp_path, extra=f'quiet_hours = "{text}"\n')
    with pytest.raises(ConfigError, match=r"resources\.news\.quiet_hours"):
        load_config(config, drivers={"fake": FakeGateway().driver_class()})


async def test_a_broadcast_due_in_the_quiet_hours_waits_for_their_end(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="GB", extra=QUIET) as herald:
        phones = await add_profiles(
            herald, {"Asia/Tokyo": 3, "Europe/Moscow": 3, "America/New_York": 3, None: 2})
        at = f"{DAY}T10:00"
        due = resolve_time(at, "Europe/Moscow")
        mailing = await create_mailing(herald, MailingSpec(
            name="q", kind="broadcast", resource="news", template="Hi", database="main",
            at=at, timezone="Europe/Moscow"), now=due - 60)
        clock = JumpClock(due)
        recorder = Recorder(herald, gateway, clock)
        logs = await launch(herald, mailing, due=due, taken=True, execute=recorder,
                            clock=clock, sleep=clock.sleep)
    # 10:00 Moscow is 16:00 in Tokyo (not quiet) and 02:00 in New York (quiet until 09:00)
    assert recorder.times(phones) == {
        "Asia/Tokyo": {due}, "Europe/Moscow": {due}, None: {due},
        "America/New_York": {utc(f"{DAY}T14:00")}}
    assert [(log.wave, log.sent, log.later) for log in logs] == [(1, 8, 3), (2, 3, 0)]
    assert len(gateway.texts) == len(phones)


async def test_quiet_hours_with_local_time_and_a_regular_mailing_in_the_quiet(
    open_herald: Callable[..., Any],
) -> None:
    # a 22:00 local-time launch: everyone's 22:00 is quiet, so everyone gets it at 09:00
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="GB", extra=QUIET) as herald:
        phones = await add_profiles(herald, {"Asia/Tokyo": 2, "Europe/Moscow": 2})
        at = f"{DAY}T22:00"
        due = resolve_time(at, "Europe/Moscow")
        mailing = await create_mailing(herald, MailingSpec(
            name="q", kind="regular", resource="news", template="Hi", database="main",
            schedule="0 22 * * *", timezone="Europe/Moscow", local_time=True), now=due - 60)
        clock = JumpClock(due)
        recorder = Recorder(herald, gateway, clock)
        logs = await launch(herald, mailing, due=due, taken=True, execute=recorder,
                            clock=clock, sleep=clock.sleep)
    # Tokyo's 22:00 (13:00Z) had passed at the launch (19:00Z): at once, but that is
    # 04:00 there, quiet until 09:00 Tokyo (00:00Z); Moscow's 22:00 until 09:00 (06:00Z)
    assert recorder.times(phones) == {"Asia/Tokyo": {utc("2030-12-03T00:00")},
                                      "Europe/Moscow": {utc("2030-12-03T06:00")}}
    assert logs[0].sent == 0 and logs[0].later == 4
    assert sum(log.sent for log in logs) == 4


async def test_a_trigger_mailing_ignores_quiet_hours_unless_told(
    open_herald: Callable[..., Any],
) -> None:
    """(tests/test_trigger_quiet_hours.py sends through both kinds.)"""
    async with await open_herald(extra=QUIET) as herald:
        await herald.store.database_id("main", create=True)
        obeys = await create_mailing(herald, MailingSpec(
            name="t", kind="trigger", resource="news", template="Hi",
            database="main", quiet_hours=True))
        assert obeys.options.quiet_hours
        # one that ignores them is made, and sends at once (no waves for triggers)
        mailing = await create_mailing(herald, MailingSpec(
            name="t", kind="trigger", resource="news", template="Hi", database="main"))
        assert mailing.kind == "trigger" and not mailing.options.quiet_hours


async def test_a_broadcast_started_by_hand_in_the_service_goes_in_waves(
    open_herald: Callable[..., Any],
) -> None:
    """``herald serve``'s start of a broadcast (POST .../start) honours quiet hours as a
    scheduled launch does: New York's recipients, at 02:00 there, wait for 09:00."""
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="GB", extra=QUIET) as herald:
        phones = await add_profiles(herald, {"Europe/Moscow": 3, "America/New_York": 2})
        clock = JumpClock(resolve_time(f"{DAY}T10:00", "Europe/Moscow"))
        async with MailingService.running(herald, clock=clock, sleep=clock.sleep,
                                          schedule=False) as service:
            status = await service.create(MailingSpec(
                name="now", kind="broadcast", resource="news", template="Hi",
                database="main"))
            await service.start(status.id)
            with anyio.fail_after(20):
                while True:
                    runs = await herald.store.mailing_runs(status.id)
                    if len(runs) == 2 and all(r.status == "finished" for r in runs):
                        break
                    await anyio.sleep(0.01)
            logs = [await herald.log(r.id) for r in runs]
    assert [(log.wave, log.sent, log.later) for log in logs] == [(1, 3, 2), (2, 2, 0)]
    assert len(gateway.texts) == len(phones) and set(gateway.accepted.values()) == {1}
