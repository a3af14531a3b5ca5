"""The ``rabbitmq`` transport against the RabbitMQ on loopback, on asyncio and on trio
(where aio-pika runs on a loop of its own in a thread)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from engine.config import HookConfig
from engine.events.transports import make_transport
from engine.events.transports.base import DeliveryError
from engine.events.transports.rabbitmq import RabbitTransport
from tests.brokers import (
    RABBITMQ,
    event_of,
    messages,
    rabbit_scratch,
    rabbitmq_address,
    send_retrying,
    skip_without_rabbitmq,
    tcp_proxy,
    via,
)
from tests.servers import free_port

pytestmark = pytest.mark.anyio


def hook(exchange: str, url: str = RABBITMQ, **keys: Any) -> RabbitTransport:
    config = HookConfig(transport="rabbitmq", events=["send_sms"], url=url,
                        exchange=exchange, **keys)
    transport = make_transport("crm", config)
    assert isinstance(transport, RabbitTransport)
    return transport


async def test_a_batch_arrives_in_order_with_a_routing_key_per_event_type() -> None:
    async with rabbit_scratch() as rmq:
        everything = await rmq.queue("herald.#")
        delivered_only = await rmq.queue("herald.deliv_sms")
        batch = messages(300)
        transport = hook(rmq.exchange)
        try:
            await transport.send(batch)
        finally:
            await transport.aclose()
        # send returned: every message was confirmed, so each is already in its queues
        got = await rmq.take(everything)
        assert [m.body for m in got] == batch
        assert [m.routing_key for m in got] == [
            f"herald.{event_of(b)['event_type']}" for b in batch]
        first = got[0]
        assert first.message_id == event_of(batch[0])["event_id"]
        assert first.content_type == "application/json"
        assert first.delivery_mode == 2  # persistent
        assert first.type == "send_sms"
        only = await rmq.take(delivered_only)
        assert [m.body for m in only] == [b for b in batch
                                          if event_of(b)["event_type"] == "deliv_sms"]


async def test_the_default_exchange_routes_by_queue_name() -> None:
    async with rabbit_scratch() as rmq:
        queue = await rmq.queue("unused")
        transport = hook("", routing_key=queue)
        try:
            await transport.send(messages(3))
        finally:
            await transport.aclose()
        assert len(await rmq.take(queue)) == 3


async def test_an_unroutable_event_fails_the_batch_rather_than_vanish() -> None:
    async with rabbit_scratch() as rmq:
        queue = await rmq.queue("herald.send_sms")
        transport = hook(rmq.exchange)
        try:
            with pytest.raises(DeliveryError, match=r"herald\.deliv_sms.* to no queue"):
                await transport.send(messages(2))  # send_sms is bound, deliv_sms is not
            # the channel is still good for the next batch
            await transport.send(messages(1))
        finally:
            await transport.aclose()
        assert len(await rmq.take(queue)) == 2


async def test_a_message_the_broker_refuses_fails_the_batch() -> None:
    async with rabbit_scratch() as rmq:
        # a full queue that rejects publishes: the broker nacks what does not fit
        await rmq.queue("#", **{"x-max-length": 2, "x-overflow": "reject-publish"})
        transport = hook(rmq.exchange)
        try:
            with pytest.raises(DeliveryError, match=r"3 of 5 messages not confirmed.*nack"):
                await transport.send(messages(5))
        finally:
            await transport.aclose()


async def test_a_missing_exchange_is_named() -> None:
    skip_without_rabbitmq()
    transport = hook("herald_test_no_such_exchange")
    try:
        with pytest.raises(DeliveryError, match="no exchange 'herald_test_no_such_exchange'"):
            await transport.send(messages(2))
    finally:
        await transport.aclose()


async def test_a_broker_that_is_down_fails_at_once_without_the_password() -> None:
    transport = hook("x", url=f"amqp://guest:s3cret-pw@127.0.0.1:{free_port()}/",
                     timeout=5)
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryError) as caught:
            await transport.send(messages(2))
    finally:
        await transport.aclose()
    assert time.monotonic() - started < 2
    assert "refused" in str(caught.value).lower() or "connect" in str(caught.value).lower()
    assert "s3cret-pw" not in str(caught.value)


async def test_a_wrong_password_is_not_repeated() -> None:
    skip_without_rabbitmq()
    host, port = rabbitmq_address()
    transport = hook("x", url=f"amqp://guest:wr0ng-s3cret@{host}:{port}/")
    try:
        with pytest.raises(DeliveryError, match="ACCESS_REFUSED") as caught:
            await transport.send(messages(1))
    finally:
        await transport.aclose()
    assert "wr0ng-s3cret" not in str(caught.value)


async def test_it_reconnects_after_the_connection_is_lost() -> None:
    async with rabbit_scratch() as rmq, tcp_proxy(rabbitmq_address()) as proxy:
        queue = await rmq.queue()
        transport = hook(rmq.exchange, url=via(RABBITMQ, proxy.port))
        try:
            first, second = messages(10), messages(10, start=10)
            await transport.send(first)
            proxy.drop()
            # The loss shows either when the next batch starts or while it is sent: at
            # most one batch fails, and the transport connects again for the next try.
            assert await send_retrying(transport, second) <= 1
        finally:
            await transport.aclose()
        assert proxy.accepted == 2
        got = [m.body for m in await rmq.take(queue)]
        assert got[:10] == first
        assert set(second) <= set(got[10:])
