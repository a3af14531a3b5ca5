"""The ASGI app: Litestar routes over a ``Herald`` workspace and its ``MailingService``.

``create_app(herald)`` starts the mailing service in the app's lifespan (what ``herald
serve`` does); ``create_app(herald, service)`` uses a running one (tests, embedding). The
lifespan also runs the tracking domain's click and open writers, which write what is left
buffered when it ends (on SIGTERM, once the connections are done). The app runs on any
ASGI server, on asyncio (with uvloop) or trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import msgspec
from litestar import Litestar, Router, get
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Components, Reference, SecurityScheme

from engine import __version__
from engine.api import (
    altcraft,
    console,
    databases,
    gallery,
    inbound,
    live,
    mailings,
    me,
    metrics,
    profiles,
    receipts,
    reports,
    resources,
    senders,
    templates,
    triggers,
)
from engine.api.auth import require
from engine.api.connections import body_deadline
from engine.api.errors import exception_handlers
from engine.api.gallery_page import ROUTES as GALLERY_PAGE
from engine.api.state import ApiState
from engine.api.tokens import TokenStore
from engine.runner import Herald
from engine.service import MailingService
from engine.tracking import routes as tracking_routes
from engine.tracking.clicks import ClickWriter
from engine.tracking.opens import OpenWriter
from engine.tracking.redirect import fast_path

__all__ = ["MAX_BODY", "create_app"]

#: Bytes a request body may have (a profile import of 10 MB); larger ones get a 413.
MAX_BODY = 10_000_000


class Health(msgspec.Struct):
    status: str
    mailings_running: int


@get(["/healthz", "/api/v1/healthz"], tags=["service"], summary="Liveness")
async def healthz(state: State) -> Health:
    """Answers 200 while the process serves; needs no token."""
    api: ApiState = state.api
    running = api.service.statistics().running if api.service is not None else 0
    return Health("ok", running)


def _service_lifespan(api: ApiState) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with MailingService.running(api.herald) as service:
            api.service = service
            try:
                yield
            finally:
                api.service = None

    return lifespan


def _clicks_lifespan(api: ApiState) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        async with ClickWriter(api.store, interval=api.click_interval).running() as writer, \
                OpenWriter(api.store, interval=api.click_interval).running() as opens:
            api.clicks, api.opens = writer, opens
            try:
                yield
            finally:
                api.clicks = api.opens = None

    return lifespan


def create_app(herald: Herald, service: MailingService | None = None, *,
               token_ttl: float = 30.0) -> Litestar:
    """The HTTP API of ``herald``; see the package docstring for the routes."""
    state = ApiState(herald, TokenStore(herald.store, ttl=token_ttl), service)
    api = Router("/api/v1", route_handlers=[
        *profiles.ROUTES, *resources.ROUTES, *mailings.ROUTES, *triggers.ROUTES,
        *receipts.ROUTES, *gallery.ROUTES, *inbound.ROUTES, *reports.ROUTES,
        *me.ROUTES, *live.ROUTES, *senders.ROUTES, *templates.ROUTES, *databases.ROUTES,
    ])
    schemes: dict[str, SecurityScheme | Reference] = {
        "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="hrld_..."),
        "receiptSecretHeader": SecurityScheme(type="apiKey", name="X-Herald-Secret",
                                              security_scheme_in="header"),
        "receiptSecretQuery": SecurityScheme(type="apiKey", name="secret",
                                             security_scheme_in="query"),
    }
    openapi = OpenAPIConfig(
        title="Herald", version=__version__,
        description="SMS mailings: profiles, subscriptions, mailings, triggers, receipts.",
        components=Components(security_schemes=schemes),
        # Served at /openapi.json itself: a router at "/" would answer unknown paths.
        render_plugins=[JsonRenderPlugin(path="/")],
        openapi_router=Router("/openapi.json", guards=[require("viewer")], route_handlers=[],
                              include_in_schema=False),
        use_handler_docstrings=True,
    )
    app = Litestar(
        route_handlers=[api, altcraft.router(), healthz, *metrics.ROUTES,
                        *gallery.PUBLIC_ROUTES, *GALLERY_PAGE, *console.ROUTES,
                        *tracking_routes.ROUTES],
        exception_handlers=exception_handlers(),
        openapi_config=openapi,
        request_max_body_size=MAX_BODY,
        state=State({"api": state}),
        lifespan=[_clicks_lifespan(state),
                  *([] if service is not None else [_service_lifespan(state)])],
        logging_config=None,
        debug=False,
    )
    # around the router, not a route's middleware: a 404 or 405 that leaves a body unread
    # must say Connection: close too
    app.asgi_handler = body_deadline(herald.config.api.body_timeout)(app.asgi_handler)
    # short links, the hot path, are answered before the framework routes anything
    app.asgi_handler = fast_path(state)(app.asgi_handler)
    return app
