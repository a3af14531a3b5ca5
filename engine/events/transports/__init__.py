"""The transports of action hooks: ``http``, ``rabbitmq`` and ``nats`` (``base.Transport``).

``make_transport`` builds a hook's transport; the broker clients are imported only when a
hook uses them.
"""

from __future__ import annotations

from engine.config import HookConfig
from engine.events.transports.base import DeliveryError, Transport

__all__ = ["DeliveryError", "Transport", "make_transport", "transport_class"]


def transport_class(kind: str) -> type[Transport]:
    """The Transport class of ``transport = kind``."""
    if kind == "http":
        from engine.events.transports.http import HttpTransport

        return HttpTransport
    if kind == "rabbitmq":
        from engine.events.transports.rabbitmq import RabbitTransport

        return RabbitTransport
    if kind == "nats":
        from engine.events.transports.nats import NatsTransport

        return NatsTransport
    raise ValueError(f"unknown hook transport {kind!r}")


def make_transport(name: str, config: HookConfig) -> Transport:
    """Hook ``name``'s transport (not connected yet: it connects on its first send)."""
    return transport_class(config.transport)(name, config)
