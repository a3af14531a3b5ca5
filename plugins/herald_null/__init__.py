"""The ``null`` driver: accepts every message and sends nothing (benchmarks, dry runs)."""

from __future__ import annotations

from collections.abc import Sequence

from engine.drivers import Capabilities, Driver, DriverConfig, OutboundMessage, SendResult
from engine.hookspecs import hookimpl

__all__ = ["NullDriver"]


class NullConfig(DriverConfig):
    pass


class NullDriver(Driver):
    name = "null"
    Config = NullConfig
    # Nothing leaves the process, so re-sending after a crash cannot duplicate anything.
    capabilities = Capabilities(max_batch=10_000, idempotent=True)

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        return [SendResult(m.id, "accepted") for m in messages]


@hookimpl
def herald_drivers() -> list[type[Driver]]:
    return [NullDriver]
