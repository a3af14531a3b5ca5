"""``--local-time``: each recipient gets a launch at its wall-clock time in their own
zone (``_tz``), in waves on a fake clock; late recipients now or the next day; each profile
exactly once; daylight-saving edges resolved like schedules are."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest

from engine.core.localtime import SendTimes, local_send_time, profile_zone
from engine.errors import InputError
from engine.mailing_log import MailingLog, format_log
from engine.mailings import MailingSpec, create_mailing, launch, resolve_time
from engine.runner import Herald
from engine.store.base import ImportRecord
from engine.store.models import Mailing, Run
from engine.testing import FakeGateway

pytestmark = pytest.mark.anyio

#: A Monday, ahead of any machine's clock.
DAY = "2030-12-02"
ZONES = {"Asia/Tokyo": 10, "Europe/Moscow": 10, "America/New_York": 10}


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class JumpClock:
    """A fake clock whose sleeps jump it forward (the launch is its only sleeper)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.slept.append(delay)
        self.now += max(delay, 0.0)
        await anyio.lowlevel.checkpoint()


async def add_profiles(herald: Herald, zones: dict[str | None, int]) -> dict[str, str | None]:
    """``n`` profiles per ``_tz`` (None: no ``_tz``); phone -> its zone."""
    store = herald.store
    db = await store.database_id("main", create=True)
    rid = await store.resource_id("news")
    records, out, i = [], {}, 0
    for tz, n in zones.items():
        for _ in range(n):
            phone = f"+447911{i:06d}"
            i += 1
            records.append(ImportRecord(None, phone, None, {} if tz is None else {"_tz": tz}))
            out[phone] = tz
    await store.import_profiles(db, records, matching="phone", resource_id=rid)
    return out


class Recorder:
    """Runs each run as ``herald.execute`` does, and notes when (on the fake clock) and
    to which phones it sent."""

    def __init__(self, herald: Herald, gateway: FakeGateway, clock: JumpClock) -> None:
        self.herald, self.gateway, self.clock = herald, gateway, clock
        self.sent_at: dict[str, list[float]] = {}
        self.runs: list[Run] = []

    async def __call__(self, mailing: Mailing, run: Run) -> MailingLog:
        before = set(self.gateway.texts)
        log = await self.herald.execute(mailing, run)
        for mid in set(self.gateway.texts) - before:
            self.sent_at.setdefault(self.gateway.texts[mid].to, []).append(self.clock.now)
        self.runs.append(run)
        return log

    def times(self, phones: dict[str, str | None]) -> dict[str | None, set[float]]:
        out: dict[str | None, set[float]] = {}
        for phone, tz in phones.items():
            out.setdefault(tz, set()).update(self.sent_at.get(phone, []))
        return out


async def local_launch(
    herald: Herald, gateway: FakeGateway, phones: dict[str, str | None], *, late: str,
    at: str = f"{DAY}T10:00", timezone: str = "Europe/Moscow",
) -> tuple[Recorder, list[MailingLog], JumpClock]:
    due = resolve_time(at, timezone)
    mailing = await create_mailing(herald, MailingSpec(
        name="local", kind="broadcast", resource="news", template="Hi {lead._tz}",
        database="main", at=at, timezone=timezone, local_time=True, late=late),  # type: ignore[arg-type]
        now=due - 3600)
    clock = JumpClock(due)
    recorder = Recorder(herald, gateway, clock)
    logs = await launch(herald, mailing, due=due, taken=True, execute=recorder,
                        clock=clock, sleep=clock.sleep)
    return recorder, logs, clock


async def test_three_zones_each_get_it_at_ten_local_late_ones_at_once(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="GB") as herald:
        phones = await add_profiles(herald, {**ZONES, None: 4, "Not/AZone": 3})
        recorder, logs, _ = await local_launch(herald, gateway, phones, late="now")
    times = recorder.times(phones)
    moscow = utc(f"{DAY}T07:00")
    # Tokyo's 10:00 (01:00Z) had passed at the launch: at once; New York's at 15:00Z
    assert times == {"Asia/Tokyo": {moscow}, "Europe/Moscow": {moscow},
                     None: {moscow}, "Not/AZone": {moscow},
                     "America/New_York": {utc(f"{DAY}T15:00")}}
    assert Counter(len(v) for v in recorder.sent_at.values()) == {1: len(phones)}
    assert [(log.wave, log.sent, log.later) for log in logs] == [(1, 27, 10), (2, 10, 0)]
    assert logs[0].next_wave is not None and logs[0].next_wave.startswith(f"{DAY}T15:00")
    assert logs[1].earlier == 27 and logs[1].subscribers_received == 10
    assert "Left for later waves (later)" in format_log(logs[0])
    assert "Wave (wave)  " in format_log(logs[1])


async def test_late_next_waits_for_ten_the_next_day(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="GB") as herald:
        phones = await add_profiles(herald, ZONES)
        recorder, logs, clock = await local_launch(herald, gateway, phones, late="next")
    times = recorder.times(phones)
    assert times == {"Europe/Moscow": {utc(f"{DAY}T07:00")},
                     "America/New_York": {utc(f"{DAY}T15:00")},
                     "Asia/Tokyo": {utc("2030-12-03T01:00")}}
    assert [log.wave for log in logs] == [1, 2, 3]
    assert sum(log.sent for log in logs) == len(phones) == len(gateway.texts)
    assert clock.slept == [8 * 3600, 10 * 3600]
    # every wave's run says its window; together they tile the time line
    windows = [r.spec.window for r in recorder.runs]
    assert windows[0] is not None and windows[0][1] == utc(f"{DAY}T07:00")
    assert all(a is not None and b is not None and a[1] == b[0]
               for a, b in itertools.pairwise(windows))


async def test_a_spring_forward_day_in_one_zone_sends_past_the_jump(
    open_herald: Callable[..., Any],
) -> None:
    # 02:30 does not exist in New York on 2031-03-09 (02:00 EST → 03:00 EDT): 03:30 EDT
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="GB") as herald:
        phones = await add_profiles(herald, {"America/New_York": 3, "Europe/Moscow": 3})
        recorder, logs, _ = await local_launch(herald, gateway, phones, late="now",
                                               at="2031-03-09T02:30")
    times = recorder.times(phones)
    assert times == {"Europe/Moscow": {utc("2031-03-08T23:30")},
                     "America/New_York": {utc("2031-03-09T07:30")}}
    assert [log.sent for log in logs] == [3, 3]


def test_dst_edges_of_a_recipients_zone() -> None:
    moscow, ny = ZoneInfo("Europe/Moscow"), ZoneInfo("America/New_York")
    # the repeated 01:30 of a fall-back day: its first occurrence (EDT)
    due = resolve_time("2031-11-02T01:30", "Europe/Moscow")
    assert local_send_time(due, moscow, ny, "now") == utc("2031-11-02T05:30")
    # 02:30 Honolulu is 12:30Z; New York's 02:30 (07:30Z) has passed: the next day's
    # 02:30 is skipped by the spring-forward jump, so 03:30 EDT
    honolulu = ZoneInfo("Pacific/Honolulu")
    due = resolve_time("2031-03-08T02:30", "Pacific/Honolulu")
    assert local_send_time(due, honolulu, ny, "next") == utc("2031-03-09T07:30")
    assert local_send_time(due, honolulu, ny, "now") == due
    assert local_send_time(due, honolulu, honolulu, "next") == due  # its own zone: on time


def test_zones_far_apart_are_late_by_more_than_a_day() -> None:
    # Kiritimati (+14) is 26 hours ahead of Etc/GMT+12: its next day's 10:00 has passed too
    due = resolve_time("2030-12-02T10:00", "Etc/GMT+12")
    at = local_send_time(due, ZoneInfo("Etc/GMT+12"), ZoneInfo("Pacific/Kiritimati"), "next")
    assert at > due and at - due < 86400


def test_a_profiles_zone_is_read_from_its_fields_alone() -> None:
    assert profile_zone(b'{"name": "A", "_tz": "Asia/Tokyo", "n": [1, 2]}') == "Asia/Tokyo"
    for fields in (None, b"", b"{}", b"[1]", b"not json", b'{"_tz": 3}'):
        assert profile_zone(fields) is None
    times = SendTimes(utc(f"{DAY}T07:00"), "Europe/Moscow", local=True)
    assert times.of(None) == times.of("Mars/Olympus") == times.of("Europe/Moscow")


async def test_local_time_needs_a_schedule_to_take_its_time_from(
    open_herald: Callable[..., Any],
) -> None:
    async with await open_herald() as herald:
        await herald.store.database_id("main", create=True)
        with pytest.raises(InputError, match=r"^local_time: "):
            await create_mailing(herald, MailingSpec(
                name="m", kind="broadcast", resource="news", template="Hi",
                database="main", local_time=True))


async def test_a_split_test_in_local_time_runs_every_variant_in_each_wave(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="GB") as herald:
        phones = await add_profiles(herald, {"Europe/Moscow": 20, "America/New_York": 20})
        at = f"{DAY}T10:00"
        due = resolve_time(at, "Europe/Moscow")
        mailing = await create_mailing(herald, MailingSpec(
            name="ab", kind="multivariate", resource="news", templates=["A", "B"],
            database="main", test_share=100, at=at, timezone="Europe/Moscow",
            local_time=True), now=due - 60)
        clock = JumpClock(due)
        recorder = Recorder(herald, gateway, clock)
        logs = await launch(herald, mailing, due=due, taken=True, execute=recorder,
                            clock=clock, sleep=clock.sleep)
        state = (await herald.store.get_mailing(mailing.id)).state
    assert [(log.wave, log.variant) for log in logs] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert recorder.times(phones) == {"Europe/Moscow": {due},
                                      "America/New_York": {utc(f"{DAY}T15:00")}}
    assert Counter(len(v) for v in recorder.sent_at.values()) == {1: len(phones)}
    assert {m.text for m in gateway.texts.values()} == {"A", "B"}
    assert state == "done"
