"""The transport seam of action hooks: what delivers a batch of encoded messages.

A transport is made from its hook's config (``engine.config.HookConfig``) and delivers one
batch at a time, in order. ``send`` returns only when the other side has taken the whole
batch: an HTTP answer judged a success, every broker confirm, every JetStream ack. Anything
else raises ``DeliveryError``, and the deliverer (``engine.events.outbox``) sends the whole
batch again later: delivery is at least once, so consumers dedupe on ``event_id``.

Every transport passes the contract suite in ``tests/events/test_transport_contract.py``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

from engine.config import HookConfig

__all__ = ["DeliveryError", "Transport"]


class DeliveryError(Exception):
    """A batch was not (or not surely) delivered; it will be sent again.

    The message says why, for ``herald hooks status`` and the log, and never holds a
    secret (the hook's ``secret``, a URL's password)."""


class Transport(abc.ABC):
    """Delivers a hook's batches. One instance per hook; ``send`` is never called again
    before the previous call returned."""

    #: The client library runs only on asyncio: on trio the transport runs it on an
    #: asyncio loop of its own in a thread, and ``check-config`` says so.
    asyncio_only: ClassVar[bool] = False

    def __init__(self, name: str, config: HookConfig) -> None:
        self.name = name
        self.config = config

    @classmethod
    def problems(cls, config: HookConfig) -> list[tuple[str, str]]:
        """``(key, message)`` for what this transport cannot take in ``config``, beyond
        what its Struct checks (``check-config`` reports them as ``hooks.NAME.key``)."""
        return []

    @abc.abstractmethod
    async def send(self, messages: Sequence[bytes]) -> None:
        """Deliver ``messages`` (each one event's JSON object, in event order) within
        ``config.timeout`` seconds, or raise DeliveryError."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close connections (idempotent)."""
