"""The short-link redirect: find the link, record the click, answer 302 — and its fast path.

``follow`` is the redirect's logic, shared by the Litestar route (``routes.short_link``) and
``fast_path``: a bare ASGI handler in front of the app that answers ``GET`` and ``HEAD`` of
``/{ten base62 characters}`` itself, without the framework's routing, request and response
objects. A redirect is the tracking domain's hot path (a big mailing's recipients clicking
at once): through Litestar it costs about 500 µs of CPU, of which Hypercorn's HTTP/1.1
takes 180; the fast path takes the rest down to tens of µs, which is what lets one core
serve 3,000 redirects a second. The answers are the same either way; a request with a body
(which no browser sends on a link) is left to the route, where the body rules apply.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from litestar.enums import ScopeType
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)

from engine.api.state import ApiState
from engine.core.codes import ALPHABET, CODE_LENGTH
from engine.store.base import Click
from engine.tracking import pages
from engine.tracking.bots import MAX_AGENT
from engine.tracking.links import Target

__all__ = ["fast_path", "follow"]

logger = logging.getLogger(__name__)

_CODE_CHARS = frozenset(ALPHABET)


async def follow(api: ApiState, code: str, *, method: str, client: Any,
                 agent: str | None) -> Target | None:
    """Where the short link ``code`` leads (None: nowhere, a 404), its click recorded:
    the peer's address, the user agent and whether a bot made it (a HEAD is a link
    checker's)."""
    target = await api.resolver.target(code)
    if target is None:
        return None
    bot = method == "HEAD" or api.bots.is_bot(agent)
    click = Click(target.link_id, target.seq, time.time(), client[0] if client else None,
                  agent, bot)
    writer = api.clicks
    if writer is not None:
        writer.record(click)
    else:  # the app runs without its lifespan (an ASGI test client): at once
        await api.store.add_clicks([click])
    return target


def user_agent(headers: Any) -> str | None:
    """The ``User-Agent`` of ASGI ``headers`` (its first ``MAX_AGENT`` characters)."""
    for name, value in headers:
        if name == b"user-agent":
            return str(value.decode("latin-1")[:MAX_AGENT])
    return None


def _is_short_link(scope: Any) -> bool:
    path = scope["path"]
    if len(path) != CODE_LENGTH + 1 or scope["method"] not in ("GET", "HEAD"):
        return False
    if not _CODE_CHARS.issuperset(path[1:]) or path[0] != "/":
        return False
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length"
                                            and value.strip() != b"0"):
            return False
    return True


_NOT_FOUND = pages.not_found().encode()
_PAGE_HEADERS = [(k.lower().encode(), v.encode()) for k, v in pages.HEADERS.items()]
_NOT_FOUND_HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"content-length", str(len(_NOT_FOUND)).encode()), *_PAGE_HEADERS]
_REDIRECT_HEADERS = [(b"cache-control", b"no-store"), (b"referrer-policy", b"no-referrer"),
                     (b"content-length", b"0")]


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]],
                  body: bytes = b"") -> None:
    start: HTTPResponseStartEvent = {"type": "http.response.start", "status": status,
                                     "headers": headers}
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body,
                                  "more_body": False}
    await send(end)


def fast_path(api: ApiState) -> Callable[[ASGIApp], ASGIApp]:
    """The middleware answering short links before ``app`` sees them (module docstring)."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def redirects(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP or not _is_short_link(scope):
                await app(scope, receive, send)
                return
            method = scope["method"]
            try:
                target = await follow(api, scope["path"][1:], method=method,
                                      client=scope.get("client"),
                                      agent=user_agent(scope["headers"]))
            except Exception:
                logger.exception("a short link could not be followed")
                await _answer(send, 500, [(b"content-length", b"0")])
                return
            if target is None:
                body = b"" if method == "HEAD" else _NOT_FOUND
                await _answer(send, 404, _NOT_FOUND_HEADERS, body)
                return
            await _answer(send, 302, [(b"location", target.location), *_REDIRECT_HEADERS])

        return redirects

    return middleware
