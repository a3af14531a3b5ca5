"""The issue's broker check, end to end: a mailing's events (sends, receipts) reach a queue
bound to the RabbitMQ exchange, and a JetStream stream, none missing and none foreign,
delivered by the hooks that ``MailingService`` runs (``herald serve``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from engine.demo import generate
from engine.drivers import Receipt
from engine.runner import Herald
from engine.service import MailingService
from engine.store.base import ORIGIN
from engine.testing import FakeGateway
from tests.brokers import NATS, RABBITMQ, nats_scratch, rabbit_scratch

pytestmark = pytest.mark.anyio

PROFILES = 400


async def mailing_with_receipts(herald: Herald) -> set[str]:
    """A broadcast to the demo's audience, half its messages delivered and a tenth
    undelivered by receipts; the ids of every event hooks take, as the record has them."""
    await generate(herald.store, profiles=PROFILES, database="main")
    log = await herald.send(resource="news", database="main", template="Hi {lead._fname}")
    assert log.sent > 0
    sent = [e for e in await herald.store.events(limit=100_000) if e.kind == "send_sms"]
    provider = {e.message_id: f"p-{e.message_id}" for e in sent}
    receipts = [Receipt(provider[e.message_id], "delivered" if i % 10 else "undelivered",
                        error=None if i % 10 else "absent")
                for i, e in enumerate(sent[: len(sent) // 2])]
    await herald.store.apply_receipts("gw", receipts, senders=["s1"])
    kinds = {"send_sms", "deliv_sms", "undeliv_sms"}
    recorded = await herald.store.hook_events(ORIGIN, 100_000)
    return {str(e.position.id) for e in recorded if e.kind in kinds}


async def until(check: Callable[[], Any], seconds: float = 30) -> None:
    with anyio.fail_after(seconds):
        while True:
            if await check():
                return
            await anyio.sleep(0.05)


async def test_a_mailings_events_reach_a_queue_bound_to_the_exchange(
        open_herald: Callable[..., Any]) -> None:
    async with rabbit_scratch() as rabbit:
        queue = await rabbit.queue("herald.#")
        hook = f"""
[hooks.queue]
transport = "rabbitmq"
url = "{RABBITMQ}"
exchange = "{rabbit.exchange}"
events = ["send_sms", "deliv_sms", "undeliv_sms"]
flush_interval = 0.05
"""
        async with await open_herald(FakeGateway(), default_region="RU", extra=hook) as herald:
            got: list[dict[str, Any]] = []
            async with MailingService.running(herald):
                # the hook starts at the end of the record: let it claim first
                await until(lambda: _claimed(herald, "queue"))
                expected = await mailing_with_receipts(herald)

                async def all_there() -> bool:
                    got.extend(json.loads(m.body) for m in await rabbit.take(queue))
                    return {m["event_id"] for m in got} >= expected

                await until(all_there)
            ids = [m["event_id"] for m in got]
            assert set(ids) == expected  # none missing, none that is not the mailing's
            assert len(expected) > PROFILES * 0.9  # sends and receipts both
            assert {m["event_type"] for m in got} == {"send_sms", "deliv_sms", "undeliv_sms"}


async def test_a_mailings_events_reach_a_jetstream_stream(
        open_herald: Callable[..., Any]) -> None:
    async with nats_scratch() as nats:
        hook = f"""
[hooks.stream]
transport = "nats"
url = "{NATS}"
subject = "{nats.prefix}.{{event_type}}"
events = ["send_sms", "deliv_sms", "undeliv_sms"]
flush_interval = 0.05
"""
        async with await open_herald(FakeGateway(), default_region="RU", extra=hook) as herald:
            async with MailingService.running(herald):
                await until(lambda: _claimed(herald, "stream"))
                expected = await mailing_with_receipts(herald)

                async def all_there() -> list[Any] | None:
                    held = await nats.take()
                    return held if len(held) >= len(expected) else None

                await until(all_there)
            held = await nats.take()
            ids = [json.loads(m.data)["event_id"] for m in held]
            assert set(ids) == expected
            assert {m.subject.rsplit(".", 1)[1] for m in held} == {
                "send_sms", "deliv_sms", "undeliv_sms"}


async def _claimed(herald: Herald, name: str) -> bool:
    return any(s.name == name and s.owner for s in await herald.store.hook_states())
