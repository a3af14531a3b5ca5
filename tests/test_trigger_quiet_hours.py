"""A trigger mailing with ``quiet_hours = true``: a call whose recipient is inside their
resource's quiet hours (in their ``_tz``) is answered with its message id at once, held in
the queue, and sent when the window ends, under that id, once; it survives a restart.
A trigger mailing without it sends at once. On a fake wall clock, SQLite and PostgreSQL,
and on a cluster, where a worker that takes the trigger run over sends what another held."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from engine import pipeline
from engine.cluster.worker import Worker
from engine.core.prepare import Skipped
from engine.core.states import Skip
from engine.pipeline import Pipeline
from engine.runner import Herald
from engine.service import MailingService, MailingSpec, MailingStatus, TriggerRequest
from engine.testing import FakeGateway
from tests.test_local_time import DAY, add_profiles, utc

pytestmark = pytest.mark.anyio
both_stores = pytest.mark.usefixtures("any_store")

QUIET = 'quiet_hours = "21:00-09:00"\n'
#: 07:00 UTC: 16:00 in Tokyo (not quiet), 02:00 in New York (quiet until 09:00 there).
NIGHT_IN_NEW_YORK = utc(f"{DAY}T07:00")
NINE_IN_NEW_YORK = utc(f"{DAY}T14:00")
#: Seconds between the pipeline's looks at its queue (and held calls) in these tests.
POLL = 0.1
#: Longer than a look: what has not gone out by then was held.
LOOK = 3 * POLL


class WallClock:
    """The wall clock quiet hours are judged on, moved by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> Iterator[WallClock]:
    clock = WallClock(NIGHT_IN_NEW_YORK)
    monkeypatch.setattr(Pipeline, "wall", clock)
    monkeypatch.setattr(pipeline, "TRIGGER_POLL", POLL)  # looks at the held calls
    yield clock


async def wait_for(
    service: MailingService, mailing_id: int, check: Callable[[MailingStatus], bool]
) -> MailingStatus:
    with anyio.fail_after(15):
        while True:
            status = await service.status(mailing_id)
            if check(status):
                return status
            await anyio.sleep(0.01)


async def accepted(gateway: FakeGateway, n: int) -> None:
    """Until the gateway has ``n`` messages (a cluster's status is the workers' figures,
    read back a while later)."""
    with anyio.fail_after(15):
        while len(gateway.accepted) < n:  # noqa: ASYNC110 (no event to wait on)
            await anyio.sleep(0.01)


async def setup(herald: Herald) -> tuple[str, str, str]:
    """One profile in Tokyo, one in New York, one with no ``_tz`` (the engine's UTC)."""
    phones = await add_profiles(herald, {"Asia/Tokyo": 1, "America/New_York": 1, None: 1})
    by_zone = {tz: phone for phone, tz in phones.items()}
    return by_zone["Asia/Tokyo"], by_zone["America/New_York"], by_zone[None]


@both_stores
async def test_a_call_in_the_quiet_hours_waits_for_their_end_under_its_id(
    open_herald: Callable[..., Any], wall: WallClock,
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="GB", extra=QUIET) as herald:
        tokyo, new_york, no_zone = await setup(herald)
        async with MailingService.running(herald, schedule=False) as service:
            m = await service.create(MailingSpec(
                name="otp", kind="trigger", resource="news", database="main",
                template="code {apicontent.code}", quiet_hours=True))
            answers = await service.trigger(m.id, [
                TriggerRequest(phone=tokyo, content={"code": "1"}),
                TriggerRequest(phone=new_york, content={"code": "2"}),
                TriggerRequest(phone=no_zone, content={"code": "3"}),
            ])
            ids = [a.message_id for a in answers]
            assert all(ids)  # answered at once, held or not
            # 16:00 in Tokyo goes out; 07:00 UTC (no _tz: the engine's zone) and 02:00
            # in New York are held
            await wait_for(service, m.id, lambda s: s.sent == 1)
            await anyio.sleep(LOOK)  # more than a look at the held calls
            assert set(gateway.accepted) == {ids[0]}
            # a call that comes in the quiet hours while others are held waits too
            (later,) = await service.trigger(m.id, [
                TriggerRequest(phone=new_york, content={"code": "4"})])
            wall.now = utc(f"{DAY}T09:00")  # UTC's window ends
            await wait_for(service, m.id, lambda s: s.sent == 2)
            assert set(gateway.accepted) == {ids[0], ids[2]}
            wall.now = NINE_IN_NEW_YORK - 1  # New York's last quiet second
            await anyio.sleep(LOOK)
            assert len(gateway.accepted) == 2
            wall.now = NINE_IN_NEW_YORK
            done = await wait_for(service, m.id, lambda s: s.sent == 4)
            await anyio.sleep(LOOK)  # nothing more goes out
            status = await service.status(m.id)
    assert set(gateway.accepted) == {*ids, later.message_id}
    assert set(gateway.submitted.values()) == {1}  # each message once
    texts = {mid: msg.text for mid, msg in gateway.texts.items()}
    assert [texts.get(mid or "") for mid in (ids[1], later.message_id)] == [
        "code 2", "code 4"]
    assert done.received == status.received == 4 and status.sent == 4


@both_stores
async def test_a_trigger_mailing_without_quiet_hours_sends_at_once(
    open_herald: Callable[..., Any], wall: WallClock,
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="GB", extra=QUIET) as herald:
        _, new_york, _ = await setup(herald)
        async with MailingService.running(herald, schedule=False) as service:
            m = await service.create(MailingSpec(
                name="otp", kind="trigger", resource="news", database="main",
                template="now"))
            (answer,) = await service.trigger(m.id, [TriggerRequest(phone=new_york)])
            await wait_for(service, m.id, lambda s: s.sent == 1)
    assert list(gateway.accepted) == [answer.message_id]


@both_stores
async def test_a_held_call_survives_a_restart_and_goes_once(
    open_herald: Callable[..., Any], wall: WallClock,
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="GB", extra=QUIET) as herald:
        tokyo, new_york, _ = await setup(herald)
        async with MailingService.running(herald, schedule=False) as service:
            m = await service.create(MailingSpec(
                name="otp", kind="trigger", resource="news", database="main",
                template="hi", quiet_hours=True))
            held, sent = await service.trigger(m.id, [
                TriggerRequest(phone=new_york), TriggerRequest(phone=tokyo)])
            await wait_for(service, m.id, lambda s: s.sent == 1)
            await anyio.sleep(LOOK)
        assert list(gateway.accepted) == [sent.message_id]
        # the process is gone; the held call is in the store, not in its memory
        wall.now = NINE_IN_NEW_YORK + 3600
        async with MailingService.running(herald, schedule=False) as service:
            await wait_for(service, m.id, lambda s: s.sent == 2)
            await anyio.sleep(LOOK)
        async with MailingService.running(herald, schedule=False) as service:
            await anyio.sleep(LOOK)  # a third process sends nothing again
            status = await service.status(m.id)
    assert set(gateway.accepted) == {sent.message_id, held.message_id}
    assert set(gateway.submitted.values()) == {1} and status.sent == 2


@both_stores
async def test_held_calls_go_when_the_window_leaves_the_config(
    open_herald: Callable[..., Any], wall: WallClock,
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="GB", extra=QUIET) as herald:
        _, new_york, _ = await setup(herald)
        async with MailingService.running(herald, schedule=False) as service:
            m = await service.create(MailingSpec(
                name="otp", kind="trigger", resource="news", database="main",
                template="hi", quiet_hours=True))
            (held,) = await service.trigger(m.id, [TriggerRequest(phone=new_york)])
            await anyio.sleep(LOOK)
    assert not gateway.accepted
    # the same workspace, its resource without quiet hours now: nothing stays held
    async with await open_herald(gateway, default_region="GB") as herald:
        async with MailingService.running(herald, schedule=False) as service:
            await wait_for(service, m.id, lambda s: s.sent == 1)
    assert list(gateway.accepted) == [held.message_id]


@both_stores
async def test_the_queue_holds_hands_back_due_calls_and_never_one_settled(
    open_herald: Callable[..., Any], wall: WallClock,
) -> None:
    """The queue's side: a held call is read by neither reader before its time; once
    due, it is handed back until released, or until it is recorded as a recipient (a
    crash between its reserve and its release)."""
    async with await open_herald(default_region="GB", extra=QUIET) as herald:
        store = herald.store
        _, new_york, _ = await setup(herald)
        async with MailingService.running(herald, schedule=False) as service:
            m = await service.create(MailingSpec(
                name="otp", kind="trigger", resource="news", database="main",
                template="hi", quiet_hours=True))
            await service.pause(m.id)
        run_id = m.run_id
        assert run_id is not None
        rid = await store.resource_id("news")
        pid = (await store.find_profiles(await store.database_id("main"), "phone",
                                         [new_york]))[new_york]
        queued = await store.enqueue_triggers(m.id, run_id, [(pid, b"{}", None)] * 3)
        rows = await store.trigger_chunk(run_id, rid, 0, 10)
        assert [r.seq for r in rows] == [seq for seq, _ in queued]
        await store.hold_triggers(run_id, [(r.queue_id, NINE_IN_NEW_YORK) for r in rows])
        # held: the queue's reader skips them (whatever its position), the held reader
        # waits for their time
        assert await store.trigger_chunk(run_id, rid, 0, 10) == []
        assert await store.held_triggers(run_id, rid, NINE_IN_NEW_YORK - 1, 10) == []
        due = await store.held_triggers(run_id, rid, NINE_IN_NEW_YORK, 10)
        assert [r.queue_id for r in due] == [r.queue_id for r in rows]
        assert due[0].phone == new_york
        # one held again for later: its new time holds
        await store.hold_triggers(run_id, [(rows[2].queue_id, NINE_IN_NEW_YORK + 600)])
        # the first released, the second recorded (its release never came)
        await store.release_triggers(run_id, [rows[0].queue_id])
        await store.reserve(run_id, batches=[], skipped=[
            Skipped(rows[1].seq, pid, new_york, Skip.POLICY)], checkpoint=rows[-1].queue_id,
            next_seq=None, counts={}, audience_done=False)
        assert await store.held_triggers(run_id, rid, NINE_IN_NEW_YORK + 60, 10) == []
        due = await store.held_triggers(run_id, rid, NINE_IN_NEW_YORK + 600, 10)
        assert [r.queue_id for r in due] == [rows[2].queue_id]
        assert await store.trigger_chunk(run_id, rid, 0, 10) == []


async def test_on_a_cluster_the_worker_that_takes_over_sends_the_held_call(
    open_herald: Callable[..., Any], pg_url: str, wall: WallClock,
) -> None:
    gateway = FakeGateway()
    cluster = QUIET + "\n[cluster]\nchunk_profiles = 100\nlease_ttl = 1\n"
    async with await open_herald(gateway, default_region="GB", database=pg_url,
                                 extra=cluster, shutdown_grace=1) as herald:
        tokyo, new_york, _ = await setup(herald)
        async with MailingService.running(herald, schedule=False) as service:
            m = await service.create(MailingSpec(
                name="otp", kind="trigger", resource="news", database="main",
                template="hi", quiet_hours=True))
            held, sent = await service.trigger(m.id, [
                TriggerRequest(phone=new_york), TriggerRequest(phone=tokyo)])
            one = Worker(herald, name="w1")
            async with anyio.create_task_group() as tg:
                tg.start_soon(one.run)
                await accepted(gateway, 1)
                await anyio.sleep(LOOK)
                one.stop()
            assert list(gateway.accepted) == [sent.message_id]
            wall.now = NINE_IN_NEW_YORK
            two = Worker(herald, name="w2")
            async with anyio.create_task_group() as tg:
                tg.start_soon(two.run)
                await accepted(gateway, 2)
                await anyio.sleep(LOOK)
                two.stop()
    assert set(gateway.accepted) == {sent.message_id, held.message_id}
    assert set(gateway.submitted.values()) == {1}
