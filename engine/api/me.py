"""``GET /api/v1/whoami`` (viewer): the role and name of the token that asks, so that a
page shows only the actions the token may take (the routes refuse the others anyway)."""

from __future__ import annotations

import msgspec
from litestar import get

from engine.api.auth import guarded, token_of
from engine.api.state import Req
from engine.api.tokens import Role

__all__ = ["ROUTES", "WhoAmI"]


class WhoAmI(msgspec.Struct, kw_only=True):
    role: Role
    #: The token's name (``herald token create --name``), "" when it has none.
    name: str


@get("/whoami", **guarded("viewer"), tags=["service"], summary="The token's role")
async def whoami(request: Req) -> WhoAmI:
    """The role and name of the bearer token of this request."""
    token = token_of(request)
    assert token is not None  # the guard let it through
    return WhoAmI(role=token.role, name=token.name or "")


ROUTES = [whoami]
