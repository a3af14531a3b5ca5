"""The ``rabbitmq`` transport of action hooks: each event a persistent AMQP message,
delivered when the broker confirmed it (publisher confirms).

Each message goes to ``exchange`` with ``routing_key`` (both may hold ``{event_type}``),
``content_type`` ``application/json``, ``message_id`` = the event's ``event_id`` and
``type`` = its ``event_type``. A batch is published on one channel, in order, and its
confirms are awaited together.

The exchange is the user's: Herald does not declare it (nor queues). Messages are
published ``mandatory``: one that no binding routes to a queue comes back, and the batch
fails (it is retried, then dead-lettered), so a missing binding loses no event. To
drop unrouted events on purpose, give the exchange an alternate exchange.

The connection is opened on the first send and again after any failure (``aclose`` is
final: a later send raises DeliveryError); aio-pika runs only on asyncio (see
``_asyncio_thread`` for trio).
"""

from __future__ import annotations

from collections.abc import Sequence

import aio_pika
import aio_pika.abc
import aiormq.exceptions
import anyio

from engine.config import HookConfig
from engine.events.transports._brokers import EVENT_TYPE, BrokerTransport, describe, head
from engine.events.transports.base import DeliveryError

__all__ = ["RabbitTransport"]

#: What the client raises when the broker or the network fails us.
_FAILURES = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError, OSError)

#: Seconds closing a connection may take after a failure.
_CLOSE_WAIT = 1.0


class RabbitTransport(BrokerTransport):
    """Publishes a hook's events to RabbitMQ with publisher confirms (module docstring)."""

    def __init__(self, name: str, config: HookConfig) -> None:
        super().__init__(name, config)
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}

    def _connected(self) -> bool:
        return self._connection is not None

    _BROKER = "RabbitMQ"
    _ACKS = "confirm"

    def _failure(self, err: Exception) -> tuple[str, bool] | None:
        if isinstance(err, _FAILURES):
            return f"RabbitMQ: {describe(err, self._secrets)}", True
        return None

    async def _publish_all(self, messages: Sequence[bytes]) -> None:
        exchange_name = self.config.exchange or ""
        routing_key = self.config.routing_key
        channel = await self._open()
        failures: list[tuple[str, str, BaseException]] = []

        async def publish(exchange: aio_pika.abc.AbstractExchange,
                          message: aio_pika.Message, key: str) -> None:
            try:
                await exchange.publish(message, key, mandatory=True)
            except _FAILURES as err:
                failures.append((exchange.name, key, err))

        # The tasks queue on the channel's lock in the order they start, so the broker
        # gets the messages in batch order; the confirms come back as they will.
        async with anyio.create_task_group() as tg:
            for body in messages:
                h = head(body)
                exchange = await self._exchange(
                    channel, exchange_name.replace(EVENT_TYPE, h.event_type))
                message = aio_pika.Message(
                    body, content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    message_id=None if h.event_id is None else str(h.event_id),
                    type=h.event_type or None)
                tg.start_soon(publish, exchange, message,
                              routing_key.replace(EVENT_TYPE, h.event_type))
        if failures:
            name, key, err = failures[0]
            if isinstance(err, aiormq.exceptions.PublishError):
                why = (f"exchange {name!r} routed a message with routing key {key!r} to no"
                       " queue (bind a queue for it, or give the exchange an alternate"
                       " exchange)")
            elif isinstance(err, aiormq.exceptions.DeliveryError):
                why = f"the broker refused (nack) a message with routing key {key!r}"
            else:
                why = describe(err, self._secrets)
            raise DeliveryError(
                f"RabbitMQ: {len(failures)} of {len(messages)} messages not confirmed: {why}")

    async def _open(self) -> aio_pika.abc.AbstractChannel:
        """The channel, after (re)connecting if the connection or channel is gone."""
        if (self._connection is None or self._connection.is_closed
                or self._channel is None or self._channel.is_closed):
            await self._drop()
            self._connection = await aio_pika.connect(
                self.config.url, timeout=self.config.timeout,
                client_properties={"connection_name": f"herald hook {self.name}"})
            self._channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True)
        return self._channel

    async def _exchange(self, channel: aio_pika.abc.AbstractChannel,
                        name: str) -> aio_pika.abc.AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            # Not declared, not even passively (a publish-only user may not): a missing
            # exchange fails the publish with the broker's NOT_FOUND.
            exchange = (channel.default_exchange if name == ""
                        else await channel.get_exchange(name, ensure=False))
            self._exchanges[name] = exchange
        return exchange

    async def _drop(self) -> None:
        """Forget the connection (closing it if it is still open): the next send opens
        another."""
        connection, self._connection, self._channel = self._connection, None, None
        self._exchanges.clear()
        if connection is None or connection.is_closed:
            return
        with anyio.move_on_after(_CLOSE_WAIT, shield=True):
            try:
                await connection.close()
            except _FAILURES:  # it was failing anyway
                pass
