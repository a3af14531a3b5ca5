"""The API on a real loopback port, for the tests that need a real server.

``served_api(config, role)`` runs ``create_app(herald)`` on Hypercorn (asyncio) in a thread
over the workspace of ``config`` (its ``fake`` driver answered by a ``FakeGateway``), waits
for ``/healthz`` and yields (base URL, a token of ``role``).
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import httpx

from engine.api import create_app
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.testing import FakeGateway, create_token


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(base: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until ``base/healthz`` answers 200 (30 s at most; fail early if ``proc`` died)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc is not None:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{base} did not become healthy in 30 s")


class _Server(threading.Thread):
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


@contextmanager
def served_api(config: Path, role: str) -> Iterator[tuple[str, str]]:
    port = free_port()
    server = _Server(config, port)
    server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base)
        secret = create_token(config, role)
        yield base, secret
    finally:
        server.stop()
