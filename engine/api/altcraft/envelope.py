"""Altcraft's envelope, and what every ``/api/v1.1`` call does before its own work.

Every answer is HTTP 200 with ``{"error": 0, "error_text": "Successful operation", ...}``;
a failure is ``{"error": CODE, "error_text": "field: why"}`` with the payload left out, so
that an Altcraft client, which looks at ``error`` only, keeps working. The codes mirror
``/api/v1``'s statuses (``engine.api.errors``): 400 a bad body (``error_text`` starts with
the field), 401 no token or an unknown one, 403 the token's role may not, 404 no such
mailing, database, profile or resource, 409 the mailing's state forbids it, 413 over 10 MB
or a ``[limits]`` bound, 422 a refused template, 429 too many failed authentications
(with ``Retry-After``), 503 the mailing service is not running.

The token comes in the body as ``token`` or as ``Authorization: Bearer``. A header is
checked before the body is read, as ``/api/v1``'s guard does; without one the body is read
(within the 10 MB cap) for its ``token``. Unknown tokens count as failed authentications
of the client's address, as ``/api/v1``'s do.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from litestar import Response
from litestar.exceptions import HTTPException

from engine.api.auth import _address, _bearer, _failed
from engine.api.bounds import deep_error
from engine.api.errors import ApiError, decode_error
from engine.api.state import ApiState, Req, api_state
from engine.api.tokens import Role, Token, allows
from engine.config import LimitsConfig
from engine.errors import InputError, NotFound, StoreError, TemplateError

__all__ = ["OK", "Envelope", "Refused", "answer", "decode", "from_api_error", "item_error",
           "refused_of"]

#: ``error_text`` of a success.
OK = "Successful operation"


class Envelope(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What every answer has: ``error`` 0 and ``error_text`` "Successful operation" on
    success, else the code (400, 401, 403, 404, ...) and why, naming the field."""

    error: int
    error_text: str


E = TypeVar("E", bound=Envelope)


class Refused(Exception):
    """A failure answered in the envelope: ``error`` and ``error_text`` ("field: why")."""

    def __init__(self, error: int, error_text: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(error_text)
        self.error = error
        self.error_text = error_text
        self.headers = headers or {}


def _text(field: str | None, message: str) -> str:
    return f"{field}: {message}" if field else message


def from_api_error(exc: ApiError) -> Refused:
    """An ``/api/v1`` error answer as the envelope's: ``error_text`` names the field."""
    return Refused(exc.status, _text(exc.field, exc.error), exc.headers)


def refused_of(exc: Exception) -> Refused | None:
    """The envelope failure an engine or ``/api/v1`` error stands for (None: a bug)."""
    if isinstance(exc, Refused):
        return exc
    if isinstance(exc, ApiError):
        return from_api_error(exc)
    if isinstance(exc, TemplateError):
        return Refused(422, f"template: {exc}")
    if isinstance(exc, InputError):
        return Refused(400, str(exc))
    if isinstance(exc, NotFound):
        return Refused(404, str(exc))
    if isinstance(exc, StoreError):
        return Refused(409, str(exc))
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        return Refused(exc.status_code, exc.detail, dict(exc.headers or {}))
    return None


class _TokenOnly(msgspec.Struct):
    token: str | None = None


_token_of = msgspec.json.Decoder(_TokenOnly).decode


def _body_token(body: bytes) -> str | None:
    """The body's ``token``, if it is a JSON object with a string there."""
    try:
        return _token_of(body).token
    except (msgspec.DecodeError, RecursionError):
        return None


async def _verify(state: ApiState, address: str, secret: str, role: Role) -> Token:
    token = await state.tokens.verify(secret)
    if token is None:
        _failed(state, address)
        raise Refused(401, "token: unknown or revoked token")
    if not allows(token.role, role):
        raise Refused(403, f"a {token.role} token may not do this; it needs {role}")
    return token


async def _authenticated(request: Req, state: ApiState, role: Role) -> bytes:
    """The body of a request whose token (the header's, else the body's) has ``role``."""
    address = _address(request.scope)
    wait = state.auth_failures.blocked(address, state.clock())
    if wait is not None:
        raise Refused(429, "too many failed authentications from this address; try again"
                      " later", {"Retry-After": str(math.ceil(wait))})
    header = _bearer(request.scope)
    if header:  # refused before a byte of the body is read
        await _verify(state, address, header, role)
    body = await request.body()
    if not header:
        secret = _body_token(body)
        if not secret:  # not a guess at a token: answered, not counted
            raise Refused(401, "token: required (in the body, or Authorization: Bearer)")
        await _verify(state, address, secret, role)
    return body


def decode(decoder: Callable[[bytes], Any], body: bytes, limits: LimitsConfig) -> Any:
    """``decoder(body)``, or the 400 naming the field at fault."""
    if not body.strip():
        raise Refused(400, "a JSON body is required")
    try:
        return decoder(body)
    except RecursionError:
        raise from_api_error(deep_error(limits)) from None
    except msgspec.DecodeError as err:
        raise from_api_error(decode_error(err)) from None


def item_error(err: msgspec.DecodeError, where: str) -> Refused:
    """The 400 of an item ``where`` (``data[3]``) that did not decode."""
    found = decode_error(err)
    field = f"{where}.{found.field}" if found.field else where
    return Refused(400, _text(field, found.error))


async def answer(request: Req, role: Role, kind: type[E],
                 work: Callable[[ApiState, bytes], Awaitable[E]]) -> Response[E]:
    """Authenticate, then ``work(state, body)``; any failure as ``kind``'s envelope."""
    state = api_state(request)
    headers: dict[str, str] = {}
    try:
        body = await _authenticated(request, state, role)
        result = await work(state, body)
    except Exception as exc:
        refused = refused_of(exc)
        if refused is None:
            raise  # a bug: the app's handler logs it and answers 500
        result = kind(error=refused.error, error_text=refused.error_text)
        headers = refused.headers
    return Response(result, status_code=200, headers=headers, media_type="application/json")
