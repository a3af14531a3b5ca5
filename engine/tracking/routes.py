"""Public routes of the tracking domain (no token): short links and unsubscribe pages.

======================  =========================================================
route                   does
======================  =========================================================
``GET /{code}``         302 to the link's URL, exactly as stored (query string and
                        all), ``Cache-Control: no-store``; the click is recorded
                        (``redirect.fast_path`` answers it before Litestar routes)
``GET /u/{code}``       a page with one button: unsubscribe from the message's
                        resource; changes nothing (link scanners open pages)
``POST /u/{code}``      unsubscribes, answers "you are unsubscribed" (also when
                        already so); a body over 4 KB is a 413
``GET|POST /ua/{code}`` the same for every resource of the profile's database
======================  =========================================================

A ``code`` is ten base62 characters (``engine.core.codes``): ``(link id, seq - seq_base)``
under the purpose ``link`` and under ``unsubscribe`` (whose link, the first of its run's
for that seq_base, says the run; ``links.Resolver``). Anything else on these paths (a
malformed code, one of no link or of no recorded recipient) is a plain HTML 404 page. The
routes never log: anyone may call them. A link whose message was never sent (a code made
up for a seq with no recipient) still redirects, and its click is dropped by the store.

A click records its time, the peer's address (the TCP peer: behind a reverse proxy, the
proxy's), the ``User-Agent`` (its first 512 characters) and ``bot``: crawlerdetect's verdict
(``bots.py``), also for a request with no user agent and for ``HEAD`` (a link checker; a
browser follows a link with GET). A bot is redirected like anyone, and its click is kept
but not counted. Clicks are written in batches by ``ClickWriter`` (``clicks.py``), which the
app's lifespan runs; an app run without its lifespan (an ASGI test client) writes each
click at once.
"""

from __future__ import annotations

import time
from typing import Any

from litestar import HttpMethod, Response, get, post, route
from litestar.params import FromPath

from engine.api.state import Req, api_state
from engine.core.codes import is_code
from engine.tracking import pages
from engine.tracking.redirect import follow, user_agent

__all__ = ["MAX_UNSUBSCRIBE_BODY", "ROUTES"]

#: Bytes the confirm form's POST may carry (it sends ``confirm=yes``); more is a 413.
MAX_UNSUBSCRIBE_BODY = 4096

_HTML = "text/html; charset=utf-8"


def _not_found() -> Response[Any]:
    return Response(pages.not_found(), status_code=404, media_type=_HTML,
                    headers=pages.HEADERS)


@route("/{code:str}", http_method=[HttpMethod.GET, HttpMethod.HEAD], include_in_schema=False)
async def short_link(request: Req, code: FromPath[str]) -> Response[Any]:
    """A short link: a redirect to its URL, and a click (``redirect.fast_path`` answers
    most of them before this route is reached)."""
    target = None
    if is_code(code):
        target = await follow(api_state(request), code, method=request.method,
                              client=request.scope.get("client"),
                              agent=user_agent(request.scope["headers"]))
    if target is None:
        return _not_found()
    return Response(b"", status_code=302, headers={
        "Location": target.location.decode(), "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer"})


async def _page(request: Req, code: str, *, everywhere: bool, confirmed: bool) -> Response[Any]:
    api = api_state(request)
    pair = await api.resolver.unsubscribe(code) if is_code(code) else None
    ref = await api.store.recipient_ref(*pair) if pair is not None else None
    if ref is None:
        return _not_found()
    if confirmed:
        await api.store.unsubscribe_recipient(ref.run_id, ref.seq, everywhere=everywhere,
                                              at=time.time())
    if confirmed or (not everywhere and not ref.subscribed):
        page = pages.unsubscribed(resource=ref.resource, phone=ref.phone,
                                  everywhere=everywhere)
    else:
        page = pages.unsubscribe(resource=ref.resource, phone=ref.phone,
                                 everywhere=everywhere, action=request.scope["path"])
    return Response(page, media_type=_HTML, headers=pages.HEADERS)


#: The unsubscribe pages: ``/u/`` from the message's resource, ``/ua/`` from every
#: resource of the profile's database.
_PAGES = ["/u/{code:str}", "/ua/{code:str}"]


def _everywhere(request: Req) -> bool:
    return str(request.scope["path"]).startswith("/ua/")


@get(_PAGES, include_in_schema=False)
async def unsubscribe_page(request: Req, code: FromPath[str]) -> Response[Any]:
    """The confirm page of an unsubscribe link: changes nothing."""
    return await _page(request, code, everywhere=_everywhere(request), confirmed=False)


@post(_PAGES, include_in_schema=False, status_code=200,
      request_max_body_size=MAX_UNSUBSCRIBE_BODY)
async def unsubscribe(request: Req, code: FromPath[str]) -> Response[Any]:
    """The confirm button: unsubscribe (from the resource, or ``/ua/``: every one)."""
    await request.body()
    return await _page(request, code, everywhere=_everywhere(request), confirmed=True)


ROUTES = [short_link, unsubscribe_page, unsubscribe]
