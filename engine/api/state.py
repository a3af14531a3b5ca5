"""What the routes share: the workspace, the mailing service, tokens, a phone normaliser,
and the tracking domain's code resolver, bot detector, click and open writers and inbound
taker."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection

from engine.api.auth_failures import AuthFailures
from engine.api.errors import ApiError
from engine.api.tokens import TokenStore
from engine.core.phones import PhoneNormaliser
from engine.runner import Herald
from engine.service import MailingService
from engine.store.base import Store
from engine.tracking.bots import BotDetector
from engine.tracking.clicks import ClickWriter
from engine.tracking.inbound import InboundTaker
from engine.tracking.links import Resolver
from engine.tracking.opens import OpenCodes, OpenWriter

__all__ = ["MAX_ID", "ApiState", "Req", "api_state", "service_of"]

#: A request, as route handlers take it.
Req = Request[Any, Any, Any]

#: Every id in a path or body fits a signed 64-bit integer (SQLite's, PostgreSQL's bigint).
MAX_ID = 2**63 - 1


@dataclass
class ApiState:
    herald: Herald
    tokens: TokenStore
    #: Set for the app's lifetime (by the lifespan when ``create_app`` was given none).
    service: MailingService | None = None
    #: Monotonic seconds, for the failed-authentication windows (a fake clock in tests).
    clock: Callable[[], float] = time.monotonic
    #: Writes clicks in batches; set for the app's lifetime by its lifespan (None: the
    #: routes write each click at once).
    clicks: ClickWriter | None = None
    #: Seconds a click waits at most before it is written (tests make it long).
    click_interval: float = 0.5
    #: Writes email opens in batches, like ``clicks`` (None: each at once).
    opens: OpenWriter | None = None
    normaliser: PhoneNormaliser = field(init=False)
    #: Reads the open pixel's codes back to their message.
    open_codes: OpenCodes = field(init=False)
    auth_failures: AuthFailures = field(init=False)
    resolver: Resolver = field(init=False)
    bots: BotDetector = field(init=False)
    inbound: InboundTaker = field(init=False)

    def __post_init__(self) -> None:
        herald = self.herald
        self.normaliser = PhoneNormaliser(herald.config.engine.default_region)
        self.auth_failures = AuthFailures(herald.config.api.auth_failures_per_minute)
        self.resolver = Resolver(herald.store)
        self.open_codes = OpenCodes(herald.store)
        self.bots = BotDetector()
        self.inbound = herald.inbound

    @property
    def store(self) -> Store:
        """The workspace's store, whichever database it is."""
        return self.herald.store


def api_state(connection: ASGIConnection[Any, Any, Any, Any]) -> ApiState:
    state: ApiState = connection.app.state.api
    return state


def service_of(connection: ASGIConnection[Any, Any, Any, Any]) -> MailingService:
    service = api_state(connection).service
    if service is None:
        raise ApiError(503, "the mailing service is not running")
    return service
