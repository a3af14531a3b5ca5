"""Inbound messages (replies) from a gateway, and the STOP rule; an email gateway's bounces.

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

**Bounces.** An email gateway's driver (one that ``takes_bounces``: ``smtp``, ``mailgun``)
parses what reaches the same route (a DSN, an ARF complaint, the vendor's webhook) with
``Driver.parse_bounces``, in a worker thread too. Each bounce's address is normalised
(``engine.core.emails``); one that is no address is dropped and counted (``invalid``),
but for a feedback loop's redacted report (address ``""``) that names its message by id,
which the store credits through its message. The rest go to
``TrackingStore.apply_bounces`` for the resources that can send through the gateway, by
the same rule as STOPs: a bounce from gateway G speaks of the messages G carried.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import anyio.to_thread
import msgspec

from engine.config import Config
from engine.core.emails import normalise_email
from engine.core.phones import PhoneNormaliser
from engine.drivers import Bounce, Driver, Inbound, check_callback_size
from engine.errors import InputError
from engine.plugins import Plugins
from engine.store.base import Store

__all__ = ["InboundBounces", "InboundReport", "InboundTaker", "is_stop", "normalise_bounces",
           "stop_words"]


class InboundReport(msgspec.Struct, frozen=True):
    #: Messages in the callback.
    received: int
    #: Of them, STOP replies from a phone number.
    stops: int
    #: Subscriptions the STOPs changed (0 when they were unsubscribed already).
    unsubscribed: int
    #: Messages that were no STOP (or whose sender is no phone number).
    ignored: int


class InboundBounces(msgspec.Struct, frozen=True):
    """What an email gateway's bounces and complaints did (``TrackingStore.apply_bounces``)."""

    #: Bounces and complaints the body held (one per recipient a report speaks of).
    received: int
    #: Subscriptions made ``hardbounced``.
    hardbounced: int
    #: Soft bounces recorded (no status change).
    soft: int
    #: Subscriptions made ``complainer`` (their address suppressed).
    complainers: int
    #: Bounces of no message or subscription of Herald's.
    unknown: int
    #: Bounces whose address is no email address: dropped.
    invalid: int


def normalise_bounces(bounces: Sequence[Bounce]) -> tuple[list[Bounce], int]:
    """The bounces with their address normalised, and how many were dropped: an address
    that is no email address, but ``""`` with an ``id`` (a redacted complaint names its
    message)."""
    kept: list[Bounce] = []
    dropped = 0
    for bounce in bounces:
        if not bounce.email.strip() and bounce.id:
            kept.append(msgspec.structs.replace(bounce, email=""))
            continue
        try:
            email = normalise_email(bounce.email)
        except InputError:
            dropped += 1
            continue
        kept.append(bounce if email == bounce.email
                    else msgspec.structs.replace(bounce, email=email))
    return kept, dropped


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

    def _driver_class(self, gateway: str) -> type[Driver]:
        gw = self._config.gateways.get(gateway)
        if gw is None:
            raise InputError(f"no gateway named {gateway!r} in the config")
        return self._plugins.drivers[gw.driver]

    def takes_bounces(self, gateway: str) -> bool:
        """Whether ``gateway``'s inbound route takes bounces (its driver parses them)
        rather than inbound messages; ``InputError`` if there is no such gateway."""
        return self._driver_class(gateway).takes_bounces()

    def parser(self, gateway: str) -> Driver:
        """The driver parsing ``gateway``'s callbacks; ``InputError`` if there is no such
        gateway or its driver takes neither inbound messages nor bounces."""
        driver = self._parsers.get(gateway)
        if driver is not None:
            return driver
        cls = self._driver_class(gateway)
        if not (cls.takes_inbound() or cls.takes_bounces()):
            raise InputError(f"gateway: {gateway!r} (driver {cls.name}) takes no inbound"
                             " messages")
        gw = self._config.gateways[gateway]
        driver = cls(gw.options, gateway=gateway, base_dir=self._config.base_dir)
        self._parsers[gateway] = driver
        return driver

    async def take(self, gateway: str, body: bytes, headers: dict[str, str], *,
                   max_messages: int | None = None, now: float | None = None) -> InboundReport:
        """Parse ``gateway``'s callback and apply its STOPs (see the module docstring).
        ``InputError`` naming the field for a body the driver cannot parse, or one of more
        than ``max_messages`` messages; ``now``: the time of a STOP that gives none."""
        parser = self.parser(gateway)
        if not parser.takes_inbound():
            raise InputError(f"gateway: {gateway!r} (driver {parser.name}) takes bounces,"
                             " no inbound messages")

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

    async def take_bounces(self, gateway: str, body: bytes, headers: dict[str, str], *,
                           max_bounces: int | None = None,
                           now: float | None = None) -> InboundBounces:
        """Parse ``gateway``'s bounces and complaints and apply them (see the module
        docstring). ``InputError`` naming the field for a body the driver cannot parse, or
        one of more than ``max_bounces``; ``now``: the time of the events."""
        parser = self.parser(gateway)
        if not parser.takes_bounces():
            raise InputError(f"gateway: {gateway!r} (driver {parser.name}) takes no bounces")

        def parse() -> list[Bounce]:
            bounces = parser.parse_bounces(body, headers)
            check_callback_size(bounces, max_bounces, "bounces")
            return bounces

        bounces = await anyio.to_thread.run_sync(parse)
        return await self.apply_bounces(gateway, bounces, now=now)

    async def apply_bounces(self, gateway: str, bounces: Sequence[Bounce], *,
                            now: float | None = None) -> InboundBounces:
        """Apply ``bounces``, which came from ``gateway``, to the resources that send
        through it."""
        if now is None:
            now = time.time()
        kept, invalid = normalise_bounces(bounces)
        resources = self._config.resources_of_gateway(gateway)
        ids = [await self._store.resource_id(name) for name in resources]
        if not (kept and ids):
            return InboundBounces(len(bounces), 0, 0, 0, len(kept), invalid)
        report = await self._store.apply_bounces(kept, ids, at=now)
        return InboundBounces(len(bounces), report.hardbounced, report.soft,
                              report.complainers, report.unknown, invalid)
