"""The ``nats`` transport of action hooks: each event a JetStream message on ``subject``
(which may hold ``{event_type}``), delivered when the stream acknowledged it.

A stream must take the subject: Herald does not create it (``nats stream add``). Each
message carries the header ``Nats-Msg-Id`` = its ``event_id``, so the stream drops a
resend within its duplicate window (``duplicate_window``, two minutes by default);
resends after that reach consumers again, who dedupe on ``event_id``.

A batch is published without waiting between messages, in order, and the acks are
awaited together. The connection is opened on the first send and again after any
failure (the client's own reconnecting is off, so that a lost connection fails the batch
at once; ``aclose`` is final: a later send raises DeliveryError); nats-py runs only on
asyncio (see ``_asyncio_thread`` for trio).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
import nats.errors
import nats.js
import nats.js.api
import nats.js.errors
from nats.aio.client import Client

from engine.config import HookConfig
from engine.events.transports._brokers import EVENT_TYPE, BrokerTransport, describe, head

if TYPE_CHECKING:
    from asyncio import Future

__all__ = ["NatsTransport"]

#: What the client raises when the server or the network fails us.
_FAILURES = (nats.errors.Error, OSError)

#: More acks than a batch can await (``batch_size`` is at most 10,000).
_MAX_IN_FLIGHT = 1 << 20

#: Seconds closing a connection may take after a failure.
_CLOSE_WAIT = 1.0


class NatsTransport(BrokerTransport):
    """Publishes a hook's events to NATS JetStream (module docstring)."""

    def __init__(self, name: str, config: HookConfig) -> None:
        super().__init__(name, config, token_user=True)
        self._client: Client | None = None
        self._js: nats.js.JetStreamContext | None = None
        #: What the client last reported to its error callback (instead of logging it
        #: with a traceback): why a connect ended in NoServersError.
        self._last_error: Exception | None = None
        #: The acks the batch being sent awaits: failed when the connection is lost (the
        #: client would leave them pending until the timeout).
        self._pending: list[Future[nats.js.api.PubAck]] = []

    def _connected(self) -> bool:
        return self._client is not None

    _BROKER = "NATS JetStream"
    _ACKS = "acknowledge"

    def _failure(self, err: Exception) -> tuple[str, bool] | None:
        if isinstance(err, nats.js.errors.NoStreamResponseError):
            return (f"NATS: no JetStream stream takes subject {self.config.subject!r}"
                    " (create one whose subjects match it)"), False
        if isinstance(err, nats.js.errors.APIError):
            return f"NATS JetStream refused a message: {describe(err, self._secrets)}", False
        if isinstance(err, _FAILURES):
            why: Exception = err
            if isinstance(err, nats.errors.NoServersError) and self._last_error is not None:
                why = self._last_error
            return f"NATS: {describe(why, self._secrets)}", True
        return None

    async def _publish_all(self, messages: Sequence[bytes]) -> None:
        subject = self.config.subject or ""
        js = await self._open()
        acks = self._pending = []
        try:
            for body in messages:
                h = head(body)
                headers = {} if h.event_id is None else {"Nats-Msg-Id": str(h.event_id)}
                acks.append(await js.publish_async(
                    subject.replace(EVENT_TYPE, h.event_type), body, headers=headers))
            for ack in acks:
                await ack  # a duplicate (ack.duplicate) was stored before: delivered too
        finally:
            for ack in acks:
                ack.cancel()  # those still pending, after a failure
            self._pending = []

    async def _open(self) -> nats.js.JetStreamContext:
        """The JetStream context, after (re)connecting if the connection is gone."""
        if self._client is None or self._js is None or not self._client.is_connected:
            await self._drop()
            self._last_error = None
            # Reconnecting is ours (on the next send), and so are the retries of a
            # failed connect: the client's least is one more try, here at once.
            # Kept before it connects, so that _drop closes the socket of a connect that
            # failed or was cancelled half-way.
            self._client = Client()
            await self._client.connect(
                self.config.url, name=f"herald hook {self.name}",
                connect_timeout=math.ceil(self.config.timeout),  # our deadline rules
                allow_reconnect=False,
                max_reconnect_attempts=1, reconnect_time_wait=0, error_cb=self._on_error,
                disconnected_cb=self._on_disconnect)
            # Never stalls on its limit of acks in flight: a stalled publish_async turns
            # cancellation into TooManyStalledMsgsError.
            self._js = self._client.jetstream(publish_async_max_pending=_MAX_IN_FLIGHT)
        return self._js

    async def _on_error(self, err: Exception) -> None:
        self._last_error = err

    async def _on_disconnect(self) -> None:
        for ack in self._pending:
            if not ack.done():
                ack.set_exception(nats.errors.ConnectionClosedError())

    async def _drop(self) -> None:
        """Forget the connection (closing it if it is still open): the next send opens
        another."""
        client, self._client, self._js = self._client, None, None
        if client is None or client.is_closed:
            return
        with anyio.move_on_after(_CLOSE_WAIT, shield=True):
            try:
                await client.close()
            except _FAILURES:  # it was failing anyway
                pass
