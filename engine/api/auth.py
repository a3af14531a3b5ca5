"""Route guards: ``guards=[require("sender")]`` lets admin and sender tokens through.

The guard reads ``Authorization: Bearer hrld_...`` straight from the ASGI scope and checks
it against the ``TokenStore``'s in-memory cache (a SQLite read only on a miss); the token's
record is left in ``scope["state"]["token"]`` for the route (see ``token_of``). Guards are
async on purpose: Litestar runs a sync guard in a worker thread.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from engine.api.errors import ApiError, error_responses
from engine.api.state import api_state
from engine.api.tokens import Role, Token, allows

__all__ = ["SECURITY", "guarded", "require", "token_of"]

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]

#: The OpenAPI security requirement of guarded routes, and its scheme.
SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="herald"'}


def _bearer(scope: Any) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = bytes(value).decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return credentials.strip()
            return None
    return None


def require(role: Role) -> Guard:
    """A guard letting through tokens whose role is ``role`` or above."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        secret = _bearer(connection.scope)
        if not secret:
            raise ApiError(401, "this route needs a bearer token (Authorization: Bearer ...)",
                           headers=_CHALLENGE)
        token = api_state(connection).tokens.verify(secret)
        if token is None:
            raise ApiError(401, "unknown or revoked token", headers=_CHALLENGE)
        if not allows(token.role, role):
            raise ApiError(403, f"a {token.role} token may not do this; it needs {role}")
        connection.scope.setdefault("state", {})["token"] = token

    guard.__name__ = f"require_{role}"
    return guard


def guarded(role: Role, *errors: int) -> dict[str, Any]:
    """A route decorator's ``guards``, ``security`` and documented ``responses``: the guard
    of ``role``, and ErrorBody answers for 401, 403 and the ``errors`` statuses."""
    return {"guards": [require(role)], "security": SECURITY,
            "responses": error_responses(401, 403, *errors)}


def token_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Token | None:
    """The token a guard let through, if any."""
    token: Token | None = connection.scope.get("state", {}).get("token")
    return token
