"""Inbound messages (replies) from a gateway, and the STOP rule.

A gateway's driver parses its inbound callback (``Driver.parse_inbound``, sans-I/O, run in
a worker thread) into ``Inbound`` messages: the sender's phone and the text. A message is a
STOP when its text, trimmed, equals one of ``[engine] stop_words`` (default ``STOP``,
``СТОП``, ``UNSUBSCRIBE``, ``ОТПИСКА``) compared case-insensitively (``str.casefold``):
``" stop "`` and ``"Стоп"`` are STOPs, ``"stop please"`` and ``"STOP!"`` are not. Any other
reply is ignored (counted, not kept).

The rule, which subscriptions a STOP changes: **a STOP sent to gateway G unsubscribes the
sender's phone, in every profile that has it, from every resource that can send through
G** (``Config.resources_of_gateway``: the resources whose virtual sender has a sender on
G). The phone's subscriptions to other resources are kept: a person replying to one
provider's number cannot be told apart from one replying about that provider's messages
only, and the messages that number carried are the ones they can have meant. The phone is
normalised to E.164 with ``[engine] default_region``; a reply from something that is not a
phone number (an alphanumeric id, say) is ignored.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio.to_thread
import msgspec

from engine.config import Config
from engine.core.phones import PhoneNormaliser
from engine.drivers import Driver, Inbound, check_callback_size
from engine.errors import InputError
from engine.plugins import Plugins
from engine.store.base import Store

__all__ = ["InboundReport", "InboundTaker", "is_stop", "stop_words"]


class InboundReport(msgspec.Struct, frozen=True):
    #: Messages in the callback.
    received: int
    #: Of them, STOP replies from a phone number.
    stops: int
    #: Subscriptions the STOPs changed (0 when they were unsubscribed already).
    unsubscribed: int
    #: Messages that were no STOP (or whose sender is no phone number).
    ignored: int


def stop_words(words: Sequence[str]) -> frozenset[str]:
    """The stop words as ``is_stop`` compares them: trimmed and case-folded."""
    return frozenset(w.strip().casefold() for w in words if w.strip())


def is_stop(text: str, words: frozenset[str]) -> bool:
    """Whether ``text``, trimmed, is one of ``words`` (``stop_words``) whatever its case."""
    return text.strip().casefold() in words


class InboundTaker:
    """Takes gateways' inbound callbacks for one workspace (one driver per gateway, made
    on its first callback and kept: parsing needs no connection)."""

    def __init__(self, config: Config, plugins: Plugins, store: Store,
                 normaliser: PhoneNormaliser) -> None:
        self._config = config
        self._plugins = plugins
        self._store = store
        self._normaliser = normaliser
        self._words = stop_words(config.engine.stop_words)
        self._parsers: dict[str, Driver] = {}

    def parser(self, gateway: str) -> Driver:
        """The driver parsing ``gateway``'s callbacks; ``InputError`` if there is no such
        gateway or its driver takes no inbound messages."""
        driver = self._parsers.get(gateway)
        if driver is not None:
            return driver
        gw = self._config.gateways.get(gateway)
        if gw is None:
            raise InputError(f"no gateway named {gateway!r} in the config")
        cls = self._plugins.drivers[gw.driver]
        if not cls.takes_inbound():
            raise InputError(f"gateway: {gateway!r} (driver {gw.driver}) takes no inbound"
                             " messages")
        driver = cls(gw.options, gateway=gateway, base_dir=self._config.base_dir)
        self._parsers[gateway] = driver
        return driver

    async def take(self, gateway: str, body: bytes, headers: dict[str, str], *,
                   max_messages: int | None = None, now: float | None = None) -> InboundReport:
        """Parse ``gateway``'s callback and apply its STOPs (see the module docstring).
        ``InputError`` naming the field for a body the driver cannot parse, or one of more
        than ``max_messages`` messages; ``now``: the time of a STOP that gives none."""
        parser = self.parser(gateway)

        def parse() -> list[Inbound]:
            messages = parser.parse_inbound(body, headers)
            check_callback_size(messages, max_messages, "inbound messages")
            return messages

        messages = await anyio.to_thread.run_sync(parse)
        return await self.apply(gateway, messages, now=now)

    async def apply(self, gateway: str, messages: Sequence[Inbound], *,
                    now: float | None = None) -> InboundReport:
        """Apply the STOPs among ``messages``, which ``gateway`` received (parsed from a
        callback, or handed over by a driver's session: ``Driver.listener``)."""
        if now is None:
            now = time.time()
        stops: dict[str, float] = {}  # phone -> the time of its first STOP
        n_stops = 0
        for message in messages:
            if not is_stop(message.text, self._words):
                continue
            phone = self._normaliser.normalise(message.phone)
            if phone is None:
                continue
            n_stops += 1
            at = message.at if message.at is not None else now
            stops[phone] = min(at, stops.get(phone, at))
        unsubscribed = 0
        if stops:
            resources = self._config.resources_of_gateway(gateway)
            ids = [await self._store.resource_id(name) for name in resources]
            if ids:
                for phone, at in stops.items():
                    unsubscribed += await self._store.unsubscribe_reply(phone, ids, at=at)
        return InboundReport(len(messages), n_stops, unsubscribed, len(messages) - n_stops)
