"""Trigger mailings on a cluster: ``herald serve`` only queues the calls (and answers with
their ids at once); the workers send them. A trigger run is one chunk that one worker
holds at a time: given back pending when that worker stops, taken over by another after
``lease_ttl`` when it dies, its journal then settled by the rule of ``herald resume``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import psycopg
import pytest

from engine.cluster.worker import Worker
from engine.core.prepare import Message
from engine.errors import StoreError
from engine.runner import Herald
from engine.service import MailingService, MailingSpec, TriggerRequest
from engine.store.base import ImportRecord
from engine.testing import FakeGateway

pytestmark = pytest.mark.anyio

CLUSTER = "\n[cluster]\nchunk_profiles = 100\nlease_ttl = 1\n"
PHONES = [f"+4479110000{n:02d}" for n in range(1, 21)]


async def _herald(open_herald: Callable[..., Any], url: str, gateway: FakeGateway) -> Herald:
    herald: Herald = await open_herald(gateway, database=url, extra=CLUSTER,
                                       shutdown_grace=1, batch_size=5)
    return herald


async def _profiles(herald: Herald) -> list[int]:
    store = herald.store
    db = await store.database_id("main", create=True)
    rid = await store.resource_id("news")
    await store.import_profiles(
        db, [ImportRecord(p, p, None, {"_fname": f"P{i}"}) for i, p in enumerate(PHONES)],
        matching="phone", resource_id=rid)
    found = await store.find_profiles(db, "phone", PHONES)
    return [found[p] for p in PHONES]


async def _create(service: MailingService) -> int:
    m = await service.create(MailingSpec(
        name="otp", kind="trigger", resource="news", database="main",
        template="{lead._fname}: {apicontent.code}"))
    assert m.status == "running" and m.run_id is not None
    return m.id


async def _calls(service: MailingService, mailing_id: int, pids: list[int],
                 tag: str) -> list[str]:
    answers = await service.trigger(mailing_id, [
        TriggerRequest(profile_id=pid, content={"code": f"{tag}{i}"})
        for i, pid in enumerate(pids)])
    ids = [a.message_id for a in answers]
    assert all(ids), answers
    return [i for i in ids if i]


async def _sent(gateway: FakeGateway, ids: list[str]) -> None:
    with anyio.fail_after(15):
        while not set(ids) <= set(gateway.accepted):  # noqa: ASYNC110 (no event to wait on)
            await anyio.sleep(0.01)


async def test_calls_are_queued_and_a_worker_sends_each_once(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    gateway = FakeGateway()
    async with await _herald(open_herald, pg_url, gateway) as herald:
        pids = await _profiles(herald)
        async with MailingService.running(herald) as service:
            mailing_id = await _create(service)
            run_id = (await service.status(mailing_id)).run_id
            assert run_id is not None
            [chunk] = await herald.store.chunks(run_id)
            assert (chunk.lo, chunk.hi, chunk.state) == (0, None, "pending")
            # no worker yet: the calls are answered at once all the same, nothing is sent
            first = await _calls(service, mailing_id, pids[:8], "a")
            # two calls to one phone are two messages (no (run, phone) backstop here)
            first += await _calls(service, mailing_id, [pids[0]], "again")
            assert service.statistics().running == 0 and not gateway.accepted
            worker = Worker(herald, name="w1")
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await _sent(gateway, first)
                # calls while the worker holds the chunk: it is woken and sends them
                later = await _calls(service, mailing_id, pids[8:], "b")
                await _sent(gateway, later)
                [chunk] = await herald.store.chunks(run_id)
                assert (chunk.state, chunk.worker) == ("leased", "w1")
                status = await service.status(mailing_id)
                assert status.status == "running"
                worker.stop()
            [chunk] = await herald.store.chunks(run_id)
            assert chunk.state == "pending"  # given back: never done while active
            log = await service.log(mailing_id)
    assert set(gateway.submitted.values()) == {1}
    assert len(gateway.accepted) == len(first) + len(later) == 21
    assert log.sent == 21
    texts = {m.text for m in gateway.texts.values()}
    assert "P0: a0" in texts and "P0: again0" in texts


async def test_a_second_worker_takes_over_after_a_stop(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    gateway = FakeGateway()
    async with await _herald(open_herald, pg_url, gateway) as herald:
        pids = await _profiles(herald)
        async with MailingService.running(herald) as service:
            mailing_id = await _create(service)
            one = Worker(herald, name="w1")
            async with anyio.create_task_group() as tg:
                tg.start_soon(one.run)
                before = await _calls(service, mailing_id, pids[:10], "a")
                await _sent(gateway, before)
                one.stop()
            # the first worker is gone: the calls are still answered at once
            meanwhile = await _calls(service, mailing_id, pids[10:], "b")
            assert not set(meanwhile) & set(gateway.accepted)
            two = Worker(herald, name="w2")
            async with anyio.create_task_group() as tg:
                tg.start_soon(two.run)
                await _sent(gateway, meanwhile)
                run_id = (await service.status(mailing_id)).run_id
                assert run_id is not None
                [chunk] = await herald.store.chunks(run_id)
                assert chunk.worker == "w2"
                two.stop()
    assert set(gateway.submitted.values()) == {1}
    assert len(gateway.accepted) == 20


async def test_pause_stops_the_calls_and_resume_sends_them(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    gateway = FakeGateway()
    async with await _herald(open_herald, pg_url, gateway) as herald:
        pids = await _profiles(herald)
        async with MailingService.running(herald) as service:
            mailing_id = await _create(service)
            worker = Worker(herald, name="w1")
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                sent = await _calls(service, mailing_id, pids[:5], "a")
                await _sent(gateway, sent)
                assert (await service.pause(mailing_id)).status == "paused"
                with pytest.raises(StoreError, match="paused or cancelled"):
                    await service.trigger(mailing_id, [TriggerRequest(profile_id=pids[0])])
                assert (await service.resume(mailing_id)).status == "running"
                more = await _calls(service, mailing_id, pids[5:], "b")
                await _sent(gateway, more)
                worker.stop()
    assert set(gateway.submitted.values()) == {1}
    assert len(gateway.accepted) == 20


async def test_an_expired_lease_leaves_a_batch_in_flight_unknown(
    open_herald: Callable[..., Any], pg_url: str
) -> None:
    """A worker dies (SIGKILL: no release) with one batch reserved and one at its gateway;
    another takes the chunk over once the lease has run out: the reserved batch is sent,
    the one in flight is ``unknown`` (the gateway is not idempotent), the calls after the
    checkpoint are sent. Nothing is sent twice."""
    gateway = FakeGateway()
    async with await _herald(open_herald, pg_url, gateway) as herald:
        pids = await _profiles(herald)
        store = herald.store
        async with MailingService.running(herald) as service:
            mailing_id = await _create(service)
            ids = await _calls(service, mailing_id, pids[:6], "a")
            run_id = (await service.status(mailing_id)).run_id
            assert run_id is not None
            # the dead worker's doing: the first six calls reserved in two batches
            lease = await store.claim_chunk("ghost", 30, run_id=run_id)
            assert lease is not None and lease.checkpoint == 0
            rows = await store.trigger_chunk(run_id, await store.resource_id("news"), 0, 10)
            msgs = [Message(r.seq, f"{(await store.get_run(run_id))[1].uid}-{r.seq}",
                            r.profile_id, r.phone or "", "s1", "x", 1) for r in rows]
            await store.reserve_triggers(  # type: ignore[attr-defined]
                run_id, batches=[(msgs[0].seq, "s1", msgs[:3]), (msgs[3].seq, "s1", msgs[3:])],
                skipped=[], checkpoint=rows[-1].queue_id, counts={"reserved": 6},
                lease=lease)
            await store.mark_sending(run_id, msgs[3].seq, lease=lease)
            later = await _calls(service, mailing_id, pids[6:], "b")
            with psycopg.connect(pg_url, autocommit=True) as conn:  # its lease runs out
                conn.execute("UPDATE run_chunks SET lease_until = 0 WHERE run_id = %s",
                             (run_id,))
            worker = Worker(herald, name="heir")
            async with anyio.create_task_group() as tg:
                tg.start_soon(worker.run)
                await _sent(gateway, ids[:3] + later)
                worker.stop()
            [chunk] = await store.chunks(run_id)
            assert chunk.worker is None and chunk.fence == lease.fence + 1
            log = await service.log(mailing_id)
            # the dead worker wakes up: its lease was taken over, it writes nothing more
            with pytest.raises(Exception, match="taken over"):
                await store.mark_sending(run_id, msgs[0].seq, lease=lease)
    assert set(gateway.accepted) == set(ids[:3] + later)
    assert set(gateway.submitted.values()) == {1}
    assert log.unknown == 3 and log.sent == 3 + len(later)
