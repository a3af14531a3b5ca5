"""The ``nats`` transport against the NATS JetStream on loopback, on asyncio and on trio
(where nats-py runs on a loop of its own in a thread)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from engine.config import HookConfig
from engine.events.transports import make_transport
from engine.events.transports.base import DeliveryError
from engine.events.transports.nats import NatsTransport
from tests.brokers import (
    NATS,
    event_of,
    messages,
    nats_address,
    nats_scratch,
    send_retrying,
    skip_without_nats,
    tcp_proxy,
    via,
)
from tests.servers import free_port

pytestmark = pytest.mark.anyio


def hook(subject: str, url: str = NATS, **keys: Any) -> NatsTransport:
    config = HookConfig(transport="nats", events=["send_sms"], url=url, subject=subject,
                        **keys)
    transport = make_transport("crm", config)
    assert isinstance(transport, NatsTransport)
    return transport


async def test_a_batch_is_stored_in_order_with_a_subject_per_event_type() -> None:
    async with nats_scratch() as js:
        batch = messages(300)
        transport = hook(f"{js.prefix}.{{event_type}}")
        try:
            await transport.send(batch)
        finally:
            await transport.aclose()
        # send returned: the stream acknowledged every message, so each is stored
        got = await js.take()
        assert [m.data for m in got] == batch
        assert [m.subject for m in got] == [
            f"{js.prefix}.{event_of(b)['event_type']}" for b in batch]
        assert [m.headers["Nats-Msg-Id"] for m in got] == [
            event_of(b)["event_id"] for b in batch]


async def test_a_batch_sent_again_is_stored_once() -> None:
    async with nats_scratch() as js:
        batch = messages(20)
        transport = hook(f"{js.prefix}.events")
        try:
            await transport.send(batch)
            await transport.send(batch[10:] + messages(5, start=20))  # a retried overlap
        finally:
            await transport.aclose()
        got = await js.take()
        assert len(got) == 25
        assert [m.data for m in got[:20]] == batch


async def test_a_subject_no_stream_takes_is_named() -> None:
    skip_without_nats()
    transport = hook("herald_test_no_stream.events")
    try:
        with pytest.raises(DeliveryError, match=r"no JetStream stream takes subject"
                                                r" 'herald_test_no_stream\.events'"):
            await transport.send(messages(2))
    finally:
        await transport.aclose()


async def test_a_server_that_is_down_fails_at_once_without_the_secret() -> None:
    port = free_port()
    for url in (f"nats://bob:s3cret-pw@127.0.0.1:{port}", f"nats://t0ken-s3cret@127.0.0.1:{port}"):
        transport = hook("x.y", url=url, timeout=5)
        started = time.monotonic()
        try:
            with pytest.raises(DeliveryError, match=r"(?i)refused") as caught:
                await transport.send(messages(2))
        finally:
            await transport.aclose()
        assert time.monotonic() - started < 2
        assert "s3cret" not in str(caught.value)


async def test_it_reconnects_after_the_connection_is_lost() -> None:
    async with nats_scratch() as js, tcp_proxy(nats_address()) as proxy:
        transport = hook(f"{js.prefix}.events", url=via(NATS, proxy.port))
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
        assert [m.data for m in await js.take()] == first + second  # deduped if resent
