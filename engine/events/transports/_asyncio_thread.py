"""Runs the asyncio-only broker clients (aio-pika, nats-py) whatever Herald's backend.

On asyncio a transport's coroutines run on the current loop. On trio they run on an
asyncio loop of the transport's own, in a worker thread started on first use, and
``AsyncioRunner.run`` bridges each call: the trio task sleeps until the asyncio side is
done (no worker thread of anyio's is held), and its cancellation cancels the asyncio task.

This module is the one place in the engine that touches asyncio directly, and only to start,
feed and stop that loop; the code it runs uses anyio (which works on any asyncio loop).
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import sniffio

__all__ = ["AsyncioRunner"]

T = TypeVar("T")

#: Seconds a cancelled call may take to unwind on the asyncio side (closing its
#: connection) before the trio side stops waiting for it.
_UNWIND = 5.0


class _Loop:
    """An asyncio loop running in a daemon thread until ``stop``."""

    def __init__(self, name: str) -> None:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def _serve(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()

        # asyncio.run cancels what is left over (a client's reader tasks) and closes the loop.
        asyncio.run(main())

    async def start(self) -> None:
        self._thread.start()
        await anyio.to_thread.run_sync(self._ready.wait)

    async def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        await anyio.to_thread.run_sync(self._thread.join)


async def _as_coroutine(fn: Callable[[], Awaitable[T]]) -> T:
    return await fn()


class AsyncioRunner:
    """Runs coroutine functions on asyncio for one transport (see the module docstring).
    Calls do not overlap; ``aclose`` stops the thread, and a later ``run`` starts another."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: _Loop | None = None

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` on asyncio: here if this is asyncio, else on the thread's loop."""
        if sniffio.current_async_library() == "asyncio":
            return await fn()
        if self._loop is None:
            self._loop = _Loop(self._name)
            await self._loop.start()
        loop = self._loop.loop
        assert loop is not None
        tasks: list[asyncio.Task[T]] = []
        done = anyio.Event()
        token = anyio.lowlevel.current_token()

        def wake(_: object) -> None:  # on the asyncio thread
            try:
                anyio.from_thread.run_sync(done.set, token=token)
            except RuntimeError:  # the trio run has ended: nobody is waiting
                pass

        def start() -> None:  # on the asyncio thread
            tasks.append(loop.create_task(_as_coroutine(fn)))
            tasks[0].add_done_callback(wake)

        def cancel() -> None:  # on the asyncio thread, after start (callbacks run in order)
            tasks[0].cancel()

        # A fresh context: the task must not inherit this trio task's context variables
        # (sniffio's among them, which would make anyio think it is on trio).
        loop.call_soon_threadsafe(start, context=contextvars.Context())
        try:
            await done.wait()
        except BaseException:
            loop.call_soon_threadsafe(cancel)
            # Wait for the asyncio side to unwind, so that the next call does not overlap.
            with anyio.move_on_after(_UNWIND, shield=True):
                await done.wait()
            raise
        if tasks[0].cancelled():
            raise RuntimeError(f"{self._name}: the asyncio loop was stopped during a call")
        return tasks[0].result()

    async def aclose(self) -> None:
        """Stop the thread's loop, if one was started (idempotent)."""
        loop, self._loop = self._loop, None
        if loop is not None:
            await loop.stop()
