"""A real ``herald serve`` on loopback whose event loop is watched, for hostile requests.

``hostile_api(config)`` runs ``create_app(herald)`` in a thread on the server ``herald serve``
would run (``engine.api.server.run_server``: uvicorn on asyncio with uvloop, Hypercorn on
trio; ``server=`` to choose), with a heartbeat task on the server's own loop that records
the longest stall (the time the loop could not run it)::

    with hostile_api(config) as api:
        token = api.token("sender")
        with api.watch() as watch:
            httpx.post(f"{api.base}/api/v1/...", headers=api.auth(token), ...)
        assert watch.stall < 0.1            # seconds the loop was blocked, at most
        assert watch.rss_growth < 50e6      # bytes of resident memory it kept

The server shares this process, so ``rss_growth`` is this process's resident memory after
the request minus before it (after a ``gc.collect()``); ``peak_rss`` is the highest the
heartbeat saw meanwhile.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from engine.api import create_app
from engine.api.server import listen, run_server, server_for
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.testing import FakeGateway, create_token
from tests.servers import free_port, wait_healthy

__all__ = ["HostileApi", "Watch", "hostile_api", "rss"]

#: Seconds between two beats of the heartbeat.
BEAT = 0.005
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """This process's resident memory now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


@dataclass
class Watch:
    """What the heartbeat saw while a ``watch()`` block ran."""

    stall: float = 0.0
    peak_rss: int = 0
    rss_before: int = 0
    rss_after: int = 0
    beats: int = 0

    @property
    def rss_growth(self) -> int:
        return self.rss_after - self.rss_before

    @property
    def peak_growth(self) -> int:
        return self.peak_rss - self.rss_before


@dataclass
class HostileApi:
    base: str
    config: Path
    gateway: FakeGateway
    _watches: list[Watch] = field(default_factory=list)
    _loop_token: Any = None

    def block_loop(self, seconds: float) -> None:
        """Hold the server's event loop for ``seconds`` (to check that a watch sees it)."""
        import time

        anyio.from_thread.run_sync(time.sleep, seconds, token=self._loop_token)

    def token(self, role: str = "admin") -> str:
        return create_token(self.config, role)

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @contextmanager
    def watch(self) -> Iterator[Watch]:
        gc.collect()
        w = Watch(rss_before=rss())
        w.peak_rss = w.rss_before
        self._watches.append(w)
        try:
            yield w
            # let the loop finish what the request started (a task, a thread) and beat
            beats = w.beats
            for _ in range(200):
                if w.beats >= beats + 3:
                    break
                threading.Event().wait(BEAT)
        finally:
            self._watches.remove(w)
            gc.collect()
            w.rss_after = rss()

    def _beat(self, stall: float) -> None:
        now = rss() if self._watches else 0
        for w in self._watches:
            w.beats += 1
            w.stall = max(w.stall, stall)
            w.peak_rss = max(w.peak_rss, now)


class _Server(threading.Thread):
    def __init__(self, api: HostileApi, port: int, backend: str, server: str | None) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.port = port
        self.backend = backend
        self.server = server
        self._started = threading.Event()
        self._token: Any = None
        self._stopping: anyio.Event | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            options = {"use_uvloop": True} if self.backend == "asyncio" else {}
            anyio.run(self._serve, backend=self.backend, backend_options=options)
        except BaseException as err:  # surfaced by stop()
            self.error = err

    async def _heartbeat(self) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            t0 = anyio.current_time()
            await anyio.sleep(BEAT)
            self.api._beat(max(anyio.current_time() - t0 - BEAT, 0.0))

    async def _serve(self) -> None:
        self._stopping = anyio.Event()
        self._token = self.api._loop_token = anyio.lowlevel.current_token()
        plugins = load_plugins(self.api.gateway.plugin())
        async with await Herald.open(self.api.config, plugins=plugins) as herald:
            server = self.server or server_for(herald.config.api, self.backend)
            fd, _ = listen("127.0.0.1", self.port)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._heartbeat)  # ends once stopping is set
                self._started.set()
                await run_server(create_app(herald), fd, server=server,
                                 until=self._stopping.wait, grace=1.0)

    def stop(self) -> None:
        if self._started.wait(timeout=30) and self._stopping is not None:
            anyio.from_thread.run_sync(self._stopping.set, token=self._token)
        self.join(timeout=30)


@contextmanager
def hostile_api(config: Path, *, backend: str = "asyncio",
                server: str | None = None) -> Iterator[HostileApi]:
    """The API of the workspace ``config`` on a loopback port, watched (see the module);
    ``server``: "uvicorn" or "hypercorn" rather than what ``[api] server`` says."""
    port = free_port()
    api = HostileApi(base=f"http://127.0.0.1:{port}", config=config, gateway=FakeGateway())
    thread = _Server(api, port, backend, server)
    thread.start()
    try:
        wait_healthy(api.base)
        # as `herald serve` does after start-up (engine/api/server.py): what exists by then
        # (here, the whole test session's heap) is not walked by every full collection
        gc.collect()
        gc.freeze()
        yield api
    finally:
        thread.stop()
        if thread.error is not None:
            raise thread.error
