"""Property tests against ``/openapi.json``: schemathesis generates requests for every
operation (valid ones and broken ones); no answer may be a 5xx, and every answer must be
one the document describes (status, content type, body schema).

The app is served by Hypercorn on a loopback port, from a thread of this process, over a
workspace with a few profiles, a trigger mailing (id 1) and a draft broadcast (id 2), so
that generated ids sometimes hit something. Bounded: ``MAX_EXAMPLES`` per operation.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from engine.api import TokenStore, create_app
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.testing import FakeGateway, write_config

MAX_EXAMPLES = 40


class Server(threading.Thread):
    """``create_app(herald)`` on Hypercorn (asyncio) until ``stop()``."""

    def __init__(self, config: Path, port: int) -> None:
        super().__init__(daemon=True)
        self.config = config
        self.port = port
        self.gateway = FakeGateway()
        self._started = threading.Event()
        self._token: Any = None
        self._stopping: anyio.Event | None = None

    def run(self) -> None:
        anyio.run(self._serve)

    async def _serve(self) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.accesslog = None

        self._stopping = anyio.Event()
        self._token = anyio.lowlevel.current_token()
        self._started.set()
        plugins = load_plugins(self.gateway.plugin())
        async with await Herald.open(self.config, plugins=plugins) as herald:
            await serve(create_app(herald), config, shutdown_trigger=self._stopping.wait,
                        mode="asgi")

    def stop(self) -> None:
        if self._started.wait(timeout=30) and self._stopping is not None:
            anyio.from_thread.run_sync(self._stopping.set, token=self._token)
        self.join(timeout=30)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, an admin token) of a seeded workspace's API."""
    workspace = tmp_path_factory.mktemp("schemathesis")
    config = write_config(workspace, default_region="RU")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = Server(config, port)
    server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz").raise_for_status()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.05)
        from engine.store.sqlite import SQLiteStore

        store = SQLiteStore.open(workspace / "herald.db")
        _, secret = TokenStore(store.conn).create("admin")
        store.conn.close()
        _seed(base, secret)
        yield base, secret
    finally:
        server.stop()


def _seed(base: str, secret: str) -> None:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {secret}"}) as c:
        c.post("/api/v1/profiles/import", json={
            "database": "main", "matching": "phone", "resource": "news",
            "profiles": [{"phone": f"+7916123450{i}"} for i in range(5)],
        }).raise_for_status()
        for kind in ("trigger", "broadcast"):
            c.post("/api/v1/mailings", json={
                "name": kind, "kind": kind, "resource": "news", "database": "main",
                "template": "Hi {lead._fname} {apicontent.code}",
            }).raise_for_status()


@pytest.fixture(scope="module")
def api_schema(served: tuple[str, str]) -> Any:
    base, secret = served
    return schemathesis.openapi.from_url(
        f"{base}/openapi.json", headers={"Authorization": f"Bearer {secret}"}
    )


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_5xx(case: Any, served: tuple[str, str]) -> None:
    """Every default check but two: schema-valid bodies that name an unknown resource, or a
    trigger that names no profile, are refused with a 4xx on purpose; and unknown query
    parameters are ignored, as most HTTP APIs do, where schemathesis wants them refused."""
    _, secret = served
    case.call_and_validate(headers={"Authorization": f"Bearer {secret}"},
                           excluded_checks=[positive_data_acceptance, negative_data_rejection])
