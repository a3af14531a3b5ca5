from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.plugins import load_plugins
from engine.runner import Herald
from engine.testing import FakeGateway, write_config
from tests.pg import skip_without_server, throwaway_database

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


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A throwaway PostgreSQL database (skipped, saying why, without a server)."""
    skip_without_server()
    with throwaway_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test once on each store: on the PostgreSQL leg, ``HERALD_DATABASE`` names
    a throwaway database, so every workspace the test opens (in this process or in a
    subprocess it starts) keeps its data there. Use with
    ``pytestmark = pytest.mark.usefixtures("any_store")``."""
    if request.param == "postgres":
        monkeypatch.setenv("HERALD_DATABASE", request.getfixturevalue("pg_url"))
    else:
        monkeypatch.delenv("HERALD_DATABASE", raising=False)
    return str(request.param)
