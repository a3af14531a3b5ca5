from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.plugins import load_plugins
from engine.runner import Herald
from engine.testing import FakeGateway, write_config

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The core's async tests run on both backends."""
    return str(request.param)


@pytest.fixture
def open_herald(tmp_path: Path) -> Callable[..., Any]:
    """``await open_herald(gateway, **engine_options)``: a workspace on a fake gateway."""

    async def factory(
        gateway: FakeGateway | None = None, *, extra: str = "", **engine: Any
    ) -> Herald:
        gateway = gateway or FakeGateway()
        config = write_config(tmp_path, extra=extra, **engine)
        return await Herald.open(config, plugins=load_plugins(gateway.plugin()))

    return factory
