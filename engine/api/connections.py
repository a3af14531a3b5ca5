"""What keeps a connection sound whatever its client does: a deadline on the request body,
and ``Connection: close`` on an answer given before the body was read.

A request body must arrive within ``[api] body_timeout`` seconds of the request, in all;
past it the route answers 408 (a slow body would otherwise hold a connection and a task
forever). An answer that leaves some of the body unread (a 401, a 413, a 408) says
``Connection: close``: the server then closes the connection after it, so the client knows
not to send its next request on it (Hypercorn would close it anyway, unannounced).
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from engine.api.errors import ApiError

__all__ = ["body_deadline"]


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def body_deadline(timeout: float) -> Callable[[ASGIApp], ASGIApp]:
    """The middleware: a body in ``timeout`` seconds or a 408; ``Connection: close`` on an
    answer that leaves the body unread."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def bounded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            deadline = anyio.current_time() + timeout
            unread = _has_body(scope)

            async def receive_in_time() -> ReceiveMessage:
                nonlocal unread
                if not unread:  # past the body, a wait for http.disconnect has no deadline
                    return await receive()
                with anyio.move_on_after(deadline - anyio.current_time()):
                    message = await receive()
                    if message["type"] != "http.request" or not message.get("more_body"):
                        unread = False
                    return message
                raise ApiError(408, f"the body took more than [api] body_timeout"
                                    f" ({timeout:g} s) to arrive")

            async def send_closing(message: Message) -> None:
                if message["type"] == "http.response.start" and unread:
                    headers = [*message.get("headers", ()), (b"connection", b"close")]
                    message = {**message, "headers": headers}
                await send(message)

            await app(scope, receive_in_time, send_closing)

        return bounded

    return middleware
