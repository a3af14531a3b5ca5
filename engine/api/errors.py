"""Every error answer is JSON ``{"error": "...", "field": "..."}`` (``field`` when known).

=========================================  ======  =====================================
what went wrong                            status  field
=========================================  ======  =====================================
no token / unknown or revoked token        401
the token's role may not use the route     403
body not JSON, or not the expected shape   400     the JSON path (``profiles[3].phone``)
bad query or path parameter                400     its name
``InputError`` from the engine             400     the ``field:`` its message starts with
``TemplateError``                          422     ``template``
``NotFound``                               404
``StoreError`` (conflict with the state)   409
body over the size limit                   413
a ``[limits]`` bound passed (keys, depth)  422/400 the part (``document``, ``profiles[3]``)
the body took over ``[api] body_timeout``  408
too many failed authentications            429     (with ``Retry-After``)
=========================================  ======  =====================================

Anything else is a bug: it is logged and answered 500 with no detail.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.types import ExceptionHandlersMap

from engine.errors import HeraldError, InputError, NotFound, StoreError, TemplateError

__all__ = [
    "ApiError",
    "ErrorBody",
    "decode_error",
    "error_responses",
    "exception_handlers",
    "field_of",
]

logger = logging.getLogger("engine.api")


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """The body of every error answer."""

    error: str
    field: str | None = None


class ApiError(Exception):
    """An error answer raised by a route: ``status``, a message for a person, the field."""

    def __init__(self, status: int, error: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.field = field
        self.headers = headers or {}


_MEANING = {
    400: "The body or a parameter is wrong; ``field`` names it.",
    401: "No token, or an unknown or revoked one (receipts: no or a wrong secret).",
    403: "The token's role may not do this (receipts: the gateway takes none).",
    404: "No such mailing, resource, database, profile or gateway.",
    409: "The mailing's state does not allow it (already running, not running, ...).",
    408: "The body took longer than ``[api] body_timeout`` to arrive.",
    413: "The body is over 10 MB, or a part of it over its ``[limits]`` bound.",
    422: "Well-formed but refused: a template that does not compile, a trigger whose"
         " profile is not found, a document or profile past its ``[limits]`` keys;"
         " ``field`` names it.",
    429: "Too many failed authentications from this address: wait ``Retry-After`` s.",
    503: "The mailing service is not running.",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """The OpenAPI description of a route's error answers (all of them ``ErrorBody``)."""
    return {code: ResponseSpec(data_container=ErrorBody, description=_MEANING[code],
                               generate_examples=False) for code in codes}


#: "profiles[2].phone: ..." -> the field a message of the engine starts with.
_FIELD = re.compile(r"^([A-Za-z_]\w*(?:\[\d+\])*(?:\.[A-Za-z_]\w*(?:\[\d+\])*)*): ")


def field_of(message: str) -> tuple[str | None, str]:
    """(the field a message names by starting with ``field: ``, the rest of it)."""
    m = _FIELD.match(message)
    if m is None:
        return None, message
    return m[1], message[m.end():]


def _answer(status: int, error: str, field: str | None = None,
            headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(ErrorBody(error, field), status_code=status, headers=headers,
                    media_type="application/json")


def _api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[Any]:
    return _answer(exc.status, exc.error, exc.field, exc.headers)


def _herald_error(_: Request[Any, Any, Any], exc: HeraldError) -> Response[Any]:
    if isinstance(exc, TemplateError):
        return _answer(422, str(exc), "template")
    if isinstance(exc, InputError):
        field, message = field_of(str(exc))
        return _answer(400, message, field)
    if isinstance(exc, NotFound):
        return _answer(404, str(exc))
    if isinstance(exc, StoreError):
        return _answer(409, str(exc))
    logger.exception("unexpected engine error", exc_info=exc)
    return _answer(500, "internal error")


#: msgspec names the key itself in these messages, and the object's path as the key.
_KEY_IN_MESSAGE = re.compile(r"^Object (?:contains unknown|missing required) field `([^`]*)`$")


#: "Expected `str`, got `int` - at `$.profiles[3].phone`"
_AT = re.compile(r"^(.*) - at `\$\.?(.*)`$")


def decode_error(err: msgspec.DecodeError) -> ApiError:
    """The 400 of a body msgspec could not decode, naming its field (as Litestar's are)."""
    message, key = str(err), ""
    if m := _AT.match(message):
        message, key = m[1], m[2]
    if m := _KEY_IN_MESSAGE.match(message):
        key = f"{key}.{m[1]}" if key else m[1]
    return ApiError(400, message, key or None)


def _validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if not (isinstance(item, dict) and item.get("message")):
            continue
        message, key = str(item["message"]), str(item.get("key") or "")
        if key == "data":  # the body as a whole
            if message == "'data'":
                return _answer(400, "a JSON body is required")
            key = ""
        if m := _KEY_IN_MESSAGE.match(message):
            key = f"{key}.{m[1]}" if key else m[1]
        return _answer(400, message, key or None)
    return _answer(400, exc.detail or "invalid request")


def _http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code >= 500:
        logger.error("HTTP %s: %s", exc.status_code, exc.detail)
        return _answer(exc.status_code, "internal error")
    return _answer(exc.status_code, exc.detail, headers=exc.headers)


def _recursion(request: Request[Any, Any, Any], exc: RecursionError) -> Response[Any]:
    # msgspec gives up on JSON about 1000 levels deep: a client's doing, not a bug
    depth = request.app.state.api.herald.config.limits.json_depth
    return _answer(400, f"body: JSON nested too deep; [limits] json_depth is {depth}")


def _unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.exception("unhandled error in a route", exc_info=exc)
    return _answer(500, "internal error")


def exception_handlers() -> ExceptionHandlersMap:
    """The app's handlers, turning each exception into an ``ErrorBody`` answer."""
    return {
        ApiError: _api_error,
        HeraldError: _herald_error,
        ValidationException: _validation,
        HTTPException: _http,
        RecursionError: _recursion,
        Exception: _unexpected,
    }
