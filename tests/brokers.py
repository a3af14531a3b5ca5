"""The message brokers of hooks' tests: RabbitMQ and NATS JetStream on loopback.

``HERALD_TEST_RABBITMQ`` (default ``amqp://guest:guest@127.0.0.1:5672/``) and
``HERALD_TEST_NATS`` (default ``nats://127.0.0.1:4222``) name them. Without a reachable
broker the tests that need one skip, saying why; ``HERALD_REQUIRE_SERVICES=1`` turns those
skips into failures (as in ``tests/pg.py``).

``rabbit_scratch()`` and ``nats_scratch()`` give a throwaway exchange (with queues bound
as the test asks) or stream, deleted afterwards; ``TcpProxy`` stands between a client and
a broker so that a test can cut the connection; ``silent_server()`` accepts connections and
never answers.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import anyio
import anyio.abc
import pytest

from engine.events.transports._asyncio_thread import AsyncioRunner
from engine.events.transports.base import DeliveryError, Transport

RABBITMQ = os.environ.get("HERALD_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
NATS = os.environ.get("HERALD_TEST_NATS", "nats://127.0.0.1:4222")

T = TypeVar("T")


def _address(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def rabbitmq_unreachable() -> str | None:
    """Why no RabbitMQ can be used, or None (it must answer the AMQP protocol header)."""
    host, port = _address(RABBITMQ, 5672)
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            if s.recv(1) != b"\x01":  # the frame type of Connection.Start
                return f"{host}:{port} does not speak AMQP 0-9-1"
    except OSError as err:
        return f"no RabbitMQ at {host}:{port} ({err})"
    return None


def nats_unreachable() -> str | None:
    """Why no NATS server with JetStream can be used, or None."""
    host, port = _address(NATS, 4222)
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            line = s.makefile("rb").readline(65536)
    except OSError as err:
        return f"no NATS server at {host}:{port} ({err})"
    if not line.startswith(b"INFO "):
        return f"{host}:{port} does not speak NATS"
    if not json.loads(line[5:]).get("jetstream"):
        return f"the NATS server at {host}:{port} has no JetStream (start it with -js)"
    return None


def _skip_or_fail(why: str | None) -> None:
    if why is None:
        return
    if os.environ.get("HERALD_REQUIRE_SERVICES"):
        pytest.fail(f"HERALD_REQUIRE_SERVICES is set, but {why}")
    pytest.skip(why)


def skip_without_rabbitmq() -> None:
    _skip_or_fail(rabbitmq_unreachable())


def skip_without_nats() -> None:
    _skip_or_fail(nats_unreachable())


def scratch_name(prefix: str = "herald_test") -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


class _Admin:
    """The test's own client connection, on asyncio whatever the backend."""

    def __init__(self, name: str) -> None:
        self.runner = AsyncioRunner(name)

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await self.runner.run(fn)


class RabbitScratch(_Admin):
    """A throwaway topic exchange ``exchange``; ``queue`` binds queues to it."""

    def __init__(self) -> None:
        super().__init__("test rabbitmq admin")
        self.exchange = scratch_name()
        self._connection: Any = None
        self._channel: Any = None
        self._queues: dict[str, Any] = {}

    async def _open(self) -> None:
        import aio_pika

        self._connection = await aio_pika.connect(RABBITMQ)
        self._channel = await self._connection.channel()
        await self._channel.declare_exchange(self.exchange, aio_pika.ExchangeType.TOPIC)

    async def _close(self) -> None:
        try:
            await self._channel.exchange_delete(self.exchange)
        finally:
            await self._connection.close()  # its exclusive queues go with it

    async def queue(self, binding_key: str = "#", **arguments: Any) -> str:
        """A new exclusive queue bound to the exchange with ``binding_key`` (queue
        ``arguments`` such as ``x-max-length``); its name."""
        name = scratch_name("herald_test_q")

        async def declare() -> None:
            q = await self._channel.declare_queue(name, exclusive=True, arguments=arguments)
            await q.bind(self.exchange, binding_key)
            self._queues[name] = q

        await self.run(declare)
        return name

    async def take(self, queue: str) -> list[Any]:
        """Every message in ``queue`` now (acknowledged), in queue order."""

        async def drain() -> list[Any]:
            out = []
            while (m := await self._queues[queue].get(no_ack=True, fail=False)) is not None:
                out.append(m)
            return out

        return await self.run(drain)


@asynccontextmanager
async def rabbit_scratch() -> AsyncIterator[RabbitScratch]:
    skip_without_rabbitmq()
    scratch = RabbitScratch()
    await scratch.run(scratch._open)
    try:
        yield scratch
    finally:
        with anyio.CancelScope(shield=True):
            await scratch.run(scratch._close)
            await scratch.runner.aclose()


class NatsScratch(_Admin):
    """A throwaway stream ``stream`` taking the subjects ``{prefix}.>``."""

    def __init__(self) -> None:
        super().__init__("test nats admin")
        self.stream = scratch_name().upper()
        self.prefix = scratch_name()
        self._client: Any = None
        self._js: Any = None

    async def _open(self) -> None:
        import nats

        self._client = await nats.connect(NATS)
        self._js = self._client.jetstream()
        await self._js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"])

    async def _close(self) -> None:
        try:
            await self._js.delete_stream(self.stream)
        finally:
            await self._client.close()

    async def take(self) -> list[Any]:
        """Every message the stream holds, in stream order (``subject``, ``data``,
        ``headers``)."""

        async def read() -> list[Any]:
            info = await self._js.stream_info(self.stream)
            first, last = info.state.first_seq, info.state.last_seq
            if info.state.messages == 0:
                return []
            return [await self._js.get_msg(self.stream, seq)
                    for seq in range(first, last + 1)]

        return await self.run(read)


@asynccontextmanager
async def nats_scratch() -> AsyncIterator[NatsScratch]:
    skip_without_nats()
    scratch = NatsScratch()
    await scratch.run(scratch._open)
    try:
        yield scratch
    finally:
        with anyio.CancelScope(shield=True):
            await scratch.run(scratch._close)
            await scratch.runner.aclose()


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``target``; ``drop()`` cuts every connection open
    through it, as a network failure would (new ones are forwarded again)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0
        self._scopes: set[anyio.CancelScope] = set()

    def drop(self) -> None:
        for scope in self._scopes:
            scope.cancel()

    async def _serve(self, client: anyio.abc.SocketStream) -> None:
        self.accepted += 1
        with anyio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with client, await anyio.connect_tcp(*self.target) as upstream:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(_pump, client, upstream, tg.cancel_scope)
                        tg.start_soon(_pump, upstream, client, tg.cancel_scope)
            finally:
                self._scopes.discard(scope)


async def _pump(source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream,
                both: anyio.CancelScope) -> None:
    try:
        async for chunk in source:
            await sink.send(chunk)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    both.cancel()  # one side closed: close the other


@asynccontextmanager
async def tcp_proxy(target: tuple[str, int]) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(target)
    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener, \
            anyio.create_task_group() as tg:
        proxy.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.start_soon(listener.serve, proxy._serve)
        try:
            yield proxy
        finally:
            tg.cancel_scope.cancel()


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A loopback port that accepts connections and never says a word (a hung peer)."""

    async def hold(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            async for _ in stream:
                pass

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener, \
            anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, hold)
        try:
            yield listener.extra(anyio.abc.SocketAttribute.local_port)
        finally:
            tg.cancel_scope.cancel()


#: Event types the sample messages cycle through.
EVENT_TYPES = ("send_sms", "deliv_sms", "undeliv_sms", "click_sms")


def messages(n: int, start: int = 0) -> list[bytes]:
    """``n`` hook messages (the shape of ``docs/hooks.md``, trimmed) with distinct
    ``event_id``s, their event types cycling through ``EVENT_TYPES``."""
    return [json.dumps({
        "event_type": EVENT_TYPES[i % len(EVENT_TYPES)],
        "event_id": f"{i:06d}-{secrets.token_hex(4)}",
        "event_date": "2026-12-02T06:00:00Z",
        "event_data": {"message_id": f"run-{i}", "phone": "79990000000"},
    }, separators=(",", ":")).encode() for i in range(start, start + n)]


def event_of(message: bytes) -> dict[str, Any]:
    event: dict[str, Any] = json.loads(message)
    return event


async def send_retrying(transport: Transport, batch: list[bytes], tries: int = 3) -> int:
    """Sends ``batch`` as the outbox would, again after a DeliveryError; how many sends
    failed before one delivered it."""
    for failures in range(tries):
        try:
            await transport.send(batch)
            return failures
        except DeliveryError:
            pass
    raise AssertionError(f"not delivered in {tries} tries")


def rabbitmq_address() -> tuple[str, int]:
    return _address(RABBITMQ, 5672)


def nats_address() -> tuple[str, int]:
    return _address(NATS, 4222)


def via(url: str, port: int) -> str:
    """``url`` with its host and port replaced by ``127.0.0.1:port`` (a proxy's)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return parts._replace(netloc=netloc).geturl()
