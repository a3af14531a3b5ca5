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
                        already so); a body over 4 KB is a 413. The same POST
                        with the body ``List-Unsubscribe=One-Click`` is an email
                        client's one-click unsubscribe (RFC 8058, the message's
                        ``List-Unsubscribe-Post``): it unsubscribes at once and
                        answers a short ``text/plain``
``GET|POST /ua/{code}`` the same for every resource of the profile's database
``GET|HEAD /o/{code}``  an email's open pixel: a 1x1 transparent GIF, never
                        cached, whatever the code; the open is recorded
                        (``opens.py``: a prefetch or a bot is kept, not counted)
======================  =========================================================

A ``code`` is ten base62 characters (``engine.core.codes``): ``(link id, seq - seq_base)``
under the purpose ``link``, and under ``unsubscribe`` and ``open`` (whose link, the first
of its run's for that seq_base, says the run; ``links.Resolver``, ``opens.OpenCodes``).
Anything else on the link and unsubscribe paths (a malformed code, one of no link or of no
recorded recipient) is a plain HTML 404 page; the pixel answers its GIF to anything. The
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

import logging
import time
from typing import Any

from litestar import HttpMethod, Response, get, post, route
from litestar.exceptions import HTTPException
from litestar.params import FromPath

from engine.api.state import ApiState, Req, api_state
from engine.core.codes import is_code
from engine.store.base import Open
from engine.tracking import pages
from engine.tracking.opens import PIXEL, PIXEL_HEADERS, is_prefetch
from engine.tracking.redirect import follow, user_agent

__all__ = ["MAX_UNSUBSCRIBE_BODY", "ROUTES", "is_one_click"]

logger = logging.getLogger(__name__)

#: Bytes the confirm form's POST may carry (it sends ``confirm=yes``); more is a 413.
MAX_UNSUBSCRIBE_BODY = 4096

_HTML = "text/html; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"


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


async def _page(request: Req, code: str, *, everywhere: bool, confirmed: bool,
                one_click: bool = False) -> Response[Any]:
    api = api_state(request)
    pair = await api.resolver.unsubscribe(code) if is_code(code) else None
    ref = await api.store.recipient_ref(*pair) if pair is not None else None
    if ref is None:
        return _not_found()
    if confirmed:
        await api.store.unsubscribe_recipient(ref.run_id, ref.seq, everywhere=everywhere,
                                              at=time.time())
    if one_click:
        return Response(pages.unsubscribed_text(resource=ref.resource, everywhere=everywhere),
                        media_type=_TEXT, headers=pages.HEADERS)
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


def is_one_click(form: Any) -> bool:
    """Whether a POST's form (``application/x-www-form-urlencoded`` or
    ``multipart/form-data``: mail providers send either) is RFC 8058's
    ``List-Unsubscribe=One-Click``."""
    values = form.getall("List-Unsubscribe", [])
    return any(isinstance(v, str) and v.strip().lower() == "one-click" for v in values)


@post(_PAGES, include_in_schema=False, status_code=200,
      request_max_body_size=MAX_UNSUBSCRIBE_BODY)
async def unsubscribe(request: Req, code: FromPath[str]) -> Response[Any]:
    """The confirm button, or an email client's one-click POST (RFC 8058): unsubscribe
    (from the resource, or ``/ua/``: every one)."""
    await request.body()  # the size limit: a bigger body is a 413
    try:
        one_click = is_one_click(await request.form())
    except HTTPException:  # a form Litestar cannot read (no boundary...): no one-click
        one_click = False
    return await _page(request, code, everywhere=_everywhere(request), confirmed=True,
                       one_click=one_click)


async def _record_open(api: ApiState, code: str, *, method: str, client: Any,
                       agent: str | None) -> None:
    pair = await api.open_codes.decode(code) if is_code(code) else None
    if pair is None:
        return
    ip = client[0] if client else None
    prefetch = is_prefetch(ip, agent)
    bot = not prefetch and (method == "HEAD" or api.bots.is_open_bot(agent))
    seen = Open(pair[0], pair[1], time.time(), ip, agent, bot, prefetch)
    writer = api.opens
    if writer is not None:
        writer.record(seen)
    else:  # the app runs without its lifespan (an ASGI test client): at once
        await api.store.add_opens([seen])


@route("/o/{code:str}", http_method=[HttpMethod.GET, HttpMethod.HEAD],
       include_in_schema=False)
async def open_pixel(request: Req, code: FromPath[str]) -> Response[bytes]:
    """An email's open pixel: the GIF, whatever the code; the open is recorded."""
    try:
        await _record_open(api_state(request), code, method=request.method,
                           client=request.scope.get("client"),
                           agent=user_agent(request.scope["headers"]))
    except Exception:  # the image is answered whatever happens to the record
        logger.exception("an open could not be recorded")
    body = b"" if request.method == "HEAD" else PIXEL
    return Response(body, media_type="image/gif", headers=PIXEL_HEADERS)


ROUTES = [short_link, unsubscribe_page, unsubscribe, open_pixel]
