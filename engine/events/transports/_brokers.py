"""What the broker transports (``rabbitmq``, ``nats``) share: their life cycle on an
asyncio loop (``BrokerTransport``), reading a message's ``event_type`` and ``event_id``
back from its bytes, the ``{event_type}`` placeholder, and the URL's secrets to keep out
of error messages."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar
from urllib.parse import unquote, urlsplit

import anyio
import msgspec

from engine.config import HookConfig
from engine.errors import redact
from engine.events.transports._asyncio_thread import AsyncioRunner
from engine.events.transports.base import DeliveryError, Transport

__all__ = ["EVENT_TYPE", "BrokerTransport", "describe", "head", "url_secrets"]


class BrokerTransport(Transport):
    """A transport whose client runs only on asyncio: each call runs on the
    ``AsyncioRunner`` (this loop on asyncio, a loop in a thread of its own on trio). The
    connection opens on the first send and again after a failure; ``aclose`` is final (a
    later send raises DeliveryError)."""

    asyncio_only: ClassVar[bool] = True

    def __init__(self, name: str, config: HookConfig, *, token_user: bool = False) -> None:
        super().__init__(name, config)
        self._runner = AsyncioRunner(f"herald hook {name}")
        self._closed = False
        self._secrets = url_secrets(config.url, token_user=token_user)

    async def send(self, messages: Sequence[bytes]) -> None:
        if self._closed:
            raise DeliveryError(f"hook {self.name!r}: its transport is closed")
        if messages:
            await self._runner.run(lambda: self._send(messages))

    async def aclose(self) -> None:
        self._closed = True
        if self._connected():
            await self._runner.run(self._drop)
        await self._runner.aclose()

    #: The broker as errors name it, and what it does to a delivered batch.
    _BROKER: ClassVar[str]
    _ACKS: ClassVar[str]

    async def _send(self, messages: Sequence[bytes]) -> None:
        """Deliver a batch (on the runner's loop) within ``timeout``, or raise
        DeliveryError. A timeout or a cancellation drops the connection: the abandoned
        batch's confirms are pending on it."""
        timeout = self.config.timeout
        try:
            with anyio.fail_after(timeout):
                await self._publish_all(messages)
        except TimeoutError:
            await self._drop()
            raise DeliveryError(f"{self._BROKER} did not {self._ACKS} the batch within"
                                f" {timeout:g} s") from None
        except anyio.get_cancelled_exc_class():
            await self._drop()
            raise
        except Exception as err:
            failure = self._failure(err)
            if failure is None:
                raise
            message, drop = failure
            if drop:
                await self._drop()
            raise DeliveryError(message) from None

    @abc.abstractmethod
    async def _publish_all(self, messages: Sequence[bytes]) -> None:
        """Publish the batch in order and await every confirm."""

    @abc.abstractmethod
    def _failure(self, err: Exception) -> tuple[str, bool] | None:
        """What ``err`` (raised by ``_publish_all``) means: the DeliveryError's message and
        whether the connection is lost; None for an error that is not the broker's."""

    @abc.abstractmethod
    def _connected(self) -> bool:
        """Whether a connection may be open (``aclose`` then closes it)."""

    @abc.abstractmethod
    async def _drop(self) -> None:
        """Forget the connection, closing it if it is still open."""

#: The placeholder of ``routing_key``, ``exchange`` and ``subject``.
EVENT_TYPE = "{event_type}"


class Head(msgspec.Struct):
    """The two fields of a message a broker transport needs (the rest is skipped)."""

    event_type: str = ""
    event_id: str | int | None = None


_decode_head = msgspec.json.Decoder(Head).decode


def head(message: bytes) -> Head:
    """``event_type`` and ``event_id`` of an encoded message (cheap: the decoder skips the
    other fields without building them)."""
    return _decode_head(message)


def url_secrets(url: str, *, token_user: bool = False) -> list[str]:
    """The password of ``url`` as written and percent-decoded; with ``token_user``, the
    user part of a URL without a password too (NATS's ``nats://TOKEN@host``)."""
    try:
        parts = urlsplit(url)
        found = [parts.password or (parts.username if token_user else None)]
    except ValueError:
        return []
    return [s for raw in found if raw for s in {raw, unquote(raw)}]


def describe(err: BaseException, secrets: list[str]) -> str:
    """A vendor exception as one line without secrets: its class and text."""
    text = str(err).strip() or repr(err)
    return redact(f"{type(err).__name__}: {text}", secrets)
