"""``herald serve``: the API on Hypercorn, on asyncio (with uvloop) or trio, until SIGINT or
SIGTERM; then connections finish, the mailing service stops its runs gracefully (what is
left stays in the journal) and the workspace closes.

Under ``herald serve --workers N`` each of the N processes serves here on the socket the
parent bound (``fd``), and names itself in an ``X-Herald-Process`` header (its pid)."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import sniffio
from hypercorn.config import Config as HypercornConfig

from engine.api.app import create_app
from engine.errors import InputError
from engine.runner import Herald

__all__ = ["bind_address", "listen", "listen_or_refuse", "serve"]


def bind_address(host: str, port: int) -> str:
    """Hypercorn's ``host:port`` (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def _until_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


def listen(host: str, port: int) -> tuple[int, int]:
    """A bound TCP socket's file descriptor (for Hypercorn's ``fd://``) and its port.

    Bound here, before the app starts, so that a port already taken is an OSError at once
    rather than after the lifespan started the mailing service; port 0 picks a free one.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), port))
        bound = int(sock.getsockname()[1])
    except BaseException:
        sock.close()
        raise
    return sock.detach(), bound


def listen_or_refuse(host: str, port: int) -> tuple[int, int]:
    """:func:`listen`, with an InputError naming the address if it cannot be listened on."""
    try:
        return listen(host, port)
    except OSError as err:
        raise InputError(f"cannot listen on {bind_address(host, port)}:"
                         f" {err.strerror or err}") from None


def _bound_to(fd: int) -> tuple[str, int]:
    """The address the socket ``fd`` is bound to (the socket stays open)."""
    sock = socket.socket(fileno=fd)
    try:
        host, port = sock.getsockname()[:2]
    finally:
        sock.detach()
    return str(host), int(port)


def _naming_the_process(app: Any) -> Any:
    """``app`` with an ``X-Herald-Process: <pid>`` header on every HTTP response: which of
    ``--workers N`` answered."""
    header = (b"x-herald-process", str(os.getpid()).encode())

    async def named(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_named(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        await app(scope, receive, send_named)

    return named


async def serve(
    herald: Herald, *, host: str = "127.0.0.1", port: int = 8080, fd: int | None = None,
    until: Callable[[], Awaitable[None]] | None = None, quiet: bool = False,
) -> None:
    """Serve ``herald``'s API on ``host:port`` until SIGINT or SIGTERM; InputError if the
    address cannot be listened on. ``fd``: serve on that bound socket instead (one of the
    processes of ``herald serve --workers N``, whose parent bound it); its responses then
    carry ``X-Herald-Process``. ``until``: stop when it returns instead of on a signal
    (``herald demo``); ``quiet``: no "serving" line."""
    if fd is None:
        fd, port = listen_or_refuse(host, port)
        worker = False
    else:
        host, port = _bound_to(fd)
        worker = until is None
    config = HypercornConfig()
    config.bind = [f"fd://{fd}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = max(herald.config.engine.shutdown_grace, 1.0)
    # Load tests and API clients hold connections open: reconnecting every 1000 requests
    # (Hypercorn's default) and a backlog of 100 cost throughput under load.
    config.keep_alive_max_requests = 100_000
    config.backlog = 1024
    config.include_server_header = False
    app: Any = create_app(herald)
    if worker:
        app = _naming_the_process(app)
    # What start-up made lives as long as the server: out of the collector's sight, a full
    # collection (which a request's allocations can trigger in any thread, holding every
    # thread and so the event loop) has far less to walk.
    gc.collect()
    gc.freeze()
    library = sniffio.current_async_library()
    process = f" (process {os.getpid()})" if worker else ""
    if not quiet:
        print(f"herald: serving http://{bind_address(host, port)} on {library}{process}",
              file=sys.stderr, flush=True)
    trigger = until or _until_signal
    if library == "trio":
        from hypercorn.trio import serve as trio_serve

        await trio_serve(app, config, shutdown_trigger=trigger, mode="asgi")
    else:
        from hypercorn.asyncio import serve as asyncio_serve

        await asyncio_serve(app, config, shutdown_trigger=trigger, mode="asgi")
