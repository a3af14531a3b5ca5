"""The fake of an SMSC for the ``smpp`` driver: ``engine.simulator.smpp.SmppSimulator``, the
SMPP 3.4 simulator written apart from Herald's codec (see its module docstring)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from engine.simulator.smpp import SmppSimulator

SYSTEM_ID = "herald"
PASSWORD = "secret"


def options(sim: SmppSimulator, **more: Any) -> dict[str, Any]:
    """The ``[gateways.NAME]`` options (``driver`` left out) of an smpp gateway on ``sim``."""
    return {"host": "127.0.0.1", "port": sim.port, "system_id": sim.options.system_id,
            "password": sim.options.password, "window": 10, **more}


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path, **changes: Any) -> AsyncIterator[dict[str, Any]]:
    """The ``[gateways.NAME]`` options of an ``smpp`` gateway on a running simulator
    (``changes``: its ``SmppOptions``)."""
    async with SmppSimulator(system_id=SYSTEM_ID, password=PASSWORD, **changes) as sim:
        yield options(sim)
