"""Mailings: create (broadcast or trigger), list, status with live progress, start, pause,
resume, cancel, and the mailing log of the latest run.

``POST /api/v1/mailings``, ``GET /api/v1/mailings``, ``GET /api/v1/mailings/{id}``,
``POST /api/v1/mailings/{id}/start|pause|resume|cancel``, ``GET /api/v1/mailings/{id}/log``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import HttpMethod, Request, Response, get, post, route
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.params import JSONBody, PathParameter
from litestar.types import ControllerRouterHandler
from msgspec import Meta

from engine.api.auth import guarded
from engine.api.bounds import check_document, deep_error
from engine.api.state import MAX_ID, Req, api_state, service_of
from engine.core.policy import Policy
from engine.mailing_log import MailingLog
from engine.service import MailingSpec, MailingStatus

__all__ = ["ROUTES", "MailingCreate", "MailingId", "MailingList"]

Name = Annotated[str, Meta(min_length=1, max_length=200)]
#: A mailing id in a path.
MailingId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="the mailing's id")]


class MailingCreate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A new mailing. A ``broadcast`` goes to its audience (``database`` or ``segment``)
    when started; a ``trigger`` mailing sends one message per trigger call, to profiles of
    ``database``, from the moment it is created."""

    name: Name
    kind: Literal["broadcast", "trigger"]
    resource: Name
    template: Annotated[str, Meta(min_length=1, max_length=100_000)]
    database: Name | None = None
    segment: Name | None = None
    limit: Annotated[int, Meta(ge=0, le=MAX_ID)] | None = None
    #: The JSON document templates reach as ``{json.*}``.
    document: dict[str, Any] = msgspec.field(default_factory=dict)
    #: This mailing's sending policy (over its resource's and the account's).
    policy: Policy | None = None


class _Document(msgspec.Struct):
    """A mailing body with only its document, raw: the rest waits for Litestar's decode."""

    document: msgspec.Raw = msgspec.Raw(b"{}")


_document_of = msgspec.json.Decoder(_Document).decode


async def bounded_document(connection: ASGIConnection[Any, Any, Any, Any],
                           _: BaseRouteHandler) -> None:
    """A guard (after the token's): the body's ``document`` within ``[limits]`` before
    anything decodes it; a body that is not a JSON object is left to Litestar's 400."""
    limits = api_state(connection).herald.config.limits
    assert isinstance(connection, Request)  # a guard of an HTTP route
    body = await connection.body()
    try:
        raw = _document_of(body).document
    except RecursionError:
        raise deep_error(limits) from None
    except msgspec.DecodeError:
        return
    await check_document(bytes(raw), limits)


class MailingList(msgspec.Struct):
    mailings: list[MailingStatus]


@route("/mailings", http_method=[HttpMethod.OPTIONS], include_in_schema=False)
async def mailings_options() -> Response[None]:
    """Litestar's own OPTIONS answer of a path whose methods come from several handlers
    lists only the first one's methods in Allow; registered first, this one replaces it."""
    return Response(None, status_code=204, headers={"Allow": "GET, OPTIONS, POST"})


@post("/mailings", **guarded("sender", 400, 404, 409, 413, 422, 503,
                             bounds=bounded_document),
      status_code=201, tags=["mailings"], summary="Create a mailing")
async def create_mailing(request: Req, data: JSONBody[MailingCreate]) -> MailingStatus:
    """A broadcast waits for ``start``; a trigger mailing takes calls at once."""
    spec = msgspec.convert(msgspec.structs.asdict(data), MailingSpec)
    return await service_of(request).create(spec)


@get("/mailings", **guarded("viewer", 503), tags=["mailings"], summary="List mailings")
async def list_mailings(request: Req) -> MailingList:
    """Mailings, newest first, each with the progress of its latest run."""
    return MailingList(await service_of(request).list())


@get("/mailings/{mailing_id:int}", **guarded("viewer", 400, 404, 503),
     tags=["mailings"], summary="A mailing's status")
async def mailing_status(request: Req, mailing_id: MailingId) -> MailingStatus:
    """Status and live progress of the mailing's latest run."""
    return await service_of(request).status(mailing_id)


@get("/mailings/{mailing_id:int}/log", **guarded("viewer", 400, 404, 409, 503),
     tags=["mailings"], summary="A mailing's log")
async def mailing_log(request: Req, mailing_id: MailingId) -> MailingLog:
    """The mailing log of the latest run (Altcraft's SMS log fields and Herald's)."""
    return await service_of(request).log(mailing_id)


@post("/mailings/{mailing_id:int}/start", **guarded("sender", 400, 404, 409, 503),
      status_code=200, tags=["mailings"], summary="Start a mailing")
async def start_mailing(request: Req, mailing_id: MailingId) -> MailingStatus:
    """Start a new run; it goes on in the background."""
    return await service_of(request).start(mailing_id)


@post("/mailings/{mailing_id:int}/pause", **guarded("sender", 400, 404, 409, 503),
      status_code=200, tags=["mailings"], summary="Pause a mailing")
async def pause_mailing(request: Req, mailing_id: MailingId) -> MailingStatus:
    """Stop gracefully (batches at a gateway finish); ``resume`` carries on."""
    return await service_of(request).pause(mailing_id)


@post("/mailings/{mailing_id:int}/resume", **guarded("sender", 400, 404, 409, 503),
      status_code=200, tags=["mailings"], summary="Resume a mailing")
async def resume_mailing(request: Req, mailing_id: MailingId) -> MailingStatus:
    """Carry on a paused or interrupted run: nobody lost, nobody sent twice."""
    return await service_of(request).resume(mailing_id)


@post("/mailings/{mailing_id:int}/cancel", **guarded("sender", 400, 404, 409, 503),
      status_code=200, tags=["mailings"], summary="Cancel a mailing")
async def cancel_mailing(request: Req, mailing_id: MailingId) -> MailingStatus:
    """Stop for good: what was never handed to a gateway is skipped as cancelled."""
    return await service_of(request).cancel(mailing_id)


ROUTES: list[ControllerRouterHandler] = [
    mailings_options, create_mailing, list_mailings, mailing_status, mailing_log,
    start_mailing, pause_mailing, resume_mailing, cancel_mailing,
]
