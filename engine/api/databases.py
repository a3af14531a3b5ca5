"""What a new mailing can go to, for the console's form (role viewer):
``GET /api/v1/databases`` (each with its count of profiles),
``GET /api/v1/databases/{name}/profiles?limit=20&after=0`` (a page of its profiles, in id
order: the next page is ``after`` the last id) and ``GET /api/v1/segments``."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import get
from litestar.params import PathParameter, QueryParameter

from engine.api.auth import guarded
from engine.api.state import MAX_ID, Req, api_state

__all__ = ["ROUTES", "DatabaseList", "ProfileList", "SegmentList"]

#: Profiles one page may hold.
MAX_PAGE = 100


class Database(msgspec.Struct, kw_only=True):
    id: int
    name: str
    profiles: int


class DatabaseList(msgspec.Struct):
    databases: list[Database]


class Profile(msgspec.Struct, kw_only=True):
    id: int
    phone: str | None
    email: str | None
    fields: dict[str, Any]


class ProfileList(msgspec.Struct):
    profiles: list[Profile]


class Segment(msgspec.Struct, kw_only=True):
    id: int
    name: str
    #: Its database's name.
    database: str
    kind: str


class SegmentList(msgspec.Struct):
    segments: list[Segment]


@get("/databases", **guarded("viewer"), tags=["profiles"], summary="Profile databases")
async def list_databases(request: Req) -> DatabaseList:
    """Every profile database, by name, with how many profiles it holds."""
    rows = await api_state(request).store.database_rows()
    return DatabaseList([Database(id=r.id, name=r.name, profiles=r.profiles) for r in rows])


Name = Annotated[str, PathParameter(min_length=1, max_length=200,
                                    description="the database's name")]
Limit = Annotated[int, QueryParameter(ge=1, le=MAX_PAGE, description="profiles at most")]
After = Annotated[int, QueryParameter(ge=0, le=MAX_ID,
                                      description="only profiles with a greater id")]


@get("/databases/{name:str}/profiles", **guarded("viewer", 400, 404), tags=["profiles"],
     summary="A database's profiles")
async def database_profiles(request: Req, name: Name, limit: Limit = 20,
                            after: After = 0) -> ProfileList:
    """A page of the database's profiles in id order, with their fields."""
    store = api_state(request).store
    rows = await store.profile_page(await store.database_id(name), after, limit)
    return ProfileList([Profile(id=r.id, phone=r.phone, email=r.email, fields=r.fields)
                        for r in rows])


@get("/segments", **guarded("viewer"), tags=["profiles"], summary="Segments")
async def list_segments(request: Req) -> SegmentList:
    """Every segment, by name, with its database and kind (static or dynamic)."""
    rows = await api_state(request).store.segment_rows()
    return SegmentList([Segment(id=r.id, name=r.name, database=r.database, kind=r.kind)
                        for r in rows])


ROUTES = [list_databases, database_profiles, list_segments]
