"""The contract every transport of action hooks keeps (``engine.events.transports.base``),
run against each: ``http`` (to a loopback sink), ``rabbitmq`` and ``nats`` (to the brokers on
loopback), on asyncio and trio.

- ``send`` returns once the peer has every message of the batch, in order;
- an empty batch is a no-op (no connection is even opened);
- a peer that is down or hung raises DeliveryError within ``timeout``, and its text holds
  none of the hook's secrets (a URL's password, ``secret``, header values);
- ``aclose`` is idempotent, and final: a send after it raises DeliveryError.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from engine.config import HookConfig
from engine.events.transports import make_transport
from engine.events.transports.base import DeliveryError, Transport
from tests.brokers import (
    NATS,
    RABBITMQ,
    messages,
    nats_scratch,
    rabbit_scratch,
    silent_server,
    via,
)
from tests.events.sink import Sink
from tests.servers import free_port

pytestmark = pytest.mark.anyio

PASSWORD = "pw-s3cret-4711"
HMAC_SECRET = "hmac-s3cret-0123456789"
HEADER_SECRET = "Bearer hdr-s3cret-0815"


@dataclass
class Peer:
    """One transport's other side: ``config`` for a hook that reaches it (or, with
    ``port``, that port on loopback instead, with the secrets a hook may hold), and
    ``received`` what it has taken so far, in order."""

    kind: str
    keys: dict[str, Any]
    url: str
    received: Callable[[], Awaitable[list[bytes]]]
    secrets: list[str] = field(default_factory=list)

    def config(self, port: int | None = None, **keys: Any) -> HookConfig:
        url = self.url
        if port is not None:
            url = via(url.replace("//", f"//herald:{PASSWORD}@", 1) if self.kind != "http"
                      else url, port)
        return HookConfig(transport=self.kind,  # type: ignore[arg-type]
                          events=["send_sms"], url=url, **{**self.keys, **keys})

    def transport(self, port: int | None = None, **keys: Any) -> Transport:
        return make_transport("contract", self.config(port, **keys))


@pytest.fixture(params=["http", "rabbitmq", "nats"])
async def peer(request: pytest.FixtureRequest) -> AsyncIterator[Peer]:
    async with AsyncExitStack() as stack:
        if request.param == "http":
            sink = await stack.enter_async_context(Sink())

            async def posted() -> list[bytes]:
                return [json.dumps(e, separators=(",", ":")).encode()
                        for r in sink.requests for e in json.loads(r.body)]

            yield Peer("http", {"secret": HMAC_SECRET,
                                "headers": {"Authorization": HEADER_SECRET}},
                       sink.url, posted, [HMAC_SECRET, HEADER_SECRET])
        elif request.param == "rabbitmq":
            rmq = await stack.enter_async_context(rabbit_scratch())
            queue = await rmq.queue("#")

            async def queued() -> list[bytes]:
                return [m.body for m in await rmq.take(queue)]

            yield Peer("rabbitmq", {"exchange": rmq.exchange}, RABBITMQ, queued, [PASSWORD])
        else:
            js = await stack.enter_async_context(nats_scratch())

            async def stored() -> list[bytes]:
                return [m.data for m in await js.take()]

            yield Peer("nats", {"subject": f"{js.prefix}.{{event_type}}"}, NATS, stored,
                       [PASSWORD])


async def test_send_delivers_every_message_in_order(peer: Peer) -> None:
    transport = peer.transport()
    first, second = messages(50), messages(50, start=50)
    try:
        await transport.send(first)
        await transport.send(second)
    finally:
        await transport.aclose()
    assert await peer.received() == first + second


async def test_an_empty_batch_is_a_no_op(peer: Peer) -> None:
    transport = peer.transport(port=free_port())  # nobody there: it must not even try
    try:
        await transport.send([])
    finally:
        await transport.aclose()


async def test_a_peer_that_is_down_raises_delivery_error_at_once(peer: Peer) -> None:
    transport = peer.transport(port=free_port(), timeout=5)
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryError) as caught:
            await transport.send(messages(3))
    finally:
        await transport.aclose()
    assert time.monotonic() - started < 2
    for secret in peer.secrets:
        assert secret not in str(caught.value)


async def test_a_hung_peer_raises_delivery_error_within_the_timeout(peer: Peer) -> None:
    async with silent_server() as port:
        transport = peer.transport(port=port, timeout=0.5)
        started = time.monotonic()
        try:
            with pytest.raises(DeliveryError) as caught:
                await transport.send(messages(3))
        finally:
            await transport.aclose()
        assert 0.4 < time.monotonic() - started < 3
    for secret in peer.secrets:
        assert secret not in str(caught.value)


async def test_a_cancelled_send_returns_at_once(peer: Peer) -> None:
    """A stop (SIGTERM, a lost lease) does not wait for a peer that never answers."""
    async with silent_server() as port:
        transport = peer.transport(port=port, timeout=60)
        started = time.monotonic()
        with anyio.move_on_after(0.2) as scope:
            await transport.send(messages(1))
        await transport.aclose()
        assert scope.cancelled_caught
        assert time.monotonic() - started < 3


async def test_aclose_is_idempotent_and_final(peer: Peer) -> None:
    unused = peer.transport()
    await unused.aclose()
    await unused.aclose()
    transport = peer.transport()
    await transport.send(messages(2))
    await transport.aclose()
    await transport.aclose()
    with pytest.raises(DeliveryError, match="closed"):
        await transport.send(messages(1))
    assert len(await peer.received()) == 2
