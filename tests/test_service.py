"""Mailings in the background: start, pause, resume, cancel; trigger mailings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from engine.demo import generate
from engine.errors import InputError, StoreError
from engine.runner import Herald
from engine.service import MailingService, MailingSpec, MailingStatus, TriggerRequest
from engine.store.base import ImportRecord
from engine.testing import FakeGateway

pytestmark = pytest.mark.anyio


async def wait_for(
    service: MailingService, mailing_id: int, check: Callable[[MailingStatus], bool]
) -> MailingStatus:
    with anyio.fail_after(20):
        while True:
            status = await service.status(mailing_id)
            if check(status):
                return status
            await anyio.sleep(0.01)


async def test_broadcast_start_to_finish(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="RU") as herald:
        plan = await generate(herald.store, profiles=500, database="main")
        async with MailingService.running(herald) as service:
            created = await service.create(MailingSpec(
                name="spring", kind="broadcast", resource="news", template="Hi",
                database="main",
            ))
            assert created.status == "draft" and created.run_id is None
            await service.start(created.id)
            done = await wait_for(service, created.id, lambda s: s.status == "finished")
            log = await service.log(created.id)
    assert done.sent == plan.unique == log.sent == len(gateway.accepted)


async def test_pause_resume_and_nobody_twice(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway(latency=0.005)
    async with await open_herald(gateway, default_region="RU", batch_size=10) as herald:
        plan = await generate(herald.store, profiles=2000, database="main")
        async with MailingService.running(herald) as service:
            m = await service.create(MailingSpec(name="b", kind="broadcast", resource="news",
                                                 template="x", database="main"))
            await service.start(m.id)
            await wait_for(service, m.id, lambda s: s.sent >= 200)
            paused = await service.pause(m.id)
            assert paused.status == "paused" and paused.sent < plan.unique
            with pytest.raises(StoreError, match="not running"):
                await service.pause(m.id)
            await service.resume(m.id)
            done = await wait_for(service, m.id, lambda s: s.status == "finished")
    assert done.sent == plan.unique
    assert set(gateway.submitted.values()) == {1}


async def test_cancel_skips_what_was_never_sent(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway(latency=0.005)
    async with await open_herald(gateway, default_region="RU", batch_size=10) as herald:
        await generate(herald.store, profiles=2000, database="main")
        async with MailingService.running(herald) as service:
            m = await service.create(MailingSpec(name="b", kind="broadcast", resource="news",
                                                 template="x", database="main"))
            await service.start(m.id)
            await wait_for(service, m.id, lambda s: s.sent >= 100)
            cancelled = await service.cancel(m.id)
            log = await service.log(m.id)
            with pytest.raises(StoreError):
                await service.resume(m.id)
        rows = herald.store.recipients(log.run_id)  # type: ignore[attr-defined]
    assert cancelled.status == "cancelled"
    assert log.sent == len(gateway.accepted) and log.pending == 0 and log.cancelled > 0
    # every reserved recipient ends recorded: sent, or skipped as cancelled
    reserved = [r for r in rows if r[4] not in ("duplicate", "suppressed", "invalid_phone")]
    assert {r[3] for r in reserved} <= {"sent", "skipped"}


async def add(herald: Herald, phone: str, email: str | None, fields: dict[str, Any]) -> int:
    db = await herald.store.database_id("main", create=True)
    rid = await herald.store.resource_id("news")
    await herald.store.import_profiles(db, [ImportRecord(phone, phone, email, fields)],
                                       matching="phone", resource_id=rid)
    return (await herald.store.find_profiles(db, "phone", [phone]))[phone]


async def test_trigger_answers_ids_at_once_and_sends_in_the_background(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        ann = await add(herald, "+447911000001", "ann@example.com", {"_fname": "Ann"})
        await add(herald, "+447911000002", "bob@example.com", {"_fname": "Bob"})
        async with MailingService.running(herald) as service:
            m = await service.create(MailingSpec(
                name="otp", kind="trigger", resource="news", database="main",
                template="{lead._fname}, your code is {apicontent.code}",
            ))
            assert m.status == "running"
            answers = await service.trigger(m.id, [
                TriggerRequest(profile_id=ann, content={"code": "1111"}, idempotency_key="k1"),
                TriggerRequest(email="BOB@example.com", content={"code": "2222"}),
                TriggerRequest(phone="+44 7911 000003", content={}),
                TriggerRequest(profile_id=ann, phone="+447911000001"),
            ])
            again = await service.trigger(m.id, [
                TriggerRequest(profile_id=ann, content={"code": "9999"}, idempotency_key="k1"),
            ])
            await wait_for(service, m.id, lambda s: s.sent == 2)
    assert answers[0].message_id and answers[1].message_id
    assert answers[2].error == "phone: no such profile in the mailing's database"
    assert answers[3].error == "give exactly one of profile_id, phone, email, field_name"
    assert again[0].message_id == answers[0].message_id and again[0].duplicate
    texts = sorted(msg.text for msg in gateway.texts.values())
    assert texts == ["Ann, your code is 1111", "Bob, your code is 2222"]
    assert set(gateway.submitted.values()) == {1}


async def test_trigger_for_an_unsubscribed_profile_is_recorded_as_skipped(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        pid = await add(herald, "+447911000001", None, {})
        await herald.store.set_subscription_status(
            await herald.store.resource_id("news"), [pid], "unsubscribed")
        async with MailingService.running(herald) as service:
            m = await service.create(MailingSpec(name="t", kind="trigger", resource="news",
                                                 database="main", template="x"))
            (answer,) = await service.trigger(m.id, [TriggerRequest(profile_id=pid)])
            assert answer.message_id
            await wait_for(service, m.id, lambda s: s.received == 1)
            await service.pause(m.id)  # graceful: what it read is recorded
        rows = herald.store.recipients(m.run_id)  # type: ignore[attr-defined]
    assert [(r[3], r[4]) for r in rows] == [("skipped", "not_subscribed")]
    assert not gateway.submitted


async def test_queued_triggers_survive_a_restart(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        pid = await add(herald, "+447911000001", None, {})
        async with MailingService.running(herald) as service:
            m = await service.create(MailingSpec(name="t", kind="trigger", resource="news",
                                                 database="main", template="x"))
            await service.pause(m.id)
            with pytest.raises(StoreError, match="paused"):
                await service.trigger(m.id, [TriggerRequest(profile_id=pid)])
        # the run is interrupted; a new service picks the trigger mailing up again
        async with MailingService.running(herald) as service:
            (answer,) = await service.trigger(m.id, [TriggerRequest(profile_id=pid)])
            await wait_for(service, m.id, lambda s: s.sent == 1)
    assert list(gateway.accepted) == [answer.message_id]


async def test_bad_mailings_are_refused(open_herald: Callable[..., Any]) -> None:
    async with await open_herald() as herald:
        await herald.store.database_id("main", create=True)
        async with MailingService.running(herald) as service:
            with pytest.raises(InputError, match="resource"):
                await service.create(MailingSpec(name="x", kind="broadcast", resource="nope",
                                                 template="x", database="main"))
            with pytest.raises(InputError, match="database"):
                await service.create(MailingSpec(name="x", kind="trigger", resource="news",
                                                 template="x"))
            with pytest.raises(Exception, match="unclosed"):
                await service.create(MailingSpec(name="x", kind="broadcast", resource="news",
                                                 template="{lead.x", database="main"))


async def test_concurrent_trigger_calls_are_committed_together_and_answered_apart(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        pid = await add(herald, "+447911000001", None, {})
        async with MailingService.running(herald) as service:
            m = await service.create(MailingSpec(name="t", kind="trigger", resource="news",
                                                 database="main", template="{apicontent.n}"))
            answers: dict[int, Any] = {}

            async def call(n: int) -> None:
                key = "same" if n % 10 == 0 else None  # ten calls share one key
                (answers[n],) = await service.trigger(m.id, [TriggerRequest(
                    profile_id=pid, content={"n": n}, idempotency_key=key)])

            async with anyio.create_task_group() as tg:
                for n in range(100):
                    tg.start_soon(call, n)
            await wait_for(service, m.id, lambda s: s.sent == 91)
    keyed = {answers[n].message_id for n in range(0, 100, 10)}
    assert len(keyed) == 1 and sum(answers[n].duplicate for n in range(0, 100, 10)) == 9
    unkeyed = [answers[n].message_id for n in range(100) if n % 10]
    assert len(set(unkeyed)) == 90 and keyed.isdisjoint(unkeyed)
    assert len(gateway.accepted) == 91 and set(gateway.accepted.values()) == {1}


async def test_a_blank_template_is_refused_before_anything_is_sent(
    open_herald: Callable[..., Any],
) -> None:
    from engine.errors import TemplateError

    gateway = FakeGateway()
    async with await open_herald(gateway, default_region="RU") as herald:
        await generate(herald.store, profiles=20, database="main")
        with pytest.raises(TemplateError, match="every message would be empty"):
            await herald.send(resource="news", database="main", template="{if lead.x}{end}\n")
        async with MailingService.running(herald) as service:
            with pytest.raises(TemplateError, match="every message would be empty"):
                await service.create(MailingSpec(name="b", kind="broadcast", resource="news",
                                                 template="   ", database="main"))
        assert await herald.runs() == []
    assert gateway.batches == 0


async def test_a_trigger_run_is_not_resumed_by_the_library(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        await add(herald, "+447911000001", None, {})
        async with MailingService.running(herald) as service:
            m = await service.create(MailingSpec(name="otp", kind="trigger", resource="news",
                                                 database="main", template="x"))
            run_id = (await service.status(m.id)).run_id
        assert run_id is not None
        with anyio.fail_after(5), pytest.raises(InputError, match="herald serve"):
            await herald.resume(run_id)


async def test_listing_reads_each_mailing_once(open_herald: Callable[..., Any]) -> None:
    """Each listed mailing's document is decoded by the list's own read, not once more per
    mailing (issue 20: a viewer's list of big documents held the loop for seconds)."""
    async with await open_herald(FakeGateway(), default_region="RU") as herald:
        await generate(herald.store, profiles=10, database="main")
        async with MailingService.running(herald) as service:
            for name in ("a", "b", "c"):
                await service.create(MailingSpec(
                    name=name, kind="broadcast", resource="news", template="Hi",
                    database="main", document={"k": list(range(100))},
                ))
            reads: list[int] = []
            get_mailing = herald.store.get_mailing

            async def counted(mailing_id: int) -> Any:
                reads.append(mailing_id)
                return await get_mailing(mailing_id)

            herald.store.get_mailing = counted  # type: ignore[method-assign]
            listed = await service.list()
    assert [m.name for m in listed] == ["c", "b", "a"]
    assert reads == []
