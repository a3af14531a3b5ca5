"""Route guards: ``guards=[require("sender")]`` lets admin and sender tokens through.

The guard reads ``Authorization: Bearer hrld_...`` straight from the ASGI scope and checks
it against the ``TokenStore``'s in-memory cache (a store read only on a miss); the token's
record is left in ``scope["state"]["token"]`` for the route (see ``token_of``). Guards are
async on purpose: Litestar runs a sync guard in a worker thread.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from engine.api.auth_failures import BLOCK
from engine.api.errors import ApiError, error_responses
from engine.api.state import ApiState, api_state
from engine.api.tokens import Role, Token, allows

__all__ = ["SECURITY", "guarded", "require", "token_of"]

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]

#: The OpenAPI security requirement of guarded routes, and its scheme.
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="herald"'}
logger = logging.getLogger("engine.api")


def _bearer(scope: Any) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
            return None
    return None


def _address(scope: Any) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _failed(state: ApiState, address: str) -> None:
    """Count a failed authentication; log the address's first one of the minute (never
    the secret it sent)."""
    if state.auth_failures.failed(address, state.clock()):
        logger.warning("failed authentication from %s (an unknown or revoked token); more"
                       " than %d a minute get 429 for %d s; not logged again this minute",
                       address, state.auth_failures.per_minute, BLOCK)


def require(role: Role) -> Guard:
    """A guard letting through tokens whose role is ``role`` or above."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        state = api_state(connection)
        address = _address(connection.scope)
        wait = state.auth_failures.blocked(address, state.clock())
        if wait is not None:
            raise ApiError(429, "too many failed authentications from this address; try"
                           " again later", headers={"Retry-After": str(math.ceil(wait))})
        secret = _bearer(connection.scope)
        if not secret:  # not a guess at a token: answered, not counted
            raise ApiError(401, "this route needs a bearer token (Authorization: Bearer ...)",
                           headers=_CHALLENGE)
        token = await state.tokens.verify(secret)
        if token is None:
            _failed(state, address)
            raise ApiError(401, "unknown or revoked token", headers=_CHALLENGE)
        if not allows(token.role, role):
            raise ApiError(403, f"a {token.role} token may not do this; it needs {role}")
        connection.scope.setdefault("state", {})["token"] = token

    guard.__name__ = f"require_{role}"
    return guard


def guarded(role: Role, *errors: int, bounds: Guard | None = None) -> dict[str, Any]:
    """A route decorator's ``guards``, ``security`` and documented ``responses``: the guard
    of ``role`` (then ``bounds``, a check of the body that runs once the token passed), and
    ErrorBody answers for 401, 403, 429 and the ``errors`` statuses."""
    guards = [require(role)] if bounds is None else [require(role), bounds]
    return {"guards": guards, "security": SECURITY,
            "responses": error_responses(401, 403, 429, *errors)}


def token_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Token | None:
    """The token a guard let through, if any."""
    token: Token | None = connection.scope.get("state", {}).get("token")
    return token
