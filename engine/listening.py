"""Gateways that talk back on a session of their own, kept listening between runs.

A driver whose gateway sends receipts and replies over its own connection (SMPP's
``deliver_sm``), rather than calling Herald's HTTP routes, overrides ``Driver.listen``.
The sessions a run opens take what arrives while it sends; between runs nobody would.
So the long-running processes, ``herald serve`` and ``herald worker``, each keep one
driver per such gateway listening for as long as they run, its ``listener`` storing what
arrives (``engine.runner.GatewayListener``). A session that fails (``GatewayError``) is
opened again after a pause that doubles up to a minute, and one that cannot be opened for
good (refused credentials) is said once on the log and tried again at that slow pace; a
``listen()`` that returns has nothing to listen to, and is not called again.

A gateway's driver listens only where it declares so (``Driver.listens()``) and its options
do not turn it off (``listen = false``, where the driver has that option).
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

import anyio

from engine.errors import GatewayError

if TYPE_CHECKING:
    from engine.runner import Herald

__all__ = ["listen_gateways", "listening_gateways"]

logger = logging.getLogger(__name__)

#: The first pause after a failed session, and the longest, in seconds.
FIRST_PAUSE = 1.0
LONGEST_PAUSE = 60.0


def listening_gateways(herald: Herald) -> list[str]:
    """The gateways of the config whose driver listens on a session of its own."""
    out = []
    for name, gw in herald.config.gateways.items():
        cls = herald.plugins.drivers.get(gw.driver)
        if cls is not None and cls.listens() and getattr(gw.options, "listen", True):
            out.append(name)
    return out


async def listen_gateways(herald: Herald) -> None:
    """Keep every listening gateway's session open until cancelled."""
    async with anyio.create_task_group() as tg:
        for name in listening_gateways(herald):
            tg.start_soon(_listen, herald, name)


async def _listen(herald: Herald, gateway: str) -> None:
    pause = FIRST_PAUSE
    said: str | None = None
    while True:
        driver = herald.gateway_driver(gateway)
        began = anyio.current_time()
        try:
            await driver.listen()
            return  # it has nothing to listen to
        except GatewayError as err:
            if str(err) != said:  # once per distinct failure, not once per attempt
                logger.warning("gateway %r: cannot listen: %s; trying again", gateway, err)
                said = str(err)
        finally:
            with anyio.CancelScope(shield=True):
                await driver.aclose()
        if anyio.current_time() - began > LONGEST_PAUSE:
            pause = FIRST_PAUSE  # it listened a good while before failing: a new failure
        await anyio.sleep(pause * random.uniform(0.5, 1.0))
        pause = min(pause * 2, LONGEST_PAUSE)
