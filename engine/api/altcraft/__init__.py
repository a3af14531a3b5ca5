"""The Altcraft-compatible API: Altcraft's method names, fields and envelope under
``/api/v1.1/``, so that scripts written for Altcraft send through Herald.

Routes (all ``POST``, JSON bodies, HTTP 200 with ``{"error": 0, "error_text": "Successful
operation", ...}``; see ``envelope`` for the failures)::

    /api/v1.1/campaigns/triggers/start         sender   one trigger message: data.message_id
    /api/v1.1/campaigns/triggers/start_batch   sender   a message per item: result, items
    /api/v1.1/profiles/import                  sender   one profile: profile_id
    /api/v1.1/profiles/import_batch            sender   up to 10,000: result
    /api/v1.1/campaigns/log_v2                 viewer   a mailing's log rows: data, total_count

The token is an ordinary Herald token (``herald token create --role R``), in the body as
``token`` or as ``Authorization: Bearer``. Ids are numbers as in Altcraft: ``id`` and
``trigger_id`` are mailing ids, ``db_id`` and ``resource_id`` the numeric ids ``/api/v1``
lists (or the names).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from litestar import Request, Response, Router, post
from litestar.di import Provide
from litestar.exceptions import ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import HeaderParameter
from litestar.types import ExceptionHandlersMap

from engine.api.altcraft import log, profiles, triggers
from engine.api.altcraft.bodies import (
    ImportAnswer,
    ImportBatchAnswer,
    ImportBatchBody,
    ImportBody,
    LogAnswer,
    LogBody,
    StartAnswer,
    StartBatchAnswer,
    StartBatchBody,
    StartBody,
)
from engine.api.altcraft.envelope import Envelope, answer, refused_of
from engine.api.errors import ApiError
from engine.api.state import Req
from engine.errors import HeraldError

__all__ = ["PREFIX", "ROUTES", "router"]

#: Where the routes are.
PREFIX = "/api/v1.1"
logger = logging.getLogger("engine.api")
_TAGS = ["altcraft"]


# Never called (the routes take no ``_documented``): they hand the OpenAPI schema the
# body each route decodes itself, after reading its token.
async def _start_body(data: StartBody) -> None: ...
async def _start_batch_body(data: StartBatchBody) -> None: ...
async def _import_body(data: ImportBody) -> None: ...
async def _import_batch_body(data: ImportBatchBody) -> None: ...
async def _log_body(data: LogBody) -> None: ...


#: Litestar documents a 400 for any route with a body; these routes answer 200 even then.
_NO_400 = ResponseSpec(data_container=Envelope, generate_examples=False, description=(
    "Not sent: a refused call is answered 200, with the code in the envelope's `error`"))


def _body(documented: Any) -> dict[str, Any]:
    return {"dependencies": {"_documented": Provide(documented)}, "tags": _TAGS,
            "status_code": 200, "responses": {400: _NO_400}}


@post("/campaigns/triggers/start", **_body(_start_body), summary="Altcraft: start a trigger")
async def triggers_start(
    request: Req,
    idempotency_key: Annotated[str | None, HeaderParameter(
        name="Idempotency-Key", required=False,
        description="Herald's: the same key never sends twice (1 to 200 characters)",
    )] = None,
) -> Response[StartAnswer]:
    """Queue one message of trigger mailing ``id`` to the profile ``matching`` finds;
    answers ``data``: ``{"message_id", "profile_id", "duplicate"}``. Role sender."""
    return await answer(request, "sender", StartAnswer,
                        lambda state, body: triggers.start(request, state, body))


@post("/campaigns/triggers/start_batch", **_body(_start_batch_body),
      summary="Altcraft: start a trigger for a batch")
async def triggers_start_batch(request: Req) -> Response[StartBatchAnswer]:
    """Queue a message of trigger mailing ``trigger_id`` per item of ``data``; answers
    ``result``, each item's profile id (null when refused), and ``items``, each item's
    ``{error, error_text, profile_id, message_id, duplicate}``. Role sender."""
    return await answer(request, "sender", StartBatchAnswer,
                        lambda state, body: triggers.start_batch(request, state, body))


@post("/profiles/import", **_body(_import_body), summary="Altcraft: import a profile")
async def profiles_import(request: Req) -> Response[ImportAnswer]:
    """Add or update one profile of database ``db_id``, with its subscriptions; answers
    its ``profile_id``. Role sender."""
    return await answer(request, "sender", ImportAnswer,
                        lambda state, body: profiles.import_profile(request, state, body))


@post("/profiles/import_batch", **_body(_import_batch_body),
      summary="Altcraft: import profiles")
async def profiles_import_batch(request: Req) -> Response[ImportBatchAnswer]:
    """Add or update up to 10,000 profiles of database ``db_id``; answers ``result``, a
    ``{error, error_text, profile_id}`` per profile, in order. Role sender."""
    return await answer(request, "sender", ImportBatchAnswer,
                        lambda state, body: profiles.import_batch(request, state, body))


@post("/campaigns/log_v2", **_body(_log_body), summary="Altcraft: a mailing's log")
async def campaigns_log_v2(request: Req) -> Response[LogAnswer]:
    """The log of mailing ``id``'s runs from ``from_time``: ``data`` rows of ``{level,
    message, state, time, value}`` (at most ``limit``) and ``total_count``. Role viewer."""
    return await answer(request, "viewer", LogAnswer,
                        lambda state, body: log.log_v2(request, state, body))


ROUTES = [triggers_start, triggers_start_batch, profiles_import, profiles_import_batch,
          campaigns_log_v2]


def _in_envelope(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """What the routes raise outside their own envelope (a bad header), in it."""
    refused = refused_of(exc)
    if refused is None:
        logger.exception("unexpected engine error", exc_info=exc)
        return Response(Envelope(error=500, error_text="internal error"), status_code=500,
                        media_type="application/json")
    return Response(Envelope(error=refused.error, error_text=refused.error_text),
                    status_code=200, headers=refused.headers, media_type="application/json")


def router() -> Router:
    """The routes under ``/api/v1.1``."""
    handlers: ExceptionHandlersMap = {
        exc: _in_envelope for exc in (ApiError, HeraldError, ValidationException)}
    return Router(PREFIX, route_handlers=ROUTES, exception_handlers=handlers)
