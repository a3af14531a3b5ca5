"""``herald serve``: the API until SIGINT or SIGTERM; then connections finish, the mailing
service stops its runs gracefully (what is left stays in the journal) and the workspace
closes.

The HTTP server is ``[api] server``: on asyncio (with uvloop) uvicorn with httptools' C
parser (``auto``), bounded as Hypercorn was (:mod:`engine.api.httptools_protocol`); on trio,
or when asked for, Hypercorn (h11). On one core uvicorn's HTTP/1.1 costs about a quarter of
Hypercorn's (a bare 302: 16,700 requests/s against 5,000; ``bench/redirects.py``).

Under ``herald serve --workers N`` each of the N processes serves here on the socket the
parent bound (``fd``), and names itself in an ``X-Herald-Process`` header (its pid)."""

from __future__ import annotations

import gc
import logging
import math
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import sniffio

from engine.api.app import create_app
from engine.config import ApiConfig
from engine.errors import InputError
from engine.runner import Herald

__all__ = ["bind_address", "listen", "listen_or_refuse", "run_server", "serve", "server_for"]

#: Connections waiting to be accepted.
BACKLOG = 1024


def bind_address(host: str, port: int) -> str:
    """``host:port`` (an IPv6 host in brackets)."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def _until_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


def listen(host: str, port: int) -> tuple[int, int]:
    """A bound TCP socket's file descriptor (the servers listen on it) and its port.

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


def server_for(api: ApiConfig, library: str) -> str:
    """The HTTP server ``[api] server`` means on the event loop ``library`` ("asyncio" or
    "trio"): "uvicorn" or "hypercorn"; InputError for uvicorn on trio."""
    if api.server == "auto":
        return "hypercorn" if library == "trio" else "uvicorn"
    if api.server == "uvicorn" and library == "trio":
        raise InputError('[api] server = "uvicorn" runs on asyncio only: serve with'
                         ' --backend asyncio, or set api.server to "hypercorn" or "auto"')
    return api.server


async def run_server(
    app: Any, fd: int, *, server: str, until: Callable[[], Awaitable[None]],
    grace: float,
) -> None:
    """Serve the ASGI ``app`` (its lifespan included) on the bound socket ``fd`` with
    ``server`` ("uvicorn": asyncio only; "hypercorn") until ``until`` returns; then
    requests under way get ``grace`` seconds to finish. What ``serve`` and the hostile-client
    tests (tests/security) both run."""
    from engine.api import httptools_protocol as bounds

    grace = max(grace, 1.0)
    if server == "uvicorn":
        await _run_uvicorn(app, fd, until, grace)
        return
    from hypercorn.config import Config as HypercornConfig

    config = HypercornConfig()
    config.bind = [f"fd://{fd}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = grace
    # Load tests and API clients hold connections open: reconnecting every 1000 requests
    # (Hypercorn's default) and a backlog of 100 cost throughput under load.
    config.keep_alive_max_requests = bounds.MAX_REQUESTS
    config.keep_alive_timeout = bounds.HEAD_TIMEOUT
    config.h11_max_incomplete_size = bounds.MAX_HEAD
    config.backlog = BACKLOG
    config.include_server_header = False
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve as trio_serve

        await trio_serve(app, config, shutdown_trigger=until, mode="asgi")
    else:
        from hypercorn.asyncio import serve as asyncio_serve

        await asyncio_serve(app, config, shutdown_trigger=until, mode="asgi")


async def _run_uvicorn(app: Any, fd: int, until: Callable[[], Awaitable[None]],
                       grace: float) -> None:
    import uvicorn

    from engine.api.httptools_protocol import HEAD_TIMEOUT, GuardedHttpToolsProtocol

    config = uvicorn.Config(
        app, http=GuardedHttpToolsProtocol, ws="none", lifespan="on", interface="asgi3",
        log_config=None,  # Herald's logging stays as it is
        access_log=False, server_header=False, date_header=True,
        proxy_headers=False,  # X-Forwarded-For is not trusted (Hypercorn did not either)
        backlog=BACKLOG, timeout_keep_alive=math.ceil(HEAD_TIMEOUT),
        timeout_graceful_shutdown=math.ceil(grace),
    )
    server = uvicorn.Server(config)

    async def stop() -> None:
        await until()
        server.should_exit = True  # its main loop looks every 0.1 s, then shuts down

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop)
        # Server.serve() would take SIGINT and SIGTERM itself and raise them again once
        # stopped (the process would die of its SIGTERM): _serve() is serve() without that.
        await server._serve(sockets=[socket.socket(fileno=fd)])
        tg.cancel_scope.cancel()


async def serve(
    herald: Herald, *, host: str = "127.0.0.1", port: int = 8080, fd: int | None = None,
    until: Callable[[], Awaitable[None]] | None = None, quiet: bool = False,
) -> None:
    """Serve ``herald``'s API on ``host:port`` until SIGINT or SIGTERM; InputError if the
    address cannot be listened on. ``fd``: serve on that bound socket instead (one of the
    processes of ``herald serve --workers N``, whose parent bound it); its responses then
    carry ``X-Herald-Process``. ``until``: stop when it returns instead of on a signal
    (``herald demo``); ``quiet``: no "serving" line. InputError too if ``[api] server``
    cannot run on this event loop."""
    library = sniffio.current_async_library()
    server = server_for(herald.config.api, library)
    if fd is None:
        fd, port = listen_or_refuse(host, port)
        worker = False
    else:
        host, port = _bound_to(fd)
        worker = until is None
    app: Any = create_app(herald)
    if worker:
        app = _naming_the_process(app)
    # What start-up made lives as long as the server: out of the collector's sight, a full
    # collection (which a request's allocations can trigger in any thread, holding every
    # thread and so the event loop) has far less to walk.
    gc.collect()
    gc.freeze()
    process = f" (process {os.getpid()})" if worker else ""
    if not quiet:
        print(f"herald: serving http://{bind_address(host, port)} on {library} with"
              f" {server}{process}", file=sys.stderr, flush=True)
    await run_server(app, fd, server=server, until=until or _until_signal,
                     grace=herald.config.engine.shutdown_grace)
